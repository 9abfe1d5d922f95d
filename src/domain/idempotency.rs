//! Idempotency keys: the client's name for one intended money movement, so a retry of it is
//! recognised instead of moving the money again.

use std::fmt;

use sha2::{Digest, Sha256};

use super::ValidationError;

/// 1–255 printable ASCII characters (space to `~`), chosen by the client, unique per user.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 255;

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let refuse = |why: &str| Err(ValidationError::new("idempotency_key", why));
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return refuse("must be 1 to 255 characters");
        }
        if !raw.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            return refuse("must be printable ASCII");
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Keys are client secrets of a sort (a guessable key lets nobody else replay, since keys are
/// per user, but they still have no business in logs): shown by length only.
impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey(<{} chars>)", self.0.len())
    }
}

/// A digest of everything that makes two keyed requests "the same request". Built from the
/// parsed values field by field, each with its length, so no two different requests can encode to
/// the same bytes (`1|23` and `12|3` stay apart).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RequestFingerprint([u8; 32]);

impl RequestFingerprint {
    pub fn of(operation: &str, fields: &[&str]) -> Self {
        let mut hash = Sha256::new();
        for part in std::iter::once(operation).chain(fields.iter().copied()) {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        Self(hash.finalize().into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }
}

impl fmt::Debug for RequestFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestFingerprint({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn keys_are_bounded_printable_ascii() {
        assert!(IdempotencyKey::parse("a").is_ok());
        assert!(IdempotencyKey::parse("order 42 / retry-safe ~").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        for bad in ["", "tab\there", "é", "line\nbreak", "\u{7f}"] {
            let err = IdempotencyKey::parse(bad).unwrap_err();
            assert_eq!(err.field, "idempotency_key", "{bad:?}");
        }
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let key = IdempotencyKey::parse("secret-order-7").unwrap();
        assert_eq!(format!("{key:?}"), "IdempotencyKey(<14 chars>)");
    }

    #[test]
    fn fingerprints_tell_apart_operations_and_field_boundaries() {
        let a = RequestFingerprint::of("transfer", &["1", "23"]);
        assert_eq!(a, RequestFingerprint::of("transfer", &["1", "23"]));
        assert_ne!(a, RequestFingerprint::of("transfer", &["12", "3"]));
        assert_ne!(a, RequestFingerprint::of("deposit", &["1", "23"]));
        let round = RequestFingerprint::from_bytes(a.as_bytes()).unwrap();
        assert_eq!(round, a);
        assert!(RequestFingerprint::from_bytes(&[0; 31]).is_none());
    }

    proptest! {
        #[test]
        fn every_printable_ascii_key_up_to_255_is_accepted(key in "[ -~]{1,255}") {
            let parsed = IdempotencyKey::parse(&key).unwrap();
            prop_assert_eq!(parsed.as_str(), key.as_str());
        }
    }
}
