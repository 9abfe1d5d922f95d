//! Holds (SPEC §6): funds the payer has authorised and the payee may capture, in all or in part,
//! or release. A hold moves no money; it lowers the payer's available balance while it is pending
//! and unexpired.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{AccountId, Amount, Currency, HoldId, Label, Metadata, Reference, ValidationError};

/// Where a hold stands. Every state but `Pending` is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HoldStatus {
    Pending,
    /// Captured, in all or in part, by one transfer.
    Captured,
    /// Released by the payee or a banker.
    Voided,
    /// Reached `expires_at` while pending. A pending hold counts as expired from that instant,
    /// before the sweep marks its row.
    Expired,
}

impl HoldStatus {
    pub const ALL: [HoldStatus; 4] = [
        HoldStatus::Pending,
        HoldStatus::Captured,
        HoldStatus::Voided,
        HoldStatus::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Pending => "pending",
            HoldStatus::Captured => "captured",
            HoldStatus::Voided => "voided",
            HoldStatus::Expired => "expired",
        }
    }
}

impl FromStr for HoldStatus {
    type Err = ValidationError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == raw)
            .ok_or_else(|| {
                ValidationError::new(
                    "status",
                    "must be \"pending\", \"captured\", \"voided\" or \"expired\"",
                )
            })
    }
}

/// How long a hold lives when its payer does not say (`HOLD_TTL`'s default, SPEC §6).
pub const HOLD_TTL_DEFAULT: Duration = Duration::from_secs(7 * 24 * 3600);

/// The longest a hold may live (SPEC §6).
pub const HOLD_TTL_MAX: Duration = Duration::from_secs(30 * 24 * 3600);

/// A hold's lifetime as a client asks for it: 1 second to 30 days.
pub fn parse_expires_in(seconds: i64) -> Result<Duration, ValidationError> {
    u64::try_from(seconds)
        .ok()
        .filter(|s| (1..=HOLD_TTL_MAX.as_secs()).contains(s))
        .map(Duration::from_secs)
        .ok_or_else(|| {
            ValidationError::new(
                "expires_in",
                "must be a number of seconds from 1 to 2592000 (30 days)",
            )
        })
}

/// A hold to place, already parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewHold {
    pub from: AccountId,
    pub to: AccountId,
    pub amount: Amount,
    pub currency: Currency,
    /// `None`: the server's `HOLD_TTL`.
    pub expires_in: Option<Duration>,
    pub reference: Option<Reference>,
    pub metadata: Option<Metadata>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub id: HoldId,
    pub from_account_id: AccountId,
    pub to_account_id: AccountId,
    pub amount: Amount,
    pub currency: Currency,
    /// As of reading: a pending hold past `expires_at` reads as `Expired`.
    pub status: HoldStatus,
    pub captured_amount: Option<Amount>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// When it was captured or voided, or its `expires_at` once expired.
    pub resolved_at: Option<DateTime<Utc>>,
    pub reference: Option<Reference>,
    pub metadata: Option<Metadata>,
}

impl Hold {
    /// Its reference and metadata, which its capture's transfer carries too.
    pub fn label(&self) -> Label {
        Label {
            reference: self.reference.clone(),
            metadata: self.metadata.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        for status in HoldStatus::ALL {
            assert_eq!(status.as_str().parse::<HoldStatus>().unwrap(), status);
        }
        assert!("held".parse::<HoldStatus>().is_err());
    }

    #[test]
    fn expiry_is_one_second_to_thirty_days() {
        assert_eq!(parse_expires_in(1).unwrap(), Duration::from_secs(1));
        assert_eq!(parse_expires_in(2_592_000).unwrap(), HOLD_TTL_MAX);
        for bad in [0, -1, 2_592_001] {
            assert_eq!(parse_expires_in(bad).unwrap_err().field, "expires_in");
        }
    }
}
