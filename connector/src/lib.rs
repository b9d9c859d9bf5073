//! `ilp-connector`: an Interledger (ILPv4) connector whose balances live in PostgreSQL.
//!
//! # Layout
//! - [`packet`]: the ILPv4 codec (RFC 27): Prepare, Fulfill, Reject as views over one buffer;
//!   ILP addresses (RFC 15); error codes; ILDCP (RFC 31).
//! - [`service`]: the service traits, [`service::IlpResult`], and the links of the chain
//!   (validators, ILDCP, the `peer.*` guard, the expiry shortener); [`router`] picks the
//!   next hop; [`chain`] writes their order down in one function.
//! - [`rates`]: exchange rates (cached from SQL, fed by optional providers), the exact
//!   conversion arithmetic and the link that converts each Prepare into the next hop's units.
//! - [`http`]: ILP-over-HTTP: the server (auth, limits) and the client (keep-alive pools).
//! - [`balance`]: `BalanceService` (hold, post, release), the escrow of credit reservations
//!   the holds are taken from, the PostgreSQL balance writer that commits posts and
//!   reservation changes in durable batches, exactly once; the sweeper that gives back the
//!   reservations of dead processes.
//! - [`settlement`]: `peer.settle` (signed claims stored for the worker, or relayed to our
//!   RFC 38 engine) and the RFC 38 node API on its own listener.
//! - [`stream`]: STREAM (RFC 29): packets and frames, encryption and conditions, a stateless
//!   receiver any replica can run, and a sender that pays over any packet path.
//! - [`accounts`]: accounts, tokens, routes and ledgers cached in memory, refreshed on NOTIFY.
//! - [`config`]: the TOML file and environment overrides, validated at start-up.
//! - [`node`]: `serve`: loads accounts and routes, starts the HTTP listener (and the
//!   settlement API's, when configured), runs until the stop signal.
//! - [`cli`]: `accounts`, `routes`, `balances`: the operator's commands on the database.
//!
//! The database contract (tables, the SQL that changes balances) is the `schema` crate; what
//! both binaries share to run as services (database, log and admin settings, the admin
//! listener with `/metrics` and `/health`, the accept loop, logging, the stop signal) is the
//! `runtime` crate.

pub mod accounts;
pub mod balance;
pub mod chain;
pub mod cli;
pub mod config;
pub mod http;
pub mod node;
pub mod packet;
pub mod rates;
pub mod router;
pub mod service;
pub mod settlement;
pub mod stream;
