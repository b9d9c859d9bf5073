//! Accounts, routes, ledgers and exchange rates, cached in memory so the packet path does no lookup query.
//!
//! A [`Directory`] is an immutable snapshot built from the database; [`SharedDirectory`]
//! swaps in a new one whole. [`keep_directory_fresh`] reloads it when PostgreSQL says
//! accounts, routes, ledgers or rates changed (`LISTEN ilp_config`, fired by triggers on those
//! tables), and every [`RELOAD_INTERVAL`] in case a notification was missed (e.g. across a
//! reconnect). Ledgers are cached for `peer.settle`: its handler needs each ledger's kind
//! and, for an RFC 38 ledger, the engine's URL.

pub mod routing_table;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use diesel_async::AsyncPgConnection;
use futures_util::StreamExt;
use hyper::header::HeaderValue;
use schema::models::account::{Account, Relation, list_live_accounts};
use schema::models::ledger::{LedgerKind, LedgerOptions, list_ledger_options};
use schema::models::rate::list_rates;
use schema::models::route::{Route, list_routes};
use schema::{DbError, DbPool, PoolConfig};
use tokio_util::sync::CancellationToken;

use crate::packet::Address;
use crate::rates::RateTable;

pub use routing_table::RoutingTable;

/// Fallback reload period, for notifications lost while disconnected.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(30);
/// Wait before reconnecting the LISTEN connection after it failed.
pub const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// An account as the packet path needs it: parsed and checked once, when loaded.
#[derive(Debug, Clone)]
pub struct AccountInfo {
    /// Database id.
    pub id: i64,
    /// Username (as stored).
    pub username: String,
    /// Its ILP address: configured, or `<node>.<username>`.
    pub ilp_address: Address,
    /// Asset code.
    pub asset_code: String,
    /// Asset scale.
    pub asset_scale: u8,
    /// Parent, peer or child.
    pub relation: Relation,
    /// Largest Prepare it may send us; `None`: no limit.
    pub max_packet_amount: Option<u64>,
    /// SHA-256 of its incoming token.
    pub token_hash: [u8; 32],
    /// Where we send its packets, if anywhere.
    pub outgoing: Option<Outgoing>,
    /// Expected round trip: what the expiry shortener subtracts.
    pub round_trip_time: Duration,
    /// Ledger that settles it.
    pub ledger: Option<String>,
    /// Spread kept when its packets are converted to another asset; `None`: the node's.
    pub spread: Option<rust_decimal::Decimal>,
    /// Prepares per second it may send (all connectors together); `None`: no limit.
    pub max_packets_per_second: Option<u64>,
    /// Base units per second it may send (all connectors together); `None`: no limit.
    pub max_amount_per_second: Option<u64>,
}

/// How to reach an account over ILP-over-HTTP.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The peer's endpoint.
    pub uri: hyper::Uri,
    /// `Bearer <token>`, ready to send; marked sensitive so it is never logged.
    pub authorization: Option<HeaderValue>,
}

impl AccountInfo {
    /// Parses a row; `None` (with a warning) if it cannot be used, which the database's
    /// CHECKs make unlikely.
    pub fn from_row(row: &Account, node: &Address) -> Option<AccountInfo> {
        let warn = |what: &str| {
            tracing::warn!(account.username = %row.username, "account skipped: {what}");
        };
        let ilp_address = match &row.ilp_address {
            Some(address) => Address::new(address).ok(),
            None => node.with_suffix(&row.username).ok(),
        };
        let Some(ilp_address) = ilp_address else {
            warn("no valid ILP address");
            return None;
        };
        let Ok(token_hash) = <[u8; 32]>::try_from(row.incoming_token_hash.as_slice()) else {
            warn("token hash is not 32 bytes");
            return None;
        };
        let outgoing = match &row.outgoing_url {
            None => None,
            Some(url) => {
                let Ok(uri) = url.parse::<hyper::Uri>() else {
                    warn("outgoing URL does not parse");
                    return None;
                };
                let authorization = match &row.outgoing_token {
                    None => None,
                    Some(token) => {
                        let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {token}"))
                        else {
                            warn("outgoing token is not a valid header value");
                            return None;
                        };
                        value.set_sensitive(true);
                        Some(value)
                    }
                };
                Some(Outgoing { uri, authorization })
            }
        };
        Some(AccountInfo {
            id: row.id,
            username: row.username.clone(),
            ilp_address,
            asset_code: row.asset_code.clone(),
            asset_scale: u8::try_from(row.asset_scale).ok()?,
            relation: row.relation,
            max_packet_amount: row.max_packet_amount.and_then(|m| u64::try_from(m).ok()),
            token_hash,
            outgoing,
            round_trip_time: Duration::from_millis(
                u64::try_from(row.round_trip_time_ms).unwrap_or(0),
            ),
            ledger: row.ledger.clone(),
            spread: row.spread,
            max_packets_per_second: row
                .max_packets_per_second
                .and_then(|m| u64::try_from(m).ok()),
            max_amount_per_second: row
                .max_amount_per_second
                .and_then(|m| u64::try_from(m).ok()),
        })
    }
}

/// A ledger as `peer.settle` needs it: parsed and checked once, when loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerInfo {
    /// Its name.
    pub name: String,
    /// Which adaptor settles through it.
    pub kind: LedgerKind,
    /// An RFC 38 ledger's settlement engine, `http(s)://host:port[/prefix]` without a trailing
    /// slash; `None` when the ledger publishes none (or an unusable one).
    pub engine_url: Option<String>,
}

impl LedgerInfo {
    /// Parses a row. A missing or bad `engine_url` leaves the ledger in place without one,
    /// so `peer.settle` can say why.
    pub fn from_row(row: &LedgerOptions) -> LedgerInfo {
        let engine_url = match row.kind {
            LedgerKind::Claims => None,
            LedgerKind::Rfc38 => match engine_url_of(&row.options) {
                Ok(url) => Some(url),
                Err(why) => {
                    tracing::warn!(ledger.name = %row.name, "RFC 38 ledger without a usable engine: {why}");
                    None
                }
            },
        };
        LedgerInfo {
            name: row.name.clone(),
            kind: row.kind,
            engine_url,
        }
    }
}

/// `options.engine_url`, checked to be an `http://` or `https://` URL with a host.
fn engine_url_of(options: &serde_json::Value) -> Result<String, String> {
    let url = options
        .get("engine_url")
        .and_then(serde_json::Value::as_str)
        .ok_or("options have no engine_url string")?;
    let uri = url
        .parse::<hyper::Uri>()
        .map_err(|err| format!("engine_url {url:?} does not parse: {err}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https"))
        || uri.authority().is_none()
        || uri.query().is_some()
    {
        return Err(format!(
            "engine_url {url:?} must be http:// or https://host:port[/path] (no query)"
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// One consistent snapshot of accounts, routes and ledgers.
#[derive(Debug, Default)]
pub struct Directory {
    by_token_hash: HashMap<[u8; 32], Arc<AccountInfo>>,
    by_username: HashMap<String, Arc<AccountInfo>>,
    by_id: HashMap<i64, Arc<AccountInfo>>,
    routes: RoutingTable,
    ledgers: HashMap<String, Arc<LedgerInfo>>,
    rates: RateTable,
}

impl Directory {
    /// Builds a snapshot: each account's own address routes to it; static routes are added
    /// after, so a static route for the same prefix wins.
    pub fn build(
        node: &Address,
        accounts: &[Account],
        routes: &[Route],
        ledgers: &[LedgerOptions],
    ) -> Directory {
        let mut directory = Directory::default();
        for row in accounts {
            let Some(info) = AccountInfo::from_row(row, node) else {
                continue;
            };
            let info = Arc::new(info);
            directory.routes.insert(info.ilp_address.as_str(), info.id);
            directory
                .by_token_hash
                .insert(info.token_hash, info.clone());
            directory
                .by_username
                .insert(info.username.to_ascii_lowercase(), info.clone());
            directory.by_id.insert(info.id, info);
        }
        for route in routes {
            if directory.by_id.contains_key(&route.account_id) {
                directory.routes.insert(&route.prefix, route.account_id);
            }
        }
        for row in ledgers {
            let info = LedgerInfo::from_row(row);
            directory.ledgers.insert(info.name.clone(), Arc::new(info));
        }
        directory
    }

    /// The exchange rates.
    pub fn rates(&self) -> &RateTable {
        &self.rates
    }

    /// Replaces the exchange rates.
    pub fn set_rates(&mut self, rates: RateTable) {
        self.rates = rates;
    }

    /// The ledger named `name`.
    pub fn ledger(&self, name: &str) -> Option<&Arc<LedgerInfo>> {
        self.ledgers.get(name)
    }

    /// Number of ledgers.
    pub fn ledger_count(&self) -> usize {
        self.ledgers.len()
    }

    /// The account whose incoming token hashes to `hash`.
    pub fn by_token_hash(&self, hash: &[u8; 32]) -> Option<&Arc<AccountInfo>> {
        self.by_token_hash.get(hash)
    }

    /// The account named `username`, ignoring case.
    pub fn by_username(&self, username: &str) -> Option<&Arc<AccountInfo>> {
        self.by_username.get(&username.to_ascii_lowercase())
    }

    /// The account with this id.
    pub fn by_id(&self, id: i64) -> Option<&Arc<AccountInfo>> {
        self.by_id.get(&id)
    }

    /// The next hop for `destination`.
    pub fn route(&self, destination: &str) -> Option<&Arc<AccountInfo>> {
        self.routes
            .resolve(destination)
            .and_then(|id| self.by_id.get(&id))
    }

    /// Number of accounts.
    pub fn account_count(&self) -> usize {
        self.by_id.len()
    }

    /// Number of routing table entries.
    pub fn route_count(&self) -> usize {
        self.routes.len()
    }
}

/// The current snapshot, readable without locks from every packet.
#[derive(Debug, Default)]
pub struct SharedDirectory(ArcSwap<Directory>);

impl SharedDirectory {
    /// A shared directory starting as `directory`.
    pub fn new(directory: Directory) -> SharedDirectory {
        SharedDirectory(ArcSwap::from_pointee(directory))
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<Directory> {
        self.0.load_full()
    }

    /// Replaces the snapshot.
    pub fn replace(&self, directory: Directory) {
        self.0.store(Arc::new(directory));
    }
}

/// Reads accounts, routes and ledgers from the database.
pub async fn load_directory(
    conn: &mut AsyncPgConnection,
    node: &Address,
) -> Result<Directory, DbError> {
    let accounts = list_live_accounts(conn).await?;
    let routes = list_routes(conn).await?;
    let ledgers = list_ledger_options(conn).await?;
    let rates = list_rates(conn).await?;
    let mut directory = Directory::build(node, &accounts, &routes, &ledgers);
    directory.set_rates(RateTable::from_rows(&rates));
    Ok(directory)
}

async fn reload(pool: &DbPool, node: &Address, shared: &SharedDirectory) -> Result<(), DbError> {
    let mut conn = pool.get().await?;
    let directory = load_directory(&mut conn, node).await?;
    tracing::debug!(
        accounts = directory.account_count(),
        routes = directory.route_count(),
        ledgers = directory.ledger_count(),
        rates = directory.rates().len(),
        "directory reloaded"
    );
    shared.replace(directory);
    Ok(())
}

/// Keeps `shared` in step with the database until `shutdown`: reloads on every
/// `NOTIFY ilp_config`, and every [`RELOAD_INTERVAL`] regardless. Reconnects by itself.
pub async fn keep_directory_fresh(
    listen_config: PoolConfig,
    pool: DbPool,
    node: Address,
    shared: Arc<SharedDirectory>,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        let mut conn = match schema::connect(&listen_config).await {
            Ok(conn) => conn,
            Err(err) => {
                tracing::warn!(error = %err, "cannot open the LISTEN connection; retrying");
                if tokio::time::timeout(RECONNECT_DELAY, shutdown.cancelled())
                    .await
                    .is_ok()
                {
                    return;
                }
                continue;
            }
        };
        if let Err(err) = schema::listen_for_config_changes(&mut conn).await {
            tracing::warn!(error = %err, "LISTEN failed; retrying");
            continue;
        }
        // Reload after LISTEN, so no change falls between the snapshot and the first notice.
        if let Err(err) = reload(&pool, &node, &shared).await {
            tracing::warn!(error = %err, "reloading accounts and routes failed");
        }
        let mut notifications = std::pin::pin!(conn.notifications_stream());
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                notice = notifications.next() => match notice {
                    Some(Ok(_)) => {
                        // Coalesce a burst of changes into one reload.
                        while let Some(Some(Ok(_))) = futures_util::FutureExt::now_or_never(notifications.next()) {}
                    }
                    Some(Err(err)) => {
                        tracing::warn!(error = %err, "LISTEN connection failed; reconnecting");
                        break;
                    }
                    None => {
                        tracing::warn!("LISTEN connection closed; reconnecting");
                        break;
                    }
                },
                _ = tokio::time::sleep(RELOAD_INTERVAL) => {}
            }
            if let Err(err) = reload(&pool, &node, &shared).await {
                tracing::warn!(error = %err, "reloading accounts and routes failed");
            }
        }
    }
}
