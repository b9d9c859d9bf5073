//! Accounts, routes, ledgers and exchange rates, cached in memory so the packet path does no lookup query.
//!
//! A [`Directory`] is an immutable snapshot; [`SharedDirectory`] swaps in the next one.
//! [`keep_directory_fresh`] loads it whole at start-up and after a lost LISTEN connection, and
//! otherwise applies just what changed: the triggers on `accounts` and `routes` name the row in
//! their `NOTIFY ilp_config` payload (`accounts 42`, `routes g.bob`), the ones on `ledgers` and
//! `rates` name the table, and one query per burst reads those rows. Ledgers are cached for
//! `peer.settle`: its handler needs each ledger's kind and, for an RFC 38 ledger, the engine's
//! URL.

pub mod routing_table;
pub mod sharded;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};
use futures_util::StreamExt;
use hyper::header::HeaderValue;
use schema::models::account::{Account, Relation, find_accounts, stream_live_accounts};
use schema::models::ledger::{LedgerKind, LedgerOptions, list_ledger_options};
use schema::models::rate::list_rates;
use schema::models::route::{Route, find_routes, stream_route_targets};
use schema::{DbError, DbPool, PoolConfig};
use tokio_util::sync::CancellationToken;

use crate::packet::Address;
use crate::rates::RateTable;
use sharded::ShardedMap;

pub use routing_table::RoutingTable;

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
    pub outgoing: Option<Box<Outgoing>>,
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
    /// Paid here: the connector answers its STREAM packets (see [`crate::stream`]) instead of
    /// forwarding them, and its SPSP queries.
    pub stream_receiver: bool,
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
                Some(Box::new(Outgoing { uri, authorization }))
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
            stream_receiver: row.stream_receiver,
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

/// One consistent snapshot of accounts, routes, ledgers and rates.
///
/// Its maps are [`ShardedMap`]s: cloning a directory is O(1) and changing one account or
/// route in the clone copies 1/64 of one map, so a change never copies the whole directory
/// and the packets in flight keep reading the snapshot they started with.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    by_id: ShardedMap<i64, Arc<AccountInfo>>,
    by_token_hash: ShardedMap<[u8; 32], Arc<AccountInfo>>,
    by_username: ShardedMap<String, Arc<AccountInfo>>,
    routes: RoutingTable,
    ledgers: HashMap<String, Arc<LedgerInfo>>,
    rates: RateTable,
}

impl Directory {
    /// Builds a snapshot: each account's own address routes to it; a static route for the
    /// same prefix wins.
    pub fn build(
        node: &Address,
        accounts: &[Account],
        routes: &[Route],
        ledgers: &[LedgerOptions],
    ) -> Directory {
        let mut directory = Directory::default();
        for row in accounts {
            directory.put_account(node, row);
        }
        for route in routes {
            directory.put_route(&route.prefix, Some(route.account_id));
        }
        directory.set_ledgers(ledgers);
        directory
    }

    /// Adds or replaces the account of `row`'s id; a removed or unusable row takes the
    /// account out.
    pub fn put_account(&mut self, node: &Address, row: &Account) {
        self.remove_account(row.id);
        if row.deleted_at.is_some() {
            return;
        }
        let Some(info) = AccountInfo::from_row(row, node) else {
            return;
        };
        let info = Arc::new(info);
        self.routes
            .set_address(&info.ilp_address.to_shared_str(), info.id);
        self.by_token_hash.insert(info.token_hash, info.clone());
        self.by_username
            .insert(info.username.to_ascii_lowercase(), info.clone());
        self.by_id.insert(info.id, info);
    }

    /// Takes the account with this id out (its static routes stay, leading nowhere until
    /// they are removed or it comes back).
    pub fn remove_account(&mut self, id: i64) {
        let Some(old) = self.by_id.remove(&id) else {
            return;
        };
        self.routes.clear_address(old.ilp_address.as_str(), id);
        if self.by_token_hash.get(&old.token_hash).map(|a| a.id) == Some(id) {
            self.by_token_hash.remove(&old.token_hash);
        }
        let username = old.username.to_ascii_lowercase();
        if self.by_username.get(&username).map(|a| a.id) == Some(id) {
            self.by_username.remove(&username);
        }
    }

    /// Points the static route `prefix` at `account_id`; `None` removes it.
    pub fn put_route(&mut self, prefix: &str, account_id: Option<i64>) {
        self.routes.set_route(prefix, account_id);
    }

    /// Replaces the ledgers.
    pub fn set_ledgers(&mut self, ledgers: &[LedgerOptions]) {
        self.ledgers = ledgers
            .iter()
            .map(|row| {
                let info = LedgerInfo::from_row(row);
                (info.name.clone(), Arc::new(info))
            })
            .collect();
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
            .resolve(destination, |id| self.by_id.contains_key(&id))
            .and_then(|id| self.by_id.get(&id))
    }

    /// Number of accounts.
    pub fn account_count(&self) -> usize {
        self.by_id.len()
    }

    /// Number of routing table entries (prefixes).
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

/// What a burst of `NOTIFY ilp_config` payloads asks to reload (see migration 000013 for
/// the payloads the triggers send).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    accounts: BTreeSet<i64>,
    routes: BTreeSet<String>,
    ledgers: bool,
    rates: bool,
    /// A payload naming no row (a TRUNCATE, or a trigger this version does not know).
    everything: bool,
}

impl Changes {
    /// Records one payload.
    pub fn note(&mut self, payload: &str) {
        match payload.split_once(' ') {
            Some(("accounts", id)) => match id.parse() {
                Ok(id) => {
                    self.accounts.insert(id);
                }
                Err(_) => self.everything = true,
            },
            Some(("routes", prefix)) => {
                self.routes.insert(prefix.to_owned());
            }
            None if payload == "ledgers" => self.ledgers = true,
            None if payload == "rates" => self.rates = true,
            _ => self.everything = true,
        }
    }

    /// How many rows it names.
    pub fn len(&self) -> usize {
        self.accounts.len() + self.routes.len()
    }

    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }
}

/// Reads accounts, routes, ledgers and rates from the database. Accounts and routes are
/// taken in row by row as they arrive, so only the directory itself is ever in memory.
pub async fn load_directory(
    conn: &mut AsyncPgConnection,
    node: &Address,
) -> Result<Directory, DbError> {
    let mut directory = Directory::default();
    {
        let mut accounts = std::pin::pin!(stream_live_accounts(conn).await?);
        while let Some(row) = accounts.next().await {
            directory.put_account(node, &row?);
        }
    }
    {
        let mut routes = std::pin::pin!(stream_route_targets(conn).await?);
        while let Some(route) = routes.next().await {
            let (prefix, account_id) = route?;
            directory.put_route(&prefix, Some(account_id));
        }
    }
    directory.set_ledgers(&list_ledger_options(conn).await?);
    directory.set_rates(RateTable::from_rows(&list_rates(conn).await?));
    Ok(directory)
}

/// Most rows one query asks for; a larger burst takes several.
const ROWS_PER_QUERY: usize = 10_000;

/// Applies `changes` to a copy of the current directory and swaps it in. A change naming
/// no row reloads everything.
pub async fn apply_changes(
    pool: &DbPool,
    node: &Address,
    shared: &SharedDirectory,
    changes: &Changes,
) -> Result<(), DbError> {
    let started = std::time::Instant::now();
    let mut conn = pool.get().await?;
    if changes.everything {
        let directory = load_directory(&mut conn, node).await?;
        report(&directory, "full", Some(started));
        tracing::info!(
            accounts = directory.account_count(),
            routes = directory.route_count(),
            ledgers = directory.ledger_count(),
            rates = directory.rates().len(),
            "directory reloaded"
        );
        shared.replace(directory);
        return Ok(());
    }
    let ids: Vec<i64> = changes.accounts.iter().copied().collect();
    let mut accounts = HashMap::new();
    for chunk in ids.chunks(ROWS_PER_QUERY) {
        for row in find_accounts(&mut conn, chunk).await? {
            accounts.insert(row.id, row);
        }
    }
    let prefixes: Vec<String> = changes.routes.iter().cloned().collect();
    let mut routes = HashMap::new();
    for chunk in prefixes.chunks(ROWS_PER_QUERY) {
        for route in find_routes(&mut conn, chunk).await? {
            routes.insert(route.prefix, route.account_id);
        }
    }
    let ledgers = match changes.ledgers {
        true => Some(list_ledger_options(&mut conn).await?),
        false => None,
    };
    let rates = match changes.rates {
        true => Some(list_rates(&mut conn).await?),
        false => None,
    };
    drop(conn);

    let copying = std::time::Instant::now();
    let mut directory = Directory::clone(&shared.current());
    for id in &ids {
        match accounts.get(id) {
            Some(row) => directory.put_account(node, row),
            None => directory.remove_account(*id),
        }
    }
    for prefix in &prefixes {
        directory.put_route(prefix, routes.get(prefix).copied());
    }
    if let Some(ledgers) = ledgers {
        directory.set_ledgers(&ledgers);
    }
    if let Some(rates) = rates {
        directory.set_rates(RateTable::from_rows(&rates));
    }
    let in_memory_us = copying.elapsed().as_micros() as u64;
    report(&directory, "incremental", Some(started));
    tracing::debug!(
        in_memory_us,
        accounts = ids.len(),
        routes = prefixes.len(),
        ledgers = changes.ledgers,
        rates = changes.rates,
        "directory changes applied"
    );
    shared.replace(directory);
    Ok(())
}

/// Counts an update and its time; `started`: when it began, if it was timed.
fn report(directory: &Directory, kind: &'static str, started: Option<std::time::Instant>) {
    metrics::counter!("ilp_directory_updates_total", "kind" => kind).increment(1);
    if let Some(started) = started {
        metrics::histogram!("ilp_directory_update_seconds", "kind" => kind)
            .record(started.elapsed().as_secs_f64());
    }
    metrics::gauge!("ilp_directory_accounts").set(directory.account_count() as f64);
    metrics::gauge!("ilp_directory_routes").set(directory.route_count() as f64);
}

/// Opens the LISTEN connection for [`keep_directory_fresh`] (`LISTEN ilp_config` done), to be
/// opened before the start-up [`load_directory`], so no change falls between the two.
pub async fn listen_for_changes(listen_config: &PoolConfig) -> Result<AsyncPgConnection, DbError> {
    let mut conn = schema::connect(listen_config).await?;
    schema::listen_for_config_changes(&mut conn).await?;
    Ok(conn)
}

/// Keeps `shared` in step with the database until `shutdown`: applies each `NOTIFY
/// ilp_config` change (bursts together) on `listening` (from [`listen_for_changes`], opened
/// before `shared` was loaded), and reloads everything once LISTEN is back after that
/// connection was lost, so no change is missed. Reconnects by itself.
pub async fn keep_directory_fresh(
    listen_config: PoolConfig,
    listening: AsyncPgConnection,
    pool: DbPool,
    node: Address,
    shared: Arc<SharedDirectory>,
    shutdown: CancellationToken,
) {
    report(&shared.current(), "full", None);
    let mut listening = Some(listening);
    while !shutdown.is_cancelled() {
        let (mut conn, reconnected) = match listening.take() {
            Some(conn) => (conn, false),
            None => match listen_for_changes(&listen_config).await {
                Ok(conn) => (conn, true),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot LISTEN for directory changes; retrying");
                    if tokio::time::timeout(RECONNECT_DELAY, shutdown.cancelled())
                        .await
                        .is_ok()
                    {
                        return;
                    }
                    continue;
                }
            },
        };
        if reconnected {
            tracing::info!("LISTEN connection back; reloading the directory");
        }
        // After a reconnect, everything: changes made while it was down sent no notice here.
        let mut changes = Changes {
            everything: reconnected,
            ..Changes::default()
        };
        if follow(&mut conn, &pool, &node, &shared, &mut changes, &shutdown).await {
            return;
        }
    }
}

/// Wait between liveness checks of an idle LISTEN connection.
pub const LIVENESS_INTERVAL: Duration = Duration::from_secs(30);

/// Follows the notices of one LISTEN connection until it fails (`false`) or `shutdown`
/// (`true`). Changes that cannot be applied (the pool cannot reach the database) are kept
/// and tried again every [`RECONNECT_DELAY`], together with any that arrive meanwhile.
async fn follow(
    conn: &mut AsyncPgConnection,
    pool: &DbPool,
    node: &Address,
    shared: &SharedDirectory,
    changes: &mut Changes,
    shutdown: &CancellationToken,
) -> bool {
    let mut failing = false;
    loop {
        if !changes.is_empty() {
            match apply_changes(pool, node, shared, changes).await {
                Ok(()) => {
                    *changes = Changes::default();
                    if std::mem::take(&mut failing) {
                        tracing::info!("directory changes applied again");
                    }
                }
                Err(err) if !failing => {
                    failing = true;
                    tracing::warn!(error = %err, "cannot read directory changes; retrying every second");
                }
                Err(_) => {}
            }
        }
        let wait = match changes.is_empty() {
            true => LIVENESS_INTERVAL,
            false => RECONNECT_DELAY,
        };
        let noticed = {
            let mut notifications = std::pin::pin!(conn.notifications_stream());
            tokio::select! {
                _ = shutdown.cancelled() => return true,
                notice = notifications.next() => match notice {
                    Some(Ok(notice)) => {
                        changes.note(&notice.payload);
                        // A burst becomes one update (bounded, so a huge one still advances).
                        while changes.len() < 10 * ROWS_PER_QUERY
                            && let Some(Some(Ok(notice))) =
                                futures_util::FutureExt::now_or_never(notifications.next())
                        {
                            changes.note(&notice.payload);
                        }
                        true
                    }
                    Some(Err(err)) => {
                        tracing::warn!(error = %err, "LISTEN connection failed; reconnecting");
                        return false;
                    }
                    None => {
                        tracing::warn!("LISTEN connection closed; reconnecting");
                        return false;
                    }
                },
                _ = tokio::time::sleep(wait) => false,
            }
        };
        if !noticed && changes.is_empty() {
            // Quiet for a while: make sure the connection still answers, or no notice
            // would ever come.
            let alive = tokio::time::timeout(RECONNECT_DELAY * 10, conn.batch_execute("SELECT 1"));
            if !matches!(alive.await, Ok(Ok(()))) {
                tracing::warn!("LISTEN connection does not answer; reconnecting");
                return false;
            }
        }
    }
}
