//! Holds (SPEC §6): funds the payer has authorised and the payee may capture, in all or in part,
//! or release. A hold moves no money; it lowers the payer's available balance while it is pending
//! and unexpired.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{AccountId, Amount, Currency, HoldId, ValidationError};

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

/// A client's label for a movement: 1 to 64 printable ASCII characters, searchable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference(String);

impl Reference {
    pub const MAX_LEN: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(ValidationError::new(
                "reference",
                "must be 1 to 64 characters long",
            ));
        }
        if !raw.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err(ValidationError::new(
                "reference",
                "must be printable ASCII characters",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A client's string attributes on a movement: a JSON object of string values, at most 4 KiB
/// as compact JSON.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata(BTreeMap<String, String>);

impl Metadata {
    pub const MAX_BYTES: usize = 4096;

    pub fn new(map: BTreeMap<String, String>) -> Result<Self, ValidationError> {
        let size = serde_json::to_string(&map).map_or(usize::MAX, |json| json.len());
        if size > Self::MAX_BYTES {
            return Err(ValidationError::new(
                "metadata",
                "must be at most 4096 bytes as JSON",
            ));
        }
        Ok(Self(map))
    }

    /// The stored JSON text of a row, which the database checked is an object.
    pub fn from_json(json: &str) -> Result<Self, ValidationError> {
        serde_json::from_str(json)
            .map(Self)
            .map_err(|_| ValidationError::new("metadata", "must be an object of strings"))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).expect("a map of strings serializes")
    }

    pub fn entries(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    pub fn into_entries(self) -> BTreeMap<String, String> {
        self.0
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
    fn references_are_short_printable_ascii() {
        assert_eq!(Reference::parse("INV-2291").unwrap().as_str(), "INV-2291");
        assert!(Reference::parse("order 7").is_ok());
        assert!(Reference::parse(&"x".repeat(64)).is_ok());
        for bad in ["", "tab\there", "café", "line\n"] {
            assert_eq!(
                Reference::parse(bad).unwrap_err().field,
                "reference",
                "{bad:?}"
            );
        }
        assert!(Reference::parse(&"x".repeat(65)).is_err());
    }

    #[test]
    fn metadata_is_bounded_as_json() {
        let small = BTreeMap::from([("order".to_owned(), "7".to_owned())]);
        let meta = Metadata::new(small).unwrap();
        assert_eq!(Metadata::from_json(&meta.to_json()).unwrap(), meta);
        // {"k":"…"} is 8 bytes of framing around the value.
        let fits = BTreeMap::from([("k".to_owned(), "v".repeat(4096 - 8))]);
        assert!(Metadata::new(fits).is_ok());
        let over = BTreeMap::from([("k".to_owned(), "v".repeat(4096 - 7))]);
        assert_eq!(Metadata::new(over).unwrap_err().field, "metadata");
        assert!(Metadata::from_json("[1]").is_err());
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
