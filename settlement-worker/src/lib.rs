//! `ilp-settlement-worker`: settles balances through each ledger's adaptor, on that
//! ledger's own schedule, sharing one PostgreSQL database with `ilp-connector`.
//!
//! The worker keeps no state of its own. Several replicas may run: each due ledger is
//! claimed with a lease in the `ledgers` table (`FOR UPDATE SKIP LOCKED`), so no two replicas
//! poll one ledger at once, and a dead replica's ledgers are taken over once its lease lapses.
//! Every time that decides who polls what is the database's clock.
//!
//! This is the foundation: configuration, schedules, leases and the loop. A poll only logs
//! for now; outgoing and incoming settlement (the adaptors) come later.
//!
//! # Layout
//! - [`config`]: [`WorkerConfig`], read from a TOML file and the environment and validated
//!   at start-up; its `//!` lists every key with its default and unit.
//! - [`schedule`]: [`Schedule`], a cron pattern with seconds; `next_after(t)` is pure.
//! - [`runner`]: [`run`], the loop: register the ledgers, claim a due one, poll it, write its
//!   next due time, sleep when none is due, stop between runs on `shutdown`.
//! - `main.rs`: the binary: CLI, tracing, pool, signal handlers, then [`run`].
//! - The `ledgers` row type and its queries (`register_ledgers`, `claim_due_ledger`,
//!   `finish_poll`) live in `schema::models::ledger`, next to the table they touch.

pub mod config;
pub mod runner;
pub mod schedule;

pub use config::{LedgerConfig, LogFormat, WorkerConfig};
pub use runner::{PollObserver, PollRecord, run, run_observed};
pub use schedule::{Schedule, ScheduleError};
