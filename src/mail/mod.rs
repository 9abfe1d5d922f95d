//! Sending email: the `MailSender` trait, its implementations (SMTP; for development a log
//! sender and a file sender that also keeps each email on disk), and the outbox worker that
//! delivers verification emails.

mod file;
mod log;
mod outbox;
mod smtp;

use std::fmt;

use async_trait::async_trait;

pub use self::log::LogSender;
pub use file::FileSender;
pub use outbox::{OutboxSettings, OutboxWorker, Round, verification_email};
pub use smtp::{SmtpSender, SmtpSettings, SmtpTls};

use crate::domain::Email;

/// One plain-text email.
#[derive(Clone)]
pub struct OutgoingEmail {
    pub to: Email,
    pub subject: String,
    /// May carry a secret (a verification link): not part of `Debug`.
    pub body: String,
}

impl fmt::Debug for OutgoingEmail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutgoingEmail")
            .field("to", &self.to)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// Why an email was not sent. `permanent` failures (the server refused the recipient or the
/// message) are not retried; the others are, with backoff.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct MailError {
    pub message: String,
    pub permanent: bool,
}

impl MailError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: false,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: true,
        }
    }
}

/// Where emails go. Implementations must be safe to call from several tasks at once.
#[async_trait]
pub trait MailSender: Send + Sync {
    async fn send(&self, email: &OutgoingEmail) -> Result<(), MailError>;
}
