//! Page sizes and page tokens for keyset-paginated lists.

use std::fmt::Write;

use super::ValidationError;

/// How many rows one page holds: 1 to 100, 20 when the client does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize(u8);

impl PageSize {
    pub const MAX: u8 = 100;
    pub const DEFAULT: PageSize = PageSize(20);

    pub fn new(raw: i64) -> Result<Self, ValidationError> {
        match u8::try_from(raw) {
            Ok(n) if (1..=Self::MAX).contains(&n) => Ok(Self(n)),
            _ => Err(ValidationError::new(
                "page_size",
                format!("must be between 1 and {}", Self::MAX),
            )),
        }
    }

    pub fn get(self) -> i64 {
        i64::from(self.0)
    }
}

impl Default for PageSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Which list a page token continues, so a token from one list is refused by another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageKind {
    Accounts,
    Entries,
    Holds,
    Transfers,
}

impl PageKind {
    fn tag(self) -> &'static str {
        match self {
            PageKind::Accounts => "a",
            PageKind::Entries => "e",
            PageKind::Holds => "h",
            PageKind::Transfers => "t",
        }
    }
}

/// The `next_page_token` of a list: opaque to clients (hex of `<kind>:<key>`), so the keyset
/// behind it can change without breaking them. It carries no authority: the list it continues is
/// authorized again on every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageToken {
    kind: PageKind,
    key: i64,
}

impl PageToken {
    pub fn new(kind: PageKind, key: i64) -> Self {
        Self { kind, key }
    }

    /// The row key to continue after (accounts) or before (entries).
    pub fn key(self) -> i64 {
        self.key
    }

    pub fn encode(self) -> String {
        let plain = format!("{}:{}", self.kind.tag(), self.key);
        plain.bytes().fold(String::new(), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
    }

    /// Parses a token from a client; it must have been made for `kind`.
    pub fn decode(raw: &str, kind: PageKind) -> Result<Self, ValidationError> {
        let invalid = || ValidationError::new("page_token", "is not a page token of this list");
        if !raw.len().is_multiple_of(2) || raw.len() > 64 || !raw.is_ascii() {
            return Err(invalid());
        }
        let bytes = (0..raw.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&raw[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| invalid())?;
        let plain = String::from_utf8(bytes).map_err(|_| invalid())?;
        let (tag, key) = plain.split_once(':').ok_or_else(invalid)?;
        let key: i64 = key.parse().map_err(|_| invalid())?;
        if tag != kind.tag() || key <= 0 {
            return Err(invalid());
        }
        Ok(Self { kind, key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_default_is_twenty() {
        assert_eq!(PageSize::default().get(), 20);
    }

    #[test]
    fn a_token_is_only_accepted_by_its_own_list() {
        let token = PageToken::new(PageKind::Accounts, 42).encode();
        assert_eq!(
            PageToken::decode(&token, PageKind::Accounts).unwrap().key(),
            42
        );
        assert!(PageToken::decode(&token, PageKind::Entries).is_err());
        for junk in ["", "zz", "abc", "42", "613a", "613a2d31", &"61".repeat(40)] {
            assert!(
                PageToken::decode(junk, PageKind::Accounts).is_err(),
                "{junk:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn tokens_round_trip(key in 1..=i64::MAX) {
            for kind in [PageKind::Accounts, PageKind::Entries, PageKind::Holds, PageKind::Transfers] {
                let encoded = PageToken::new(kind, key).encode();
                prop_assert_eq!(PageToken::decode(&encoded, kind).unwrap().key(), key);
            }
        }

        #[test]
        fn decoding_never_panics(raw in "\\PC{0,80}") {
            let _ = PageToken::decode(&raw, PageKind::Entries);
        }
    }

    proptest! {
        #[test]
        fn accepts_exactly_one_to_one_hundred(n in any::<i64>()) {
            prop_assert_eq!(PageSize::new(n).is_ok(), (1..=100).contains(&n));
        }
    }
}
