//! Settlement through stock RFC 38 engines: `ilp-settlement-core` 0.1.1 from npm, unchanged
//! (`tests/js/stock-engine.js`; only its "ledger" is a file both engines share). Two nodes,
//! each a connector (node API on loopback, no token: the framework sends none) and a worker
//! on a database of its own, peered over ILP-over-HTTP; no manual step anywhere.
//!
//! ```text
//! A's worker ─POST /accounts, /accounts/{b}/settlements─► engine A ─appends─► ledger file
//! engine B ─reads the file─► POST /accounts/{a}/settlements (Idempotency-Key) ─► node B
//! account set-up: engine A ─message─► node A ─peer.settle─► node B ─► engine B (and back)
//! ```
//! `scripts/js.sh` installs the npm packages (scripts/test.sh runs it).

// Fixtures (processes, account set-up, SQL reads) panic where a step fails, like the tests.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use connector::packet::Packet;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use e2e::{
    Behaviour, Node, Receiver, SettlementWorker, add_child, cli, free_port, js_dir, run_traffic,
    send_prepare, wait_for,
};
use schema::test_db::TestDb;

/// How long settlement may take: ledgers are polled every second, engines read the ledger
/// every 100 ms, and a first account set-up may need a poll or two more.
const WITHIN: Duration = Duration::from_secs(60);
/// Each side's peer account is settled once we owe it this much (cents), down to 0.
const THRESHOLD: i64 = 500;

/// A running `node tests/js/stock-engine.js`; its framework log (`DEBUG=settlement-core`)
/// goes to `log`.
struct StockEngine {
    port: u16,
    connector_url: String,
    ledger: PathBuf,
    address: &'static str,
    log: PathBuf,
    child: Option<Child>,
}

impl StockEngine {
    fn new(connector_url: String, ledger: &Path, address: &'static str) -> StockEngine {
        let log = ledger.with_file_name(format!("{address}.log"));
        StockEngine {
            port: free_port(),
            connector_url,
            ledger: ledger.to_owned(),
            address,
            log,
            child: None,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts it and waits until it accepts connections.
    async fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new("node")
            .arg("stock-engine.js")
            .current_dir(js_dir("ilp-settlement-core"))
            .env("ENGINE_PORT", self.port.to_string())
            .env("CONNECTOR_URL", &self.connector_url)
            .env("LEDGER_FILE", &self.ledger)
            .env("LEDGER_ADDRESS", self.address)
            .env("DEBUG", "settlement-core")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting node (scripts/js.sh installs it)");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        wait_for(WITHIN, "the engine listens", || async {
            tokio::net::TcpStream::connect(&addr).await.ok().map(drop)
        })
        .await;
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What the framework logged so far (every run of this engine).
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many times the framework logged that the connector credited `settlement_id`.
    fn credits_logged(&self, settlement_id: &str) -> usize {
        self.log()
            .lines()
            .filter(|line| {
                line.contains("Connector credited incoming settlement")
                    && line.contains(&format!("settlementId={settlement_id}"))
            })
            .count()
    }
}

impl Drop for StockEngine {
    fn drop(&mut self) {
        self.kill();
        if std::env::var_os("E2E_LOGS").is_some() {
            eprintln!("[{}] {}", self.address, self.log());
        }
    }
}

async fn connect(url: &str) -> AsyncPgConnection {
    AsyncPgConnection::establish(url).await.unwrap()
}

#[derive(Debug, diesel::QueryableByName)]
struct Row {
    #[diesel(sql_type = diesel::sql_types::Text)]
    text: String,
    #[diesel(sql_type = diesel::sql_types::Int8)]
    number: i64,
}

/// `username`'s balance, after checking it equals its journal's sum.
async fn balance(url: &str, username: &str) -> i64 {
    let rows: Vec<Row> = diesel::sql_query(format!(
        "SELECT (b.balance - coalesce((SELECT sum(j.amount) FROM balance_journal j \
           WHERE j.account_id = a.id), 0))::text AS text, b.balance AS number \
         FROM accounts a JOIN balances b ON b.account_id = a.id WHERE a.username = '{username}'"
    ))
    .load(&mut connect(url).await)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1, "{username}");
    assert_eq!(rows[0].text, "0", "{username}: balance != sum(journal)");
    rows[0].number
}

/// Outgoing settlements of `username`: (state, amount), oldest first.
async fn settlements(url: &str, username: &str) -> Vec<(String, i64)> {
    let rows: Vec<Row> = diesel::sql_query(format!(
        "SELECT s.state AS text, s.amount AS number FROM settlements s \
         JOIN accounts a ON a.id = s.account_id WHERE a.username = '{username}' ORDER BY s.seq"
    ))
    .load(&mut connect(url).await)
    .await
    .unwrap();
    rows.into_iter().map(|r| (r.text, r.number)).collect()
}

/// Incoming settlements credited to `username`: (idempotency key, base units credited).
async fn credits(url: &str, username: &str) -> Vec<(String, i64)> {
    let rows: Vec<Row> = diesel::sql_query(format!(
        "SELECT i.idempotency_key AS text, i.credited AS number FROM incoming_settlements i \
         JOIN accounts a ON a.id = i.account_id WHERE a.username = '{username}' ORDER BY i.id"
    ))
    .load(&mut connect(url).await)
    .await
    .unwrap();
    rows.into_iter().map(|r| (r.text, r.number)).collect()
}

/// Appends a payment to the shared ledger file, as a ledger participant would make it.
fn pay_on_ledger(ledger: &Path, id: &str, from: &str, to: &str, amount: &str) {
    use std::io::Write;
    let line = serde_json::json!({ "id": id, "from": from, "to": to, "amount": amount });
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(ledger)
        .unwrap();
    writeln!(file, "{line}").unwrap();
}

fn worker_config(engine_url: &str) -> String {
    format!(
        "[worker]\nidle_poll_ms = 100\n\n\
         [[ledgers]]\nname = \"eng\"\nkind = \"rfc38\"\nschedule = \"* * * * * *\"\n\
         options = {{ engine_url = \"{engine_url}\", call_timeout_ms = 15000 }}\n"
    )
}

/// One side: its connector, its worker, its engine, and the receiver its child `r` is.
struct Side {
    node: Node,
    worker: Option<SettlementWorker>,
    engine: StockEngine,
    _receiver: Receiver,
}

/// Two nodes `test.a` and `test.b`, each with a peer account for the other on ledger `eng`
/// (threshold [`THRESHOLD`], settle-to 0), a sending child `s` and a receiving child `r`,
/// routes both ways; connectors and workers started, engines started first when
/// `engines_first`, else left for the test to start.
async fn two_sides(ledger: &Path, engines_first: bool) -> (Side, Side) {
    let mut prepared = Vec::new();
    for (me, other) in [("a", "b"), ("b", "a")] {
        let db = Arc::new(TestDb::new().await);
        let receiver = Receiver::start(Behaviour::Fulfill).await;
        let url = db.url();
        add_child(url, "s", "");
        cli(
            url,
            &[
                "accounts",
                "add",
                "r",
                "--relation",
                "child",
                "--asset-code",
                "USD",
                "--asset-scale",
                "2",
                "--credit-limit",
                "",
                "--outgoing-url",
                &receiver.url(),
            ],
        );
        let peer_address = format!("test.{other}");
        let threshold = THRESHOLD.to_string();
        let incoming = format!("{other}-to-{me}");
        let outgoing = format!("{me}-to-{other}");
        cli(
            url,
            &[
                "accounts",
                "add",
                other,
                "--relation",
                "peer",
                "--asset-code",
                "USD",
                "--asset-scale",
                "2",
                "--ilp-address",
                &peer_address,
                "--credit-limit",
                "",
                "--settle-threshold",
                &threshold,
                "--settle-to",
                "0",
                "--ledger",
                "eng",
                "--incoming-token",
                &incoming,
                "--outgoing-token",
                &outgoing,
            ],
        );
        cli(url, &["routes", "add", &peer_address, other]);
        let api = format!("127.0.0.1:{}", free_port());
        let address = if me == "a" { "ledger-a" } else { "ledger-b" };
        let mut engine = StockEngine::new(format!("http://{api}"), ledger, address);
        if engines_first {
            engine.start().await;
        }
        prepared.push((me, db, receiver, api, engine));
    }
    let mut sides = Vec::new();
    for (me, db, receiver, api, engine) in prepared {
        let node = Node::start_on(
            db,
            &format!("test.{me}"),
            &[("ILP_CONNECTOR_SETTLEMENT_API__LISTEN", api.as_str())],
        );
        let worker =
            SettlementWorker::start(&node.database_url, &worker_config(&engine.url()), &[]);
        sides.push(Side {
            node,
            worker: Some(worker),
            engine,
            _receiver: receiver,
        });
    }
    let b = sides.pop().unwrap();
    let a = sides.pop().unwrap();
    a.node
        .cli(&["accounts", "update", "b", "--outgoing-url", &b.node.url()]);
    b.node
        .cli(&["accounts", "update", "a", "--outgoing-url", &a.node.url()]);
    (a, b)
}

/// A fresh directory for one test's ledger file and engine logs.
fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("e2e-stock-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `from`'s child `s` pays `amount` (over the threshold) through `from` to `to`'s child `r`;
/// `from` then owes `to` that much.
async fn pay_over_threshold(from: &Side, to: &Side, amount: u64) {
    let destination = match to.node.ilp_address.as_str() {
        "test.a" => "test.a.r",
        _ => "test.b.r",
    };
    let below = run_traffic(
        from.node.url(),
        "s-token",
        destination,
        10,
        4,
        4,
        Arc::new(AtomicBool::new(false)),
    )
    .await;
    assert_eq!((below.fulfilled, below.errors), (16, 0), "{below:?}");
    let rest = send_prepare(
        &from.node.url(),
        "s-token",
        e2e::prepare(destination, amount - 160, Duration::from_secs(10)),
    )
    .await;
    assert!(matches!(rest, Packet::Fulfill(_)), "{rest:?}");
}

/// Waits until `payer` has settled all it owed `payee` and `payee` credited it, then checks
/// exactly once: one confirmed settlement of `amount`, both balances back at 0, and one
/// credit of `amount`; returns the credit's idempotency key.
async fn settled_once(payer: &Side, payee: &Side, amount: i64) -> String {
    let payee_name = &payee.node.ilp_address["test.".len()..];
    let payer_name = &payer.node.ilp_address["test.".len()..];
    wait_for(
        WITHIN,
        "the settlement credited on the other side",
        || async {
            let settled = settlements(&payer.node.database_url, payee_name).await;
            let confirmed = settled.iter().any(|(state, _)| state == "confirmed");
            let credited = !credits(&payee.node.database_url, payer_name)
                .await
                .is_empty();
            (confirmed && credited).then_some(())
        },
    )
    .await;
    assert_eq!(
        settlements(&payer.node.database_url, payee_name).await,
        [("confirmed".to_owned(), amount)]
    );
    let credited = credits(&payee.node.database_url, payer_name).await;
    assert_eq!(credited.len(), 1, "{credited:?}");
    assert_eq!(credited[0].1, amount);
    assert_eq!(balance(&payer.node.database_url, payee_name).await, 0);
    assert_eq!(balance(&payee.node.database_url, payer_name).await, 0);
    credited[0].0.clone()
}

// Proves the whole lifecycle with engines that start after the connectors and workers: the
// workers' first account set-ups and settlement fail (engine down) and are retried; once the
// engines are up every account is created with no manual step, A settles with B and B with A,
// each credited exactly once. Then: a credit at a finer scale keeps its leftover; a credit
// made while B's connector is down is retried by the framework and credited once; and B's
// engine restarted (its in-memory store lost) sends every credit again with the same
// Idempotency-Key, and nothing is credited twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_engines_started_after_the_connectors_settle_both_ways_exactly_once() {
    let ledger = scratch_dir("after").join("ledger.jsonl");
    let (mut a, mut b) = two_sides(&ledger, false).await;

    // A owes B 600 while the engines are still down: A's worker keeps the settlement pending.
    pay_over_threshold(&a, &b, 600).await;
    wait_for(WITHIN, "A's settlement started", || async {
        (!settlements(&a.node.database_url, "b").await.is_empty()).then_some(())
    })
    .await;
    a.engine.start().await;
    b.engine.start().await;
    let a_to_b = settled_once(&a, &b, 600).await;
    assert_eq!(b.engine.credits_logged(&a_to_b), 1);

    // The other way.
    pay_over_threshold(&b, &a, 700).await;
    settled_once(&b, &a, 700).await;

    // The same Idempotency-Key again, straight at B's node API: the same answer, nothing more.
    let b_id = b
        .node
        .cli(&["accounts", "list"])
        .as_array()
        .unwrap()
        .iter()
        .find(|account| account["username"] == "a")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let api = &b.engine.connector_url;
    let replay = |key: String| async move {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Full<bytes::Bytes>>();
        let request = hyper::Request::post(format!("{api}/accounts/{b_id}/settlements"))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                br#"{"amount":"6","scale":0}"#,
            )))
            .unwrap();
        client.request(request).await.unwrap().status()
    };
    assert_eq!(replay(a_to_b.clone()).await, hyper::StatusCode::CREATED);
    assert_eq!(balance(&b.node.database_url, "a").await, 0);
    assert_eq!(credits(&b.node.database_url, "a").await.len(), 1);

    // Finer scales: 0.125 and 0.005 dollars are 12.5 and 0.5 cents; B credits 12, keeps the
    // half cent, then credits 1 more.
    pay_on_ledger(&ledger, "fine-1", "ledger-a", "ledger-b", "0.125");
    wait_for(WITHIN, "0.125 credited", || async {
        (balance(&b.node.database_url, "a").await == 12).then_some(())
    })
    .await;
    pay_on_ledger(&ledger, "fine-2", "ledger-a", "ledger-b", "0.005");
    wait_for(WITHIN, "0.005 credited with the leftover", || async {
        (balance(&b.node.database_url, "a").await == 13).then_some(())
    })
    .await;

    // B's connector down while B's engine credits 0.50: the framework retries until it is back.
    b.node.terminate();
    pay_on_ledger(&ledger, "while-down", "ledger-a", "ledger-b", "0.5");
    let engine = &b.engine;
    wait_for(WITHIN, "B's engine retrying the credit", || async {
        engine.log().contains("Retrying HTTP request").then_some(())
    })
    .await;
    b.node.kill_and_restart();
    wait_for(WITHIN, "the credit retried after the outage", || async {
        (b.engine.credits_logged("while-down") == 1).then_some(())
    })
    .await;
    assert_eq!(balance(&b.node.database_url, "a").await, 63);

    // B's engine restarts with an empty store; B's worker restarts and creates its account
    // again; the engine reads the whole ledger again and sends every credit again.
    b.engine.kill();
    b.worker.take();
    b.engine.start().await;
    b.worker = Some(SettlementWorker::start(
        &b.node.database_url,
        &worker_config(&b.engine.url()),
        &[],
    ));
    let engine = &b.engine;
    wait_for(WITHIN, "B's engine credited everything again", || async {
        [a_to_b.as_str(), "fine-1", "fine-2", "while-down"]
            .iter()
            .all(|id| engine.credits_logged(id) >= 2)
            .then_some(())
    })
    .await;
    assert_eq!(balance(&b.node.database_url, "a").await, 63);
    assert_eq!(credits(&b.node.database_url, "a").await.len(), 4);
    assert_eq!(balance(&a.node.database_url, "b").await, 0);
}

// Proves engines that are up before the connectors start work with no manual step either:
// the workers create the accounts on their first polls and a settlement is credited once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_engines_started_before_the_connectors_settle_exactly_once() {
    let ledger = scratch_dir("before").join("ledger.jsonl");
    let (a, b) = two_sides(&ledger, true).await;
    pay_over_threshold(&a, &b, 900).await;
    settled_once(&a, &b, 900).await;
    pay_over_threshold(&b, &a, 800).await;
    settled_once(&b, &a, 800).await;
}
