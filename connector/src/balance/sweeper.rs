//! Registration, heartbeat and the reservation sweeper.
//!
//! Every `ilp-connector serve` registers in `connector_instances` and heartbeats every
//! [`HEARTBEAT_INTERVAL`], recording what it has in flight per account (a gauge for
//! dashboards), and counts the instances that heartbeat within [`LIVE_WITHIN`]: the number
//! that share each account's rate limits. Every [`SWEEP_INTERVAL`], each live connector gives back the reservations of
//! instances whose heartbeat is older than [`STALE_AFTER`]: a process that died (SIGKILL,
//! power loss) keeps its reservations for at most `STALE_AFTER + SWEEP_INTERVAL` (70 s). A
//! swept process that was only cut off cannot post afterwards (its batches check its
//! registration first) and stops, so a swept reservation is never used twice.

use std::time::Duration;

use schema::DbPool;
use schema::models::balance::{count_live_instances, heartbeat, report_in_flight, sweep_instances};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio_util::sync::CancellationToken;

use super::escrow::Escrow;
use uuid::Uuid;

/// How often this process says it is alive.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Silence after which a process's reservations are given back. Longer than the longest hold the
/// expiry shortener allows (30 s), with room for a slow database.
pub const STALE_AFTER: Duration = Duration::from_secs(60);
/// How often to look for silent processes.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// An instance that heartbeat within this counts as live when the replicas share a rate
/// limit.
pub const LIVE_WITHIN: Duration = Duration::from_secs(3);

/// Heartbeats for `instance` (with what `escrow` has in flight), counts the live instances
/// into `replicas` (the rate limits' divisor) and sweeps silent instances until `shutdown`.
/// Cancels `fatal` if this instance was swept.
pub async fn run(
    pool: DbPool,
    escrow: Arc<Escrow>,
    replicas: Arc<AtomicUsize>,
    instance: Uuid,
    stale_after: Duration,
    fatal: CancellationToken,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(HEARTBEAT_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Sweep at least twice per staleness period, so the bound stays stale_after + interval.
    let interval = SWEEP_INTERVAL.min(stale_after / 2);
    let sweep_every = u64::try_from(interval.as_millis() / HEARTBEAT_INTERVAL.as_millis())
        .unwrap_or(1)
        .max(1);
    let mut count: u64 = 0;
    let mut reported: Vec<(i64, i64, i64)> = Vec::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        count += 1;
        let Ok(mut conn) = pool.get().await else {
            continue; // the database is away; the writer reports it on the packet path
        };
        match heartbeat(&mut conn, instance).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::error!(connector.instance = %instance, "this connector was swept as dead; stopping");
                fatal.cancel();
                return;
            }
            Err(err) => tracing::debug!(error = %err, "heartbeat failed"),
        }
        match count_live_instances(&mut conn, LIVE_WITHIN).await {
            Ok(live) => {
                let live = usize::try_from(live).unwrap_or(1).max(1);
                if replicas.swap(live, Ordering::Relaxed) != live {
                    tracing::info!(
                        replicas = live,
                        "live connector instances changed; rate limits are shared by this many"
                    );
                }
            }
            Err(err) => tracing::debug!(error = %err, "counting live instances failed"),
        }
        let in_flight = escrow.in_flight();
        if in_flight != reported {
            match report_in_flight(&mut conn, instance, &in_flight).await {
                Ok(()) => reported = in_flight,
                Err(err) => tracing::debug!(error = %err, "reporting what is in flight failed"),
            }
        }
        if count.is_multiple_of(sweep_every) {
            match sweep_instances(&mut conn, None, stale_after).await {
                Ok(0) => {}
                Ok(swept) => tracing::warn!(
                    swept,
                    "gave back the reservations of connector processes that stopped heartbeating"
                ),
                Err(err) => tracing::debug!(error = %err, "sweeping reservations failed"),
            }
        }
    }
}
