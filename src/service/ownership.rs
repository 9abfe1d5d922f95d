//! Authorization before resources (SPEC §10): a customer who names, as the payer, an account
//! that is not theirs is refused before the request takes anything the account's owner or other
//! callers need — the account's share of the pool, its row lock, an idempotency record.
//!
//! The check runs from memory once a caller's account has been seen to be theirs: an account's
//! owner never changes, so what was seen stays true. Anything else is looked up by id (one
//! short query, no lock, no wait) and refused as `not_found`, whether the account exists,
//! belongs to someone else, or is a settlement account: the answer does not tell a stranger
//! which. The owner check under the row locks stays; this one only has to be cheap and never
//! wrong in the refusing direction, and it is exact: a miss asks the database.
//!
//! Memory: the accounts each caller was seen to own, a handful per user (one per currency),
//! for at most `TRACKED` users; past that the map starts again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{BankService, ServiceError};
use crate::auth::Principal;
use crate::domain::{AccountId, Username};
use crate::store::StoreError;

const TRACKED: usize = 100_000;

/// What each caller was seen to own; clones share it.
#[derive(Debug, Clone, Default)]
pub(super) struct Ownership {
    owned: Arc<Mutex<HashMap<Username, Vec<AccountId>>>>,
}

impl Ownership {
    fn known(&self, user: &Username, account: AccountId) -> bool {
        self.owned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(user)
            .is_some_and(|accounts| accounts.contains(&account))
    }

    /// `account` is `user`'s, for good.
    pub(super) fn remember(&self, user: &Username, account: AccountId) {
        let mut owned = self.owned.lock().unwrap_or_else(|p| p.into_inner());
        if owned.len() >= TRACKED && !owned.contains_key(user) {
            owned.clear();
        }
        let accounts = owned.entry(user.clone()).or_default();
        if !accounts.contains(&account) {
            accounts.push(account);
        }
    }
}

impl BankService {
    /// Refuses a customer naming as the payer an account that is not theirs, as `not_found`;
    /// bankers pass (what they may debit is decided under the lock).
    pub(super) async fn require_payer(
        &self,
        principal: &Principal,
        account: AccountId,
    ) -> Result<(), ServiceError> {
        if principal.is_banker() || self.ownership.known(&principal.username, account) {
            return Ok(());
        }
        match self.store.accounts.get_account(account).await {
            Ok(found) if found.owner == principal.username => {
                self.ownership.remember(&principal.username, account);
                Ok(())
            }
            Ok(_) | Err(StoreError::AccountNotFound(_)) => Err(not_found(account)),
            Err(other) => Err(other.into()),
        }
    }
}

/// How a refusal about the payee reads to a customer. An account they neither own nor may pay
/// into — it does not exist, is closed, holds another currency, or is the bank's settlement
/// account — is `not_found`, the same answer in every case (SPEC §10): a stranger learns
/// nothing of another customer's account but that it takes the payment or not. Bankers, and a
/// customer paying their own account, are told the reason.
pub(super) fn payee_refusal(
    principal: &Principal,
    ownership: &Ownership,
    to: AccountId,
    err: StoreError,
) -> Result<ServiceError, StoreError> {
    if principal.is_banker() || ownership.known(&principal.username, to) {
        return Err(err);
    }
    match err {
        StoreError::AccountNotFound(id)
        | StoreError::AccountClosed(id)
        | StoreError::NotCustomerAccount(id)
        | StoreError::CurrencyMismatch { account: id, .. }
            if id == to =>
        {
            Ok(not_found(to))
        }
        other => Err(other),
    }
}

/// The one answer for an account a customer may not use, whether it exists or not.
pub(super) fn not_found(account: AccountId) -> ServiceError {
    ServiceError::NotFound(format!("account {account} not found"))
}
