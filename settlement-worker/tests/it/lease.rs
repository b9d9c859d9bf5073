//! `claim_due_ledger` / `finish_poll` / `register_ledgers`: one replica per ledger at a time.

use schema::LedgerKind;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use diesel_async::SimpleAsyncConnection;
use schema::models::ledger::{
    NewLedger, claim_due_ledger, database_now, find_ledger, finish_poll, register_ledgers,
};
use schema::test_db::TestDb;
use tokio::sync::Barrier;

use crate::{owned, register_due};

const LEASE: Duration = Duration::from_secs(60);

// Proves a claim hides the ledger from a second replica both while its transaction is open
// (SKIP LOCKED) and after it commits (the live lease).
#[tokio::test]
async fn a_held_claim_is_invisible_to_another_replica() -> anyhow::Result<()> {
    let db = TestDb::new().await;
    let (mut a, mut b) = (db.connect().await, db.connect().await);
    register_due(&mut a, &["one"]).await;
    let names = owned(&["one"]);

    a.batch_execute("BEGIN").await?;
    let claimed_a = claim_due_ledger(&mut a, "replica-a", &names, LEASE).await?;
    assert_eq!(claimed_a.map(|c| c.name).as_deref(), Some("one"));
    // A's transaction still holds the row lock here.
    assert_eq!(
        claim_due_ledger(&mut b, "replica-b", &names, LEASE).await?,
        None
    );
    a.batch_execute("COMMIT").await?;
    // Committed: now the lease itself keeps B out.
    assert_eq!(
        claim_due_ledger(&mut b, "replica-b", &names, LEASE).await?,
        None
    );

    let row = find_ledger(&mut b, "one").await?;
    assert_eq!(row.lease_owner.as_deref(), Some("replica-a"));
    Ok(())
}

// Proves that replicas racing for the same ledgers (started together on a barrier) claim
// each ledger exactly once.
#[tokio::test]
async fn racing_replicas_claim_each_ledger_once() -> anyhow::Result<()> {
    const REPLICAS: usize = 6;
    let db = TestDb::new().await;
    let ledgers = ["l1", "l2", "l3", "l4"];
    register_due(&mut db.connect().await, &ledgers).await;
    let names = Arc::new(owned(&ledgers));
    let barrier = Arc::new(Barrier::new(REPLICAS));

    let mut tasks = Vec::new();
    for replica in 0..REPLICAS {
        let mut conn = db.connect().await;
        let (names, barrier) = (names.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let owner = format!("replica-{replica}");
            barrier.wait().await;
            let mut claimed = Vec::new();
            while let Some(ledger) = claim_due_ledger(&mut conn, &owner, &names, LEASE)
                .await
                .unwrap()
            {
                claimed.push((ledger.name, owner.clone()));
            }
            claimed
        }));
    }
    let mut owners: HashMap<String, Vec<String>> = HashMap::new();
    for task in tasks {
        for (ledger, owner) in task.await? {
            owners.entry(ledger).or_default().push(owner);
        }
    }
    assert_eq!(owners.len(), ledgers.len(), "{owners:?}");
    for (ledger, owners) in &owners {
        assert_eq!(owners.len(), 1, "{ledger} claimed by {owners:?}");
        let row = find_ledger(&mut db.connect().await, ledger).await?;
        assert_eq!(row.lease_owner.as_ref(), Some(&owners[0]));
    }
    Ok(())
}

// Proves a dead replica's ledger is taken over once its lease lapses, and that the old
// owner's late finish_poll then changes nothing.
#[tokio::test]
async fn an_expired_lease_is_taken_over() -> anyhow::Result<()> {
    let db = TestDb::new().await;
    let (mut a, mut b) = (db.connect().await, db.connect().await);
    register_due(&mut a, &["one"]).await;
    let names = owned(&["one"]);

    let short = Duration::from_millis(300);
    assert!(
        claim_due_ledger(&mut a, "replica-a", &names, short)
            .await?
            .is_some()
    );
    assert_eq!(
        claim_due_ledger(&mut b, "replica-b", &names, LEASE).await?,
        None
    );

    tokio::time::sleep(Duration::from_millis(500)).await;
    let taken = claim_due_ledger(&mut b, "replica-b", &names, LEASE).await?;
    assert_eq!(taken.map(|c| c.name).as_deref(), Some("one"));

    let now = database_now(&mut a).await?;
    let a_next = now + TimeDelta::hours(1);
    assert!(!finish_poll(&mut a, "one", "replica-a", a_next).await?);
    let row = find_ledger(&mut a, "one").await?;
    assert_eq!(row.lease_owner.as_deref(), Some("replica-b"));
    assert_eq!(row.last_poll_at, None);

    let b_next = now + TimeDelta::seconds(30);
    assert!(finish_poll(&mut b, "one", "replica-b", b_next).await?);
    let row = find_ledger(&mut b, "one").await?;
    assert_eq!((row.lease_owner, row.lease_expires_at), (None, None));
    assert_eq!(row.next_poll_at, b_next);
    assert!(row.last_poll_at.is_some_and(|at| at >= now));
    Ok(())
}

// Proves a finished ledger is not claimable before its next due time, and is after it.
#[tokio::test]
async fn a_ledger_is_claimable_only_when_due() -> anyhow::Result<()> {
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    register_due(&mut conn, &["one"]).await;
    let names = owned(&["one"]);

    assert!(
        claim_due_ledger(&mut conn, "a", &names, LEASE)
            .await?
            .is_some()
    );
    let next = database_now(&mut conn).await? + TimeDelta::milliseconds(400);
    assert!(finish_poll(&mut conn, "one", "a", next).await?);
    assert_eq!(claim_due_ledger(&mut conn, "a", &names, LEASE).await?, None);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let claimed = claim_due_ledger(&mut conn, "a", &names, LEASE).await?;
    assert_eq!(claimed.map(|c| c.due_at), Some(next));
    // Ledgers not named by this replica's configuration are never claimed.
    register_due(&mut conn, &["other"]).await;
    assert_eq!(claim_due_ledger(&mut conn, "a", &names, LEASE).await?, None);
    Ok(())
}

// Proves re-registering updates the kind only: schedule and lease state survive a restart.
#[tokio::test]
async fn registering_again_keeps_schedule_state() -> anyhow::Result<()> {
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    let now = database_now(&mut conn).await?;
    let first = now + TimeDelta::minutes(5);
    let new = |kind, next_poll_at| NewLedger {
        name: "one",
        kind,
        next_poll_at,
    };
    register_ledgers(&mut conn, &[new(LedgerKind::Claims, first)]).await?;
    register_ledgers(&mut conn, &[new(LedgerKind::Rfc38, now)]).await?;
    let row = find_ledger(&mut conn, "one").await?;
    assert_eq!(row.kind, LedgerKind::Rfc38);
    assert_eq!(row.next_poll_at, first);
    // The database's CHECK backs the enum: a word outside it is refused.
    let bad: Result<usize, schema::DbError> = diesel_async::RunQueryDsl::execute(
        diesel::sql_query(
            "INSERT INTO ledgers (name, kind, next_poll_at) VALUES ('two', 'paypal', now())",
        ),
        &mut conn,
    )
    .await
    .map_err(Into::into);
    assert!(matches!(bad, Err(schema::DbError::Refused(_))), "{bad:?}");
    Ok(())
}
