//! `ilp-settlement-worker`'s configuration: defaults, then a TOML file, then environment
//! overrides, validated once at start-up.
//!
//! Every key, its default and unit:
//!
//! | key | env override | default | meaning |
//! |---|---|---|---|
//! | `database.url` | `DATABASE_URL` or `ILP_WORKER_DATABASE__URL` | (required) | PostgreSQL URL |
//! | `database.pool_size` | `ILP_WORKER_DATABASE__POOL_SIZE` | `4` | connections |
//! | `database.statement_timeout_ms` | `ILP_WORKER_DATABASE__STATEMENT_TIMEOUT_MS` | `5000` | per statement, milliseconds |
//! | `database.connect_timeout_ms` | `ILP_WORKER_DATABASE__CONNECT_TIMEOUT_MS` | `5000` | waiting for a connection, milliseconds |
//! | `log.format` | `ILP_WORKER_LOG__FORMAT` | `text` | `text` or `json` |
//! | `admin.listen` | `ILP_WORKER_ADMIN__LISTEN` | (unset: disabled) | `/metrics` and `/health` listener, e.g. `127.0.0.1:7791` |
//! | `admin.max_connections` | `ILP_WORKER_ADMIN__MAX_CONNECTIONS` | `256` | connections open at once; more are closed at once |
//! | `admin.header_read_timeout_secs` | `ILP_WORKER_ADMIN__HEADER_READ_TIMEOUT_SECS` | `30` | time to send a request head; also the idle timeout |
//! | `worker.instance_name` | `ILP_WORKER_WORKER__INSTANCE_NAME` | `<hostname>-<pid>` | lease owner; unique per replica |
//! | `worker.lease_secs` | `ILP_WORKER_WORKER__LEASE_SECS` | `60` | how long a claimed ledger stays ours, seconds |
//! | `worker.idle_poll_ms` | `ILP_WORKER_WORKER__IDLE_POLL_MS` | `500` | how often to look for due ledgers when none is, milliseconds |
//! | `ledgers[].name` | - | (required) | 1 to 64 of `A-Z a-z 0-9 _ . -`, unique |
//! | `ledgers[].kind` | - | (required) | `rfc38` or `claims` |
//! | `ledgers[].schedule` | - | (required) | cron with seconds, UTC, e.g. `*/5 * * * * *` |
//! | `ledgers[].options` | `ILP_WORKER_LEDGERS__<NAME>__<KEY>` | `{}` | the adaptor's options, below |
//! | `options.engine_url` (rfc38) | `..__ENGINE_URL` | (required) | the RFC 38 engine, `http://host:port[/path]`; published in `ledgers.options` |
//! | `options.engine_token` (rfc38) | `..__ENGINE_TOKEN` | none | secret: bearer token for the engine |
//! | `options.signing_key` (claims) | `..__SIGNING_KEY` | none: receive only | secret: 64 hex digits, our ed25519 seed |
//! | `options.node_address` (claims) | `..__NODE_ADDRESS` | (required with `signing_key`) | our ILP address, the claims' payer |
//! | `options.call_timeout_ms` (both) | `..__CALL_TIMEOUT_MS` | `10000` | per ledger call, milliseconds, at most 60000 |
//!
//! Ledger options from the environment (for secrets): `ILP_WORKER_LEDGERS__XRP__SECRET=..`
//! sets `options.secret` of the ledger named `xrp`; `__` nests further
//! (`..__AUTH__TOKEN` sets `options.auth.token`). The ledger is found by its name upper-cased
//! with `-` and `.` read as `_`; keys are lower-cased; values stay strings. A variable that
//! names no configured ledger stops start-up, so a typo is not silently ignored.
//!
//! Log levels come from `RUST_LOG` (default `info`).

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use schema::models::ledger::LedgerKind;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::adaptor::{Adaptor, OptionsError};
use crate::schedule::Schedule;

/// Prefix of environment overrides; `__` separates sections from keys.
pub const ENV_PREFIX: &str = "ILP_WORKER_";
/// Prefix of the environment overrides of ledger options.
pub const LEDGER_ENV_PREFIX: &str = "ILP_WORKER_LEDGERS__";
/// Connections: one loop needs one at a time; the rest is headroom for adaptors.
pub const DEFAULT_POOL_SIZE: usize = 4;
/// How long a claimed ledger stays ours unless we finish first.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// How often to look for a due ledger when none is.
pub const DEFAULT_IDLE_POLL: Duration = Duration::from_millis(500);
/// Longest lease: a dead replica's ledgers wait at most this long for a takeover.
pub const MAX_LEASE: Duration = Duration::from_secs(24 * 60 * 60);
/// Shortest idle poll: below this the replicas only load the database.
pub const MIN_IDLE_POLL: Duration = Duration::from_millis(10);
/// Longest idle poll: a due ledger waits at most this long past its time.
pub const MAX_IDLE_POLL: Duration = Duration::from_secs(60);
/// Most `[[ledgers]]` one worker takes.
pub const MAX_LEDGERS: usize = 1_000;
/// Longest ledger name, as the `ledgers.name` CHECK says.
pub const MAX_LEDGER_NAME_CHARS: usize = 64;
/// Longest `worker.instance_name`.
pub const MAX_INSTANCE_NAME_CHARS: usize = 128;

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// PostgreSQL.
    pub database: DatabaseConfig,
    /// Logging.
    pub log: LogConfig,
    /// The admin listener (`/metrics`, `/health`).
    pub admin: AdminConfig,
    /// Outgoing HTTPS (settlement engines): extra CA bundle, client certificate.
    pub tls: runtime::tls::TlsConfig,
    /// This replica.
    pub worker: WorkerSettings,
    /// The ledgers to poll, in file order.
    pub ledgers: Vec<LedgerConfig>,
}

pub use runtime::config::{AdminConfig, DatabaseConfig, LogConfig, LogFormat};

/// `[worker]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSettings {
    /// The lease owner this replica writes; two live replicas must not share one.
    pub instance_name: String,
    /// How long a claimed ledger stays ours.
    pub lease: Duration,
    /// How long to sleep when no ledger is due.
    pub idle_poll: Duration,
}

/// One `[[ledgers]]` entry, validated.
#[derive(Clone)]
pub struct LedgerConfig {
    /// Unique name, also the `ledgers.name` row and `accounts.ledger` value.
    pub name: String,
    /// Which adaptor settles through it.
    pub kind: LedgerKind,
    /// When it is polled.
    pub schedule: Schedule,
    /// The adaptor's own settings, kept as written (plus environment overrides).
    pub options: Map<String, Value>,
}

impl LedgerConfig {
    /// Builds this ledger's adaptor from its options; errors name the option.
    pub fn adaptor(&self) -> Result<Adaptor, OptionsError> {
        Adaptor::from_options(self.kind, &self.name, &self.options)
    }
}

impl std::fmt::Debug for LedgerConfig {
    // Options may hold secrets: show their keys only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("schedule", &self.schedule.as_str())
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The file's shape, before validation.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    database: DatabaseConfig,
    #[serde(default)]
    log: LogConfig,
    #[serde(default)]
    admin: AdminConfig,
    #[serde(default)]
    tls: runtime::tls::TlsConfig,
    #[serde(default)]
    worker: FileWorker,
    #[serde(default)]
    ledgers: Vec<FileLedger>,
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            database: DatabaseConfig::with_pool_size(DEFAULT_POOL_SIZE),
            log: LogConfig::default(),
            admin: AdminConfig::default(),
            tls: runtime::tls::TlsConfig::default(),
            worker: FileWorker::default(),
            ledgers: Vec::new(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWorker {
    instance_name: Option<String>,
    lease_secs: u64,
    idle_poll_ms: u64,
}

impl Default for FileWorker {
    fn default() -> Self {
        FileWorker {
            instance_name: None,
            lease_secs: DEFAULT_LEASE.as_secs(),
            idle_poll_ms: millis(DEFAULT_IDLE_POLL),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLedger {
    name: String,
    kind: String,
    schedule: String,
    #[serde(default = "empty_table")]
    options: Value,
}

fn empty_table() -> Value {
    Value::Object(Map::new())
}

impl WorkerConfig {
    /// Reads `file` (when given), then the environment, and validates the result.
    /// Errors are one line and name the offending key or ledger.
    pub fn load(file: Option<&Path>) -> anyhow::Result<WorkerConfig> {
        let mut figment = Figment::from(Serialized::defaults(FileConfig::default()));
        if let Some(file) = file {
            if !file.exists() {
                bail!("config file {} does not exist", file.display());
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        // Ledger options are not addressable by figment's key paths (`ledgers` is an array),
        // so their variables are applied by `apply_ledger_env` instead.
        figment = figment.merge(
            Env::prefixed(ENV_PREFIX)
                .split("__")
                .filter(|key| !key.as_str().to_ascii_lowercase().starts_with("ledgers")),
        );
        if let Ok(url) = std::env::var("DATABASE_URL") {
            figment = figment.merge(Serialized::default("database.url", url));
        }
        WorkerConfig::from_figment(figment, std::env::vars_os())
    }

    /// Parses `toml` alone: no environment, no file. For tests and tools.
    pub fn from_toml(toml: &str) -> anyhow::Result<WorkerConfig> {
        let figment =
            Figment::from(Serialized::defaults(FileConfig::default())).merge(Toml::string(toml));
        WorkerConfig::from_figment(figment, std::iter::empty())
    }

    fn from_figment(
        figment: Figment,
        env: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> anyhow::Result<WorkerConfig> {
        let file: FileConfig = figment
            .extract()
            .map_err(|err| anyhow::anyhow!(runtime::config::one_line(err)))?;
        file.database.validate()?;
        file.admin.limits()?;
        runtime::tls::build_client_config(&file.tls)?;
        let worker = validate_worker(file.worker)?;
        let mut ledgers = validate_ledgers(file.ledgers)?;
        apply_ledger_env(&mut ledgers, env)?;
        // The adaptors' own options, once every override is in; the runner builds them again.
        for ledger in &ledgers {
            ledger
                .adaptor()
                .map_err(|err| anyhow::anyhow!("ledger {:?}: {err}", ledger.name))?;
        }
        Ok(WorkerConfig {
            database: file.database,
            log: file.log,
            admin: file.admin,
            tls: file.tls,
            worker,
            ledgers,
        })
    }

    /// The configured ledger names, in file order.
    pub fn ledger_names(&self) -> Vec<String> {
        self.ledgers
            .iter()
            .map(|ledger| ledger.name.clone())
            .collect()
    }
}

fn validate_worker(worker: FileWorker) -> anyhow::Result<WorkerSettings> {
    let instance_name = match worker.instance_name {
        Some(name) => name,
        None => runtime::instance::default_instance_name(),
    };
    if instance_name.trim().is_empty() || instance_name.chars().count() > MAX_INSTANCE_NAME_CHARS {
        bail!("worker.instance_name: must be 1 to {MAX_INSTANCE_NAME_CHARS} characters, not blank");
    }
    let lease = Duration::from_secs(worker.lease_secs);
    if lease.is_zero() || lease > MAX_LEASE {
        bail!(
            "worker.lease_secs: {} is outside 1..={}",
            worker.lease_secs,
            MAX_LEASE.as_secs()
        );
    }
    let idle_poll = Duration::from_millis(worker.idle_poll_ms);
    if idle_poll < MIN_IDLE_POLL || idle_poll > MAX_IDLE_POLL {
        bail!(
            "worker.idle_poll_ms: {} is outside {}..={}",
            worker.idle_poll_ms,
            millis(MIN_IDLE_POLL),
            millis(MAX_IDLE_POLL)
        );
    }
    Ok(WorkerSettings {
        instance_name,
        lease,
        idle_poll,
    })
}

fn validate_ledgers(entries: Vec<FileLedger>) -> anyhow::Result<Vec<LedgerConfig>> {
    if entries.len() > MAX_LEDGERS {
        bail!(
            "ledgers: {} entries, at most {MAX_LEDGERS} are allowed",
            entries.len()
        );
    }
    let mut seen = HashSet::new();
    let mut ledgers = Vec::with_capacity(entries.len());
    for entry in entries {
        let name = entry.name;
        if !is_valid_ledger_name(&name) {
            bail!(
                "ledger {name:?}: name must be 1 to {MAX_LEDGER_NAME_CHARS} characters of A-Z a-z 0-9 _ . -"
            );
        }
        if !seen.insert(name.clone()) {
            bail!("ledger {name:?}: configured twice; names must be unique");
        }
        let kind = entry
            .kind
            .parse::<LedgerKind>()
            .map_err(|reason| anyhow::anyhow!("ledger {name:?}: {reason}"))?;
        let schedule = Schedule::parse(&entry.schedule).map_err(|reason| {
            anyhow::anyhow!("ledger {name:?}: schedule {:?}: {reason}", entry.schedule)
        })?;
        let Value::Object(options) = entry.options else {
            bail!("ledger {name:?}: options must be a table");
        };
        ledgers.push(LedgerConfig {
            name,
            kind,
            schedule,
            options,
        });
    }
    Ok(ledgers)
}

/// The `ledgers.name` CHECK, `^[A-Za-z0-9_.-]{1,64}$`, in Rust: a bad name stops start-up
/// with a message rather than failing the registration query.
fn is_valid_ledger_name(name: &str) -> bool {
    (1..=MAX_LEDGER_NAME_CHARS).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The part of a ledger's environment variable that names it.
fn ledger_env_key(name: &str) -> String {
    name.to_ascii_uppercase().replace(['-', '.'], "_")
}

/// Applies `ILP_WORKER_LEDGERS__<NAME>__<KEY>[__<KEY>..]=value` to the named ledger's options.
fn apply_ledger_env(
    ledgers: &mut [LedgerConfig],
    env: impl IntoIterator<Item = (OsString, OsString)>,
) -> anyhow::Result<()> {
    for (key, value) in env {
        let Some(key) = key.to_str() else { continue };
        let Some(rest) = key.strip_prefix(LEDGER_ENV_PREFIX) else {
            continue;
        };
        // The value is deliberately never part of an error message: it may be a secret.
        let Some(value) = value.to_str() else {
            bail!("{key}: value is not UTF-8");
        };
        let mut parts = rest.split("__");
        let ledger_key = parts.next().unwrap_or_default().to_ascii_uppercase();
        let path: Vec<String> = parts.map(str::to_ascii_lowercase).collect();
        if ledger_key.is_empty() || path.is_empty() || path.iter().any(String::is_empty) {
            bail!("{key}: expected {LEDGER_ENV_PREFIX}<LEDGER>__<OPTION>[__<OPTION>..]");
        }
        let mut matching = ledgers
            .iter_mut()
            .filter(|ledger| ledger_env_key(&ledger.name) == ledger_key);
        let Some(ledger) = matching.next() else {
            bail!(
                "{key}: no [[ledgers]] entry is named {ledger_key} (names are matched upper-cased, with - and . as _)"
            );
        };
        if let Some(other) = matching.next() {
            bail!(
                "{key}: ambiguous, ledgers {:?} and {:?} both match {ledger_key}",
                ledger.name,
                other.name
            );
        }
        set_option(&mut ledger.options, &path, value)
            .map_err(|reason| anyhow::anyhow!("{key}: {reason}"))?;
    }
    Ok(())
}

/// Sets `options.<path>` to `value`, making tables on the way.
fn set_option(
    options: &mut Map<String, Value>,
    path: &[String],
    value: &str,
) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("no option key".to_owned());
    };
    let mut table = options;
    for (depth, part) in parents.iter().enumerate() {
        let entry = table
            .entry(part.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(next) = entry else {
            return Err(format!(
                "options.{} is not a table",
                path[..=depth].join(".")
            ));
        };
        table = next;
    }
    table.insert(last.clone(), Value::String(value.to_owned()));
    Ok(())
}

/// Milliseconds of a `Duration` constant, saturating (they are all far below `u64::MAX`).
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [database]
        url = "postgres://u:p@127.0.0.1/db"

        [worker]
        instance_name = "replica-a"
        lease_secs = 30
        idle_poll_ms = 250

        [[ledgers]]
        name = "xrp"
        kind = "claims"
        schedule = "*/5 * * * * *"
        options = { node_address = "g.alice", call_timeout_ms = 5000 }

        [[ledgers]]
        name = "usd-engine.1"
        kind = "rfc38"
        schedule = "0 * * * * *"
        options = { engine_url = "http://127.0.0.1:7771" }
    "#;

    fn err(toml: &str) -> String {
        format!("{:#}", WorkerConfig::from_toml(toml).unwrap_err())
    }

    fn ledger(name: &str, kind: &str, schedule: &str) -> String {
        format!("[[ledgers]]\nname = {name:?}\nkind = {kind:?}\nschedule = {schedule:?}\n")
    }

    // Proves a complete file parses into typed values, options kept as written.
    #[test]
    fn parses_a_complete_file() {
        let config = WorkerConfig::from_toml(GOOD).unwrap();
        assert_eq!(config.worker.instance_name, "replica-a");
        assert_eq!(config.worker.lease, Duration::from_secs(30));
        assert_eq!(config.worker.idle_poll, Duration::from_millis(250));
        assert_eq!(config.ledger_names(), ["xrp", "usd-engine.1"]);
        assert_eq!(config.ledgers[0].kind, LedgerKind::Claims);
        assert_eq!(config.ledgers[0].schedule.as_str(), "*/5 * * * * *");
        assert_eq!(config.ledgers[0].options["node_address"], "g.alice");
        assert_eq!(config.ledgers[0].options["call_timeout_ms"], 5000);
        assert_eq!(config.ledgers[1].kind, LedgerKind::Rfc38);
        assert_eq!(
            config.ledgers[1].options["engine_url"],
            "http://127.0.0.1:7771"
        );
    }

    // Proves the defaults in the module table are the ones applied.
    #[test]
    fn defaults_apply() {
        let config = WorkerConfig::from_toml("").unwrap();
        assert_eq!(config.worker.lease, DEFAULT_LEASE);
        assert_eq!(config.worker.idle_poll, DEFAULT_IDLE_POLL);
        assert!(
            config
                .worker
                .instance_name
                .ends_with(&format!("-{}", std::process::id()))
        );
        assert_eq!(config.database.pool_size, DEFAULT_POOL_SIZE);
        assert_eq!(config.database.statement_timeout_ms, 5000);
        assert_eq!(config.log.format, LogFormat::Text);
        assert!(config.ledgers.is_empty());
        assert!(config.database.pool_config("x").is_err());
    }

    // Proves `[admin] listen` is off unless set, parses a socket address, and refuses
    // anything else naming the key.
    #[test]
    fn admin_listen_is_optional_and_checked() {
        assert_eq!(WorkerConfig::from_toml("").unwrap().admin.listen, None);
        let config = WorkerConfig::from_toml("[admin]\nlisten = \"127.0.0.1:7791\"\n").unwrap();
        assert_eq!(config.admin.listen, Some("127.0.0.1:7791".parse().unwrap()));
        let message = err("[admin]\nlisten = \"localhost\"\n");
        assert!(message.starts_with("admin.listen:"), "{message}");
        let message = err("[admin]\nlistn = \"127.0.0.1:1\"\n");
        assert!(
            message.starts_with("admin.listn: unknown field"),
            "{message}"
        );
    }

    // Proves a bad schedule stops start-up with the ledger, the pattern and croner's reason.
    #[test]
    fn bad_schedule_names_the_ledger() {
        let message = err(&ledger("xrp", "claims", "*/5 * *"));
        assert!(
            message.starts_with(r#"ledger "xrp": schedule "*/5 * *": "#),
            "{message}"
        );
        assert!(message.len() > r#"ledger "xrp": schedule "*/5 * *": "#.len());
        assert!(!message.contains('\n'));
    }

    // Proves two entries with one name are refused, naming it.
    #[test]
    fn duplicate_names_are_refused() {
        let toml =
            ledger("xrp", "claims", "*/5 * * * * *") + &ledger("xrp", "rfc38", "0 * * * * *");
        assert_eq!(
            err(&toml),
            r#"ledger "xrp": configured twice; names must be unique"#
        );
    }

    // Proves names outside the SQL CHECK's pattern are refused before any query.
    #[test]
    fn bad_names_are_refused() {
        let too_long = "a".repeat(MAX_LEDGER_NAME_CHARS + 1);
        for name in ["", "has space", "ünïcode", "semi;colon", too_long.as_str()] {
            let message = err(&ledger(name, "claims", "*/5 * * * * *"));
            assert!(
                message.starts_with(&format!("ledger {name:?}: name must be")),
                "{message}"
            );
        }
        let longest = "a".repeat(MAX_LEDGER_NAME_CHARS);
        assert!(WorkerConfig::from_toml(&ledger(&longest, "claims", "*/5 * * * * *")).is_ok());
    }

    // Proves an unknown kind is refused, naming the ledger.
    #[test]
    fn unknown_kind_is_refused() {
        assert_eq!(
            err(&ledger("xrp", "paypal", "*/5 * * * * *")),
            r#"ledger "xrp": kind must be rfc38 or claims, not "paypal""#
        );
    }

    // Proves deny_unknown_fields holds in every section, and the message names the key.
    #[test]
    fn unknown_keys_are_refused() {
        let message = err("[worker]\nlease_seconds = 5\n");
        assert!(
            message.starts_with("worker.lease_seconds: unknown field"),
            "{message}"
        );
        let message = err(
            "[[ledgers]]\nname = \"x\"\nkind = \"claims\"\nschedule = \"* * * * * *\"\nscheduel = \"\"\n",
        );
        assert!(message.contains("scheduel: unknown field"), "{message}");
        let message = err("[databse]\nurl = \"x\"\n");
        assert!(message.starts_with("databse: unknown field"), "{message}");
        assert!(!message.contains('\n'));
    }

    // Proves out-of-range worker settings are refused, naming the key.
    #[test]
    fn worker_limits_are_enforced() {
        assert!(err("[worker]\nlease_secs = 0\n").starts_with("worker.lease_secs:"));
        assert!(err("[worker]\nlease_secs = 86401\n").starts_with("worker.lease_secs:"));
        assert!(err("[worker]\nidle_poll_ms = 1\n").starts_with("worker.idle_poll_ms:"));
        assert!(err("[worker]\ninstance_name = \" \"\n").starts_with("worker.instance_name:"));
        assert!(err("[database]\npool_size = 0\n").starts_with("database.pool_size:"));
        assert!(err("[log]\nformat = \"xml\"\n").starts_with("log.format:"));
        let message = err(&(ledger("xrp", "claims", "* * * * * *") + "options = 3\n"));
        assert_eq!(message, r#"ledger "xrp": options must be a table"#);
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    // Proves ledger options can come from the environment (secrets), nested, as strings.
    #[test]
    fn ledger_options_from_env() {
        let mut config = WorkerConfig::from_toml(GOOD).unwrap();
        apply_ledger_env(
            &mut config.ledgers,
            env(&[
                ("ILP_WORKER_LEDGERS__XRP__SIGNING_KEY", "00123"),
                ("ILP_WORKER_LEDGERS__USD_ENGINE_1__AUTH__TOKEN", "t0k"),
                ("ILP_WORKER_LEDGERS__XRP__LIMITS__MAX_DROPS", "5"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(config.ledgers[0].options["signing_key"], "00123");
        assert_eq!(config.ledgers[0].options["node_address"], "g.alice");
        assert_eq!(config.ledgers[0].options["limits"]["max_drops"], "5");
        assert_eq!(config.ledgers[1].options["auth"]["token"], "t0k");
        // Debug shows option keys, never their values.
        let debug = format!("{:?}", config.ledgers[0]);
        assert!(
            debug.contains("signing_key") && !debug.contains("00123"),
            "{debug}"
        );
    }

    // Proves a variable naming no ledger, or a non-table path, stops start-up without its value.
    #[test]
    fn bad_ledger_env_is_refused() {
        let mut config = WorkerConfig::from_toml(GOOD).unwrap();
        let message = apply_ledger_env(
            &mut config.ledgers,
            env(&[("ILP_WORKER_LEDGERS__XPR__SECRET", "hunter2")]),
        )
        .unwrap_err()
        .to_string();
        assert!(message.starts_with("ILP_WORKER_LEDGERS__XPR__SECRET: no [[ledgers]] entry"));
        assert!(!message.contains("hunter2"));
        let message = apply_ledger_env(
            &mut config.ledgers,
            env(&[("ILP_WORKER_LEDGERS__XRP__NODE_ADDRESS__ID", "1")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            message.contains("options.node_address is not a table"),
            "{message}"
        );
        assert!(
            apply_ledger_env(
                &mut config.ledgers,
                env(&[("ILP_WORKER_LEDGERS__XRP", "1")])
            )
            .is_err()
        );
    }

    // Proves each kind's options are checked at start-up, after the environment, naming the
    // ledger and the option but never a secret's value.
    #[test]
    fn adaptor_options_are_validated_at_start_up() {
        let message = err(&ledger("usd", "rfc38", "* * * * * *"));
        assert!(
            message.starts_with(r#"ledger "usd": options.engine_url: required"#),
            "{message}"
        );
        let message = err(&(ledger("xrp", "claims", "* * * * * *")
            + "options = { signing_key = \"not-hex-secret\", node_address = \"g.a\" }\n"));
        assert!(
            message.starts_with(r#"ledger "xrp": options.signing_key: must be 64 hex digits"#),
            "{message}"
        );
        assert!(!message.contains("not-hex-secret"));
        let message =
            err(&(ledger("xrp", "claims", "* * * * * *") + "options = { network = \"x\" }\n"));
        assert!(
            message.starts_with(r#"ledger "xrp": options.network: unknown option"#),
            "{message}"
        );
        // A bad key from the environment is caught too.
        let figment =
            Figment::from(Serialized::defaults(FileConfig::default())).merge(Toml::string(GOOD));
        let message = format!(
            "{:#}",
            WorkerConfig::from_figment(
                figment,
                env(&[("ILP_WORKER_LEDGERS__XRP__SIGNING_KEY", "abcd")])
            )
            .unwrap_err()
        );
        assert!(
            message.starts_with(r#"ledger "xrp": options.signing_key"#),
            "{message}"
        );
        assert!(!message.contains("abcd"));
    }
}
