//! Password hashing with argon2id (the crate's defaults: 19 MiB, 2 passes, 1 lane — OWASP's
//! minimum recommendation), always off the async worker threads.

use std::sync::LazyLock;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use secrecy::{ExposeSecret, SecretString};

use crate::domain::Password;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password hashing failed")]
    Hashing,
    #[error("the password hashing task did not complete")]
    Task,
}

/// A PHC string for a new password, with a fresh random salt.
pub async fn hash_password(password: Password) -> Result<SecretString, PasswordError> {
    // ~tens of milliseconds of CPU: on an async worker it would stall every other request.
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.expose().as_bytes())
            .map(|hash| SecretString::from(hash.to_string()))
            .map_err(|_| PasswordError::Hashing)
    })
    .await
    .map_err(|_| PasswordError::Task)?
}

/// Whether `password` matches `hash`. `None` (no such user) still costs one full verification
/// against a fixed hash, so that a login for an unknown username takes as long as one with a
/// wrong password and the response time does not reveal which usernames exist.
///
/// A stored hash that is not a valid PHC string (the bank's own user has `!`) never matches.
pub async fn verify_password(
    password: Password,
    hash: Option<SecretString>,
) -> Result<bool, PasswordError> {
    tokio::task::spawn_blocking(move || {
        let argon2 = Argon2::default();
        match hash {
            Some(hash) => Ok(argon2
                .verify_password(password.expose().as_bytes(), hash.expose_secret())
                .is_ok()),
            None => {
                let _ = argon2.verify_password(password.expose().as_bytes(), DUMMY_HASH.as_str());
                Ok(false)
            }
        }
    })
    .await
    .map_err(|_| PasswordError::Task)?
}

/// A hash of a random password nobody knows, computed once, with the same parameters as real
/// hashes so that checking against it costs the same.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let random = uuid::Uuid::new_v4().to_string();
    Argon2::default()
        .hash_password(random.as_bytes())
        .map(|hash| hash.to_string())
        .unwrap_or_default()
});

#[cfg(test)]
mod tests {
    use super::*;

    fn password(raw: &str) -> Password {
        Password::parse(raw).unwrap()
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_nothing_else() {
        let hash = hash_password(password("correct horse")).await.unwrap();
        assert!(hash.expose_secret().starts_with("$argon2id$"));
        assert!(!hash.expose_secret().contains("correct horse"));
        assert!(
            verify_password(password("correct horse"), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !verify_password(password("correct horsE"), Some(hash))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn the_same_password_hashes_differently_each_time() {
        let a = hash_password(password("same password")).await.unwrap();
        let b = hash_password(password("same password")).await.unwrap();
        assert_ne!(a.expose_secret(), b.expose_secret(), "salted");
    }

    #[tokio::test]
    async fn unknown_users_and_unusable_hashes_never_match() {
        assert!(!verify_password(password("whatever1"), None).await.unwrap());
        let bank = SecretString::from("!");
        assert!(
            !verify_password(password("whatever1"), Some(bank))
                .await
                .unwrap()
        );
    }
}
