//! The development sender: writes the email to the log instead of sending it, so a developer
//! can click the verification link without a mail server. It logs the link — a secret — so it
//! is the default only in development; production uses it only when told to (`MAIL_SENDER=log`).

use async_trait::async_trait;

use super::{MailError, MailSender, OutgoingEmail};

#[derive(Debug, Default, Clone, Copy)]
pub struct LogSender;

#[async_trait]
impl MailSender for LogSender {
    async fn send(&self, email: &OutgoingEmail) -> Result<(), MailError> {
        tracing::info!(
            to = %email.to.as_str(),
            subject = %email.subject,
            // Debug: the body's line breaks escaped, so one email is one log line.
            body = ?email.body,
            "email (log sender: not sent)"
        );
        Ok(())
    }
}
