//! Access and refresh tokens: PASETO v4.local (encrypted and authenticated with one 32-byte key).
//!
//! Claims use PASETO's registered names where one exists: `jti` (token id), `sub` (username),
//! `iat`, `exp` (RFC 3339), plus `sid` (the login session both tokens belong to), `role` and
//! `typ` (`access` | `refresh`).
//!
//! The type is enforced twice. It is a claim, and it is also the token's *implicit assertion*:
//! authenticated but not stored in the token, so a refresh token presented as an access token
//! fails authentication outright, before any claim is even read.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use pasetors::keys::SymmetricKey;
use pasetors::token::UntrustedToken;
use pasetors::version4::{LocalToken, V4};
use pasetors::{Local, version4};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{Role, Username};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    /// Short-lived; authenticates requests.
    Access,
    /// Long-lived; only renews access tokens, and only while its session is not revoked.
    Refresh,
}

impl TokenType {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenType::Access => "access",
            TokenType::Refresh => "refresh",
        }
    }

    fn implicit_assertion(self) -> &'static [u8] {
        match self {
            TokenType::Access => b"simplebank.v1.access",
            TokenType::Refresh => b"simplebank.v1.refresh",
        }
    }
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub id: Uuid,
    /// The login session: a refresh token is checked against it, and an access token names it so
    /// that a password change can revoke every session but the caller's.
    pub session_id: Uuid,
    pub username: Username,
    pub role: Role,
    pub token_type: TokenType,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A freshly made token and its claims. The token is secret-wrapped so it cannot end up in a log.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: SecretString,
    pub claims: Claims,
}

/// Why a token was refused. Every variant means "unauthenticated" to a client; they are told
/// apart for logs and tests only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a v4.local PASETO")]
    Malformed,
    /// Tampered with, made with another key, or of the other type.
    #[error("the token failed authentication")]
    Invalid,
    #[error("the token has expired")]
    Expired,
    #[error("the token is of the wrong type")]
    WrongType,
    #[error("the token key must be exactly {} bytes", TokenMaker::KEY_LEN)]
    InvalidKey,
    #[error("the token could not be created")]
    Encoding,
}

/// The wire form of the claims.
#[derive(Serialize, Deserialize)]
struct WireClaims {
    jti: Uuid,
    sid: Uuid,
    sub: String,
    role: String,
    typ: String,
    iat: DateTime<Utc>,
    exp: DateTime<Utc>,
}

/// Makes and verifies tokens with one symmetric key.
pub struct TokenMaker {
    key: SymmetricKey<V4>,
}

impl fmt::Debug for TokenMaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenMaker { key: <redacted> }")
    }
}

impl TokenMaker {
    pub const KEY_LEN: usize = 32;

    pub fn new(key: &[u8]) -> Result<Self, TokenError> {
        if key.len() != Self::KEY_LEN {
            return Err(TokenError::InvalidKey);
        }
        let key = SymmetricKey::<V4>::from(key).map_err(|_| TokenError::InvalidKey)?;
        Ok(Self { key })
    }

    /// A new token for `username` in `session_id`, valid from `now` for `lifetime`, with a fresh
    /// random id.
    pub fn issue(
        &self,
        session_id: Uuid,
        username: &Username,
        role: Role,
        token_type: TokenType,
        lifetime: Duration,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken, TokenError> {
        let lifetime = chrono::Duration::from_std(lifetime).map_err(|_| TokenError::Encoding)?;
        let claims = Claims {
            id: Uuid::new_v4(),
            session_id,
            username: username.clone(),
            role,
            token_type,
            issued_at: now,
            expires_at: now
                .checked_add_signed(lifetime)
                .ok_or(TokenError::Encoding)?,
        };
        let wire = WireClaims {
            jti: claims.id,
            sid: claims.session_id,
            sub: claims.username.as_str().to_owned(),
            role: role.as_str().to_owned(),
            typ: token_type.as_str().to_owned(),
            iat: claims.issued_at,
            exp: claims.expires_at,
        };
        let payload = serde_json::to_vec(&wire).map_err(|_| TokenError::Encoding)?;
        let token = LocalToken::encrypt(
            &self.key,
            &payload,
            None,
            Some(token_type.implicit_assertion()),
        )
        .map_err(|_| TokenError::Encoding)?;
        Ok(IssuedToken {
            token: SecretString::from(token),
            claims,
        })
    }

    /// The claims of `token` if it is authentic, of the `expected` type and not expired at `now`.
    pub fn verify(
        &self,
        token: &str,
        expected: TokenType,
        now: DateTime<Utc>,
    ) -> Result<Claims, TokenError> {
        let untrusted =
            UntrustedToken::<Local, V4>::try_from(token).map_err(|_| TokenError::Malformed)?;
        let trusted = version4::LocalToken::decrypt(
            &self.key,
            &untrusted,
            None,
            Some(expected.implicit_assertion()),
        )
        .map_err(|_| TokenError::Invalid)?;
        // Authentic from here on: the payload was written by us, but parse it strictly anyway.
        let wire: WireClaims =
            serde_json::from_str(trusted.payload()).map_err(|_| TokenError::Invalid)?;
        if wire.typ != expected.as_str() {
            return Err(TokenError::WrongType);
        }
        if now >= wire.exp {
            return Err(TokenError::Expired);
        }
        Ok(Claims {
            id: wire.jti,
            session_id: wire.sid,
            username: Username::parse(&wire.sub).map_err(|_| TokenError::Invalid)?,
            role: wire.role.parse().map_err(|_| TokenError::Invalid)?,
            token_type: expected,
            issued_at: wire.iat,
            expires_at: wire.exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    const KEY: &[u8; 32] = b"0123456789abcdef0123456789abcdef";
    const MINUTE: Duration = Duration::from_secs(60);

    fn maker() -> TokenMaker {
        TokenMaker::new(KEY).unwrap()
    }

    fn alice() -> Username {
        Username::parse("alice").unwrap()
    }

    fn issue(token_type: TokenType, now: DateTime<Utc>) -> String {
        maker()
            .issue(
                Uuid::nil(),
                &alice(),
                Role::Banker,
                token_type,
                15 * MINUTE,
                now,
            )
            .unwrap()
            .token
            .expose_secret()
            .to_owned()
    }

    #[test]
    fn a_token_verifies_to_the_claims_it_was_issued_with() {
        let now = Utc::now();
        let issued = maker()
            .issue(
                Uuid::nil(),
                &alice(),
                Role::Banker,
                TokenType::Access,
                15 * MINUTE,
                now,
            )
            .unwrap();
        let token = issued.token.expose_secret();
        assert!(token.starts_with("v4.local."));
        let claims = maker().verify(token, TokenType::Access, now).unwrap();
        assert_eq!(claims, issued.claims);
        assert_eq!(
            claims.expires_at - claims.issued_at,
            chrono::Duration::minutes(15)
        );
        // Encrypted, not just signed: the username is not readable in the token.
        assert!(!token.contains("alice"));
    }

    #[test]
    fn every_token_gets_its_own_id() {
        let now = Utc::now();
        let a = maker()
            .issue(
                Uuid::nil(),
                &alice(),
                Role::Depositor,
                TokenType::Refresh,
                MINUTE,
                now,
            )
            .unwrap();
        let b = maker()
            .issue(
                Uuid::nil(),
                &alice(),
                Role::Depositor,
                TokenType::Refresh,
                MINUTE,
                now,
            )
            .unwrap();
        assert_ne!(a.claims.id, b.claims.id);
    }

    #[test]
    fn an_expired_token_is_refused() {
        let issued_at = Utc::now() - chrono::Duration::minutes(20);
        let token = issue(TokenType::Access, issued_at);
        assert_eq!(
            maker().verify(&token, TokenType::Access, Utc::now()),
            Err(TokenError::Expired)
        );
        // Valid right before its expiry, refused at the instant of it.
        let expiry = issued_at + chrono::Duration::minutes(15);
        let just_before = expiry - chrono::Duration::milliseconds(1);
        assert!(
            maker()
                .verify(&token, TokenType::Access, just_before)
                .is_ok()
        );
        assert_eq!(
            maker().verify(&token, TokenType::Access, expiry),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn a_token_of_the_other_type_is_refused_both_ways() {
        let now = Utc::now();
        let refresh = issue(TokenType::Refresh, now);
        let access = issue(TokenType::Access, now);
        assert_eq!(
            maker().verify(&refresh, TokenType::Access, now),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            maker().verify(&access, TokenType::Refresh, now),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn a_tampered_token_is_refused() {
        let now = Utc::now();
        let token = issue(TokenType::Access, now);
        let prefix = "v4.local.".len();
        for position in [prefix, prefix + 40, token.len() - 1] {
            let mut bytes = token.clone().into_bytes();
            bytes[position] = if bytes[position] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            let result = maker().verify(&tampered, TokenType::Access, now);
            assert!(
                matches!(result, Err(TokenError::Invalid | TokenError::Malformed)),
                "position {position}: {result:?}"
            );
        }
        let truncated = &token[..token.len() - 10];
        assert!(maker().verify(truncated, TokenType::Access, now).is_err());
    }

    #[test]
    fn a_token_made_with_another_key_is_refused() {
        let now = Utc::now();
        let token = issue(TokenType::Access, now);
        let other = TokenMaker::new(b"fedcba9876543210fedcba9876543210").unwrap();
        assert_eq!(
            other.verify(&token, TokenType::Access, now),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let now = Utc::now();
        for junk in [
            "",
            "not a token",
            "v4.local.",
            "v4.local.!!!!",
            "v4.public.eyJzdWIiOiJhbGljZSJ9",
            "v2.local.AAAA",
            "Bearer v4.local.AAAA",
        ] {
            assert!(
                matches!(
                    maker().verify(junk, TokenType::Access, now),
                    Err(TokenError::Malformed | TokenError::Invalid)
                ),
                "{junk:?}"
            );
        }
    }

    #[test]
    fn keys_must_be_exactly_32_bytes() {
        assert_eq!(
            TokenMaker::new(b"short").unwrap_err(),
            TokenError::InvalidKey
        );
        assert_eq!(
            TokenMaker::new(&[7u8; 33]).unwrap_err(),
            TokenError::InvalidKey
        );
        assert!(!format!("{:?}", maker()).contains("0123"));
    }
}
