//! The database contract shared by `ilp-connector` and `ilp-settlement-worker`.
//!
//! Both binaries read and write one PostgreSQL database; this crate is the only place that
//! knows its shape.
//!
//! # Layout
//! - [`schema`]: diesel's table definitions, generated from `migrations/` by
//!   `diesel print-schema` (never edited by hand).
//! - [`models`]: one module per table: its row type, its insert type and the queries on it,
//!   named as verb phrases. [`models::balance`] holds the only SQL that changes balances.
//! - [`pool`]: a deadpool pool of diesel-async connections, each with a statement timeout and
//!   an application name.
//! - [`migrate`]: the migrations, embedded in the binary and applied by `ilp-connector migrate`.
//! - [`enums`]: the TEXT columns with a fixed set of words (relation, ledger kind,
//!   settlement and claim states) as enums diesel reads and writes.
//! - [`error`]: [`DbError`], what a caller can branch on.
//! - [`digits`]: the one check that a wire amount or id is plain decimal digits.
//! - `test_db` (feature `test-util`): a freshly migrated database per test.

pub mod digits;
pub mod enums;
pub mod error;
pub mod migrate;
pub mod models;
pub mod pool;
#[allow(missing_docs)]
pub mod schema;
#[cfg(feature = "test-util")]
pub mod test_db;
pub mod tls;

pub use enums::{ClaimState, JournalKind, LedgerKind, Relation, SettlementState};
pub use error::DbError;
pub use pool::{
    CONFIG_CHANNEL, DbConn, DbPool, PoolConfig, build_pool, connect, database_answers,
    listen_for_config_changes,
};
