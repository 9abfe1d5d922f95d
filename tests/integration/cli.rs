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

#[tokio::test]
async fn serve_writes_its_ready_file_once_listening_and_removes_it_when_stopped() {
    let db = TestDb::new().await;
    let dir = scratch();
    let ready = dir.join("ready.json");
    let mut server = simplebank()
        .current_dir(&dir)
        .env("DB_SOURCE", &db.url)
        .env("HTTP_SERVER_ADDRESS", "127.0.0.1:0")
        .env("GRPC_SERVER_ADDRESS", "127.0.0.1:0")
        .env("MAIL_SENDER", "log")
        .args(["serve", "--no-migrate", "--ready-file"])
        .arg(&ready)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Waits on the file itself (the state the scripts wait on), bounded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !ready.exists() {
        assert!(server.try_wait().unwrap().is_none(), "the server exited");
        assert!(std::time::Instant::now() < deadline, "no ready file");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
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
