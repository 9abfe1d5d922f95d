//! `TestApp`: the production `Application`, served on a free port over a fresh database, and a
//! small JSON client for it.

use simplebank::store::prelude::*;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use simplebank::config::Settings;
use simplebank::domain::{Role, Username};
use simplebank::mail::{MailError, MailSender, OutgoingEmail};
use simplebank::startup::Application;
use tokio::sync::oneshot;

use crate::helpers::TestDb;

pub const TOKEN_KEY: &str = "a test key that is 32 bytes long";

/// `TEST_LOG` set: the servers' log lines go to the test output (the value is the filter;
/// `1` means `info`). The writer prints through the test harness, and the server's threads
/// inherit their test's output capture, so each line shows under the test that caused it —
/// for a failing test, since passing tests' output is not shown.
fn init_test_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Some(filter) = std::env::var("TEST_LOG").ok().filter(|v| !v.is_empty()) else {
            return;
        };
        let filter = if filter == "1" {
            "info".to_owned()
        } else {
            filter
        };
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    });
}

/// The application runs on a thread and runtime of its own, not on the test's: when the test
/// ends, its runtime stops (and `TestDb`'s drop blocks it), and an application living there would
/// freeze mid-way — a pool connection caught in its authentication handshake holds up
/// `DROP DATABASE ... WITH (FORCE)` for PostgreSQL's whole `authentication_timeout` (60 s).
pub struct TestApp {
    pub address: String,
    /// `http://127.0.0.1:<port>` of the gRPC server.
    pub grpc_address: String,
    pub db: TestDb,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    server: Option<std::thread::JoinHandle<()>>,
    /// Every email the application sent (its outbox worker delivers here instead of SMTP).
    pub mail: Mailbox,
    /// What it was started with, to start it again (`restart`).
    url: String,
    overrides: Vec<(String, String)>,
}

/// A response, with its JSON body (`Value::Null` when there is none).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// A response header as text ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The SPEC §4 error code of an error response.
    pub fn code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or("<no error code>")
    }

    pub fn assert(self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "body: {}", self.body);
        self.body
    }

    pub fn assert_error(&self, status: StatusCode, code: &str) {
        assert_eq!(
            (self.status, self.code()),
            (status, code),
            "body: {}",
            self.body
        );
        let message = self.body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty(),
            "an error always says why: {}",
            self.body
        );
        assert!(self.body["error"]["details"].is_array(), "{}", self.body);
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(&[]).await
    }

    /// With extra environment-style settings, e.g. `("ACCESS_TOKEN_DURATION", "1s")`.
    pub async fn spawn_with(overrides: &[(&str, &str)]) -> Self {
        let db = TestDb::unmigrated(4).await;
        let url = db.url.clone();
        Self::spawn_on(db, url, overrides, true).await
    }

    /// Served over `url` (which may be unreachable), migrating first when `migrate`. `db` is the
    /// test's own database all the same, for its helpers.
    pub async fn spawn_on(
        db: TestDb,
        url: String,
        overrides: &[(&str, &str)],
        migrate: bool,
    ) -> Self {
        let overrides: Vec<(String, String)> = overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut app = TestApp {
            address: String::new(),
            grpc_address: String::new(),
            db,
            client: reqwest::Client::new(),
            stop: None,
            server: None,
            mail: Mailbox::default(),
            url,
            overrides,
        };
        app.start(migrate);
        app
    }

    /// Stops the server (gracefully, as SIGTERM would) and starts a new one over the same
    /// database, on new ports. Tokens stay valid: the key is the same.
    pub async fn restart(&mut self) {
        self.stop_server();
        self.start(false);
    }

    fn start(&mut self, migrate: bool) {
        init_test_log();
        let url = self.url.clone();
        let overrides = self.overrides.clone();
        let settings = Settings::from_lookup(|key| {
            if let Some((_, v)) = overrides.iter().find(|(k, _)| k == key) {
                return Some(v.clone());
            }
            match key {
                "DB_SOURCE" => Some(url.clone()),
                "HTTP_SERVER_ADDRESS" => Some("127.0.0.1:0".into()),
                "GRPC_SERVER_ADDRESS" => Some("127.0.0.1:0".into()),
                "TOKEN_SYMMETRIC_KEY" => Some(TOKEN_KEY.into()),
                _ => None,
            }
        })
        .expect("test settings are valid");
        let mut settings = settings;
        // The application migrates the empty database itself, as `serve` does.
        settings.run_migrations = migrate;
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready, ports) = std::sync::mpsc::channel();
        let mailer: Arc<dyn MailSender> = Arc::new(self.mail.clone());
        let server = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime for the application");
            runtime.block_on(async move {
                let app = Application::build_with_mailer(settings, mailer)
                    .await
                    .expect("the application builds");
                ready.send((app.http_port(), app.grpc_port())).unwrap();
                let (stop_now, stop_seen) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    let _ = stopped.await;
                    let _ = stop_now.send(true);
                });
                let mut grace = stop_seen.clone();
                let mut shutdown = stop_seen;
                // Graceful shutdown waits for clients to hang up, and a test's clients may live
                // on the (now blocked) test runtime: after a short grace, drop the runtime, which
                // closes every socket and the pool.
                tokio::select! {
                    _ = app.run_until_stopped(async move {
                        let _ = shutdown.wait_for(|stop| *stop).await;
                    }) => {}
                    _ = async {
                        let _ = grace.wait_for(|stop| *stop).await;
                        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                    } => {}
                }
            });
        });
        let (http_port, grpc_port) = ports.recv().expect("the application started");
        self.address = format!("http://127.0.0.1:{http_port}");
        self.grpc_address = format!("http://127.0.0.1:{grpc_port}");
        self.stop = Some(stop);
        self.server = Some(server);
    }

    fn stop_server(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        self.call_with(method, path, token, &[], body).await
    }

    /// `call` with extra request headers.
    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Reply {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("a JSON body, got {text:?}"))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A GET with extra headers whose answer may not be JSON: status, headers and text.
    pub async fn get_text(
        &self,
        path: &str,
        token: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let mut request = self
            .client
            .get(format!("{}{path}", self.address))
            .bearer_auth(token);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status();
        let headers = response.headers().clone();
        (status, headers, response.text().await.unwrap_or_default())
    }

    /// A request whose answer is not JSON: its status and text.
    pub async fn call_raw(&self, method: Method, path: &str) -> (StatusCode, String) {
        let response = self
            .client
            .request(method, format!("{}{path}", self.address))
            .send()
            .await
            .expect("the server answers");
        (response.status(), response.text().await.unwrap_or_default())
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.call(Method::POST, path, token, Some(body)).await
    }

    /// Sends a raw body with the given content type.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        let response = self
            .client
            .post(format!("{}{path}", self.address))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("the server answers");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.json().await.unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn signup(&self, username: &str) -> Value {
        self.post(
            "/v1/users",
            None,
            json!({
                "username": username,
                "full_name": format!("{username} Example"),
                "email": format!("{username}@example.com"),
                "password": "password123",
            }),
        )
        .await
        .assert(StatusCode::CREATED)
    }

    /// Logs in and returns the whole login response.
    pub async fn login(&self, username: &str) -> Value {
        self.login_reply(username).await.assert(StatusCode::OK)
    }

    /// A login with the test password, whatever its answer.
    pub async fn login_reply(&self, username: &str) -> Reply {
        self.post(
            "/v1/users/login",
            None,
            json!({ "username": username, "password": "password123" }),
        )
        .await
    }

    /// Signs up and logs in; returns the access token.
    pub async fn user(&self, username: &str) -> String {
        self.signup(username).await;
        token(&self.login(username).await)
    }

    /// A banker (made the way an operator makes the first one: directly in the store).
    pub async fn banker(&self, username: &str) -> String {
        self.signup(username).await;
        self.db
            .store
            .set_user_role(&Username::parse(username).unwrap(), Role::Banker)
            .await
            .unwrap();
        token(&self.login(username).await)
    }

    pub async fn open_account(&self, token: &str, currency: &str) -> i64 {
        self.post("/v1/accounts", Some(token), json!({ "currency": currency }))
            .await
            .assert(StatusCode::CREATED)["account"]["id"]
            .as_i64()
            .unwrap()
    }

    pub async fn deposit(&self, banker: &str, account: i64, amount: i64, currency: &str) {
        self.post(
            &format!("/v1/accounts/{account}/deposits"),
            Some(banker),
            json!({ "amount": amount, "currency": currency }),
        )
        .await
        .assert(StatusCode::CREATED);
    }
}

impl Drop for TestApp {
    /// Stops the application and waits for its graceful shutdown (which closes its pool) before
    /// the fields, the test database among them, are dropped.
    fn drop(&mut self) {
        self.stop_server();
    }
}

/// Captures the emails an application sends.
#[derive(Clone, Default)]
pub struct Mailbox(Arc<Mutex<Vec<OutgoingEmail>>>);

#[async_trait]
impl MailSender for Mailbox {
    async fn send(&self, email: &OutgoingEmail) -> Result<(), MailError> {
        self.0.lock().unwrap().push(email.clone());
        Ok(())
    }
}

impl Mailbox {
    /// The `(email_id, secret_code)` of the newest verification link sent to `to`, waiting for
    /// the outbox worker (it polls every second) up to 15 s.
    pub async fn verification_link(&self, to: &str) -> (i64, String) {
        for _ in 0..150 {
            let found = self.0.lock().unwrap().iter().rev().find_map(|email| {
                if email.to.as_str() != to {
                    return None;
                }
                let query = email.body.split("/v1/verify_email?").nth(1)?;
                let query = query.split_whitespace().next()?;
                let (id, code) = query
                    .strip_prefix("email_id=")?
                    .split_once("&secret_code=")?;
                Some((id.parse().ok()?, code.to_owned()))
            });
            if let Some(link) = found {
                return link;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("no verification email reached {to}")
    }

    /// How many emails went to `to`.
    pub fn count_to(&self, to: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.to.as_str() == to)
            .count()
    }
}

pub fn token(login: &Value) -> String {
    login["access_token"]
        .as_str()
        .expect("an access token")
        .to_owned()
}
