//! What `ilp-connector` and `ilp-settlement-worker` share to run as services, so neither
//! binary reaches into the other's rooms.
//!
//! # Layout
//! - [`config`]: the `[database]`, `[log]` and `[admin]` settings and their checks;
//!   [`config::one_line`] folds a configuration error into one line.
//! - [`admin`]: the admin listener, `/metrics` and `/health`.
//! - [`http`]: the HTTP client (HTTP and HTTPS), bounded body reads, bearer-token and
//!   content-type parsing.
//! - [`tls`]: the `[tls]` settings every outgoing HTTPS connection is made with.
//! - [`listener`]: the accept loop every HTTP listener runs on, with its limits.
//! - [`telemetry`]: `tracing` to stderr, text or JSON.
//! - [`shutdown`]: SIGINT or SIGTERM cancels a token.
//! - [`instance`]: `<hostname>-<pid>`, the name a process goes by in shared tables.

pub mod admin;
pub mod config;
pub mod http;
pub mod instance;
pub mod listener;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
