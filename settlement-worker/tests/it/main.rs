//! Database tests of the settlement worker on a real PostgreSQL (`TEST_DATABASE_URL`, see
//! `scripts/db.sh`): leases, schedules across two replicas, the binary's lifecycle and its
//! admin listener, and settlement through an RFC 38 engine and through signed claims.

mod binary;
mod claims;
mod lease;
mod metrics;
mod rfc38;
mod schedule;

use diesel_async::AsyncPgConnection;
use schema::models::ledger::{NewLedger, database_now, register_ledgers};

/// Registers `names` as `claims` ledgers due now.
pub async fn register_due(conn: &mut AsyncPgConnection, names: &[&str]) {
    let now = database_now(conn).await.expect("reading now()");
    let rows: Vec<NewLedger<'_>> = names
        .iter()
        .map(|name| NewLedger {
            name,
            kind: schema::LedgerKind::Claims,
            next_poll_at: now,
        })
        .collect();
    register_ledgers(conn, &rows)
        .await
        .expect("registering ledgers");
}

/// `names` as owned strings, as `claim_due_ledger` takes them.
pub fn owned(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}
