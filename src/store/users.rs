//! Users.

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::verification::VERIFY;
use super::{BANK_USERNAME, Entity, Store, StoreError, decode};
use crate::domain::{
    Email, FullName, NewUser, NewVerification, Role, User, UserUpdate, Username, VerificationCode,
    VerifyOutcome,
};

/// The column list every query of this table returns (a macro so queries stay `&'static str`).
macro_rules! user_columns {
    () => {
        "username, hashed_password, full_name, email, role, is_email_verified, password_changed_at, created_at"
    };
}

/// The CTEs that start an email verification for the rows of `$source` (username, email) and
/// queue its email: the code's hash is `$6`, its lifetime `$7` seconds, the code itself `$8`.
/// Shared by sign-up and email change, which bind those three the same way (`bind_verification`).
macro_rules! verification_ctes {
    ($source:literal) => {
        concat!(
            "verification AS ( \
                 INSERT INTO verify_emails (username, email, secret_code_hash, expired_at) \
                 SELECT username, email, $6, now() + make_interval(secs => $7) FROM ",
            $source,
            " RETURNING id \
             ), queued AS ( \
                 INSERT INTO email_outbox (verify_email_id, secret_code) \
                 SELECT id, $8 FROM verification \
             )"
        )
    };
}

/// Users and their email verification, as the service sees them (`BankService`'s port; the
/// unit tests mock it).
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Creates the user, its email verification and the outbox row that will deliver the code,
    /// in one statement (so one transaction): a user never exists without its verification
    /// email queued. Fails with `AlreadyExists(Username)` or `AlreadyExists(Email)` (any case).
    async fn create_user(
        &self,
        new: &NewUser,
        verification: &NewVerification,
    ) -> Result<User, StoreError>;
    async fn get_user(&self, username: &Username) -> Result<User, StoreError>;
    /// Applies the fields of `update` that are set, in one statement. `old` locks the row and
    /// reads the address before the change; the UPDATE joins it so that it runs first (a row
    /// locked *after* this statement updated it would be skipped, and the change missed).
    /// A new password also stamps
    /// `password_changed_at` and revokes every session of the user but `keep_session`, in this
    /// same statement: a password change never commits without the revocation. A new email (other than a change of letter case) clears
    /// `is_email_verified`, starts a new verification with its email queued, and abandons the
    /// emails still queued for the old address. Fails with `AlreadyExists(Email)` if the address
    /// is taken.
    async fn update_user(
        &self,
        username: &Username,
        update: &UserUpdate,
        verification: &NewVerification,
    ) -> Result<User, StoreError>;
    /// Sets a user's role (the `user set-role` command, and bankers later). The bank's own
    /// settlement user is not a person and keeps its role: it reads as not found.
    async fn set_user_role(&self, username: &Username, role: Role) -> Result<User, StoreError>;
    /// Checks `code` against verification `email_id` and, if it is right, unused and unexpired,
    /// verifies the user's address.
    async fn verify_email(
        &self,
        email_id: i64,
        code: &VerificationCode,
    ) -> Result<VerifyOutcome, StoreError>;
}

#[async_trait]
impl UserStore for Store {
    async fn create_user(
        &self,
        new: &NewUser,
        verification: &NewVerification,
    ) -> Result<User, StoreError> {
        let query = sqlx::query(concat!(
            "WITH u AS ( \
                 INSERT INTO users (username, hashed_password, full_name, email, role) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING ",
            user_columns!(),
            "), ",
            verification_ctes!("u"),
            " SELECT * FROM u"
        ))
        .bind(new.username.as_str())
        .bind(new.hashed_password.expose_secret())
        .bind(new.full_name.as_str())
        .bind(new.email.as_str())
        .bind(new.role.as_str());
        let row = bind_verification(query, verification)
            .fetch_one(&self.pool)
            .await?;
        user_from_row(&row)
    }
    async fn get_user(&self, username: &Username) -> Result<User, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE username = $1"
        ))
        .bind(username.as_str())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound(Entity::User))?;
        user_from_row(&row)
    }
    async fn update_user(
        &self,
        username: &Username,
        update: &UserUpdate,
        verification: &NewVerification,
    ) -> Result<User, StoreError> {
        let query = sqlx::query(concat!(
            "WITH old AS MATERIALIZED ( \
                 SELECT email AS old_email FROM users WHERE username = $1 AND username <> $5 \
                 FOR NO KEY UPDATE \
             ), u AS ( \
                 UPDATE users SET \
                     full_name = coalesce($2, full_name), \
                     is_email_verified = is_email_verified AND ($3::text IS NULL OR lower($3) = lower(email)), \
                     email = coalesce($3, email), \
                     hashed_password = coalesce($4, hashed_password), \
                     password_changed_at = CASE WHEN $4::text IS NULL THEN password_changed_at ELSE now() END \
                 FROM old WHERE username = $1 RETURNING ",
            user_columns!(),
            "), revoked AS ( \
                 UPDATE sessions s SET is_blocked = true FROM u \
                 WHERE $4::text IS NOT NULL AND s.username = u.username \
                   AND NOT s.is_blocked AND s.id IS DISTINCT FROM $9 \
             ), changed AS ( \
                 SELECT u.username, u.email FROM u, old \
                 WHERE $3::text IS NOT NULL AND lower($3) <> lower(old.old_email) \
             ), superseded AS ( \
                 UPDATE email_outbox o \
                 SET abandoned_at = now(), secret_code = NULL, last_error = 'address changed' \
                 FROM verify_emails v, changed \
                 WHERE v.id = o.verify_email_id AND v.username = changed.username \
                   AND o.sent_at IS NULL AND o.abandoned_at IS NULL \
             ), ",
            verification_ctes!("changed"),
            " SELECT * FROM u"
        ))
        .bind(username.as_str())
        .bind(update.full_name.as_ref().map(FullName::as_str))
        .bind(update.email.as_ref().map(Email::as_str))
        .bind(update.hashed_password.as_ref().map(|h| h.expose_secret()))
        .bind(BANK_USERNAME);
        let row = bind_verification(query, verification)
            .bind(update.keep_session)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound(Entity::User))?;
        user_from_row(&row)
    }
    async fn set_user_role(&self, username: &Username, role: Role) -> Result<User, StoreError> {
        let row = sqlx::query(concat!(
            "UPDATE users SET role = $2 WHERE username = $1 AND username <> $3 RETURNING ",
            user_columns!()
        ))
        .bind(username.as_str())
        .bind(role.as_str())
        .bind(BANK_USERNAME)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound(Entity::User))?;
        user_from_row(&row)
    }
    async fn verify_email(
        &self,
        email_id: i64,
        code: &VerificationCode,
    ) -> Result<VerifyOutcome, StoreError> {
        let row = sqlx::query(VERIFY)
            .bind(email_id)
            .bind(code.hash())
            .fetch_one(&self.pool)
            .await?;
        let flag = |column: &str| -> Result<bool, StoreError> {
            Ok(row.try_get::<Option<bool>, _>(column)?.unwrap_or(false))
        };
        Ok(if !flag("found")? {
            VerifyOutcome::NotFound
        } else if !flag("code_ok")? {
            VerifyOutcome::WrongCode
        } else if flag("is_used")? {
            VerifyOutcome::Used
        } else if flag("expired")? {
            VerifyOutcome::Expired
        } else if flag("verified")? {
            VerifyOutcome::Verified
        } else {
            // Consumed, but the user's address is another one now.
            VerifyOutcome::Superseded
        })
    }
}

/// Binds `$6`..`$8` of `verification_ctes!`.
fn bind_verification<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    verification: &'q NewVerification,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(verification.code.hash())
        .bind(verification.valid_for.as_secs_f64())
        .bind(verification.code.expose())
}

fn user_from_row(row: &PgRow) -> Result<User, StoreError> {
    Ok(User {
        username: decode(row, "username", |s: String| Username::parse(&s))?,
        hashed_password: SecretString::from(row.try_get::<String, _>("hashed_password")?),
        full_name: decode(row, "full_name", |s: String| FullName::parse(&s))?,
        email: decode(row, "email", |s: String| Email::parse(&s))?,
        role: decode(row, "role", |s: String| s.parse())?,
        is_email_verified: row.try_get("is_email_verified")?,
        password_changed_at: row.try_get("password_changed_at")?,
        created_at: row.try_get("created_at")?,
    })
}
