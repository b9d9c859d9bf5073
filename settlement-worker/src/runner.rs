//! The worker's loop: claim a due ledger, poll it, schedule its next poll; sleep when none
//! is due; stop between ledger runs when asked.
//!
//! Replicas share nothing but the database. Each run is bracketed by
//! [`claim_due_ledger`] (a lease, so no other replica polls that ledger meanwhile) and
//! [`finish_poll`] (the next due time, computed here from the ledger's [`Schedule`], and the
//! lease released). A replica killed mid-run leaves its lease to lapse, after which another
//! replica takes the ledger over. A run should therefore finish within `worker.lease_secs`:
//! a poll attempts at most [`MAX_SETTLEMENTS_PER_POLL`] settlements and starts no ledger call
//! after half the lease. Should a lease lapse anyway, a second run of the ledger is harmless
//! (every settlement step is conditional and keyed), only wasteful.
//!
//! With `admin.listen` set, [`run`] also serves `/metrics` and `/health` (the connector's
//! `runtime::admin`) and records [`LEDGER_POLL_SECONDS`] per poll; after the ready line it
//! tells systemd it is ready (`Type=notify`; a no-op without `NOTIFY_SOCKET`).
//!
//! [`Schedule`]: crate::schedule::Schedule
//! [`MAX_SETTLEMENTS_PER_POLL`]: crate::poll::MAX_SETTLEMENTS_PER_POLL

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, TimeDelta, Utc};
use schema::DbError;
use schema::DbPool;
use schema::models::ledger::{
    NewLedger, claim_due_ledger, database_now, finish_poll, publish_ledger_options,
    register_ledgers,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::adaptor::Adaptor;
use crate::backoff::Backoff;
use crate::config::{LedgerConfig, WorkerConfig};
use crate::poll::{PollReport, poll_ledger};

/// First wait after a database error.
pub const DB_RETRY_FIRST: Duration = Duration::from_millis(250);
/// Longest wait between retries while the database stays unreachable; the wait doubles up
/// to this.
pub const DB_RETRY_MAX: Duration = Duration::from_secs(10);
/// Retries while the database fails.
const DB_BACKOFF: Backoff = Backoff::new(DB_RETRY_FIRST, DB_RETRY_MAX);
/// Next poll of a ledger whose schedule has no further time (only past croner's horizon,
/// the year 5000): far enough not to spin, near enough to be noticed in the logs.
pub const UNSCHEDULABLE_RETRY: Duration = Duration::from_secs(24 * 60 * 60);

/// Histogram of the duration of each ledger poll, seconds, by `ledger`.
pub const LEDGER_POLL_SECONDS: &str = "ilp_ledger_poll_seconds";

/// One finished ledger run, as [`run_observed`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollRecord {
    /// The ledger.
    pub ledger: String,
    /// The replica that polled it (`worker.instance_name`).
    pub owner: String,
    /// The due time that made it claimable (database clock).
    pub due_at: DateTime<Utc>,
    /// When the claim was made (database clock).
    pub claimed_at: DateTime<Utc>,
    /// The due time written for the next poll (database clock).
    pub next_poll_at: DateTime<Utc>,
    /// Local time just after the claim returned: the lease was ours from here...
    pub started: Instant,
    /// ...to here, just after the lease was released.
    pub finished: Instant,
    /// Whether the lease was still ours at the end (`false`: it lapsed and was taken over).
    pub lease_kept: bool,
}

/// Called after every finished ledger run; tests use it to watch the schedule.
pub type PollObserver = Arc<dyn Fn(&PollRecord) + Send + Sync>;

/// Runs the worker until `shutdown` is cancelled: starts the admin listener when
/// `admin.listen` is set, registers the configured ledgers, logs
/// `ilp-settlement-worker ready` (with the admin address) and notifies systemd, then claims
/// and polls due ledgers. Database errors are logged and retried with backoff; they never
/// end the loop. Cancellation is checked between ledger runs, so a run in progress finishes
/// first.
///
/// The admin listener installs the process-wide metrics recorder: a process runs at most
/// one worker with `admin.listen` set (an error otherwise).
pub async fn run(
    config: WorkerConfig,
    pool: DbPool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_observed(config, pool, shutdown, None).await
}

/// [`run`], reporting each finished ledger run to `observer`.
pub async fn run_observed(
    config: WorkerConfig,
    pool: DbPool,
    shutdown: CancellationToken,
    observer: Option<PollObserver>,
) -> anyhow::Result<()> {
    let admin = start_admin(&config.admin, &pool, &shutdown).await?;
    let runner = Runner::new(config, pool, observer)?;
    // Database failures in a row.
    let mut failures = 0;

    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        match runner.register().await {
            Ok(()) => break,
            Err(err) => {
                tracing::error!(error = %err, "registering the ledgers failed; retrying");
                failures += 1;
                if sleep_or_cancelled(DB_BACKOFF.wait(failures - 1), &shutdown).await {
                    return Ok(());
                }
            }
        }
    }
    tracing::info!(
        ledgers = %runner.names.join(","),
        instance = %runner.owner,
        admin = %admin,
        "ilp-settlement-worker ready"
    );
    // Type=notify units wait for this; without NOTIFY_SOCKET it does nothing, and a unit
    // that is not Type=notify has no use for it: an error changes nothing.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    if runner.names.is_empty() {
        tracing::warn!("no [[ledgers]] configured: nothing to poll");
        shutdown.cancelled().await;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        return Ok(());
    }

    failures = 0;
    while !shutdown.is_cancelled() {
        let wait = match runner.run_one().await {
            // Another ledger may be due already: look again at once.
            Ok(true) => {
                failures = 0;
                continue;
            }
            Ok(false) => {
                failures = 0;
                runner.idle_poll
            }
            Err(err) => {
                tracing::error!(error = %err, "ledger run failed; retrying");
                failures += 1;
                DB_BACKOFF.wait(failures - 1)
            }
        };
        if sleep_or_cancelled(wait, &shutdown).await {
            break;
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("stopped");
    Ok(())
}

/// Installs the metrics recorder, binds `listen` and serves `/metrics` and `/health` until
/// `shutdown`; the bound address, or `disabled` when `listen` is `None`. Bound before the
/// database is reached, so a taken port fails the start at once.
async fn start_admin(
    admin: &runtime::config::AdminConfig,
    pool: &DbPool,
    shutdown: &CancellationToken,
) -> anyhow::Result<String> {
    let Some(listen) = admin.listen else {
        return Ok("disabled".to_owned());
    };
    let limits = admin.limits()?;
    let metrics = runtime::admin::install_metrics().context("installing the metrics recorder")?;
    let listener = runtime::admin::bind(listen).await?;
    let address = listener
        .local_addr()
        .context("reading the admin listener's address")?;
    tokio::spawn(runtime::admin::serve(
        listener,
        limits,
        metrics,
        pool.clone(),
        shutdown.clone(),
    ));
    Ok(address.to_string())
}

/// What one replica's loop needs, built once from the configuration.
struct Runner {
    pool: DbPool,
    owner: String,
    lease: Duration,
    idle_poll: Duration,
    names: Vec<String>,
    ledgers: HashMap<String, LedgerConfig>,
    adaptors: HashMap<String, Adaptor>,
    observer: Option<PollObserver>,
}

impl Runner {
    fn new(
        config: WorkerConfig,
        pool: DbPool,
        observer: Option<PollObserver>,
    ) -> anyhow::Result<Runner> {
        let names = config.ledger_names();
        let mut adaptors = HashMap::new();
        for ledger in &config.ledgers {
            let adaptor = ledger
                .adaptor()
                .map_err(|err| anyhow::anyhow!("ledger {:?}: {err}", ledger.name))?;
            adaptors.insert(ledger.name.clone(), adaptor);
        }
        Ok(Runner {
            pool,
            owner: config.worker.instance_name,
            lease: config.worker.lease,
            idle_poll: config.worker.idle_poll,
            names,
            ledgers: config
                .ledgers
                .into_iter()
                .map(|ledger| (ledger.name.clone(), ledger))
                .collect(),
            adaptors,
            observer,
        })
    }

    /// Upserts the configured ledgers (a new one is first due at its schedule's next time)
    /// and publishes each one's non-secret options for the connectors.
    async fn register(&self) -> Result<(), DbError> {
        let mut conn = self.pool.get().await?;
        let now = database_now(&mut conn).await?;
        let rows: Vec<NewLedger<'_>> = self
            .names
            .iter()
            .filter_map(|name| self.ledgers.get(name))
            .map(|ledger| NewLedger {
                name: &ledger.name,
                kind: ledger.kind,
                next_poll_at: next_poll_at(ledger, now),
            })
            .collect();
        register_ledgers(&mut conn, &rows).await?;
        for (name, adaptor) in &self.adaptors {
            publish_ledger_options(&mut conn, name, &adaptor.published_options()).await?;
        }
        Ok(())
    }

    /// Claims, polls and reschedules one due ledger; `false` when none was due.
    async fn run_one(&self) -> Result<bool, DbError> {
        let claimed = {
            let mut conn = self.pool.get().await?;
            claim_due_ledger(&mut conn, &self.owner, &self.names, self.lease).await?
        };
        let Some(claimed) = claimed else {
            return Ok(false);
        };
        let started = Instant::now();
        let Some(ledger) = self.ledgers.get(&claimed.name) else {
            // Unreachable: the claim only considers `self.names`. The lease lapses on its own.
            tracing::error!(ledger.name = %claimed.name, "claimed a ledger that is not configured");
            return Ok(true);
        };

        let Some(adaptor) = self.adaptors.get(&claimed.name) else {
            tracing::error!(ledger.name = %claimed.name, "claimed a ledger without an adaptor");
            return Ok(true);
        };
        let span = tracing::info_span!(
            "settlement.poll",
            ledger.name = %ledger.name,
            ledger.kind = %ledger.kind,
        );
        {
            let _entered = span.enter();
            tracing::info!(
                due_at = %claimed.due_at,
                lease_expires_at = %claimed.lease_expires_at,
                "polling"
            );
        }
        // Half the lease for ledger calls; the rest is margin for the last call's timeout.
        let deadline = started + self.lease / 2;
        let polled = poll_ledger(&self.pool, &claimed.name, adaptor, deadline)
            .instrument(span.clone())
            .await;
        metrics::histogram!(LEDGER_POLL_SECONDS, "ledger" => claimed.name.clone())
            .record(started.elapsed().as_secs_f64());
        match polled {
            Ok(report) => {
                if report != PollReport::default() {
                    span.in_scope(|| tracing::info!(?report, "polled"));
                }
            }
            // Logged once, here; the ledger is still rescheduled and its lease released.
            Err(err) => span.in_scope(|| tracing::error!(error = %err, "poll failed")),
        }

        // The database's clock at the claim plus the time since, so that a slow poll
        // schedules the next time after now rather than one already past.
        let elapsed = TimeDelta::from_std(started.elapsed()).unwrap_or(TimeDelta::zero());
        let now = claimed
            .claimed_at
            .checked_add_signed(elapsed)
            .unwrap_or(claimed.claimed_at);
        let next = next_poll_at(ledger, now);
        let lease_kept = {
            let mut conn = self.pool.get().await?;
            finish_poll(&mut conn, &claimed.name, &self.owner, next).await?
        };
        if !lease_kept {
            tracing::warn!(
                ledger.name = %claimed.name,
                lease = ?self.lease,
                "the lease lapsed during the poll and another replica took the ledger over"
            );
        }
        if let Some(observer) = &self.observer {
            observer(&PollRecord {
                ledger: claimed.name.clone(),
                owner: self.owner.clone(),
                due_at: claimed.due_at,
                claimed_at: claimed.claimed_at,
                next_poll_at: next,
                started,
                finished: Instant::now(),
                lease_kept,
            });
        }
        Ok(true)
    }
}

/// `ledger`'s next due time after `now`.
fn next_poll_at(ledger: &LedgerConfig, now: DateTime<Utc>) -> DateTime<Utc> {
    match ledger.schedule.next_after(now) {
        Some(next) => next,
        None => {
            tracing::error!(
                ledger.name = %ledger.name,
                schedule = %ledger.schedule,
                "the schedule has no further time; trying again in a day"
            );
            let retry = TimeDelta::from_std(UNSCHEDULABLE_RETRY).unwrap_or(TimeDelta::days(1));
            now.checked_add_signed(retry).unwrap_or(now)
        }
    }
}

/// Sleeps for `wait`; `true` when `shutdown` came first.
async fn sleep_or_cancelled(wait: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(wait) => false,
        () = shutdown.cancelled() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a cancelled token ends a wait at once.
    #[tokio::test]
    async fn sleep_ends_on_shutdown() {
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        assert!(sleep_or_cancelled(Duration::from_secs(3600), &shutdown).await);
        assert!(!sleep_or_cancelled(Duration::from_millis(1), &CancellationToken::new()).await);
    }
}
