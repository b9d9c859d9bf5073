//! The end-to-end harness: real `ilp-connector` processes, each with its own fresh
//! database, and a scriptable ILP-over-HTTP receiver, all on 127.0.0.1.
//!
//! # Layout
//! - [`Node`]: one `ilp-connector serve` process; killed when dropped. [`Node::cli`] runs
//!   the CLI against the same database.
//! - [`Receiver`]: a hyper server that fulfills, fulfills wrongly, or never answers.
//! - [`send_prepare`]: POSTs a Prepare like a peer would and returns status and packet.
//! - [`traffic`]: the [`Receiver`], [`send_prepare`] and [`run_traffic`] live there.
//! - [`SettlementWorker`]: one `ilp-settlement-worker` process; killed when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use connector::packet::condition_for;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use schema::test_db::TestDb;

pub mod tls;
pub mod traffic;
pub use traffic::*;

/// The fulfillment the [`Receiver`] answers with, and the condition senders use.
pub const FULFILLMENT: [u8; 32] = *b"e2e-fixed-preimage-for-32-bytes!";

/// SHA-256 of [`FULFILLMENT`].
pub fn condition() -> [u8; 32] {
    condition_for(&FULFILLMENT)
}

/// Where the workspace's binaries are: next to this test binary's `deps/` folder.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built: run the tests through cargo (it builds the workspace's binaries)",
        path.display()
    );
    path
}

/// A running `ilp-connector serve`.
pub struct Node {
    /// Its database URL.
    pub database_url: String,
    /// Its ILP-over-HTTP address.
    pub addr: SocketAddr,
    /// Its ILP address.
    pub ilp_address: String,
    /// Its admin listener (`/metrics`, `/health`), when configured.
    pub admin: Option<SocketAddr>,
    env: Vec<(String, String)>,
    child: Child,
    log: Log,
    // Dropped after the process: the database outlives its connector.
    _db: Option<Arc<TestDb>>,
}

impl Node {
    /// Starts a connector with address `ilp_address` on a fresh database, after adding the
    /// accounts `setup` creates through the CLI, and waits for its ready line.
    pub async fn start(
        ilp_address: &str,
        setup: impl FnOnce(&dyn Fn(&[&str]) -> serde_json::Value),
    ) -> Node {
        let db = Arc::new(TestDb::new().await);
        setup(&|args: &[&str]| cli(db.url(), args));
        Node::start_on(db, ilp_address, &[])
    }

    /// Starts a connector on `db` (shared with other nodes, or not), with extra environment.
    pub fn start_on(db: Arc<TestDb>, ilp_address: &str, env: &[(&str, &str)]) -> Node {
        Node::spawn(
            db.url().to_owned(),
            Some(db),
            ilp_address,
            "127.0.0.1:0",
            env,
        )
    }

    /// Starts a connector on any database URL, listening on `listen`.
    pub fn start_with_url(
        database_url: &str,
        ilp_address: &str,
        listen: &str,
        env: &[(&str, &str)],
    ) -> Node {
        Node::spawn(database_url.to_owned(), None, ilp_address, listen, env)
    }

    fn spawn(
        database_url: String,
        db: Option<Arc<TestDb>>,
        ilp_address: &str,
        listen: &str,
        env: &[(&str, &str)],
    ) -> Node {
        let mut all: Vec<(String, String)> = vec![
            ("ILP_CONNECTOR_NODE__ILP_ADDRESS".into(), ilp_address.into()),
            ("ILP_CONNECTOR_HTTP__LISTEN".into(), listen.into()),
        ];
        all.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let log = Log::default();
        let (child, addr, admin) = spawn_connector(&database_url, &all, &log);
        Node {
            log,
            database_url,
            addr,
            admin,
            ilp_address: ilp_address.to_owned(),
            env: all,
            child,
            _db: db,
        }
    }

    /// SIGKILLs the process (no shutdown of any kind), then starts it again on the same
    /// address and database and waits for its ready line.
    pub fn kill_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut env = self.env.clone();
        for (key, value) in &mut env {
            if key == "ILP_CONNECTOR_HTTP__LISTEN" {
                *value = self.addr.to_string();
            }
        }
        let (child, addr, admin) = spawn_connector(&self.database_url, &env, &self.log);
        self.child = child;
        self.addr = addr;
        self.admin = admin;
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child
            .wait()
            .map(|status| status.success())
            .unwrap_or(false)
    }

    /// Runs `ilp-connector --json ARGS` on this node's database; must succeed.
    pub fn cli(&self, args: &[&str]) -> serde_json::Value {
        cli(&self.database_url, args)
    }

    /// Sends `signal` (e.g. `HUP`) to the process.
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// The log lines (JSON) this node's processes wrote so far that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        let lines = self.log.lock().unwrap_or_else(|p| p.into_inner());
        lines
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// `http://<addr>/ilp`.
    pub fn url(&self) -> String {
        format!("http://{}/ilp", self.addr)
    }

    /// GETs `path` from the admin listener: status and body.
    pub async fn admin_get(&self, path: &str) -> (StatusCode, String) {
        let admin = self
            .admin
            .expect("the node was started with ILP_CONNECTOR_ADMIN__LISTEN");
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let uri: hyper::Uri = format!("http://{admin}{path}").parse().expect("admin URI");
        let response = client.get(uri).await.expect("GET from the admin listener");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("admin body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// The value of the Prometheus sample named `name` whose labels include every `labels`
/// pair (`key="value"`), or `None`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric_name, rest) = series.split_once('{').unwrap_or((series, ""));
            let matches = metric_name == name
                && labels
                    .iter()
                    .all(|(key, want)| rest.contains(&format!("{key}=\"{want}\"")));
            if matches { value.parse().ok() } else { None }
        })
}

/// A connector's log lines, shared with the thread that reads its stderr.
type Log = Arc<std::sync::Mutex<Vec<String>>>;

/// Most log lines kept per node (the first ones: start-up, and what a test provokes).
const MAX_LOG_LINES: usize = 20_000;

fn spawn_connector(
    database_url: &str,
    env: &[(String, String)],
    log: &Log,
) -> (Child, SocketAddr, Option<SocketAddr>) {
    let mut child = Command::new(binary("ilp-connector"))
        .arg("serve")
        .env("DATABASE_URL", database_url)
        .env("ILP_CONNECTOR_LOG__FORMAT", "json")
        .env("RUST_LOG", "info")
        .env_remove("ILP_CONNECTOR_CONFIG")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting ilp-connector");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let log = log.clone();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            {
                let mut lines = log.lock().unwrap_or_else(|p| p.into_inner());
                if lines.len() < MAX_LOG_LINES {
                    lines.push(line.clone());
                }
            }
            if !sent && line.contains("ilp-connector ready") {
                let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                let _ = tx.send(value["listen"].as_str().map(|listen| {
                    (
                        listen.to_owned(),
                        value["admin"]
                            .as_str()
                            .and_then(|a| a.parse::<SocketAddr>().ok()),
                    )
                }));
                sent = true;
            }
            if std::env::var_os("E2E_LOGS").is_some() {
                eprintln!("[connector] {line}");
            }
        }
    });
    let listen = rx
        .recv_timeout(Duration::from_secs(30))
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("ilp-connector did not log its ready line"));
    let (listen, admin) = listen;
    (child, listen.parse().expect("listen address"), admin)
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `ilp-connector --json ARGS` against `database_url`; must succeed.
pub fn cli(database_url: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(binary("ilp-connector"))
        .arg("--json")
        .args(args)
        .env("DATABASE_URL", database_url)
        .env_remove("ILP_CONNECTOR_CONFIG")
        .output()
        .expect("running ilp-connector");
    assert!(
        out.status.success(),
        "ilp-connector {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// One account's numbers, read straight from the database.
#[derive(Debug, Clone, PartialEq, Eq, diesel::QueryableByName)]
pub struct AccountBalance {
    /// Username.
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub username: String,
    /// `balances.balance`.
    #[diesel(sql_type = diesel::sql_types::Int8)]
    pub balance: i64,
    /// `balances.reserved`: credit connectors set aside for its Prepares.
    #[diesel(sql_type = diesel::sql_types::Int8)]
    pub reserved: i64,
    /// `sum(balance_journal.amount)`.
    #[diesel(sql_type = diesel::sql_types::Int8)]
    pub journal: i64,
}

/// Every account's balance, reservations and journal sum.
pub async fn account_balances(database_url: &str) -> Vec<AccountBalance> {
    use diesel_async::{AsyncConnection, RunQueryDsl};
    let mut conn = diesel_async::AsyncPgConnection::establish(database_url)
        .await
        .expect("connecting");
    diesel::sql_query(
        "SELECT a.username, b.balance, b.reserved, \
         coalesce((SELECT sum(j.amount) FROM balance_journal j WHERE j.account_id = a.id), 0)::int8 AS journal \
         FROM accounts a JOIN balances b ON b.account_id = a.id ORDER BY a.id",
    )
    .load(&mut conn)
    .await
    .expect("reading balances")
}

/// Every account's numbers once no connector holds a reservation any more (they are given
/// back about a second after an account's last packet, or swept when their connector died).
pub async fn idle_balances(database_url: &str, within: Duration) -> Vec<AccountBalance> {
    let started = std::time::Instant::now();
    loop {
        let rows = account_balances(database_url).await;
        if rows.iter().all(|row| row.reserved == 0) {
            return rows;
        }
        assert!(
            started.elapsed() < within,
            "reservations still there after {within:?}: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Packets posted on `username`'s account: the sum of its journal rows' packet counts.
pub async fn journal_packets(database_url: &str, username: &str) -> i64 {
    use diesel_async::{AsyncConnection, RunQueryDsl};
    #[derive(diesel::QueryableByName)]
    struct Packets {
        #[diesel(sql_type = diesel::sql_types::Int8)]
        packets: i64,
    }
    let mut conn = diesel_async::AsyncPgConnection::establish(database_url)
        .await
        .expect("connecting");
    diesel::sql_query(
        "SELECT coalesce(sum(j.packet_count), 0)::int8 AS packets FROM balance_journal j \
         JOIN accounts a ON a.id = j.account_id WHERE a.username = $1 AND j.kind = 'packets'",
    )
    .bind::<diesel::sql_types::Text, _>(username)
    .get_result::<Packets>(&mut conn)
    .await
    .expect("reading the journal")
    .packets
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running `ilp-settlement-worker`; SIGKILLed when dropped.
pub struct SettlementWorker {
    child: Child,
    config: PathBuf,
}

impl SettlementWorker {
    /// Starts the worker on `database_url` with the TOML `config` and extra environment.
    /// Its log goes to stderr of the test when `E2E_LOGS` is set.
    pub fn start(database_url: &str, config: &str, env: &[(&str, &str)]) -> SettlementWorker {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "e2e-worker-{}-{}.toml",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&path, config).expect("writing the worker config");
        let output = || {
            if std::env::var_os("E2E_LOGS").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            }
        };
        let child = Command::new(binary("ilp-settlement-worker"))
            .arg("--config")
            .arg(&path)
            .env("DATABASE_URL", database_url)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(output())
            .stderr(output())
            .spawn()
            .expect("starting ilp-settlement-worker");
        SettlementWorker {
            child,
            config: path,
        }
    }

    /// SIGKILLs it (no shutdown of any kind) and waits for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SettlementWorker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// Polls `check` every 50 ms until it returns `Some` or `within` has passed.
pub async fn eventually<T, F, Fut>(within: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`eventually`], panicking with `what` when `within` passes first.
pub async fn wait_for<T, F, Fut>(within: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually(within, check)
        .await
        .unwrap_or_else(|| panic!("not within {within:?}: {what}"))
}

/// GETs `path` from `addr` (an admin listener, e.g. a worker's): status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let uri: hyper::Uri = format!("http://{addr}{path}").parse().expect("a URI");
    let response = client.get(uri).await.expect("GET");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("reading the body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The npm packages' directory, `tests/js`, checked to hold `package` (`scripts/js.sh`
/// installs them; `scripts/test.sh` runs it).
pub fn js_dir(package: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("js");
    assert!(
        dir.join("node_modules").join(package).exists(),
        "{}/node_modules/{package} is missing: run scripts/js.sh (scripts/test.sh does)",
        dir.display()
    );
    dir
}

/// Runs `node <script>` of `tests/js` (at most 120 s) with `env`, from a blocking task; the
/// script must succeed and print one JSON line, which is returned.
pub async fn run_js(script: &'static str, env: Vec<(&'static str, String)>) -> serde_json::Value {
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .args(["120", "node", script])
            .current_dir(js_dir("ilp-protocol-stream"))
            .envs(env)
            .output()
            .expect("running node (scripts/js.sh installs it)")
    })
    .await
    .expect("the node task");
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|err| panic!("{script} printed no JSON ({err})"));
    eprintln!("{script}: {result}");
    result
}

/// Adds `alice`, a child in USD cents that sends with token `alice-token` and may owe us
/// `credit_limit` (empty: unlimited), to the database at `database_url`.
pub fn add_sender(database_url: &str, credit_limit: &str) {
    add_child(database_url, "alice", credit_limit);
}

/// Adds `name`, a child in USD cents that sends with token `<name>-token` and may owe us
/// `credit_limit` (empty: unlimited).
pub fn add_child(database_url: &str, name: &str, credit_limit: &str) {
    let token = format!("{name}-token");
    cli(
        database_url,
        &[
            "accounts",
            "add",
            name,
            "--relation",
            "child",
            "--asset-code",
            "USD",
            "--asset-scale",
            "2",
            "--incoming-token",
            &token,
            "--credit-limit",
            credit_limit,
        ],
    );
}

/// Adds `bob`, a child in USD cents whose packets go to `receiver_url`.
pub fn add_receiver(database_url: &str, receiver_url: &str) {
    let args = [
        "accounts",
        "add",
        "bob",
        "--relation",
        "child",
        "--asset-code",
        "USD",
        "--asset-scale",
        "2",
    ];
    let mut args = args.to_vec();
    args.extend(["--outgoing-url", receiver_url]);
    cli(database_url, &args);
}
