//! The production sender: SMTP through lettre, TLS by rustls (no system OpenSSL).

use std::time::Duration;

use async_trait::async_trait;
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};

use super::{MailError, MailSender, OutgoingEmail};

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (port 587); refused if the server cannot.
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a local test server such as mailpit.
    None,
}

impl SmtpTls {
    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::StartTls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        }
    }
}

#[derive(Debug)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// `From:` of every email, e.g. `simplebank <no-reply@example.com>`.
    pub from: Mailbox,
}

/// How long one SMTP conversation may take. The outbox lease is longer, so a slow server cannot
/// make a second worker pick the same email up while this one is still talking.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

pub struct SmtpSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpSender {
    pub fn new(settings: &SmtpSettings) -> Result<Self, MailError> {
        let builder = match settings.tls {
            SmtpTls::StartTls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&settings.host)
            }
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&settings.host),
            SmtpTls::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                settings.host.as_str(),
            )),
        }
        .map_err(|e| MailError::permanent(format!("SMTP settings: {e}")))?;
        let mut builder = builder.port(settings.port).timeout(Some(SMTP_TIMEOUT));
        if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_owned(),
            ));
        }
        Ok(Self {
            transport: builder.build(),
            from: settings.from.clone(),
        })
    }
}

#[async_trait]
impl MailSender for SmtpSender {
    async fn send(&self, email: &OutgoingEmail) -> Result<(), MailError> {
        let to: Mailbox = email
            .to
            .as_str()
            .parse()
            .map_err(|e| MailError::permanent(format!("recipient address: {e}")))?;
        let body = plain_body(&email.body);
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(&email.subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| MailError::permanent(format!("building the message: {e}")))?;
        self.transport.send(message).await.map(drop).map_err(|e| {
            // 5xx replies will not change on a retry; everything else (4xx, network) may.
            if e.is_permanent() {
                MailError::permanent(e.to_string())
            } else {
                MailError::transient(e.to_string())
            }
        })
    }
}

/// The body as 7bit when it is ASCII with lines within RFC 5322's 998 characters — so a long
/// verification link arrives exactly as written — and lettre's own choice otherwise. (lettre
/// keeps 7bit to lines under 76 characters and would send the link quoted-printable: wrapped
/// with soft breaks and every `=` written `=3D`. Mail clients undo that; people reading the
/// raw message, and simple tools that scrape the link, do not.)
fn plain_body(text: &str) -> Body {
    let fits =
        text.is_ascii() && !text.contains('\0') && text.lines().all(|line| line.len() <= 998);
    if !fits {
        return Body::new(text.to_owned());
    }
    let crlf = text
        .lines()
        .map(|line| line.trim_end_matches('\r'))
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n";
    Body::dangerous_pre_encoded(crlf.into_bytes(), ContentTransferEncoding::SevenBit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_text_goes_7bit_with_crlf_and_anything_else_is_encoded() {
        let link = format!(
            "https://bank.example/v1/verify_email?email_id=1&secret_code={}",
            "a".repeat(64)
        );
        let body = plain_body(&format!("Hello,\n\n{link}\n"));
        assert_eq!(body.encoding(), ContentTransferEncoding::SevenBit);
        assert_eq!(
            body.into_vec(),
            format!("Hello,\r\n\r\n{link}\r\n").into_bytes()
        );

        assert_ne!(
            plain_body("Grüße\n").encoding(),
            ContentTransferEncoding::SevenBit
        );
        assert_ne!(
            plain_body(&"x".repeat(999)).encoding(),
            ContentTransferEncoding::SevenBit
        );
    }
}
