//! The outbox worker: delivers the verification emails that user sign-ups and email changes
//! queued in `email_outbox`, in the same transaction as the user row.
//!
//! The worker is `outbox::run` (shared with webhook deliveries). Each round claims a batch
//! (`Store::claim_due_emails`: `FOR UPDATE SKIP LOCKED`, then a lease), sends each email once, and
//! records the result: sent (the code is forgotten), retry later with
//! exponential backoff, or abandoned (a permanent refusal, too many attempts, or a code that has
//! expired anyway). Any number of workers — several tasks, several replicas — can run at once:
//! a claimed email is invisible to the others for the lease, and one attempt (bounded by
//! `send_timeout`) always ends well within it.
//!
//! Delivery is at least once: if the process dies after the mail server accepted an email but
//! before `mark_email_sent` commits, the email is sent again when its lease runs out.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;

use super::{MailError, MailSender, OutgoingEmail};
use crate::domain::DueEmail;
pub use crate::outbox::Round;
use crate::outbox::{self, Attempted, Outbox, Polling};
use crate::store::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct OutboxSettings {
    /// How long to wait before looking again when nothing was due.
    pub poll_interval: Duration,
    /// Emails claimed per round.
    pub batch: i64,
    /// How long a claimed email stays invisible to other workers.
    pub lease: Duration,
    /// Longest one send may take; a slower one counts as a transient failure.
    pub send_timeout: Duration,
    /// Wait after the first failure; doubled after each further one, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Attempts before giving up.
    pub max_attempts: i32,
    /// Where the verification link points: the HTTP API's public address.
    pub link_base: String,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            batch: 20,
            lease: Duration::from_secs(5 * 60),
            send_timeout: Duration::from_secs(60),
            backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(5 * 60),
            max_attempts: 8,
            link_base: "http://localhost:8080".to_owned(),
        }
    }
}

impl OutboxSettings {
    /// The wait before attempt `attempt + 1`.
    pub fn backoff_after(&self, attempt: i32) -> Duration {
        outbox::backoff(self.backoff, self.max_backoff, attempt)
    }
}

/// The verification email for `due`: plain text, with the link to `GET /v1/verify_email`.
pub fn verification_email(due: &DueEmail, link_base: &str) -> OutgoingEmail {
    let link = format!(
        "{}/v1/verify_email?email_id={}&secret_code={}",
        link_base.trim_end_matches('/'),
        due.email_id,
        due.code.expose()
    );
    OutgoingEmail {
        to: due.to.clone(),
        subject: "Verify your simplebank email address".to_owned(),
        body: format!(
            "Hello {},\n\n\
             Please confirm that this is your email address by opening this link:\n\n\
             {link}\n\n\
             The link works once, until {} UTC. If you did not sign up for simplebank, ignore \
             this email.\n",
            due.username.as_str(),
            due.expires_at.format("%Y-%m-%d %H:%M"),
        ),
    }
}

#[derive(Clone)]
pub struct OutboxWorker {
    store: Store,
    sender: Arc<dyn MailSender>,
    settings: OutboxSettings,
    /// Rung when this process queues an email: a round starts at once instead of at the poll.
    wakeup: Arc<tokio::sync::Notify>,
}

impl OutboxWorker {
    pub fn new(store: Store, sender: Arc<dyn MailSender>, settings: OutboxSettings) -> Self {
        Self {
            store,
            sender,
            settings,
            wakeup: Arc::default(),
        }
    }

    /// Start a round as soon as `wakeup` is notified (`BankService::mail_queued`). Polling
    /// stays: other replicas' emails, and retries that come due, are found that way.
    pub fn with_wakeup(mut self, wakeup: Arc<tokio::sync::Notify>) -> Self {
        self.wakeup = wakeup;
        self
    }

    fn polling(&self) -> Polling {
        Polling {
            interval: self.settings.poll_interval,
            batch: self.settings.batch,
            lease: self.settings.lease,
        }
    }

    /// Delivers until `stopped` (`outbox::run`).
    pub async fn run(self, stopped: watch::Receiver<bool>) {
        let (polling, wakeup) = (self.polling(), Arc::clone(&self.wakeup));
        outbox::run(self, polling, wakeup, stopped).await;
    }

    /// One round: claim what is due and try each email once.
    pub async fn deliver_due(&self) -> Result<Round, StoreError> {
        outbox::round(self, self.polling()).await
    }
}

#[async_trait::async_trait]
impl Outbox for OutboxWorker {
    type Item = DueEmail;
    const NAME: &'static str = "email outbox";

    async fn claim(&self, batch: i64, lease: Duration) -> Result<Vec<DueEmail>, StoreError> {
        self.store.claim_due_emails(batch, lease).await
    }

    async fn attempt(&self, due: DueEmail) -> Result<Attempted, StoreError> {
        let due = &due;
        if due.expires_at <= Utc::now() {
            outbox::record(|| {
                self.store.mark_email_failed(
                    due.outbox_id,
                    "the code expired before delivery",
                    None,
                )
            })
            .await?;
            tracing::warn!(
                outbox_id = due.outbox_id,
                "email outbox: code expired undelivered; abandoned"
            );
            return Ok(Attempted::Abandoned);
        }
        let email = verification_email(due, &self.settings.link_base);
        let sent = tokio::time::timeout(self.settings.send_timeout, self.sender.send(&email))
            .await
            .unwrap_or_else(|_| Err(MailError::transient("timed out")));
        match sent {
            Ok(()) => {
                outbox::record(|| self.store.mark_email_sent(due.outbox_id)).await?;
                tracing::info!(
                    outbox_id = due.outbox_id,
                    attempt = due.attempt,
                    "email sent"
                );
                Ok(Attempted::Sent)
            }
            Err(error) if error.permanent || due.attempt >= self.settings.max_attempts => {
                outbox::record(|| {
                    self.store
                        .mark_email_failed(due.outbox_id, &error.message, None)
                })
                .await?;
                tracing::warn!(
                    outbox_id = due.outbox_id,
                    attempt = due.attempt,
                    %error,
                    "email outbox: giving up"
                );
                Ok(Attempted::Abandoned)
            }
            Err(error) => {
                let wait = outbox::jitter(self.settings.backoff_after(due.attempt));
                let retry_at =
                    Utc::now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
                outbox::record(|| {
                    self.store
                        .mark_email_failed(due.outbox_id, &error.message, Some(retry_at))
                })
                .await?;
                tracing::warn!(
                    outbox_id = due.outbox_id,
                    attempt = due.attempt,
                    retry_in_s = wait.as_secs_f64(),
                    %error,
                    "email outbox: send failed; will retry"
                );
                Ok(Attempted::Retrying)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Email, Username, VerificationCode};

    #[test]
    fn the_email_carries_a_working_link_and_says_until_when() {
        let code = VerificationCode::generate();
        let expected_code = code.expose().to_owned();
        let due = DueEmail {
            outbox_id: 1,
            attempt: 1,
            email_id: 42,
            username: Username::parse("alice").unwrap(),
            to: Email::parse("alice@example.com").unwrap(),
            code,
            expires_at: "2026-11-22T10:15:00Z".parse().unwrap(),
        };
        let email = verification_email(&due, "https://bank.example/");
        assert_eq!(email.to.as_str(), "alice@example.com");
        assert!(email.body.contains(&format!(
            "https://bank.example/v1/verify_email?email_id=42&secret_code={expected_code}\n"
        )));
        assert!(email.body.contains("until 2026-11-22 10:15 UTC"));
        assert!(!format!("{email:?}").contains(&expected_code));
    }
}
