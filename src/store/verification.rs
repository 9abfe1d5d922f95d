//! Email verification: checking a code, and the outbox the delivery worker drains.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Store, StoreError, decode};
use crate::domain::{DueEmail, Email, Username, VerificationCode};

/// Looks the verification up under a row lock, consumes it if the code is right, unused and
/// unexpired, and marks the user verified if the address is still theirs — one statement, so
/// two clicks on the same link cannot both succeed. The verdict columns say which rule failed.
pub(super) const VERIFY: &str = r#"
WITH target AS MATERIALIZED (
    SELECT id, username, email,
           secret_code_hash = $2 AS code_ok,
           is_used,
           expired_at <= now() AS expired
    FROM verify_emails
    WHERE id = $1
    FOR NO KEY UPDATE
),
consumed AS (
    UPDATE verify_emails v SET is_used = true
    FROM target t
    WHERE v.id = t.id AND t.code_ok AND NOT t.is_used AND NOT t.expired
    RETURNING v.username, v.email
),
verified AS (
    UPDATE users u SET is_email_verified = true
    FROM consumed c
    WHERE u.username = c.username AND lower(u.email) = lower(c.email)
    RETURNING u.username
)
SELECT t.id IS NOT NULL AS found, t.code_ok, t.is_used, t.expired,
       EXISTS (SELECT 1 FROM consumed) AS consumed,
       EXISTS (SELECT 1 FROM verified) AS verified
FROM (VALUES (1)) AS one (x)
LEFT JOIN target t ON true
"#;

/// Claims up to `$1` due emails for one delivery attempt each. `FOR UPDATE SKIP LOCKED` lets
/// several workers (several replicas) claim at once without waiting on or taking each other's
/// rows; moving `next_attempt_at` forward by the lease (`$2` seconds) keeps a claimed row from
/// being claimed again after this statement commits, while the email is being sent.
const CLAIM: &str = r#"
UPDATE email_outbox o
SET attempts = o.attempts + 1,
    next_attempt_at = now() + make_interval(secs => $2)
FROM (
    SELECT id FROM email_outbox
    WHERE sent_at IS NULL AND abandoned_at IS NULL AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
) due, verify_emails v
WHERE o.id = due.id AND v.id = o.verify_email_id
RETURNING o.id, o.attempts, o.secret_code, v.id AS email_id, v.username, v.email, v.expired_at
"#;

impl Store {
    /// Claims up to `batch` due verification emails; see `CLAIM`. A claimed email is not
    /// offered again for `lease`, so `lease` must outlast one delivery attempt.
    pub async fn claim_due_emails(
        &self,
        batch: i64,
        lease: Duration,
    ) -> Result<Vec<DueEmail>, StoreError> {
        let rows = sqlx::query(CLAIM)
            .bind(batch)
            .bind(lease.as_secs_f64())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(DueEmail {
                    outbox_id: row.try_get("id")?,
                    attempt: row.try_get("attempts")?,
                    email_id: row.try_get("email_id")?,
                    username: decode(row, "username", |s: String| Username::parse(&s))?,
                    to: decode(row, "email", |s: String| Email::parse(&s))?,
                    code: decode(row, "secret_code", |s: Option<String>| {
                        VerificationCode::parse(s.as_deref().unwrap_or_default())
                    })?,
                    expires_at: row.try_get("expired_at")?,
                })
            })
            .collect()
    }

    /// The email went out: forget its code. Only a row still pending is settled, so a late
    /// report from a worker whose lease ran out cannot undo what another worker recorded.
    pub async fn mark_email_sent(&self, outbox_id: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE email_outbox SET sent_at = now(), secret_code = NULL, last_error = NULL \
             WHERE id = $1 AND sent_at IS NULL AND abandoned_at IS NULL",
        )
        .bind(outbox_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The attempt failed with `error`: try again at `retry_at`, or give up (`None`).
    pub async fn mark_email_failed(
        &self,
        outbox_id: i64,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let query = match retry_at {
            Some(at) => sqlx::query(
                "UPDATE email_outbox SET last_error = $2, next_attempt_at = $3 \
                 WHERE id = $1 AND sent_at IS NULL AND abandoned_at IS NULL",
            )
            .bind(outbox_id)
            .bind(error)
            .bind(at),
            None => sqlx::query(
                "UPDATE email_outbox \
                 SET last_error = $2, abandoned_at = now(), secret_code = NULL \
                 WHERE id = $1 AND sent_at IS NULL AND abandoned_at IS NULL",
            )
            .bind(outbox_id)
            .bind(error),
        };
        query.execute(&self.pool).await?;
        Ok(())
    }
}
