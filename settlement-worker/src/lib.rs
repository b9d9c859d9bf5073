//! `ilp-settlement-worker`: settles balances through each ledger's adaptor, on that
//! ledger's own schedule, sharing one PostgreSQL database with `ilp-connector`.
//!
//! The worker keeps no state of its own. Several replicas may run: each due ledger is
//! claimed with a lease in the `ledgers` table (`FOR UPDATE SKIP LOCKED`), so no two replicas
//! poll one ledger at once, and a dead replica's ledgers are taken over once its lease lapses.
//! Every time that decides who polls what is the database's clock.
//!
//! A poll of a ledger pays what we owe through the ledger's adaptor (crash-safe: the
//! balance is lowered and a `pending` settlement with its idempotency key committed before
//! the ledger is called), retries what had no definite answer with the same key, refunds
//! what was definitely rejected, and on a `claims` ledger verifies and credits the signed
//! claims peers sent. Incoming RFC 38 credits are taken by the connector (its node API) with
//! `schema::models::incoming_settlement::credit_incoming_settlement`.
//!
//! # Layout
//! - [`config`]: [`WorkerConfig`], read from a TOML file and the environment and validated
//!   at start-up; its `//!` lists every key with its default and unit.
//! - [`schedule`]: [`Schedule`], a cron pattern with seconds; `next_after(t)` is pure.
//! - [`runner`]: [`run`], the loop: register the ledgers (publishing their non-secret
//!   options), claim a due one, poll it, write its next due time, sleep when none is due,
//!   stop between runs on `shutdown`.
//! - [`poll`]: [`poll_ledger`], one poll of one ledger: retries, new settlements, claims.
//! - [`backoff`]: [`backoff::Backoff`], the doubling, capped waits every retry uses.
//! - [`adaptor`]: [`Adaptor`], one per ledger kind, dispatched by `match`:
//!   [`adaptor::rfc38`] (an RFC 38 settlement engine over HTTP) and [`adaptor::claims`]
//!   (signed cumulative claims over `peer.settle`, and their verification).
//! - `main.rs`: the binary: CLI, tracing, pool, signal handlers, then [`run`].
//! - The `ledgers` row type and its queries (`register_ledgers`, `claim_due_ledger`,
//!   `finish_poll`) live in `schema::models::ledger`, and the settlement and claim SQL in
//!   `schema::models::{settlement, claim}`, next to the tables they touch.

pub mod adaptor;
pub mod backoff;
pub mod config;
pub mod poll;
pub mod runner;
pub mod schedule;

pub use adaptor::{Adaptor, AdaptorError};
pub use config::{AdminConfig, LedgerConfig, LogFormat, WorkerConfig};
pub use poll::{PollReport, poll_ledger};
pub use runner::{PollObserver, PollRecord, run, run_observed};
pub use schedule::{Schedule, ScheduleError};
