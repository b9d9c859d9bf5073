//! Registration, heartbeat and the hold sweeper.
//!
//! Every `ilp-connector serve` registers in `connector_instances` and heartbeats every
//! [`HEARTBEAT_INTERVAL`]. Every [`SWEEP_INTERVAL`], each live connector releases the holds
//! of instances whose heartbeat is older than [`STALE_AFTER`]: a process that died (SIGKILL,
//! power loss) leaves its holds for at most `STALE_AFTER + SWEEP_INTERVAL` (70 s). A swept
//! process that was only cut off cannot post afterwards (its batches check its registration
//! first) and stops, so a swept hold is never posted or released twice.

use std::time::Duration;

use schema::DbPool;
use schema::models::balance::{heartbeat, sweep_instances};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How often this process says it is alive.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Silence after which a process's holds are released. Longer than the longest hold the
/// expiry shortener allows (30 s), with room for a slow database.
pub const STALE_AFTER: Duration = Duration::from_secs(60);
/// How often to look for silent processes.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Heartbeats for `instance` and sweeps silent instances until `shutdown`. Cancels `fatal`
/// if this instance was swept.
pub async fn run(
    pool: DbPool,
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
            Err(err) => tracing::warn!(error = %err, "heartbeat failed"),
        }
        if count.is_multiple_of(sweep_every) {
            match sweep_instances(&mut conn, None, stale_after).await {
                Ok(0) => {}
                Ok(swept) => tracing::warn!(
                    swept,
                    "released the holds of connector processes that stopped heartbeating"
                ),
                Err(err) => tracing::warn!(error = %err, "sweeping holds failed"),
            }
        }
    }
}
