//! `SmtpSender` against a scripted SMTP server on a local port: what it sends, and how it tells
//! a temporary refusal (retry) from a permanent one (give up).

use simplebank::domain::Email;
use simplebank::mail::{MailSender, OutgoingEmail, SmtpSender, SmtpSettings, SmtpTls};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Accepts one connection and answers like a mail server, except that the reply to `RCPT TO`
/// is `rcpt_reply`. Returns the whole conversation the client sent.
async fn server(rcpt_reply: &'static str) -> (u16, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let (read, mut write) = socket.into_split();
        let mut lines = BufReader::new(read).lines();
        let mut heard = String::new();
        write.write_all(b"220 test ESMTP\r\n").await.unwrap();
        let mut in_data = false;
        while let Ok(Some(line)) = lines.next_line().await {
            heard.push_str(&line);
            heard.push('\n');
            let reply: &[u8] = if in_data {
                if line != "." {
                    continue;
                }
                in_data = false;
                b"250 queued\r\n"
            } else {
                let verb = line
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_ascii_uppercase();
                match verb.as_str() {
                    "EHLO" | "HELO" => b"250 test\r\n",
                    "MAIL" => b"250 ok\r\n",
                    "RCPT" => rcpt_reply.as_bytes(),
                    "DATA" => {
                        in_data = true;
                        b"354 go on\r\n"
                    }
                    "QUIT" => {
                        write.write_all(b"221 bye\r\n").await.unwrap();
                        break;
                    }
                    _ => b"250 ok\r\n",
                }
            };
            if write.write_all(reply).await.is_err() {
                break;
            }
        }
        heard
    });
    (port, task)
}

fn sender(port: u16) -> SmtpSender {
    SmtpSender::new(&SmtpSettings {
        host: "127.0.0.1".into(),
        port,
        tls: SmtpTls::None,
        username: None,
        password: None,
        from: "simplebank <no-reply@bank.example>".parse().unwrap(),
    })
    .unwrap()
}

/// A link as long as a real one: it must arrive on one line, unencoded, to be clickable.
const LINK: &str = "https://bank.example/v1/verify_email?email_id=1&secret_code=\
                    0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn email() -> OutgoingEmail {
    OutgoingEmail {
        to: Email::parse("alice@example.com").unwrap(),
        subject: "Verify your simplebank email address".into(),
        body: format!("Hello alice,\n\n{LINK}\n"),
    }
}

#[tokio::test]
async fn an_accepted_email_goes_out_with_its_envelope_headers_and_body() {
    let (port, heard) = server("250 ok\r\n").await;
    sender(port).send(&email()).await.unwrap();
    let heard = heard.await.unwrap();
    assert!(
        heard.contains("MAIL FROM:<no-reply@bank.example>"),
        "{heard}"
    );
    assert!(heard.contains("RCPT TO:<alice@example.com>"), "{heard}");
    assert!(
        heard.contains("Subject: Verify your simplebank email address"),
        "{heard}"
    );
    assert!(heard.contains("Content-Type: text/plain"), "{heard}");
    assert!(heard.lines().any(|line| line == LINK), "{heard}");
}

#[tokio::test]
async fn a_4xx_refusal_is_temporary_and_a_5xx_one_permanent() {
    let (port, _) = server("450 mailbox busy\r\n").await;
    let err = sender(port).send(&email()).await.unwrap_err();
    assert!(!err.permanent, "{err}");

    let (port, _) = server("550 no such user\r\n").await;
    let err = sender(port).send(&email()).await.unwrap_err();
    assert!(err.permanent, "{err}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_temporary_failure() {
    // Bind and drop: a port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = sender(port).send(&email()).await.unwrap_err();
    assert!(!err.permanent, "{err}");
}
