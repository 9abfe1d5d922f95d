//! The `simplebank` binary's configuration layers: a TOML file, the environment over it, and a
//! start refused with the name of the bad setting.

use std::process::Command;

use crate::helpers::TestDb;

fn simplebank() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_simplebank"));
    // Only what each test sets: none of the developer's own settings.
    for key in simplebank::config::RawSettings::variables() {
        command.env_remove(key);
    }
    command.env("NO_COLOR", "1");
    command
}

fn write(dir: &std::path::Path, contents: &str) -> std::path::PathBuf {
    let path = dir.join("app.toml");
    std::fs::write(&path, contents).unwrap();
    path
}

fn scratch() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("simplebank-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn the_environment_overrides_the_file_and_the_file_is_read_from_the_working_directory() {
    let db = TestDb::unmigrated(1).await;
    let dir = scratch();
    // The file names an unreachable database; the environment, the test's own.
    write(
        &dir,
        "db_source = \"postgresql://nobody:x@127.0.0.1:1/none\"\n",
    );
    let output = simplebank()
        .current_dir(&dir)
        .env("DB_SOURCE", &db.url)
        .args(["migrate", "up"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Without the environment variable, the file's value is the one used (and fails).
    let output = simplebank()
        .current_dir(&dir)
        .args(["migrate", "up"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_setting_stops_the_start_and_is_named() {
    let dir = scratch();
    let config = write(
        &dir,
        "db_source = \"postgresql://u:hunter2@127.0.0.1:1/x\"\nhttp_server_address = \"nowhere\"\n",
    );
    let output = simplebank()
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("HTTP_SERVER_ADDRESS"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");

    let config = write(&dir, "http_server_adress = \"0.0.0.0:8080\"\n");
    let output = simplebank()
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("unknown setting `http_server_adress`"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `simplebank serve` on free ports over `db`, writing its ready file to `ready`.
fn serve(
    db: &TestDb,
    dir: &std::path::Path,
    ready: &std::path::Path,
    settings: &[(&str, &str)],
) -> std::process::Child {
    let mut command = simplebank();
    command
        .current_dir(dir)
        .env("DB_SOURCE", &db.url)
        .env("HTTP_SERVER_ADDRESS", "127.0.0.1:0")
        .env("GRPC_SERVER_ADDRESS", "127.0.0.1:0")
        .env("MAIL_SENDER", "log")
        .args(["serve", "--no-migrate", "--ready-file"])
        .arg(ready)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (key, value) in settings {
        command.env(key, value);
    }
    command.spawn().unwrap()
}

/// The ready file's contents, waited for on the file itself (the state the scripts wait on),
/// for a minute at most.
async fn ready_file(
    server: &mut std::process::Child,
    ready: &std::path::Path,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !ready.exists() {
        assert!(server.try_wait().unwrap().is_none(), "the server exited");
        assert!(std::time::Instant::now() < deadline, "no ready file");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    serde_json::from_str(&std::fs::read_to_string(ready).unwrap()).unwrap()
}

#[tokio::test]
async fn serve_writes_its_ready_file_once_listening_and_removes_it_when_stopped() {
    let db = TestDb::new().await;
    let dir = scratch();
    let ready = dir.join("ready.json");
    let mut server = serve(&db, &dir, &ready, &[]);
    let file = ready_file(&mut server, &ready).await;
    assert_eq!(file["pid"], server.id(), "{file}");
    // The addresses are the bound ones, not port 0: the HTTP one answers /readyz.
    let http = file["http"].as_str().unwrap();
    assert!(!http.ends_with(":0"), "{file}");
    let answer = reqwest::get(format!("http://{http}/readyz")).await.unwrap();
    assert_eq!(answer.status(), 200);
    let grpc: std::net::SocketAddr = file["grpc"].as_str().unwrap().parse().unwrap();
    tokio::net::TcpStream::connect(grpc).await.unwrap();

    // SIGTERM, as Kubernetes stops it: a clean exit, and the file is gone.
    let pid = server.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = server.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!ready.exists());
    assert!(
        !dir.join("ready.json.partial").exists(),
        "nothing left beside it"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A served binary, its HTTP address, and a logged-in user with an account.
struct Served {
    server: std::process::Child,
    http: String,
    dir: std::path::PathBuf,
    token: String,
    account: i64,
}

impl Served {
    async fn start(db: &TestDb, settings: &[(&str, &str)]) -> Self {
        let dir = scratch();
        let ready = dir.join("ready.json");
        let mut all = vec![("PASSWORD_HASH_CONCURRENCY", "1")];
        all.extend_from_slice(settings);
        let mut server = serve(db, &dir, &ready, &all);
        let file = ready_file(&mut server, &ready).await;
        let http = format!("http://{}", file["http"].as_str().unwrap());
        let client = reqwest::Client::new();
        let user = serde_json::json!({"username": "drain_user", "full_name": "Drain User",
                                      "email": "drain@example.com", "password": "password123"});
        let created = client
            .post(format!("{http}/v1/users"))
            .json(&user)
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let login: serde_json::Value = client
            .post(format!("{http}/v1/users/login"))
            .json(&serde_json::json!({"username": "drain_user", "password": "password123"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = login["access_token"].as_str().unwrap().to_owned();
        let account: serde_json::Value = client
            .post(format!("{http}/v1/accounts"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"currency": "USD"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Served {
            account: account["account"]["id"].as_i64().unwrap(),
            server,
            http,
            dir,
            token,
        }
    }

    fn signal(&self) {
        let pid = self.server.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// The exit status, waited for at most a minute (a liveness bound, not a timing claim).
    async fn exit(mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(status) = self.server.try_wait().unwrap() {
                let _ = std::fs::remove_dir_all(&self.dir);
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.server.kill();
                panic!("the server did not exit within a minute of being stopped");
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn a_stopped_server_reports_not_ready_and_serves_on_until_told_again_then_ends_streams() {
    let db = TestDb::new().await;
    // A delay no test waits out: the second signal ends it.
    let served = Served::start(&db, &[("SHUTDOWN_DELAY", "10m")]).await;
    let client = reqwest::Client::new();
    let mut stream = client
        .get(format!(
            "{}/v1/accounts/{}/events",
            served.http, served.account
        ))
        .bearer_auth(&served.token)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);

    served.signal();
    // Readiness goes first: observed, not slept.
    let mut not_ready = None;
    for _ in 0..600 {
        let answer = client
            .get(format!("{}/readyz", served.http))
            .send()
            .await
            .unwrap();
        if answer.status() == 503 {
            not_ready = Some(answer.json::<serde_json::Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let not_ready = not_ready.expect("/readyz never said not ready after SIGTERM");
    assert_eq!(not_ready["error"]["code"], "unavailable", "{not_ready}");
    // ...while every request is still served, on a new connection too.
    let fresh = reqwest::Client::new();
    let account = fresh
        .post(format!("{}/v1/accounts", served.http))
        .bearer_auth(&served.token)
        .json(&serde_json::json!({"currency": "EUR"}))
        .send()
        .await
        .unwrap();
    assert_eq!(account.status(), 201, "a draining server still serves");
    assert_eq!(
        client
            .get(format!("{}/healthz", served.http))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "alive while draining"
    );

    // The second signal stops it: the stream ends with its documented last message.
    served.signal();
    let mut text = String::new();
    while let Some(chunk) = stream.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        text.contains("event: end") && text.contains("shutting_down"),
        "the stream's last words: {text:?}"
    );
    let http = served.http.clone();
    let status = served.exit().await;
    assert!(status.success(), "{status}");
    assert!(
        reqwest::get(format!("{http}/healthz")).await.is_err(),
        "nothing listens after the exit"
    );
}

#[tokio::test]
async fn a_request_still_running_when_the_grace_is_over_is_closed_and_the_server_exits() {
    let db = TestDb::new().await;
    let served = Served::start(&db, &[("SHUTDOWN_GRACE", "1s"), ("REQUEST_TIMEOUT", "5m")]).await;
    let payee = crate::helpers::funded_account(
        &db.store,
        "drain_payee",
        simplebank::domain::Currency::Usd,
        0,
    )
    .await;
    // The test holds the payer's row lock, so the transfer waits inside the server.
    let mut lock = db.pool().begin().await.unwrap();
    sqlx::query("SELECT id FROM accounts WHERE id = $1 FOR UPDATE")
        .bind(served.account)
        .execute(&mut *lock)
        .await
        .unwrap();
    let transfer = tokio::spawn(
        reqwest::Client::new()
            .post(format!("{}/v1/transfers", served.http))
            .bearer_auth(&served.token)
            .json(&serde_json::json!({"from_account_id": served.account,
                                      "to_account_id": payee.id.get(),
                                      "amount": 1, "currency": "USD"}))
            .send(),
    );
    crate::helpers::wait_for_lock_waiters(db.pool(), 1).await;

    served.signal();
    let status = served.exit().await;
    assert!(status.success(), "{status}");
    assert!(
        transfer.await.unwrap().is_err(),
        "the request past the grace is closed, not answered"
    );
    lock.rollback().await.unwrap();
    crate::helpers::assert_ledger_consistent(db.pool()).await;
}
