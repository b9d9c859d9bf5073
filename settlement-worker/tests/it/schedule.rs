//! Two real `run_observed` loops ("replicas") on one database, against real time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use schema::models::ledger::find_ledger;
use schema::test_db::TestDb;
use settlement_worker::{PollObserver, PollRecord, WorkerConfig, run_observed};
use tokio_util::sync::CancellationToken;

/// How long the replicas run.
const RUN_FOR: Duration = Duration::from_secs(7);
/// Short, so a due ledger waits at most this long and the 2 s gaps stay near 2 s.
const IDLE_POLL_MS: u64 = 100;

fn replica_config(instance: &str) -> WorkerConfig {
    WorkerConfig::from_toml(&format!(
        r#"
        [worker]
        instance_name = "{instance}"
        lease_secs = 30
        idle_poll_ms = {IDLE_POLL_MS}

        [[ledgers]]
        name = "every-2s"
        kind = "claims"
        schedule = "*/2 * * * * *"

        [[ledgers]]
        name = "every-10s"
        kind = "rfc38"
        schedule = "*/10 * * * * *"
        options = {{ engine_url = "http://127.0.0.1:9" }}
        "#
    ))
    .expect("the replica config is valid")
}

// Proves two replicas together poll each ledger on its own schedule: the 2 s ledger 3-4
// times in 7 s, never twice within 1.5 s, the 10 s ledger at most once, and no two polls of
// one ledger overlapping in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_follow_each_schedule() -> anyhow::Result<()> {
    let db = TestDb::new().await;
    let records: Arc<Mutex<Vec<PollRecord>>> = Arc::default();
    let shutdown = CancellationToken::new();

    let mut replicas = Vec::new();
    for instance in ["replica-a", "replica-b"] {
        let sink = records.clone();
        let observer: PollObserver = Arc::new(move |record: &PollRecord| {
            sink.lock().unwrap().push(record.clone());
        });
        replicas.push(tokio::spawn(run_observed(
            replica_config(instance),
            db.pool(),
            shutdown.clone(),
            Some(observer),
        )));
    }
    tokio::time::sleep(RUN_FOR).await;
    shutdown.cancel();
    for replica in replicas {
        tokio::time::timeout(Duration::from_secs(5), replica).await???;
    }

    let records = records.lock().unwrap().clone();
    let of = |ledger: &str| {
        let mut polls: Vec<PollRecord> = records
            .iter()
            .filter(|r| r.ledger == ledger)
            .cloned()
            .collect();
        polls.sort_by_key(|r| r.started);
        polls
    };
    let fast = of("every-2s");
    let slow = of("every-10s");

    assert!(
        (3..=4).contains(&fast.len()),
        "every-2s polled {} times: {fast:#?}",
        fast.len()
    );
    for pair in fast.windows(2) {
        let gap = pair[1].started - pair[0].started;
        assert!(gap >= Duration::from_millis(1500), "gap {gap:?}: {fast:#?}");
        // Each poll writes the next even second as the next due time, and it is honoured.
        assert_eq!(pair[1].due_at, pair[0].next_poll_at);
    }
    for poll in &fast {
        assert_eq!(poll.due_at.timestamp() % 2, 0, "{poll:?}");
        assert_eq!(poll.due_at.timestamp_subsec_nanos(), 0, "{poll:?}");
    }
    assert!(
        slow.len() <= 1,
        "every-10s polled {} times: {slow:#?}",
        slow.len()
    );

    for polls in [&fast, &slow] {
        for pair in polls.windows(2) {
            assert!(
                pair[1].started >= pair[0].finished,
                "overlapping polls: {pair:#?}"
            );
        }
        assert!(polls.iter().all(|r| r.lease_kept), "{polls:#?}");
    }

    let mut conn = db.connect().await;
    let row = find_ledger(&mut conn, "every-2s").await?;
    assert!(row.last_poll_at.is_some());
    assert_eq!(row.lease_owner, None);
    Ok(())
}

// Proves the loop survives an unreachable database (logs, backs off, retries) and still
// stops promptly when asked.
#[tokio::test]
async fn an_unreachable_database_is_retried_not_fatal() -> anyhow::Result<()> {
    let mut config = replica_config("replica-a");
    // Port 1 on localhost: connection refused at once.
    config.database.url = Some(String::from("postgres://nobody:nothing@127.0.0.1:1/none").into());
    config.database.connect_timeout_ms = 200;
    let pool = schema::build_pool(&config.database.pool_config("test")?)?;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(settlement_worker::run(config, pool, shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        !running.is_finished(),
        "the loop gave up on a database error"
    );
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), running).await???;
    Ok(())
}
