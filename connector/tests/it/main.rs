//! Integration tests of the connector against a real PostgreSQL: the CLI, and the RFC 38
//! node API (`settlement_api`).

mod cli;
#[allow(clippy::unwrap_used)]
mod engine;
mod settlement_api;
