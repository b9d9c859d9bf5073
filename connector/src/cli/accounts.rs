//! `ilp-connector accounts ...`: add, list, show, update and remove accounts.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use diesel_async::AsyncPgConnection;
use schema::DbError;
use schema::models::account::{self, Account, AccountChanges, NewAccount, RemoveAccountError};
use schema::models::balance;
use serde_json::json;

use super::{Output, db_refusal, find, hash_token, parse_address, validate_username};
use crate::packet::Address;

/// `ilp-connector accounts ...`
#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Add an account; prints its incoming token once when none is given.
    Add {
        /// One ILP address segment: letters, digits, `_`, `~`, `-`; unique ignoring case.
        username: String,
        /// Asset code, e.g. USD (letters and digits, at most 16).
        #[arg(long)]
        asset_code: String,
        /// Asset scale: base units per whole unit as a power of ten (0-255).
        #[arg(long)]
        asset_scale: u8,
        /// parent, peer or child.
        #[arg(long)]
        relation: String,
        /// Optional settings.
        #[command(flatten)]
        settings: AccountSettings,
    },
    /// List live accounts.
    List,
    /// Show one account.
    Show {
        /// Username (any case).
        username: String,
    },
    /// Change an account's settings; an empty value (`--ledger ''`) clears an optional one.
    Update {
        /// Username (any case).
        username: String,
        /// parent, peer or child.
        #[arg(long)]
        relation: Option<String>,
        /// Replace the incoming token with a new random one, printed once.
        #[arg(long, conflicts_with = "incoming_token")]
        new_incoming_token: bool,
        /// Optional settings.
        #[command(flatten)]
        settings: AccountSettings,
    },
    /// Remove an account; refused unless its balance and reservations are zero.
    Remove {
        /// Username (any case).
        username: String,
    },
}

/// Settings shared by `accounts add` and `accounts update`. Amounts are integers in the
/// account's base units.
#[derive(Debug, Args)]
pub struct AccountSettings {
    /// The account's ILP address (default for children: <node address>.<username>).
    #[arg(long)]
    ilp_address: Option<String>,
    /// Largest Prepare accepted from this account (empty: no limit).
    #[arg(long)]
    max_packet_amount: Option<String>,
    /// How far the account may owe us, Prepares in flight included (empty: unlimited; default on add: 0).
    #[arg(long)]
    credit_limit: Option<String>,
    /// Balance at which the settlement worker pays the account (empty: never).
    #[arg(long)]
    settle_threshold: Option<String>,
    /// Balance the settlement worker pays down to (default 0).
    #[arg(long, allow_negative_numbers = true)]
    settle_to: Option<i64>,
    /// Ledger (settlement worker config name) that settles this account (empty: none).
    #[arg(long)]
    ledger: Option<String>,
    /// Bearer token the peer will send us (default: a random one, printed once).
    #[arg(long)]
    incoming_token: Option<String>,
    /// The peer's ILP-over-HTTP URL, where we send its packets (empty: none).
    #[arg(long)]
    outgoing_url: Option<String>,
    /// Bearer token we send to the peer (empty: none).
    #[arg(long)]
    outgoing_token: Option<String>,
    /// Expected round trip to the peer in milliseconds: the expiry margin (default 500).
    #[arg(long)]
    round_trip_time_ms: Option<u32>,
    /// The peer's ed25519 public key for signed claims, 64 hex digits (empty: none).
    #[arg(long)]
    claims_public_key: Option<String>,
    /// Spread kept when this account's packets are converted to another asset, a fraction
    /// such as 0.002 (empty: the node's `rates.spread`).
    #[arg(long)]
    spread: Option<String>,
    /// Prepares per second it may send, all connectors together; more get T05 (empty: no limit).
    #[arg(long)]
    max_packets_per_second: Option<String>,
    /// Base units per second it may send, all connectors together; more get T04 (empty: no limit).
    #[arg(long)]
    max_amount_per_second: Option<String>,
    /// Paid at this connector (true/false, default false): the connector answers STREAM
    /// payments to the account's address and SPSP queries at `GET /<username>`, and credits
    /// what arrives to the account.
    #[arg(long)]
    stream_receiver: Option<bool>,
}

/// Asset codes: letters and digits, 1 to 16 (the database checks the same).
fn validate_asset_code(code: &str) -> anyhow::Result<()> {
    if code.is_empty() || code.len() > 16 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
        bail!("asset code {code:?} must be 1-16 letters or digits");
    }
    Ok(())
}

/// "" → `Some(None)` (clear), a non-negative integer → `Some(Some(n))`.
fn parse_optional_amount(name: &str, value: Option<&str>) -> anyhow::Result<Option<Option<i64>>> {
    match value {
        None => Ok(None),
        Some("") => Ok(Some(None)),
        Some(text) => {
            let n: i64 = text
                .parse()
                .with_context(|| format!("--{name} {text:?} is not an integer"))?;
            if n < 0 {
                bail!("--{name} must not be negative");
            }
            Ok(Some(Some(n)))
        }
    }
}

/// "" → `Some(None)` (clear), anything else → `Some(Some(text))`.
fn optional_text(value: &Option<String>) -> Option<Option<String>> {
    value
        .as_ref()
        .map(|v| if v.is_empty() { None } else { Some(v.clone()) })
}

fn parse_url(url: &str) -> anyhow::Result<()> {
    let uri: hyper::Uri = url
        .parse()
        .with_context(|| format!("outgoing URL {url:?} is not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(()),
        _ => bail!("outgoing URL {url:?} must be http:// or https:// with a host"),
    }
}

fn parse_public_key(hex_key: &str) -> anyhow::Result<Vec<u8>> {
    let bytes = hex::decode(hex_key)
        .with_context(|| format!("claims public key {hex_key:?} is not hex"))?;
    if bytes.len() != 32 {
        bail!(
            "claims public key must be 32 bytes (64 hex digits), not {}",
            bytes.len()
        );
    }
    Ok(bytes)
}

fn validate_ledger(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if !ok {
        bail!("ledger name {name:?} must be 1-64 letters, digits, '_', '.' or '-'");
    }
    Ok(())
}

/// A fresh random token: 32 bytes from the OS's CSPRNG, hex-encoded.
fn generate_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

impl AccountSettings {
    /// Checks every given value and turns it into a change set.
    fn to_changes(&self) -> anyhow::Result<(AccountChanges, Option<Option<i64>>)> {
        if let Some(address) = self.ilp_address.as_deref().filter(|a| !a.is_empty()) {
            parse_address(address)?;
        }
        if let Some(url) = self.outgoing_url.as_deref().filter(|u| !u.is_empty()) {
            parse_url(url)?;
        }
        if let Some(ledger) = self.ledger.as_deref().filter(|l| !l.is_empty()) {
            validate_ledger(ledger)?;
        }
        if matches!(self.incoming_token.as_deref(), Some("")) {
            bail!("--incoming-token must not be empty");
        }
        let claims_public_key = match self.claims_public_key.as_deref() {
            None => None,
            Some("") => Some(None),
            Some(key) => Some(Some(parse_public_key(key)?)),
        };
        let round_trip_time_ms = match self.round_trip_time_ms {
            Some(ms) if ms > 60_000 => bail!("--round-trip-time-ms must be at most 60000"),
            Some(ms) => Some(i32::try_from(ms).context("--round-trip-time-ms")?),
            None => None,
        };
        let spread = match self.spread.as_deref() {
            None => None,
            Some("") => Some(None),
            Some(text) => Some(Some(super::rates::parse_spread("--spread", text)?)),
        };
        let positive = |name: &str, value: Option<&str>| -> anyhow::Result<Option<Option<i64>>> {
            let parsed = parse_optional_amount(name, value)?;
            if parsed == Some(Some(0)) {
                bail!("--{name} must be at least 1 (empty: no limit)");
            }
            Ok(parsed)
        };
        let changes = AccountChanges {
            spread,
            max_packets_per_second: positive(
                "max-packets-per-second",
                self.max_packets_per_second.as_deref(),
            )?,
            max_amount_per_second: positive(
                "max-amount-per-second",
                self.max_amount_per_second.as_deref(),
            )?,
            ilp_address: optional_text(&self.ilp_address),
            relation: None,
            max_packet_amount: parse_optional_amount(
                "max-packet-amount",
                self.max_packet_amount.as_deref(),
            )?,
            settle_threshold: parse_optional_amount(
                "settle-threshold",
                self.settle_threshold.as_deref(),
            )?,
            settle_to: self.settle_to,
            ledger: optional_text(&self.ledger),
            incoming_token_hash: self
                .incoming_token
                .as_deref()
                .map(|t| hash_token(t).to_vec()),
            outgoing_url: optional_text(&self.outgoing_url),
            outgoing_token: optional_text(&self.outgoing_token),
            round_trip_time_ms,
            claims_public_key,
            stream_receiver: self.stream_receiver,
        };
        let credit_limit = parse_optional_amount("credit-limit", self.credit_limit.as_deref())?;
        Ok((changes, credit_limit))
    }
}

/// An account as JSON: every setting, never a token.
fn account_json(
    account: &Account,
    credit_limit: Option<i64>,
    node: Option<&Address>,
) -> serde_json::Value {
    json!({
        "id": account.id,
        "username": account.username,
        "ilp_address": effective_address(account, node),
        "ilp_address_configured": account.ilp_address,
        "asset_code": account.asset_code,
        "asset_scale": account.asset_scale,
        "relation": account.relation.as_str(),
        "max_packet_amount": account.max_packet_amount,
        "credit_limit": credit_limit,
        "settle_threshold": account.settle_threshold,
        "settle_to": account.settle_to,
        "ledger": account.ledger,
        "outgoing_url": account.outgoing_url,
        "outgoing_token_set": account.outgoing_token.is_some(),
        "round_trip_time_ms": account.round_trip_time_ms,
        "claims_public_key": account.claims_public_key.as_ref().map(hex::encode),
        "spread": account.spread.map(|s| s.to_string()),
        "max_packets_per_second": account.max_packets_per_second,
        "max_amount_per_second": account.max_amount_per_second,
        "stream_receiver": account.stream_receiver,
        "created_at": account.created_at.to_rfc3339(),
        "updated_at": account.updated_at.to_rfc3339(),
    })
}

/// The address an account has: configured, or `<node>.<username>` for a child.
pub fn effective_address(account: &Account, node: Option<&Address>) -> Option<String> {
    match (&account.ilp_address, node) {
        (Some(address), _) => Some(address.clone()),
        (None, Some(node)) if account.relation == account::Relation::Child => {
            Some(format!("{}.{}", node.as_str(), account.username))
        }
        _ => None,
    }
}

fn print_account(
    account: &Account,
    credit_limit: Option<i64>,
    node: Option<&Address>,
    out: Output,
) -> anyhow::Result<()> {
    if out.json {
        say!("{}", account_json(account, credit_limit, node));
        return Ok(());
    }
    let value = account_json(account, credit_limit, node);
    if let Some(map) = value.as_object() {
        for (key, value) in map {
            let text = match value {
                serde_json::Value::Null => "-".to_owned(),
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            say!("{key:<24} {text}");
        }
    }
    Ok(())
}

/// Runs an `accounts` command.
pub async fn run_accounts(
    conn: &mut AsyncPgConnection,
    command: AccountsCommand,
    node: Option<&Address>,
    out: Output,
) -> anyhow::Result<()> {
    match command {
        AccountsCommand::Add {
            username,
            asset_code,
            asset_scale,
            relation,
            settings,
        } => {
            add(
                conn,
                &username,
                &asset_code,
                asset_scale,
                &relation,
                &settings,
                node,
                out,
            )
            .await
        }
        AccountsCommand::List => list(conn, node, out).await,
        AccountsCommand::Show { username } => {
            let account = find(conn, &username).await?;
            let row = balance::find_balance(conn, account.id)
                .await
                .context("reading the balance")?;
            print_account(&account, row.credit_limit, node, out)
        }
        AccountsCommand::Update {
            username,
            relation,
            new_incoming_token,
            settings,
        } => {
            update(
                conn,
                &username,
                relation.as_deref(),
                new_incoming_token,
                &settings,
                node,
                out,
            )
            .await
        }
        AccountsCommand::Remove { username } => remove(conn, &username, out).await,
    }
}

/// Prints a freshly generated incoming token, the only time it is shown.
fn print_new_token(token: &str, out: Output) -> anyhow::Result<()> {
    if out.json {
        say!("{}", json!({ "incoming_token": token }));
    } else {
        say!("incoming_token           {token}");
        say!("(the incoming token is shown only now; only its hash is stored)");
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn add(
    conn: &mut AsyncPgConnection,
    username: &str,
    asset_code: &str,
    asset_scale: u8,
    relation: &str,
    settings: &AccountSettings,
    node: Option<&Address>,
    out: Output,
) -> anyhow::Result<()> {
    validate_username(username)?;
    validate_asset_code(asset_code)?;
    let relation: account::Relation = relation.parse()?;
    let (changes, credit_limit) = settings.to_changes()?;
    let generated = settings.incoming_token.is_none().then(generate_token);
    let token_hash = match &generated {
        Some(token) => hash_token(token).to_vec(),
        None => changes.incoming_token_hash.clone().unwrap_or_default(),
    };
    let flat = |v: &Option<Option<String>>| v.clone().flatten();
    let (ilp_address, ledger) = (flat(&changes.ilp_address), flat(&changes.ledger));
    let (outgoing_url, outgoing_token) =
        (flat(&changes.outgoing_url), flat(&changes.outgoing_token));
    let claims_key = changes.claims_public_key.clone().flatten();
    let new = NewAccount {
        username,
        ilp_address: ilp_address.as_deref(),
        asset_code,
        asset_scale: i16::from(asset_scale),
        relation,
        max_packet_amount: changes.max_packet_amount.flatten(),
        settle_threshold: changes.settle_threshold.flatten(),
        settle_to: changes.settle_to.unwrap_or(0),
        ledger: ledger.as_deref(),
        incoming_token_hash: &token_hash,
        outgoing_url: outgoing_url.as_deref(),
        outgoing_token: outgoing_token.as_deref(),
        round_trip_time_ms: changes.round_trip_time_ms.unwrap_or(500),
        claims_public_key: claims_key.as_deref(),
        spread: changes.spread.flatten(),
        max_packets_per_second: changes.max_packets_per_second.flatten(),
        max_amount_per_second: changes.max_amount_per_second.flatten(),
        stream_receiver: changes.stream_receiver.unwrap_or(false),
    };
    if let (Some(threshold), to) = (new.settle_threshold, new.settle_to)
        && to > threshold
    {
        bail!("--settle-to {to} must not be above --settle-threshold {threshold}");
    }
    let credit_limit = credit_limit.unwrap_or(Some(0));
    let account = account::insert_account(conn, &new, credit_limit)
        .await
        .map_err(|err| db_refusal(err, &format!("account {username:?}")))?;
    if out.json {
        let mut value = account_json(&account, credit_limit, node);
        if let Some(token) = &generated {
            value["incoming_token"] = json!(token);
        }
        say!("{value}");
    } else {
        print_account(&account, credit_limit, node, out)?;
        if let Some(token) = &generated {
            print_new_token(token, out)?;
        }
    }
    Ok(())
}

async fn list(
    conn: &mut AsyncPgConnection,
    node: Option<&Address>,
    out: Output,
) -> anyhow::Result<()> {
    let accounts = account::list_live_accounts(conn)
        .await
        .context("listing accounts")?;
    let balances = balance::list_balances(conn)
        .await
        .context("listing balances")?;
    let limit_of = |id| {
        balances
            .iter()
            .find(|b| b.account_id == id)
            .and_then(|b| b.credit_limit)
    };
    if out.json {
        let list: Vec<_> = accounts
            .iter()
            .map(|a| account_json(a, limit_of(a.id), node))
            .collect();
        say!("{}", serde_json::Value::Array(list));
    } else {
        say!(
            "{:<20} {:<8} {:<6} {:<40} {:>20} OUTGOING URL",
            "USERNAME",
            "ASSET",
            "REL",
            "ILP ADDRESS",
            "CREDIT LIMIT"
        );
        for a in &accounts {
            let limit = limit_of(a.id).map_or("unlimited".to_owned(), |l| l.to_string());
            say!(
                "{:<20} {:<8} {:<6} {:<40} {:>20} {}",
                a.username,
                format!("{}/{}", a.asset_code, a.asset_scale),
                a.relation,
                effective_address(a, node).unwrap_or_else(|| "-".to_owned()),
                limit,
                a.outgoing_url.as_deref().unwrap_or("-"),
            );
        }
    }
    Ok(())
}

async fn update(
    conn: &mut AsyncPgConnection,
    username: &str,
    relation: Option<&str>,
    new_incoming_token: bool,
    settings: &AccountSettings,
    node: Option<&Address>,
    out: Output,
) -> anyhow::Result<()> {
    let (mut changes, credit_limit) = settings.to_changes()?;
    if let Some(relation) = relation {
        let relation: account::Relation = relation.parse()?;
        changes.relation = Some(relation);
    }
    let generated = new_incoming_token.then(generate_token);
    if let Some(token) = &generated {
        changes.incoming_token_hash = Some(hash_token(token).to_vec());
    }
    let nothing = changes.relation.is_none()
        && changes.ilp_address.is_none()
        && changes.max_packet_amount.is_none()
        && changes.settle_threshold.is_none()
        && changes.settle_to.is_none()
        && changes.ledger.is_none()
        && changes.incoming_token_hash.is_none()
        && changes.outgoing_url.is_none()
        && changes.outgoing_token.is_none()
        && changes.round_trip_time_ms.is_none()
        && changes.claims_public_key.is_none()
        && changes.spread.is_none()
        && changes.max_packets_per_second.is_none()
        && changes.max_amount_per_second.is_none()
        && changes.stream_receiver.is_none()
        && credit_limit.is_none();
    if nothing {
        bail!("nothing to update: give at least one setting");
    }
    validate_username(username)?;
    let account = account::update_account(conn, username, &changes, credit_limit)
        .await
        .map_err(|err| match err {
            DbError::NotFound => anyhow::anyhow!("no account named {username:?}"),
            other => db_refusal(other, &format!("update of account {username:?}")),
        })?;
    let row = balance::find_balance(conn, account.id)
        .await
        .context("reading the balance")?;
    print_account(&account, row.credit_limit, node, out)?;
    if let Some(token) = &generated {
        print_new_token(token, out)?;
    }
    Ok(())
}

async fn remove(conn: &mut AsyncPgConnection, username: &str, out: Output) -> anyhow::Result<()> {
    validate_username(username)?;
    let account = account::remove_account(conn, username)
        .await
        .map_err(|err| match err {
            RemoveAccountError::Db(DbError::NotFound) => {
                anyhow::anyhow!("no account named {username:?}")
            }
            other => anyhow::Error::new(other),
        })?;
    if out.json {
        say!("{}", json!({ "removed": account.username }));
    } else {
        say!("removed account {}", account.username);
    }
    Ok(())
}
