//! Moving money: transfers between customers, and the bankers' deposits and withdrawals.

use super::accounts::parse_moment;
use super::ownership::payee_refusal;
use super::{BankService, ListPage, PageRequest, ServiceError, require_banker, require_party};
use crate::auth::Principal;
use crate::domain::{
    AccountId, Amount, Currency, EntryId, IdempotencyKey, Label, NewTransfer, PageKind, PageToken,
    Reference, Transfer, TransferId, TransferReceipt, ValidationError, Violations, both,
};
use crate::store::{Direction, KeyedOutcome, MoneyMove, Reversal, StoreError, TransferFilter};

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

/// Parses the filter of an account's transfers: `direction` `in`, `out` or `any` (absent or
/// empty: any), RFC 3339 `since` (inclusive) and `until` (exclusive), `since` before `until`,
/// and a `reference` (absent or empty: any).
pub fn parse_transfer_filter(
    direction: Option<&str>,
    since: Option<&str>,
    until: Option<&str>,
    reference: Option<&str>,
) -> Result<TransferFilter, Vec<ValidationError>> {
    let mut v = Violations::default();
    let direction = v.check(match direction {
        None | Some("") | Some("any") => Ok(Direction::Any),
        Some("in") => Ok(Direction::In),
        Some("out") => Ok(Direction::Out),
        Some(_) => Err(ValidationError::new(
            "direction",
            "must be \"in\", \"out\" or \"any\"",
        )),
    });
    let since = v.check(parse_moment(since, "since"));
    let until = v.check(parse_moment(until, "until"));
    let reference = v.check(match reference {
        None | Some("") => Ok(None),
        Some(raw) => Reference::parse(raw).map(Some),
    });
    if let (Some(Some(since)), Some(Some(until))) = (since, until)
        && since >= until
    {
        v.check::<()>(Err(ValidationError::new("until", "must be after since")));
    }
    v.finish(|| {
        Some(TransferFilter {
            direction: direction?,
            since: since?,
            until: until?,
            reference: reference?,
        })
    })
}

/// The amount of a capture or a reversal: absent or 0 means all of it (proto3 has no absent
/// integer).
pub fn parse_amount_or_all(amount: Option<i64>) -> Result<Option<Amount>, ValidationError> {
    match amount {
        None | Some(0) => Ok(None),
        Some(raw) => Amount::new(raw).map(Some),
    }
}

/// Parses a reversal of `of`: an amount (absent or 0: all of it), a reference and metadata.
pub fn parse_reversal(
    of: TransferId,
    amount: Option<i64>,
    reference: Option<&str>,
    metadata: Option<std::collections::BTreeMap<String, String>>,
) -> Result<Reversal, Vec<ValidationError>> {
    let amount = parse_amount_or_all(amount).map_err(|e| vec![e]);
    let label = Label::parse(reference, metadata);
    both(amount, label).map(|(amount, label)| Reversal { of, amount, label })
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

/// The answer to a money movement. `replayed` says that an idempotency key matched an earlier
/// request and `outcome` is that request's outcome, success or refusal, exactly as it was then.
/// Hold writes answer the same way, with their own result (`MoneyAnswer<PlacedHold>`, ...).
#[derive(Debug)]
pub struct MoneyAnswer<T = TransferReceipt> {
    pub outcome: Result<T, ServiceError>,
    pub replayed: bool,
}

impl<T> MoneyAnswer<T> {
    pub(super) fn fresh(outcome: Result<T, ServiceError>) -> Self {
        Self {
            outcome,
            replayed: false,
        }
    }

    /// The `money_movements_total` outcome label.
    fn outcome_label(&self) -> &'static str {
        match (&self.outcome, self.replayed) {
            (_, true) => "replayed",
            (Ok(_), false) => "committed",
            (Err(error), false) => error.code().as_str(),
        }
    }
}

impl BankService {
    /// Only the owner of the from-account may send from it — bankers included: a banker moves
    /// customer money by deposit and withdrawal, never by transferring out of someone's account.
    /// A customer naming someone else's account is refused first, before anything is taken
    /// (`ownership.rs`); ownership, funds and currencies are checked by the store under the row
    /// locks.
    pub async fn create_transfer(
        &self,
        principal: &Principal,
        transfer: NewTransfer,
        key: Option<IdempotencyKey>,
    ) -> MoneyAnswer {
        let from = transfer.from();
        if let Err(refused) = self.require_payer(principal, from).await {
            return self.count("transfer", MoneyAnswer::fresh(Err(refused)));
        }
        let to = transfer.to();
        let (caller, ownership) = (principal.clone(), self.ownership.clone());
        let refusal = move |err: StoreError| match payee_refusal(&caller, &ownership, to, err) {
            Ok(hidden) => hidden,
            // Name the field the client used for the settlement account it gave.
            Err(StoreError::NotCustomerAccount(id)) => ServiceError::invalid(
                if id == from {
                    "from_account_id"
                } else {
                    "to_account_id"
                },
                format!("account {id} is a bank settlement account"),
            ),
            Err(other) => other.into(),
        };
        let movement = MoneyMove::Transfer {
            transfer,
            owner: Some(principal.username.clone()),
        };
        self.move_money(principal, movement, key, refusal).await
    }

    /// Runs `movement` — once per key when the caller gave one — and counts its outcome.
    async fn move_money(
        &self,
        principal: &Principal,
        movement: MoneyMove,
        key: Option<IdempotencyKey>,
        refusal: impl Fn(StoreError) -> ServiceError,
    ) -> MoneyAnswer {
        let answer = match key {
            Some(key) => self.move_once(principal, &movement, &key, refusal).await,
            None => MoneyAnswer::fresh(
                match &movement {
                    MoneyMove::Transfer { transfer, owner } => {
                        self.store.transfers.transfer(transfer, owner.clone()).await
                    }
                    MoneyMove::Deposit {
                        account,
                        amount,
                        currency,
                        label,
                    } => {
                        self.store
                            .transfers
                            .deposit(*account, *amount, *currency, label.clone())
                            .await
                    }
                    MoneyMove::Withdrawal {
                        account,
                        amount,
                        currency,
                        label,
                    } => {
                        self.store
                            .transfers
                            .withdraw(*account, *amount, *currency, label.clone())
                            .await
                    }
                }
                .map_err(refusal),
            ),
        };
        self.count(movement.kind(), answer)
    }

    pub(super) fn count<T>(&self, kind: &'static str, answer: MoneyAnswer<T>) -> MoneyAnswer<T> {
        self.metrics.money_movement(kind, answer.outcome_label());
        answer
    }

    /// The owner of either account, or a banker.
    pub async fn get_transfer(
        &self,
        principal: &Principal,
        id: TransferId,
    ) -> Result<Transfer, ServiceError> {
        let parties = self.store.transfers.get_transfer(id).await?;
        require_party(principal, [&parties.from_owner, &parties.to_owner], || {
            format!("transfer {id} does not involve your accounts")
        })?;
        Ok(parties.transfer)
    }

    /// An account's transfers, newest first: its owner or a banker. A transfer shows no
    /// balance, so the recipient's side never shows the sender's.
    pub async fn list_transfers(
        &self,
        principal: &Principal,
        account: AccountId,
        filter: TransferFilter,
        page: PageRequest,
    ) -> Result<ListPage<Transfer>, ServiceError> {
        self.get_account(principal, account).await?;
        let before = page.token.map(|t| EntryId::new(t.key())).transpose()?;
        let found = self
            .store
            .transfers
            .list_transfers(account, &filter, before, page.size)
            .await?;
        Ok(ListPage {
            items: found.items,
            next_page_token: found
                .next
                .map(|id| PageToken::new(PageKind::Transfers, id.get()).encode()),
        })
    }

    /// Bankers only: a transfer back of `reversal.of`, in all or in part, at most once. From a
    /// frozen account too: a freeze stops the customer, not the bank's corrections.
    pub async fn reverse_transfer(
        &self,
        principal: &Principal,
        reversal: Reversal,
        key: Option<IdempotencyKey>,
    ) -> MoneyAnswer {
        if let Err(denied) = require_banker(principal, "reverse transfers") {
            return self.count("reversal", MoneyAnswer::fresh(Err(denied)));
        }
        let reversals = &self.store.reversals;
        let answer = match key {
            None => MoneyAnswer::fresh(
                reversals
                    .reverse_transfer(&reversal)
                    .await
                    .map_err(Into::into),
            ),
            Some(key) => keyed_answer(
                reversals
                    .reverse_transfer_once(&reversal, &principal.username, &key)
                    .await,
                Into::into,
            ),
        };
        self.count("reversal", answer)
    }

    /// Bankers only: money enters the bank into `account`.
    pub async fn deposit(
        &self,
        principal: &Principal,
        account: AccountId,
        amount: Amount,
        currency: Currency,
        label: Label,
        key: Option<IdempotencyKey>,
    ) -> MoneyAnswer {
        if let Err(denied) = require_banker(principal, "deposit") {
            return self.count("deposit", MoneyAnswer::fresh(Err(denied)));
        }
        let movement = MoneyMove::Deposit {
            account,
            amount,
            currency,
            label,
        };
        self.move_money(principal, movement, key, Into::into).await
    }

    /// Bankers only: money leaves the bank from `account`.
    pub async fn withdraw(
        &self,
        principal: &Principal,
        account: AccountId,
        amount: Amount,
        currency: Currency,
        label: Label,
        key: Option<IdempotencyKey>,
    ) -> MoneyAnswer {
        if let Err(denied) = require_banker(principal, "withdraw") {
            return self.count("withdrawal", MoneyAnswer::fresh(Err(denied)));
        }
        let movement = MoneyMove::Withdrawal {
            account,
            amount,
            currency,
            label,
        };
        self.move_money(principal, movement, key, Into::into).await
    }

    /// A movement under the caller's idempotency key. A replayed refusal goes through the same
    /// `refusal` mapping as the first one did, so it reads exactly the same.
    async fn move_once(
        &self,
        principal: &Principal,
        movement: &MoneyMove,
        key: &IdempotencyKey,
        refusal: impl Fn(StoreError) -> ServiceError,
    ) -> MoneyAnswer {
        let outcome = self
            .store
            .keyed
            .move_money_once(movement, &principal.username, key)
            .await;
        keyed_answer(outcome, refusal)
    }
}

/// The answer to a keyed request, whatever it wrote: its outcome now or replayed, or why the
/// key answers by itself (in flight, used for another request).
pub(super) fn keyed_answer<T>(
    outcome: Result<KeyedOutcome<T>, StoreError>,
    refusal: impl Fn(StoreError) -> ServiceError,
) -> MoneyAnswer<T> {
    match outcome {
        Ok(KeyedOutcome::Done(outcome)) => MoneyAnswer::fresh(outcome.map_err(refusal)),
        Ok(KeyedOutcome::Replayed(outcome)) => MoneyAnswer {
            outcome: outcome.map_err(refusal),
            replayed: true,
        },
        Ok(KeyedOutcome::InFlight) => MoneyAnswer::fresh(Err(ServiceError::Conflict(
            "a request with this idempotency key is still in progress; retry shortly".to_owned(),
        ))),
        Ok(KeyedOutcome::Mismatch) => MoneyAnswer::fresh(Err(ServiceError::IdempotencyMismatch(
            "this idempotency key was already used for a different request",
        ))),
        Err(err) => MoneyAnswer::fresh(Err(refusal(err))),
    }
}
