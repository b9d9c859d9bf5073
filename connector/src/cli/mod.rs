//! The operator CLI: `ilp-connector accounts|routes|rates|balances`, working directly on the database.
//!
//! Every command validates its input before touching the database, so bad input changes
//! nothing; each prints a table, or JSON with `--json`.
//!
//! - [`accounts`]: `accounts add|list|show|update|remove`.
//! - [`routes`]: `routes add|list|remove`, the static routes.
//! - [`rates`]: `rates set|list|remove`, the exchange rates.
//! - [`balances`]: `balances` and `balances --watch`.
//! - [`pay`]: `pay`, a STREAM payment from one of our accounts through the running node.
//! - [`ping`]: `ping`, echo round trips to an address through the running node.

/// `println!` that returns an error instead of panicking when stdout is gone (`| head`), so
/// the command ends quietly.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)?
    }};
}

pub mod accounts;
pub mod balances;
pub mod pay;
pub mod ping;
pub mod rates;
pub mod routes;

pub use accounts::{AccountsCommand, run_accounts};
pub use balances::{run_balances, watch_balances};
pub use pay::{PayArgs, SendAs, run_pay};
pub use ping::{PingArgs, run_ping};
pub use rates::{RatesCommand, run_rates};
pub use routes::{RoutesCommand, run_routes};

use anyhow::bail;
use diesel_async::AsyncPgConnection;
use schema::DbError;
use schema::models::account::{self, Account};
use sha2::{Digest, Sha256};

use crate::packet::Address;

/// Where command output goes: a table for people, JSON for scripts.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// Print JSON instead of tables.
    pub json: bool,
}

fn db_refusal(err: DbError, what: &str) -> anyhow::Error {
    match err {
        DbError::AlreadyExists(detail) => anyhow::anyhow!("{what} already exists ({detail})"),
        DbError::Refused(detail) => anyhow::anyhow!("{what} refused by the database: {detail}"),
        other => anyhow::Error::new(other).context(what.to_owned()),
    }
}

/// The live account named `username`, with a clear error when there is none.
async fn find(conn: &mut AsyncPgConnection, username: &str) -> anyhow::Result<Account> {
    validate_username(username)?;
    account::find_account_by_username(conn, username)
        .await
        .map_err(|err| match err {
            DbError::NotFound => anyhow::anyhow!("no account named {username:?}"),
            other => anyhow::Error::new(other).context("reading the account"),
        })
}

/// Usernames: one ILP address segment of at most 64 bytes.
fn validate_username(username: &str) -> anyhow::Result<()> {
    let ok = !username.is_empty()
        && username.len() <= 64
        && username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'~' || b == b'-');
    if !ok {
        bail!("username {username:?} must be 1-64 letters, digits, '_', '~' or '-'");
    }
    Ok(())
}

fn parse_address(address: &str) -> anyhow::Result<String> {
    Address::new(address)
        .map_err(|err| anyhow::anyhow!("{address:?} is not a valid ILP address: {err}"))?;
    Ok(address.to_owned())
}

/// SHA-256 of an incoming bearer token: all we keep of it.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}
