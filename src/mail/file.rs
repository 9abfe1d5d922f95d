//! The development default: each email is logged (as the log sender does) and also written,
//! as a plain RFC 5322 message, to a file in `MAIL_DIR` — a mailbox on disk, like Django's
//! file-based email backend. A developer opens the newest file (or greps it for the link) to
//! verify an address without a mail server; the README's session does exactly that.
//!
//! The files hold verification links, which are secrets: like the log sender, this is for
//! development, and production refuses it unless told so.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use super::{LogSender, MailError, MailSender, OutgoingEmail};

#[derive(Debug)]
pub struct FileSender {
    dir: PathBuf,
    /// Orders the files of one process; the timestamp orders processes.
    sequence: AtomicU64,
}

impl FileSender {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            sequence: AtomicU64::new(0),
        }
    }

    fn file_name(&self, email: &OutgoingEmail) -> String {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ");
        // The address passed Email's parsing, but it still names a file: keep it to safe bytes.
        let to: String = email
            .to
            .as_str()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "@.+-_".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{stamp}-{n:04}-{to}.eml")
    }
}

#[async_trait]
impl MailSender for FileSender {
    async fn send(&self, email: &OutgoingEmail) -> Result<(), MailError> {
        LogSender.send(email).await?;
        let message = format!(
            "To: {}\r\nSubject: {}\r\nDate: {}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n",
            email.to.as_str(),
            email.subject,
            chrono::Utc::now().to_rfc2822(),
            email.body.replace('\n', "\r\n"),
        );
        let path = self.dir.join(self.file_name(email));
        let dir = self.dir.clone();
        // Whole file or none: written beside, then renamed, so a reader never sees half of it.
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            let partial = path.with_extension("partial");
            std::fs::write(&partial, message)?;
            std::fs::rename(&partial, &path)
        })
        .await
        .map_err(|err| MailError::transient(format!("writing the email file: {err}")))?
        .map_err(|err| {
            MailError::transient(format!(
                "writing the email to {}: {err}",
                self.dir.display()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Email;

    #[tokio::test]
    async fn each_email_is_one_whole_file_in_the_directory() {
        let dir = std::env::temp_dir().join(format!("simplebank-mail-{}", uuid::Uuid::new_v4()));
        let sender = FileSender::new(dir.clone());
        for n in 0..2 {
            let email = OutgoingEmail {
                to: Email::parse("alice@example.com").unwrap(),
                subject: "Verify your email".into(),
                body: format!("line one\nhttp://localhost:8080/v1/verify_email?email_id={n}"),
            };
            sender.send(&email).await.unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(
            names[0].ends_with("-0000-alice@example.com.eml"),
            "{names:?}"
        );
        let text = std::fs::read_to_string(dir.join(&names[1])).unwrap();
        assert!(text.starts_with("To: alice@example.com\r\n"), "{text}");
        assert!(
            text.contains("\r\n\r\nline one\r\nhttp://localhost:8080/v1/verify_email?email_id=1")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
