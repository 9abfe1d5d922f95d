//! A money movement as the store moves it (`Movement`), and the verdict the rules give on it
//! (`Verdict`).
//!
//! The rules themselves have one text, in PostgreSQL: the SQL function `movement_verdict`
//! (migration `20261204000001_money_functions`), which every path that judges a movement calls
//! under its row locks — one movement (`MOVE_MONEY`, also for captures and reversals), a
//! group-commit batch (`move_money_batch`, each movement against the balances the batch has
//! reached) and a hold's placement (`holds.rs`, judged as the transfer it may become). Each
//! returns the verdict's name; `Verdict::parse` reads it back, once, and `Verdict::refusal` turns
//! it into the error clients see. The integration test `store::rules_agree` runs random batches
//! through the one-movement and batch paths from the same ledger and requires the same verdicts,
//! balances and entries.

use super::StoreError;
use crate::domain::{AccountId, Amount, Currency, Label, Username};

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
}
