//! Who users are: usernames, names, email addresses, passwords and roles.

use std::fmt;
use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};

use super::ValidationError;

/// `^[a-z0-9_]{3,32}$`: lower-case so that two users can never differ only by case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let ok = (3..=32).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ValidationError::new(
                "username",
                "must be 3 to 32 characters: lower-case letters, digits or underscores",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A display name: 1 to 100 characters after trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullName(String);

impl FullName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let trimmed = raw.trim();
        let chars = trimmed.chars().count();
        if chars == 0 || chars > Self::MAX_CHARS {
            return Err(ValidationError::new(
                "full_name",
                format!("must be 1 to {} characters", Self::MAX_CHARS),
            ));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "full_name",
                "must not contain control characters",
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An email address in the common `local@domain.tld` form (ASCII, at most 254 characters).
///
/// Stored as given; uniqueness ignores case (the `users_email_key` index is on `lower(email)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub const MAX_LEN: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        if Self::is_valid(raw) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ValidationError::new(
                "email",
                "must be an email address like name@example.com",
            ))
        }
    }

    fn is_valid(raw: &str) -> bool {
        if raw.len() > Self::MAX_LEN || !raw.is_ascii() {
            return false;
        }
        let Some((local, domain)) = raw.split_once('@') else {
            return false;
        };
        let local_ok = (1..=64).contains(&local.len())
            && local
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b))
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..");
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|label| {
                (1..=63).contains(&label.len())
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        local_ok && domain_ok
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A plain-text password on its way to the hasher. Never printed: `Debug` shows a placeholder.
///
/// 8 to 128 characters: long enough to resist guessing, bounded so hashing cost stays bounded.
#[derive(Clone)]
pub struct Password(SecretString);

impl Password {
    pub const MIN_CHARS: usize = 8;
    pub const MAX_CHARS: usize = 128;

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let chars = raw.chars().count();
        if (Self::MIN_CHARS..=Self::MAX_CHARS).contains(&chars) {
            Ok(Self(SecretString::from(raw)))
        } else {
            Err(ValidationError::new(
                "password",
                format!(
                    "must be {} to {} characters",
                    Self::MIN_CHARS,
                    Self::MAX_CHARS
                ),
            ))
        }
    }

    /// The plain text, for the password hasher only.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// What a user may do: depositors act on their own accounts; bankers on anyone's, and they alone
/// deposit, withdraw and change roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Role {
    #[default]
    Depositor,
    Banker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Depositor => "depositor",
            Role::Banker => "banker",
        }
    }
}

impl FromStr for Role {
    type Err = ValidationError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "depositor" => Ok(Role::Depositor),
            "banker" => Ok(Role::Banker),
            _ => Err(ValidationError::new(
                "role",
                "must be \"depositor\" or \"banker\"",
            )),
        }
    }
}

macro_rules! display_as_str {
    ($($ty:ty),*) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
display_as_str!(Username, FullName, Email, Role);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn usernames_follow_the_documented_pattern() {
        for ok in ["abc", "alice_01", "a_b", &"x".repeat(32)] {
            assert_eq!(Username::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "ab",
            "Alice",
            "al ice",
            "ali-ce",
            "élan",
            "",
            &"x".repeat(33),
        ] {
            let err = Username::parse(bad).unwrap_err();
            assert_eq!(err.field, "username", "{bad:?}");
        }
    }

    #[test]
    fn full_names_are_trimmed_and_bounded() {
        assert_eq!(
            FullName::parse("  Ada Lovelace ").unwrap().as_str(),
            "Ada Lovelace"
        );
        assert!(FullName::parse("   ").is_err());
        assert!(FullName::parse("Ada\nLovelace").is_err());
        // The bound counts characters, not bytes.
        assert!(FullName::parse(&"é".repeat(100)).is_ok());
        assert!(FullName::parse(&"é".repeat(101)).is_err());
    }

    #[test]
    fn emails_need_a_local_part_and_a_dotted_domain() {
        for ok in ["a@b.co", "first.last+tag@mail.example.org", "X@Y.IO"] {
            assert!(Email::parse(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "", "a", "a@", "@b.co", "a@b", "a@@b.co", "a b@c.co", "a@b..co", ".a@b.co", "a@-b.co",
            "ü@b.co",
        ] {
            assert_eq!(Email::parse(bad).unwrap_err().field, "email", "{bad:?}");
        }
        let long = format!("{}@{}.com", "a".repeat(64), "b".repeat(63));
        assert!(Email::parse(&long).is_ok());
        assert!(Email::parse(&format!("{}@b.co", "a".repeat(65))).is_err());
    }

    #[test]
    fn passwords_are_bounded_and_never_printed() {
        assert!(Password::parse("short").is_err());
        let password = Password::parse("correct horse battery").unwrap();
        assert_eq!(password.expose(), "correct horse battery");
        assert!(!format!("{password:?}").contains("horse"));
        assert!(Password::parse(&"p".repeat(129)).is_err());
    }

    #[test]
    fn roles_round_trip_through_their_names() {
        for role in [Role::Depositor, Role::Banker] {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("admin".parse::<Role>().is_err());
        assert!("Banker".parse::<Role>().is_err());
        assert_eq!(Role::default(), Role::Depositor);
    }

    proptest! {
        #[test]
        fn username_accepts_exactly_the_pattern(raw in "\\PC{0,40}") {
            let expected = (3..=32).contains(&raw.len())
                && raw.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            prop_assert_eq!(Username::parse(&raw).is_ok(), expected);
        }

        #[test]
        fn valid_usernames_round_trip(raw in "[a-z0-9_]{3,32}") {
            let parsed = Username::parse(&raw).unwrap();
            prop_assert_eq!(parsed.as_str(), raw.as_str());
        }

        #[test]
        fn parsed_full_names_are_trimmed_and_in_bounds(raw in "\\PC{0,120}") {
            if let Ok(name) = FullName::parse(&raw) {
                let n = name.as_str().chars().count();
                prop_assert!((1..=100).contains(&n));
                prop_assert_eq!(name.as_str(), name.as_str().trim());
            }
        }

        #[test]
        fn parsed_emails_have_one_at_and_fit_the_column(raw in "[a-z.@+-]{0,30}") {
            if let Ok(email) = Email::parse(&raw) {
                prop_assert_eq!(email.as_str().matches('@').count(), 1);
                prop_assert!(email.as_str().len() <= Email::MAX_LEN);
            }
        }

        #[test]
        fn generated_addresses_are_accepted(
            local in "[a-z0-9][a-z0-9._+-]{0,20}[a-z0-9]",
            domain in "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?",
            tld in "[a-z]{2,6}",
        ) {
            prop_assume!(!local.contains(".."));
            let raw = format!("{local}@{domain}.{tld}");
            prop_assert!(Email::parse(&raw).is_ok(), "{}", raw);
        }
    }
}
