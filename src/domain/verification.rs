//! The secret of an email verification.

use std::fmt::{self, Write};

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::ValidationError;

/// 32 bytes from the operating system's CSPRNG, written as 64 lowercase hex characters: what the
/// verification link carries. The database keeps only `hash()`.
pub struct VerificationCode(SecretString);

impl VerificationCode {
    pub const LEN: usize = 64;

    /// A fresh code. The OS random source failing is not something to carry on from.
    pub fn generate() -> Self {
        let mut bytes = [0u8; Self::LEN / 2];
        getrandom::fill(&mut bytes).expect("the operating system's random source works");
        Self(SecretString::from(hex(&bytes)))
    }

    /// A code as a client sent it back. Anything but 64 hex characters cannot be one of ours.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        if raw.len() == Self::LEN && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(SecretString::from(raw.to_ascii_lowercase())))
        } else {
            Err(ValidationError::new(
                "secret_code",
                "must be the 64-character code from the verification email",
            ))
        }
    }

    /// SHA-256 of the code, hex: what `verify_emails.secret_code_hash` holds. A plain hash is
    /// enough: the code has 256 random bits, so there is nothing to brute-force.
    pub fn hash(&self) -> String {
        hex(&Sha256::digest(self.0.expose_secret().as_bytes()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for VerificationCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VerificationCode(<redacted>)")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_codes_are_64_hex_characters_and_differ() {
        let a = VerificationCode::generate();
        let b = VerificationCode::generate();
        assert_eq!(a.expose().len(), 64);
        assert!(a.expose().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.expose(), b.expose());
        assert_eq!(
            VerificationCode::parse(a.expose()).unwrap().hash(),
            a.hash()
        );
    }

    #[test]
    fn the_hash_is_sha256_hex_and_case_insensitive_in_the_code() {
        let code = VerificationCode::parse(&"A".repeat(64)).unwrap();
        assert_eq!(
            code.hash(),
            VerificationCode::parse(&"a".repeat(64)).unwrap().hash()
        );
        assert_eq!(code.hash().len(), 64);
        assert_ne!(code.hash(), code.expose());
    }

    #[test]
    fn anything_else_is_refused_and_never_printed() {
        for bad in ["", "abc", &"g".repeat(64), &"a".repeat(65)] {
            assert_eq!(
                VerificationCode::parse(bad).unwrap_err().field,
                "secret_code"
            );
        }
        let code = VerificationCode::generate();
        assert!(!format!("{code:?}").contains(code.expose()));
    }
}
