//! Database tests on a real PostgreSQL: what the database itself guarantees.

mod balances;
mod constraints;
mod migrations;
mod settlement;
mod views;
