//! The `ilp-settlement-worker` binary: ready line, signal handling, exit codes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use schema::test_db::TestDb;

const BIN: &str = env!("CARGO_BIN_EXE_ilp-settlement-worker");
const READY_WITHIN: Duration = Duration::from_secs(20);

fn write_config(contents: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "ilp-worker-test-{}-{:x}.toml",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::write(&path, contents).expect("writing a config file to the temp dir");
    path
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos()
}

fn worker() -> Command {
    let mut command = Command::new(BIN);
    command
        .env("RUST_LOG", "info")
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

// Proves the binary logs one ready line naming its ledgers, then exits 0 on SIGTERM.
#[tokio::test]
async fn ready_then_clean_exit_on_sigterm() -> anyhow::Result<()> {
    let db = TestDb::new().await;
    let config = write_config(
        "[worker]\nidle_poll_ms = 100\n\n\
         [[ledgers]]\nname = \"xrp\"\nkind = \"claims\"\nschedule = \"* * * * * *\"\n\n\
         [[ledgers]]\nname = \"usd\"\nkind = \"rfc38\"\nschedule = \"0 0 * * * *\"\n\
         options = { engine_url = \"http://127.0.0.1:9\" }\n",
    );
    let mut child = worker()
        .arg("--config")
        .arg(&config)
        .arg("--database-url")
        .arg(db.url())
        .spawn()?;
    let logs = child.stderr.take().unwrap();
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(logs).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let ready = loop {
        let line = lines_rx.recv_timeout(READY_WITHIN)?;
        if line.contains("ilp-settlement-worker ready") {
            break line;
        }
    };
    assert!(ready.contains("xrp,usd"), "{ready}");

    // Let it poll "xrp" (every second) at least once, then stop it.
    std::thread::sleep(Duration::from_millis(1500));
    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()?;
    assert!(killed.success());
    let status = child.wait()?;
    let rest: Vec<String> = lines_rx.try_iter().collect();
    std::fs::remove_file(&config).ok();
    assert_eq!(status.code(), Some(0), "{rest:#?}");
    assert!(
        rest.iter().any(|l| l.contains("settlement.poll")),
        "{rest:#?}"
    );
    assert_eq!(
        rest.iter().filter(|l| l.contains("ready")).count(),
        0,
        "a second ready line: {rest:#?}"
    );
    Ok(())
}

// Proves a configuration error is one line on stderr naming the ledger, and exit code 1.
#[tokio::test]
async fn config_error_is_one_line_and_exit_1() -> anyhow::Result<()> {
    let config =
        write_config("[[ledgers]]\nname = \"xrp\"\nkind = \"claims\"\nschedule = \"*/5 * *\"\n");
    let output = worker()
        .arg("--config")
        .arg(&config)
        .arg("--database-url")
        .arg("postgres://unused@127.0.0.1:1/none")
        .output()?;
    std::fs::remove_file(&config).ok();
    let stderr = String::from_utf8(output.stderr)?;
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(r#"ilp-settlement-worker: ledger "xrp": schedule "*/5 * *": "#),
        "{stderr}"
    );

    let output = worker().arg("--config").arg("/nonexistent.toml").output()?;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(String::from_utf8(output.stderr)?.lines().count(), 1);
    Ok(())
}
