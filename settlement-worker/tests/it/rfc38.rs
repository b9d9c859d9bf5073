//! Outgoing settlement through an RFC 38 engine: a scripted engine on 127.0.0.1:0 and
//! `poll_ledger` on a real PostgreSQL.

// Fixtures (fake engines and peers, account set-up) panic where a step fails, like the tests.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use schema::models::NewAccount;
use schema::models::account::insert_account;
use schema::models::balance::{find_balance, sum_journal};
use schema::models::incoming_settlement::credit_incoming_settlement;
use schema::models::settlement::Settlement;
use schema::test_db::TestDb;
use settlement_worker::{Adaptor, PollReport, WorkerConfig, poll_ledger};

/// What the engine does with one settle call.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    Status(u16),
    /// Never answers (the worker's call timeout fires).
    Hang,
}

/// One request the engine received.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
    pub body: serde_json::Value,
}

/// A scripted RFC 38 engine: `POST /accounts` always 201; settle calls answered from the
/// script in order, then 201.
pub struct Engine {
    pub addr: SocketAddr,
    pub calls: Arc<Mutex<Vec<Call>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Engine {
    pub async fn start(script: &[Answer]) -> Engine {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
        let (sink, task_script) = (calls.clone(), script.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (sink, script) = (sink.clone(), task_script.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: Request<hyper::body::Incoming>| {
                            let (sink, script) = (sink.clone(), script.clone());
                            async move {
                                let method = request.method().to_string();
                                let path = request.uri().path().to_owned();
                                let idempotency_key = request
                                    .headers()
                                    .get("idempotency-key")
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_owned);
                                let body = request.into_body().collect().await.unwrap().to_bytes();
                                let body = serde_json::from_slice(&body)
                                    .unwrap_or(serde_json::Value::Null);
                                let is_settle = path.ends_with("/settlements");
                                sink.lock().unwrap().push(Call {
                                    method,
                                    path,
                                    idempotency_key,
                                    body,
                                });
                                let answer = if is_settle {
                                    script
                                        .lock()
                                        .unwrap()
                                        .pop_front()
                                        .unwrap_or(Answer::Status(201))
                                } else {
                                    Answer::Status(201)
                                };
                                let status = match answer {
                                    Answer::Status(status) => status,
                                    Answer::Hang => {
                                        tokio::time::sleep(Duration::from_secs(3600)).await;
                                        500
                                    }
                                };
                                let mut response =
                                    Response::new(Full::new(Bytes::from_static(b"{}")));
                                *response.status_mut() = StatusCode::from_u16(status).unwrap();
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
        Engine { addr, calls, task }
    }

    pub fn settle_calls(&self) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|call| call.path.ends_with("/settlements"))
            .cloned()
            .collect()
    }

    pub fn account_calls(&self) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|call| call.path == "/accounts")
            .cloned()
            .collect()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The adaptor of an rfc38 ledger `usd` on `engine`, with a 300 ms call timeout.
pub fn rfc38_adaptor(engine: &Engine) -> Adaptor {
    let config = WorkerConfig::from_toml(&format!(
        "[[ledgers]]\nname = \"usd\"\nkind = \"rfc38\"\nschedule = \"* * * * * *\"\n\
         options = {{ engine_url = \"http://{}\", call_timeout_ms = 300 }}\n",
        engine.addr
    ))
    .unwrap();
    config.ledgers[0].adaptor().unwrap()
}

/// An account on `ledger` (threshold 1000, settle-to 0) whose balance is raised to `balance`
/// by an incoming settlement (so the journal explains it).
pub async fn funded_account(
    conn: &mut AsyncPgConnection,
    username: &str,
    ledger: Option<&str>,
    balance: i64,
) -> i64 {
    let token = [username.len() as u8; 32];
    let id = insert_account(
        conn,
        &NewAccount {
            username,
            ilp_address: None,
            asset_code: "USD",
            asset_scale: 2,
            relation: schema::Relation::Peer,
            max_packet_amount: None,
            settle_threshold: Some(1000),
            settle_to: 0,
            ledger,
            incoming_token_hash: &token,
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
    credit_incoming_settlement(conn, id, "funding", &balance.to_string(), 2)
        .await
        .unwrap();
    id
}

/// The balance, after checking it equals the journal's sum.
pub async fn balance(conn: &mut AsyncPgConnection, id: i64) -> i64 {
    let balance = find_balance(conn, id).await.unwrap().balance;
    assert_eq!(
        balance,
        sum_journal(conn, id).await.unwrap(),
        "balance = sum(journal)"
    );
    balance
}

pub async fn settlements(conn: &mut AsyncPgConnection) -> Vec<Settlement> {
    use diesel::{QueryDsl, SelectableHelper};
    use schema::schema::settlements;
    settlements::table
        .order(settlements::seq)
        .select(Settlement::as_select())
        .load(conn)
        .await
        .unwrap()
}

pub async fn make_due(conn: &mut AsyncPgConnection) {
    conn.batch_execute("UPDATE settlements SET next_attempt_at = now() WHERE state = 'pending'")
        .await
        .unwrap();
}

async fn journal_rows(conn: &mut AsyncPgConnection, kind: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::Int8)]
        n: i64,
    }
    let row: Count = diesel::sql_query("SELECT count(*) AS n FROM balance_journal WHERE kind = $1")
        .bind::<diesel::sql_types::Text, _>(kind)
        .get_result(conn)
        .await
        .unwrap();
    row.n
}

fn later() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

// Proves a settlement survives 500, 500 and a timeout: every settle call carries the same
// Idempotency-Key (the settlement id), the balance is lowered exactly once, and the
// settlement ends confirmed exactly once with nothing new started meanwhile.
#[tokio::test]
async fn transient_failures_retry_with_the_same_key_until_confirmed() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let conn = &mut db.connect().await;
    let carol = funded_account(conn, "carol", Some("usd"), 1500).await;
    let engine = Engine::start(&[
        Answer::Status(500),
        Answer::Status(500),
        Answer::Hang,
        Answer::Status(201),
    ])
    .await;
    let adaptor = rfc38_adaptor(&engine);

    let first = poll_ledger(&pool, "usd", &adaptor, later()).await.unwrap();
    assert_eq!((first.started, first.postponed), (1, 1));
    assert_eq!(balance(conn, carol).await, 0);
    for _ in 0..2 {
        make_due(conn).await;
        let report = poll_ledger(&pool, "usd", &adaptor, later()).await.unwrap();
        assert_eq!((report.started, report.postponed), (0, 1), "{report:?}");
    }
    // Not due yet: the backoff holds it back.
    assert_eq!(
        poll_ledger(&pool, "usd", &adaptor, later()).await.unwrap(),
        PollReport::default()
    );
    make_due(conn).await;
    let last = poll_ledger(&pool, "usd", &adaptor, later()).await.unwrap();
    assert_eq!(last.confirmed, 1);
    assert_eq!(
        poll_ledger(&pool, "usd", &adaptor, later()).await.unwrap(),
        PollReport::default()
    );

    let rows = settlements(conn).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].state.as_str(), rows[0].amount, rows[0].attempts),
        ("confirmed", 1500, 3)
    );
    let calls = engine.settle_calls();
    assert_eq!(calls.len(), 4);
    for call in &calls {
        assert_eq!(
            call.idempotency_key.as_deref(),
            Some(rows[0].id.to_string().as_str())
        );
        assert_eq!(call.path, format!("/accounts/{carol}/settlements"));
        assert_eq!(call.body, serde_json::json!({"amount": "1500", "scale": 2}));
    }
    let accounts = engine.account_calls();
    assert_eq!(accounts.len(), 1, "the engine account is created once");
    assert_eq!(
        accounts[0].body,
        serde_json::json!({"id": carol.to_string()})
    );
    assert_eq!(balance(conn, carol).await, 0);
    assert_eq!(journal_rows(conn, "settlement_sent").await, 1);
    assert_eq!(journal_rows(conn, "settlement_refunded").await, 0);
}

// Proves a definite rejection (400) refunds the amount and marks the settlement failed, in
// step with the journal.
#[tokio::test]
async fn a_rejection_refunds_and_fails() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let conn = &mut db.connect().await;
    let carol = funded_account(conn, "carol", Some("usd"), 1500).await;
    let engine = Engine::start(&[Answer::Status(400)]).await;
    let adaptor = rfc38_adaptor(&engine);

    let report = poll_ledger(&pool, "usd", &adaptor, later()).await.unwrap();
    assert_eq!((report.started, report.refunded), (1, 1));
    let rows = settlements(conn).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, schema::SettlementState::Failed);
    assert!(rows[0].last_error.as_deref().unwrap_or("").contains("400"));
    assert_eq!(balance(conn, carol).await, 1500);
    assert_eq!(journal_rows(conn, "settlement_sent").await, 1);
    assert_eq!(journal_rows(conn, "settlement_refunded").await, 1);
}

// Proves an account with a threshold but no ledger (or another ledger) is never lowered and
// the engine never called.
#[tokio::test]
async fn accounts_of_no_or_other_ledgers_are_never_lowered() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let conn = &mut db.connect().await;
    let none = funded_account(conn, "nobody", None, 5000).await;
    let other = funded_account(conn, "other", Some("eur"), 5000).await;
    let engine = Engine::start(&[]).await;
    let adaptor = rfc38_adaptor(&engine);

    assert_eq!(
        poll_ledger(&pool, "usd", &adaptor, later()).await.unwrap(),
        PollReport::default()
    );
    assert!(engine.calls.lock().unwrap().is_empty());
    assert_eq!(balance(conn, none).await, 5000);
    assert_eq!(balance(conn, other).await, 5000);
    assert!(settlements(conn).await.is_empty());
}

// Proves two accounts over their threshold on one ledger are both settled in the same poll
// while one has Prepares in flight: the busy one is paid only what leaves its reservation
// within its credit limit (no CHECK fires), the idle one in full.
#[tokio::test]
async fn a_busy_account_is_settled_within_its_reservation_beside_an_idle_one() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let conn = &mut db.connect().await;
    let busy = funded_account(conn, "busy", Some("usd"), 1500).await;
    let idle = funded_account(conn, "idler", Some("usd"), 1200).await;
    // A connector reserved 400 of busy's credit (limit 0) for its Prepares in flight.
    conn.batch_execute(&format!(
        "UPDATE balances SET reserved = 400 WHERE account_id = {busy}"
    ))
    .await
    .unwrap();
    let engine = Engine::start(&[]).await;
    let report = poll_ledger(&pool, "usd", &rfc38_adaptor(&engine), later())
        .await
        .unwrap();
    assert_eq!(
        (report.started, report.confirmed, report.skipped),
        (2, 2, 0)
    );
    assert_eq!(
        balance(conn, busy).await,
        400,
        "paid 1100, kept the 400 reserved"
    );
    assert_eq!(balance(conn, idle).await, 0);
    let amounts: Vec<(i64, i64)> = settlements(conn)
        .await
        .iter()
        .map(|s| (s.account_id, s.amount))
        .collect();
    assert_eq!(amounts, [(busy, 1100), (idle, 1200)]);
}

// Proves one account whose settlement the database refuses does not stop the poll: the
// other account of the ledger is settled, the refused one is skipped (counted in the
// report) and settled on a later poll once the cause is gone.
#[tokio::test]
async fn an_account_the_database_refuses_is_skipped_and_the_others_are_settled() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let conn = &mut db.connect().await;
    let refused = funded_account(conn, "refused", Some("usd"), 1500).await;
    let fine = funded_account(conn, "fine-one", Some("usd"), 1200).await;
    // A fault injected in the database: inserting refused's settlement violates a CHECK.
    conn.batch_execute(&format!(
        "CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.account_id = {refused} THEN \
             RAISE check_violation USING MESSAGE = 'injected refusal'; \
           END IF; RETURN NEW; END $$; \
         CREATE TRIGGER refuse_one BEFORE INSERT ON settlements \
           FOR EACH ROW EXECUTE FUNCTION refuse_one();"
    ))
    .await
    .unwrap();
    let engine = Engine::start(&[]).await;
    let adaptor = rfc38_adaptor(&engine);
    let report = poll_ledger(&pool, "usd", &adaptor, later()).await.unwrap();
    assert_eq!(
        (report.started, report.confirmed, report.skipped),
        (1, 1, 1)
    );
    assert_eq!(balance(conn, fine).await, 0);
    assert_eq!(
        balance(conn, refused).await,
        1500,
        "its transaction rolled back whole"
    );

    conn.batch_execute("DROP TRIGGER refuse_one ON settlements")
        .await
        .unwrap();
    let report = poll_ledger(&pool, "usd", &adaptor, later()).await.unwrap();
    assert_eq!((report.started, report.skipped), (1, 0));
    assert_eq!(balance(conn, refused).await, 0);
}

/// `(method, path)` of every call the engine got that was not a settlement.
fn lifecycle_calls(engine: &Engine) -> Vec<(String, String)> {
    engine
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|call| !call.path.ends_with("/settlements"))
        .map(|call| (call.method.clone(), call.path.clone()))
        .collect()
}

async fn engine_accounts(conn: &mut AsyncPgConnection) -> Vec<i64> {
    use diesel::QueryDsl;
    use schema::schema::ledger_accounts;
    ledger_accounts::table
        .filter(diesel::ExpressionMethods::eq(
            ledger_accounts::ledger,
            "usd",
        ))
        .order(ledger_accounts::account_id)
        .select(ledger_accounts::account_id)
        .load(conn)
        .await
        .unwrap()
}

// Proves the RFC 38 account lifecycle without any settlement: every account of the ledger is
// created on the engine at the next poll (and only once), an engine that is down is retried
// on the next poll, and an account that leaves the ledger or is removed is deleted from the
// engine; ledger_accounts says which accounts the engine has at every step.
#[tokio::test]
async fn engine_accounts_follow_the_ledgers_accounts() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let conn = &mut db.connect().await;
    // Below their threshold: nothing to settle, only accounts to set up.
    let alice = funded_account(conn, "alice", Some("usd"), 500).await;
    let bob = funded_account(conn, "bob", Some("usd"), 500).await;
    let _other = funded_account(conn, "other-ledger", Some("eur"), 500).await;

    // The engine is down: nothing recorded, counted as failed, the poll goes on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = Engine {
        addr: closed.local_addr().unwrap(),
        calls: Arc::default(),
        task: tokio::spawn(async {}),
    };
    drop(closed);
    let down_adaptor = rfc38_adaptor(&down);
    let report = poll_ledger(&pool, "usd", &down_adaptor, later())
        .await
        .unwrap();
    assert_eq!(report.engine_accounts_failed, 2);
    assert!(engine_accounts(conn).await.is_empty());
    // Polled again at once: both back off (5 s at first) instead of failing again.
    let report = poll_ledger(&pool, "usd", &down_adaptor, later())
        .await
        .unwrap();
    assert_eq!(
        (
            report.engine_accounts_failed,
            report.engine_accounts_backing_off
        ),
        (0, 2)
    );

    let engine = Engine::start(&[]).await;
    let adaptor = rfc38_adaptor(&engine);
    let report = poll_ledger(&pool, "usd", &adaptor, later()).await.unwrap();
    assert_eq!((report.engine_accounts_created, report.started), (2, 0));
    assert_eq!(engine_accounts(conn).await, [alice, bob]);
    let ids: Vec<serde_json::Value> = engine
        .account_calls()
        .iter()
        .map(|call| call.body.clone())
        .collect();
    assert_eq!(
        ids,
        [
            serde_json::json!({ "id": alice.to_string() }),
            serde_json::json!({ "id": bob.to_string() })
        ]
    );
    // Again: the engine has them, nothing is sent.
    let report = poll_ledger(&pool, "usd", &adaptor, later()).await.unwrap();
    assert_eq!(report.engine_accounts_created, 0);
    assert_eq!(lifecycle_calls(&engine).len(), 2);

    // A worker that starts again (a new adaptor) posts both again, whatever ledger_accounts
    // says: the engine may have lost them (an in-memory store restarted).
    let restarted = rfc38_adaptor(&engine);
    let report = poll_ledger(&pool, "usd", &restarted, later())
        .await
        .unwrap();
    assert_eq!(report.engine_accounts_created, 2);
    assert_eq!(lifecycle_calls(&engine).len(), 4);
    let report = poll_ledger(&pool, "usd", &restarted, later())
        .await
        .unwrap();
    assert_eq!(report.engine_accounts_created, 0);
    assert_eq!(lifecycle_calls(&engine).len(), 4);

    // alice leaves the ledger; bob is removed.
    conn.batch_execute(&format!(
        "UPDATE accounts SET ledger = NULL WHERE id = {alice}; \
         UPDATE accounts SET deleted_at = now() WHERE id = {bob}"
    ))
    .await
    .unwrap();
    let report = poll_ledger(&pool, "usd", &adaptor, later()).await.unwrap();
    assert_eq!(report.engine_accounts_deleted, 2);
    assert!(engine_accounts(conn).await.is_empty());
    assert_eq!(
        lifecycle_calls(&engine)[4..],
        [
            ("DELETE".to_owned(), format!("/accounts/{alice}")),
            ("DELETE".to_owned(), format!("/accounts/{bob}")),
        ]
    );
}
