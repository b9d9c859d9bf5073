//! What an operator touches: the systemd units and the README's own instructions.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use connector::packet::Packet;
use e2e::{Behaviour, Node, Receiver, account_balances, binary, prepare, send_prepare};
use schema::test_db::TestDb;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    // Proves both units parse cleanly: no unknown key, no bad value, executables that exist.
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed here: the units are not verified");
        return;
    };
    assert!(version.status.success());
    let dir = std::env::temp_dir().join(format!("ilp-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (unit, bin) in [
        ("ilp-connector.service", "ilp-connector"),
        ("ilp-settlement-worker.service", "ilp-settlement-worker"),
    ] {
        let text = std::fs::read_to_string(repo().join("scripts/systemd").join(unit)).unwrap();
        let installed = format!("/usr/local/bin/{bin}");
        assert!(
            text.contains(&format!("ExecStart={installed} ")),
            "{unit} starts {installed}"
        );
        // Point ExecStart at the binary we just built, as an install would.
        let local = text.replace(&installed, binary(bin).to_str().unwrap());
        let path = dir.join(unit);
        std::fs::write(&path, local).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{unit}: {stderr}");
        // Unknown keys are only warnings to systemd; to us they are mistakes.
        let complaints: Vec<&str> = stderr.lines().filter(|l| l.contains(unit)).collect();
        assert!(complaints.is_empty(), "{unit}: {complaints:?}");
        for hardening in [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "Type=notify",
            "User=ilp",
        ] {
            assert!(text.contains(hardening), "{unit} lacks {hardening}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The body of the README's fenced block whose info string is `sh <name>`.
fn readme_block(name: &str) -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("reading README.md");
    let fence = format!("```sh {name}\n");
    let start = readme
        .find(&fence)
        .unwrap_or_else(|| panic!("README has no ```sh {name} block"))
        + fence.len();
    let end = start + readme[start..].find("```").expect("the block is closed");
    readme[start..end].to_owned()
}

fn path_with(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[tokio::test]
async fn readme_add_a_peer_steps_get_a_payment_through() {
    // Proves the README's "Adding a peer" commands, run literally, make a working peer.
    let bob = Receiver::start(Behaviour::Fulfill).await;
    let db = Arc::new(TestDb::new().await);
    e2e::add_sender(db.url(), "10000");
    let node = Node::start_on(db.clone(), "g.ours", &[]);

    let steps = readme_block("add-a-peer");
    let bin_dir = binary("ilp-connector").parent().unwrap().to_owned();
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &steps])
        .env("PATH", path_with(&bin_dir))
        .env("DATABASE_URL", db.url())
        .env_remove("ILP_CONNECTOR_CONFIG")
        .env("BOB_URL", bob.url())
        .env("BOB_TOKEN", "bobs-token-for-us")
        .env("TOKEN_AT_BOB", "our-token-at-bob")
        .env("BOB_PUBLIC_KEY", "11".repeat(32))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "README steps failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The running connector picks the peer up without a restart; pay Bob.
    let started = Instant::now();
    loop {
        match send_prepare(
            &node.url(),
            "alice-token",
            prepare("g.bob.shop", 250, Duration::from_secs(10)),
        )
        .await
        {
            Packet::Fulfill(_) => break,
            other if started.elapsed() > Duration::from_secs(2) => {
                panic!("no payment through Bob: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert_eq!(bob.received(), 1);
    let rows = account_balances(db.url()).await;
    let by_name = |name: &str| rows.iter().find(|r| r.username == name).unwrap().clone();
    assert_eq!(
        (by_name("alice").balance, by_name("bob").balance),
        (-250, 250)
    );
    // Bob's token authenticates Bob: his Prepare is routed (to alice, who has no outgoing URL).
    match send_prepare(
        &node.url(),
        "bobs-token-for-us",
        prepare("g.ours.alice", 1, Duration::from_secs(10)),
    )
    .await
    {
        Packet::Reject(reject) => assert_eq!(
            reject.code(),
            connector::packet::ErrorCode::T01_PEER_UNREACHABLE
        ),
        other => panic!("expected T01, got {other:?}"),
    }
}

#[tokio::test]
async fn readme_quick_start_pays_carol_and_balances_show_it() {
    // Proves the README's quick start, run literally after the example's own account set-up
    // (scripts/example/accounts.sh, what scripts/run.sh runs), pays carol through a running
    // connector with the example's address and port, pings it, and `balances` shows the
    // payment, as the README says.
    let db = Arc::new(TestDb::new().await);
    let bin_dir = binary("ilp-connector").parent().unwrap().to_owned();
    let database_url = db.url().to_owned();
    let run = move |script: &str| {
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", script])
            .current_dir(repo())
            .env("DATABASE_URL", &database_url)
            .env("ILP_BIN_DIR", &bin_dir)
            .env_remove("ILP_CONNECTOR_CONFIG")
            .env_remove("ILP_CONNECTOR_TOKEN")
            .output()
            .unwrap()
    };
    let setup = run("scripts/example/accounts.sh");
    assert!(
        setup.status.success(),
        "accounts.sh: {}",
        String::from_utf8_lossy(&setup.stderr)
    );
    // The example's node: its address and listener (the quick start names both).
    let _node = Node::start_with_url(db.url(), "test.example", "127.0.0.1:7770", &[]);

    let steps = readme_block("quick-start");
    let out = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run(&steps)
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "README quick start failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("500 USD base units sent of 500; 500 USD (scale 2) base units delivered"),
        "{stdout}"
    );
    assert!(stdout.contains("2 pings, 2 replies"), "{stdout}");
    let carol = stdout
        .lines()
        .find(|line| line.starts_with("carol "))
        .unwrap_or_else(|| panic!("balances shows no carol: {stdout}"));
    assert_eq!(carol.split_whitespace().nth(2), Some("500"), "{carol}");
    let rows = account_balances(db.url()).await;
    let by_name = |name: &str| rows.iter().find(|r| r.username == name).unwrap().balance;
    assert_eq!((by_name("alice"), by_name("carol")), (-500, 500));
}
