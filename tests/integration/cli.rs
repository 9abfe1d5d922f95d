//! The `simplebank` binary's configuration layers: a TOML file, the environment over it, and a
//! start refused with the name of the bad setting.

use std::process::Command;

use crate::helpers::TestDb;

fn simplebank() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_simplebank"));
    // Only what each test sets: none of the developer's own settings.
    for key in simplebank::config::KNOWN_SETTINGS {
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
