//! End-to-end: real `ilp-connector` processes on real PostgreSQL databases, over HTTP on
//! 127.0.0.1.

mod balances;
mod database_faults;
mod directory;
mod exchange;
mod hostile_peers;
mod operations;
mod packet_path;
mod ping;
mod rate_limits;
mod settle_api;
mod settlement;
mod stock_engines;
mod stream;
mod tls;
mod two_nodes;
