//! The rules of a money movement as the server sees them: the movement both paths carry
//! (`Movement`), the verdict both give (`Verdict`), and `judge`, the rules in Rust.
//!
//! Both money paths judge inside PostgreSQL, by one SQL function, `movement_verdict` (migration
//! `20261204000001_money_functions`): the one-movement function `move_money` calls it under its
//! row locks, and a group-commit batch (`move_money_batch`) calls it for each movement against the
//! balances the batch has reached. Each returns the verdict's name; `Verdict::parse` reads it
//! back, once, and `Verdict::refusal` turns it into the error clients see. `judge` is the same
//! rules in Rust, for holds, which judge a hold as if it were a transfer (`holds.rs`); its unit
//! tests and the integration test `store::rules_agree` (random batches through both paths from
//! the same starting ledger, same verdicts, balances and entries required) keep the texts
//! together.

use super::StoreError;
use crate::domain::{
    Account, AccountId, AccountKind, AccountStatus, Amount, Currency, Label, Username,
};

/// Which rules apply beyond the common ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MovementKind {
    /// Customer to customer.
    Transfer,
    /// Settlement to customer.
    Deposit,
    /// Customer to settlement.
    Withdrawal,
    /// A banker's transfer back of an earlier one: either side may be a settlement account (a
    /// deposit or withdrawal reversed), and a frozen payer is debited all the same (a freeze
    /// stops the customer, not the bank's corrections).
    Reversal,
}

impl MovementKind {
    /// The name `MOVE_MONEY` takes (`$5`), and the operation's name in records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            MovementKind::Transfer => "transfer",
            MovementKind::Deposit => "deposit",
            MovementKind::Withdrawal => "withdrawal",
            MovementKind::Reversal => "reversal",
        }
    }
}

/// One money movement with both its accounts known, as both paths move it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Movement {
    pub from: AccountId,
    pub to: AccountId,
    pub amount: Amount,
    pub currency: Currency,
    pub kind: MovementKind,
    /// For a transfer: the user the from-account must belong to, if any.
    pub owner: Option<Username>,
    /// The client's reference and metadata, written with the transfer.
    pub label: Label,
}

impl Movement {
    /// The customer accounts it touches: the settlement side of a deposit or withdrawal is the
    /// bank's and is left out (`account_gate.rs` shares the pool among customer accounts).
    pub fn customer_accounts(&self) -> Vec<AccountId> {
        match self.kind {
            MovementKind::Transfer => vec![self.from, self.to],
            MovementKind::Deposit => vec![self.to],
            MovementKind::Withdrawal => vec![self.from],
            MovementKind::Reversal => vec![self.from, self.to],
        }
    }
}

/// An account as the rules see it, under its row lock.
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    pub owner: &'a Username,
    pub currency: Currency,
    pub balance: i64,
    pub kind: AccountKind,
    pub status: AccountStatus,
    pub overdraft_limit: i64,
    /// What its pending, unexpired holds reserve, read under the lock.
    pub held: i64,
}

impl<'a> Side<'a> {
    pub fn of(account: &'a Account) -> Self {
        Side {
            owner: &account.owner,
            currency: account.currency,
            balance: account.balance,
            kind: account.kind,
            status: account.status,
            overdraft_limit: account.overdraft_limit,
            held: account.held,
        }
    }
}

/// What the rules say about one movement, in the order they are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    FromNotFound,
    NotOwner,
    ToNotFound,
    FromNotCustomer,
    ToNotCustomer,
    FromClosed,
    ToClosed,
    FromFrozen,
    FromCurrencyMismatch,
    ToCurrencyMismatch,
    InsufficientFunds,
    FromOverflow,
    ToOverflow,
}

impl Verdict {
    const ALL: [Verdict; 14] = [
        Verdict::Ok,
        Verdict::FromNotFound,
        Verdict::NotOwner,
        Verdict::ToNotFound,
        Verdict::FromNotCustomer,
        Verdict::ToNotCustomer,
        Verdict::FromClosed,
        Verdict::ToClosed,
        Verdict::FromFrozen,
        Verdict::FromCurrencyMismatch,
        Verdict::ToCurrencyMismatch,
        Verdict::InsufficientFunds,
        Verdict::FromOverflow,
        Verdict::ToOverflow,
    ];

    /// The name `MOVE_MONEY` returns and an idempotency record stores.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::FromNotFound => "from_not_found",
            Verdict::NotOwner => "not_owner",
            Verdict::ToNotFound => "to_not_found",
            Verdict::FromNotCustomer => "from_not_customer",
            Verdict::ToNotCustomer => "to_not_customer",
            Verdict::FromClosed => "from_closed",
            Verdict::ToClosed => "to_closed",
            Verdict::FromFrozen => "from_frozen",
            Verdict::FromCurrencyMismatch => "from_currency_mismatch",
            Verdict::ToCurrencyMismatch => "to_currency_mismatch",
            Verdict::InsufficientFunds => "insufficient_funds",
            Verdict::FromOverflow => "from_overflow",
            Verdict::ToOverflow => "to_overflow",
        }
    }

    /// A name from the database; one this server does not know is a broken invariant.
    pub fn parse(name: &str) -> Result<Self, StoreError> {
        Self::ALL
            .into_iter()
            .find(|verdict| verdict.as_str() == name)
            .ok_or_else(|| {
                StoreError::ConstraintViolated(format!("unknown transfer verdict {name}"))
            })
    }

    /// For a currency mismatch, the column of `MOVE_MONEY`'s result (and of a replayed key
    /// record) that holds the mismatched account's actual currency.
    pub fn currency_column(self) -> Option<&'static str> {
        match self {
            Verdict::FromCurrencyMismatch => Some("from_currency"),
            Verdict::ToCurrencyMismatch => Some("to_currency"),
            _ => None,
        }
    }

    /// The refusal of `movement`, or `None` for `Ok`. A currency mismatch names the account's
    /// actual currency, which only the path that read it knows (`actual`).
    pub fn refusal(self, movement: &Movement, actual: Option<Currency>) -> Option<StoreError> {
        let mismatch = |account| StoreError::CurrencyMismatch {
            account,
            expected: movement.currency,
            actual: actual.unwrap_or(movement.currency),
        };
        Some(match self {
            Verdict::Ok => return None,
            Verdict::FromNotFound => StoreError::AccountNotFound(movement.from),
            Verdict::NotOwner => StoreError::NotOwner(movement.from),
            Verdict::ToNotFound => StoreError::AccountNotFound(movement.to),
            Verdict::FromNotCustomer => StoreError::NotCustomerAccount(movement.from),
            Verdict::ToNotCustomer => StoreError::NotCustomerAccount(movement.to),
            Verdict::FromClosed => StoreError::AccountClosed(movement.from),
            Verdict::ToClosed => StoreError::AccountClosed(movement.to),
            Verdict::FromFrozen => StoreError::AccountFrozen(movement.from),
            Verdict::FromCurrencyMismatch => mismatch(movement.from),
            Verdict::ToCurrencyMismatch => mismatch(movement.to),
            Verdict::InsufficientFunds => StoreError::InsufficientFunds(movement.from),
            Verdict::FromOverflow => StoreError::BalanceOverflow(movement.from),
            Verdict::ToOverflow => StoreError::BalanceOverflow(movement.to),
        })
    }
}

/// The rules, in `MOVE_MONEY`'s order. The order matters as much as the rules: a stranger learns
/// nothing about the to-account, currencies or balances before ownership of the from-account is
/// established.
pub fn judge(movement: &Movement, from: Option<Side<'_>>, to: Option<Side<'_>>) -> Verdict {
    let Some(f) = from else {
        return Verdict::FromNotFound;
    };
    if movement
        .owner
        .as_ref()
        .is_some_and(|owner| f.owner != owner)
    {
        return Verdict::NotOwner;
    }
    let Some(t) = to else {
        return Verdict::ToNotFound;
    };
    // In i128: `balance - held` and `amount - overdraft_limit` stay in i64 for any account the
    // invariants allow, but the rules must not depend on the invariants they enforce.
    let amount = movement.amount.minor_units();
    let available = i128::from(f.balance) - i128::from(f.held);
    let reversal = movement.kind == MovementKind::Reversal;
    if f.kind != AccountKind::Customer && movement.kind != MovementKind::Deposit && !reversal {
        Verdict::FromNotCustomer
    } else if t.kind != AccountKind::Customer
        && movement.kind != MovementKind::Withdrawal
        && !reversal
    {
        Verdict::ToNotCustomer
    } else if f.status == AccountStatus::Closed {
        Verdict::FromClosed
    } else if t.status == AccountStatus::Closed {
        Verdict::ToClosed
    } else if f.status == AccountStatus::Frozen && !reversal {
        // A frozen account takes credits; only its debits stop.
        Verdict::FromFrozen
    } else if f.currency != movement.currency {
        Verdict::FromCurrencyMismatch
    } else if t.currency != movement.currency {
        Verdict::ToCurrencyMismatch
    } else if f.kind == AccountKind::Customer
        && available < i128::from(amount) - i128::from(f.overdraft_limit)
    {
        Verdict::InsufficientFunds
    } else if f.balance.checked_sub(amount).is_none() {
        Verdict::FromOverflow
    } else if t.balance.checked_add(amount).is_none() {
        Verdict::ToOverflow
    } else {
        Verdict::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_verdict_reads_back_from_its_name() {
        for verdict in Verdict::ALL {
            assert_eq!(Verdict::parse(verdict.as_str()).unwrap(), verdict);
        }
        assert!(Verdict::parse("maybe").is_err());
    }

    fn movement(kind: MovementKind, owner: Option<&str>, amount: i64) -> Movement {
        Movement {
            from: AccountId::new(1).unwrap(),
            to: AccountId::new(2).unwrap(),
            amount: Amount::new(amount).unwrap(),
            currency: Currency::Usd,
            kind,
            owner: owner.map(|o| Username::parse(o).unwrap()),
            label: Label::default(),
        }
    }

    fn side(owner: &Username, kind: AccountKind, balance: i64) -> Side<'_> {
        Side {
            owner,
            currency: Currency::Usd,
            balance,
            kind,
            status: AccountStatus::Active,
            overdraft_limit: 0,
            held: 0,
        }
    }

    #[test]
    fn a_stranger_learns_nothing_about_the_to_account() {
        let alice = Username::parse("alice").unwrap();
        let m = movement(MovementKind::Transfer, Some("mallory"), 10);
        let from = Some(side(&alice, AccountKind::Customer, 0));
        assert_eq!(judge(&m, from, None), Verdict::NotOwner);
        assert_eq!(judge(&m, None, None), Verdict::FromNotFound);
    }

    #[test]
    fn funds_are_checked_for_customers_only_and_overflow_is_refused() {
        let bank = Username::parse("bank").unwrap();
        let alice = Username::parse("alice").unwrap();
        let deposit = movement(MovementKind::Deposit, None, 10);
        let settlement = side(&bank, AccountKind::Settlement, 0);
        let customer = side(&alice, AccountKind::Customer, 0);
        assert_eq!(
            judge(&deposit, Some(settlement), Some(customer)),
            Verdict::Ok
        );
        let transfer = movement(MovementKind::Transfer, None, 10);
        assert_eq!(
            judge(&transfer, Some(customer), Some(customer)),
            Verdict::InsufficientFunds
        );
        let full = side(&alice, AccountKind::Customer, i64::MAX);
        assert_eq!(
            judge(&deposit, Some(settlement), Some(full)),
            Verdict::ToOverflow
        );
        let drained = side(&bank, AccountKind::Settlement, i64::MIN + 5);
        assert_eq!(
            judge(&deposit, Some(drained), Some(customer)),
            Verdict::FromOverflow
        );
        assert_eq!(
            judge(&transfer, Some(settlement), Some(customer)),
            Verdict::FromNotCustomer
        );
    }
}
