//! Moving money: transfers between customers, and the bankers' deposits and withdrawals.

use super::{BankService, ServiceError, require_banker};
use crate::auth::Principal;
use crate::domain::{
    AccountId, Amount, Currency, NewTransfer, Transfer, TransferId, TransferReceipt,
    ValidationError, Violations,
};
use crate::store::StoreError;

/// Parses a transfer from raw fields, reporting every bad one (both transports call this).
pub fn parse_transfer(
    from_account_id: i64,
    to_account_id: i64,
    amount: i64,
    currency: &str,
) -> Result<NewTransfer, Vec<ValidationError>> {
    let mut v = Violations::default();
    let from = v.check(AccountId::new(from_account_id).map_err(|e| e.for_field("from_account_id")));
    let to = v.check(AccountId::new(to_account_id).map_err(|e| e.for_field("to_account_id")));
    let amount = v.check(Amount::new(amount));
    let currency = v.check(currency.parse::<Currency>());
    let transfer = match (from, to, amount, currency) {
        (Some(f), Some(t), Some(a), Some(c)) => v.check(NewTransfer::new(f, t, a, c)),
        _ => None,
    };
    v.finish(|| transfer)
}

/// Parses the amount and currency of a deposit or withdrawal.
pub fn parse_money(
    amount: i64,
    currency: &str,
) -> Result<(Amount, Currency), Vec<ValidationError>> {
    let mut v = Violations::default();
    let amount = v.check(Amount::new(amount));
    let currency = v.check(currency.parse::<Currency>());
    v.finish(|| Some((amount?, currency?)))
}

impl BankService {
    /// Only the owner of the from-account may send from it — bankers included: a banker moves
    /// customer money by deposit and withdrawal, never by transferring out of someone's account.
    /// Ownership, funds and currencies are checked by the store under the row locks.
    pub async fn create_transfer(
        &self,
        principal: &Principal,
        transfer: NewTransfer,
    ) -> Result<TransferReceipt, ServiceError> {
        self.store
            .transfer(&transfer, Some(principal.username.clone()))
            .await
            .map_err(|err| match err {
                // Name the field the client used for the settlement account it gave.
                StoreError::NotCustomerAccount(id) => ServiceError::invalid(
                    if id == transfer.from() {
                        "from_account_id"
                    } else {
                        "to_account_id"
                    },
                    format!("account {id} is a bank settlement account"),
                ),
                other => other.into(),
            })
    }

    /// The owner of either account, or a banker.
    pub async fn get_transfer(
        &self,
        principal: &Principal,
        id: TransferId,
    ) -> Result<Transfer, ServiceError> {
        let parties = self.store.get_transfer(id).await?;
        if principal.is_banker()
            || principal.username == parties.from_owner
            || principal.username == parties.to_owner
        {
            Ok(parties.transfer)
        } else {
            Err(ServiceError::PermissionDenied(format!(
                "transfer {id} does not involve your accounts"
            )))
        }
    }

    /// Bankers only: money enters the bank into `account`.
    pub async fn deposit(
        &self,
        principal: &Principal,
        account: AccountId,
        amount: Amount,
        currency: Currency,
    ) -> Result<TransferReceipt, ServiceError> {
        require_banker(principal, "deposit")?;
        Ok(self.store.deposit(account, amount, currency).await?)
    }

    /// Bankers only: money leaves the bank from `account`.
    pub async fn withdraw(
        &self,
        principal: &Principal,
        account: AccountId,
        amount: Amount,
        currency: Currency,
    ) -> Result<TransferReceipt, ServiceError> {
        require_banker(principal, "withdraw")?;
        Ok(self.store.withdraw(account, amount, currency).await?)
    }
}
