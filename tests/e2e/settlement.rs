//! Settlement crash safety with real processes: the real `ilp-settlement-worker` binary,
//! SIGKILLed at each step of an outgoing settlement, against an RFC 38 engine that counts
//! settle calls per idempotency key. Whatever the kill, the money moves once. The worker has
//! no test hooks: the engine and the database hold it where it is to be killed.

// Fixtures (fake engines and peers, account set-up) panic where a step fails, like the tests.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use e2e::{SettlementWorker, eventually};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use schema::models::NewAccount;
use schema::models::account::insert_account;
use schema::models::balance::{find_balance, sum_journal};
use schema::models::incoming_settlement::credit_incoming_settlement;
use schema::models::settlement::Settlement;
use schema::test_db::TestDb;

/// How long a step may take to show (the worker polls every second).
const WITHIN: Duration = Duration::from_secs(30);

/// An RFC 38 engine that credits each idempotency key once, counting every settle call per
/// key. While `hold` is set it answers no settle call (it counts them, then waits); while
/// `swallow` is set it neither counts nor answers them (as if they never arrived), only
/// `swallowed` tells the test one came.
struct CountingEngine {
    addr: SocketAddr,
    calls: Arc<Mutex<BTreeMap<String, u32>>>,
    hold: Arc<AtomicBool>,
    swallow: Arc<AtomicBool>,
    swallowed: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingEngine {
    async fn start() -> CountingEngine {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
        let hold = Arc::new(AtomicBool::new(false));
        let swallow = Arc::new(AtomicBool::new(false));
        let swallowed = Arc::new(AtomicU32::new(0));
        let state = (
            calls.clone(),
            hold.clone(),
            swallow.clone(),
            swallowed.clone(),
        );
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: Request<hyper::body::Incoming>| {
                            let (sink, holding, swallowing, swallowed) = state.clone();
                            async move {
                                let settle = request.uri().path().ends_with("/settlements");
                                let key = request
                                    .headers()
                                    .get("idempotency-key")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("<none>")
                                    .to_owned();
                                let _ = request.into_body().collect().await;
                                let mut response =
                                    Response::new(Full::new(Bytes::from_static(b"{}")));
                                *response.status_mut() = StatusCode::CREATED;
                                if settle && AtomicBool::load(&swallowing, Ordering::SeqCst) {
                                    swallowed.fetch_add(1, Ordering::SeqCst);
                                    std::future::pending::<()>().await;
                                }
                                if settle {
                                    *sink.lock().unwrap().entry(key).or_default() += 1;
                                    while AtomicBool::load(&holding, Ordering::SeqCst) {
                                        tokio::time::sleep(Duration::from_millis(20)).await;
                                    }
                                }
                                Ok::<_, Infallible>(response)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        CountingEngine {
            addr,
            calls,
            hold,
            swallow,
            swallowed,
            task,
        }
    }

    fn calls(&self) -> BTreeMap<String, u32> {
        self.calls.lock().unwrap().clone()
    }

    fn total_calls(&self) -> u32 {
        self.calls().values().sum()
    }
}

impl Drop for CountingEngine {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn worker_config(engine: &CountingEngine) -> String {
    // A short lease, so the restarted worker takes the killed one's ledger over quickly.
    format!(
        "[worker]\nlease_secs = 2\nidle_poll_ms = 100\n\n\
         [[ledgers]]\nname = \"usd\"\nkind = \"rfc38\"\nschedule = \"* * * * * *\"\n\
         options = {{ engine_url = \"http://{}\", call_timeout_ms = 60000 }}\n",
        engine.addr
    )
}

/// carol: settled through `usd` at 1000 down to 0; her balance is raised to 1500.
async fn carol(conn: &mut AsyncPgConnection) -> i64 {
    let id = insert_account(
        conn,
        &NewAccount {
            username: "carol",
            ilp_address: None,
            asset_code: "USD",
            asset_scale: 2,
            relation: schema::Relation::Peer,
            max_packet_amount: None,
            settle_threshold: Some(1000),
            settle_to: 0,
            ledger: Some("usd"),
            incoming_token_hash: &[5; 32],
            outgoing_url: None,
            outgoing_token: None,
            round_trip_time_ms: 500,
            claims_public_key: None,
            spread: None,
            max_packets_per_second: None,
            max_amount_per_second: None,
            stream_receiver: false,
        },
        Some(0),
    )
    .await
    .unwrap()
    .id;
    credit_incoming_settlement(conn, id, "funding", "1500", 2)
        .await
        .unwrap();
    id
}

async fn settlements(conn: &mut AsyncPgConnection) -> Vec<Settlement> {
    use diesel::{QueryDsl, SelectableHelper};
    schema::schema::settlements::table
        .select(Settlement::as_select())
        .load(conn)
        .await
        .unwrap()
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::Int8)]
    n: i64,
}

async fn journal_rows(conn: &mut AsyncPgConnection, kind: &str) -> i64 {
    let row: Count = diesel::sql_query("SELECT count(*) AS n FROM balance_journal WHERE kind = $1")
        .bind::<diesel::sql_types::Text, _>(kind)
        .get_result(conn)
        .await
        .unwrap();
    row.n
}

/// Where the first worker is killed.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// The pending row is committed, the engine never got the call (it swallows it).
    AfterPending,
    /// The engine has the settle call but has not answered (it holds it).
    DuringCall,
    /// The engine answered; the outcome is not recorded yet (the test holds a lock on the
    /// settlement row, so the worker's confirmation waits).
    AfterCall,
}

/// Backends of the test's database waiting for a lock.
async fn waiting_for_a_lock(conn: &mut AsyncPgConnection) -> i64 {
    let row: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .get_result(conn)
    .await
    .unwrap();
    row.n
}

/// One threshold crossing, the worker SIGKILLed at `kill_at` and restarted; then checks that
/// the money moved exactly once.
async fn kill_and_restart(kill_at: KillAt) {
    let db = TestDb::new().await;
    let conn = &mut db.connect().await;
    let carol = carol(conn).await;
    let engine = CountingEngine::start().await;
    let config = worker_config(&engine);

    match kill_at {
        KillAt::AfterPending => engine.swallow.store(true, Ordering::SeqCst),
        KillAt::DuringCall | KillAt::AfterCall => engine.hold.store(true, Ordering::SeqCst),
    }
    let mut first = SettlementWorker::start(db.url(), &config, &[]);
    let pending = eventually(WITHIN, || async {
        let rows = settlements(&mut db.connect().await).await;
        rows.into_iter()
            .find(|s| s.state == schema::SettlementState::Pending)
    })
    .await
    .expect("a pending settlement");
    // For AfterCall: a transaction holding the settlement row, so the confirmation waits.
    let mut locker = None;
    match kill_at {
        KillAt::AfterPending => {
            eventually(WITHIN, || async {
                (AtomicU32::load(&engine.swallowed, Ordering::SeqCst) >= 1).then_some(())
            })
            .await
            .expect("the worker sent the call");
            assert_eq!(
                engine.total_calls(),
                0,
                "killed before the engine got the call"
            );
        }
        KillAt::DuringCall => {
            eventually(WITHIN, || async {
                (engine.total_calls() >= 1).then_some(())
            })
            .await
            .expect("the engine was called");
        }
        KillAt::AfterCall => {
            eventually(WITHIN, || async {
                (engine.total_calls() >= 1).then_some(())
            })
            .await
            .expect("the engine was called");
            let mut holder = db.connect().await;
            holder.batch_execute("BEGIN").await.unwrap();
            diesel::sql_query("SELECT 1 FROM settlements WHERE id = $1 FOR UPDATE")
                .bind::<diesel::sql_types::Uuid, _>(pending.id)
                .execute(&mut holder)
                .await
                .unwrap();
            locker = Some(holder);
            engine.hold.store(false, Ordering::SeqCst);
            eventually(WITHIN, || async {
                (waiting_for_a_lock(&mut db.connect().await).await >= 1).then_some(())
            })
            .await
            .expect("the worker's confirmation waits for the row");
        }
    }
    assert_eq!(
        settlements(conn).await[0].state,
        schema::SettlementState::Pending,
        "{kill_at:?}: not decided yet"
    );
    first.kill();
    if let Some(mut holder) = locker {
        holder.batch_execute("ROLLBACK").await.unwrap();
    }
    engine.hold.store(false, Ordering::SeqCst);
    engine.swallow.store(false, Ordering::SeqCst);
    assert_eq!(
        find_balance(conn, carol).await.unwrap().balance,
        0,
        "lowered before the call"
    );

    let _second = SettlementWorker::start(db.url(), &config, &[]);
    eventually(WITHIN, || async {
        let rows = settlements(&mut db.connect().await).await;
        rows.iter()
            .all(|s| s.state == schema::SettlementState::Confirmed)
            .then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("{kill_at:?}: the settlement was never confirmed"));
    // A few more polls: nothing new may happen.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let rows = settlements(conn).await;
    assert_eq!(
        rows.len(),
        1,
        "{kill_at:?}: one settlement per threshold crossing"
    );
    assert_eq!(
        (rows[0].id, rows[0].state.as_str(), rows[0].amount),
        (pending.id, "confirmed", 1500)
    );
    let calls = engine.calls();
    assert_eq!(
        calls.keys().cloned().collect::<Vec<_>>(),
        [pending.id.to_string()],
        "{kill_at:?}: one idempotency key, the committed one; calls per key: {calls:?}"
    );
    let balance = find_balance(conn, carol).await.unwrap().balance;
    assert_eq!(balance, 0, "{kill_at:?}: lowered exactly once");
    assert_eq!(balance, sum_journal(conn, carol).await.unwrap());
    assert_eq!(journal_rows(conn, "settlement_sent").await, 1);
    assert_eq!(journal_rows(conn, "settlement_refunded").await, 0);
}

// Proves a worker killed after the pending row commits, before the engine call, leaves a
// settlement the restarted worker pays once, with the committed key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_pending_pays_once() {
    kill_and_restart(KillAt::AfterPending).await;
}

// Proves a worker killed during the engine call (engine hanging) is retried with the same key
// after a restart, and the money moves once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_the_call_pays_once() {
    kill_and_restart(KillAt::DuringCall).await;
}

// Proves a worker killed after the engine answered but before recording it resends the same
// key (the engine credits once) and confirms once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_call_pays_once() {
    kill_and_restart(KillAt::AfterCall).await;
}
