//! Row types and queries, one module per table.

pub mod account;
pub mod balance;
pub mod balance_batch;
pub mod claim;
pub mod incoming_settlement;
pub mod ledger;
pub mod ledger_account;
pub mod node_secret;
pub mod rate;
pub mod route;
pub mod settlement;

pub use account::{Account, AccountChanges, NewAccount, Relation};
pub use balance::{BalanceRow, BalanceView};
pub use route::Route;
