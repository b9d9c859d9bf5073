//! The worker's admin listener: the real binary with `[admin] listen`, scraped over HTTP
//! after it settled through a scripted RFC 38 engine.

// Fixtures (the engine, account set-up) panic where a step fails, like the tests.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use schema::test_db::TestDb;

use crate::rfc38::{Engine, balance, funded_account, settlements};

const BIN: &str = env!("CARGO_BIN_EXE_ilp-settlement-worker");
const READY_WITHIN: Duration = Duration::from_secs(20);
/// The ledger is polled every second: a settlement confirms well within this.
const CONFIRMED_WITHIN: Duration = Duration::from_secs(15);

/// The child is SIGKILLed when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn get(admin: SocketAddr, path: &str) -> (StatusCode, String) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let uri: hyper::Uri = format!("http://{admin}{path}").parse().unwrap();
    let response = client.get(uri).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The value of the Prometheus sample `name` whose labels include all of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            let all = labels
                .iter()
                .all(|(key, want)| rest.contains(&format!("{key}=\"{want}\"")));
            (metric == name && all)
                .then(|| value.parse().ok())
                .flatten()
        })
}

// Proves the worker binary with `[admin] listen` names the bound admin address in its JSON
// ready line, tells systemd READY=1 on NOTIFY_SOCKET, answers /health with 200, and after
// one settlement through an RFC 38 engine exports `ilp_settlements_total{outcome="confirmed"}`
// = 1 and at least one poll sample.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_exports_settlement_metrics() {
    let db = TestDb::new().await;
    let conn = &mut db.connect().await;
    let carol = funded_account(conn, "carol", Some("usd"), 1500).await;
    let engine = Engine::start(&[]).await;
    let config = std::env::temp_dir().join(format!(
        "ilp-worker-metrics-{}-{}.toml",
        std::process::id(),
        engine.addr.port()
    ));
    std::fs::write(
        &config,
        format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n\n[worker]\nidle_poll_ms = 100\n\n\
             [[ledgers]]\nname = \"usd\"\nkind = \"rfc38\"\nschedule = \"* * * * * *\"\n\
             options = {{ engine_url = \"http://{}\", call_timeout_ms = 2000 }}\n",
            engine.addr
        ),
    )
    .unwrap();
    // systemd's side of Type=notify: a datagram socket named by NOTIFY_SOCKET.
    let notify_path = config.with_extension("notify");
    let _ = std::fs::remove_file(&notify_path);
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(READY_WITHIN)).unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("--database-url")
        .arg(db.url())
        .arg("--log-format")
        .arg("json")
        .env("RUST_LOG", "info")
        .env_remove("DATABASE_URL")
        .env("NOTIFY_SOCKET", &notify_path)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let logs = child.stderr.take().unwrap();
    let _child = KillOnDrop(child);
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(logs).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let ready: serde_json::Value = loop {
        let line = lines_rx.recv_timeout(READY_WITHIN).unwrap();
        if line.contains("ilp-settlement-worker ready") {
            break serde_json::from_str(&line).unwrap();
        }
    };
    std::fs::remove_file(&config).ok();
    let mut datagram = [0u8; 256];
    let received = notify.recv(&mut datagram).unwrap();
    std::fs::remove_file(&notify_path).ok();
    assert!(
        String::from_utf8_lossy(&datagram[..received]).contains("READY=1"),
        "{:?}",
        String::from_utf8_lossy(&datagram[..received])
    );
    let admin: SocketAddr = ready["admin"]
        .as_str()
        .unwrap_or_else(|| panic!("no admin field: {ready}"))
        .parse()
        .unwrap();
    assert_ne!(admin.port(), 0, "the bound address, not the configured one");

    let (status, body) = get(admin, "/health").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));

    let deadline = Instant::now() + CONFIRMED_WITHIN;
    while settlements(conn).await.first().map(|s| s.state.as_str()) != Some("confirmed") {
        assert!(Instant::now() < deadline, "no confirmed settlement");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(balance(conn, carol).await, 0);
    // The counter is bumped right after the confirming update commits; the poll sample
    // once the poll ends. Wait for both rather than race them.
    let deadline = Instant::now() + Duration::from_secs(5);
    let metrics = loop {
        let (status, metrics) = get(admin, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        let polls = sample(
            &metrics,
            "ilp_ledger_poll_seconds_count",
            &[("ledger", "usd")],
        );
        let confirmed = sample(
            &metrics,
            "ilp_settlements_total",
            &[("ledger", "usd"), ("outcome", "confirmed")],
        );
        if (polls.unwrap_or(0.0) >= 1.0 && confirmed.is_some()) || Instant::now() > deadline {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        sample(
            &metrics,
            "ilp_settlements_total",
            &[("ledger", "usd"), ("outcome", "confirmed")]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            "ilp_ledger_poll_seconds_count",
            &[("ledger", "usd")]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{metrics}"
    );
    for outcome in ["retry", "failed"] {
        assert_eq!(
            sample(
                &metrics,
                "ilp_settlements_total",
                &[("ledger", "usd"), ("outcome", outcome)]
            ),
            None,
            "{metrics}"
        );
    }
    assert_eq!(engine.settle_calls().len(), 1);
}
