//! `ilp-connector`'s configuration: a TOML file, then environment overrides, validated once
//! at start-up.
//!
//! Every key, its default and unit (README "Configuration" repeats this table):
//!
//! | key | env override | default | meaning |
//! |---|---|---|---|
//! | `node.ilp_address` | `ILP_CONNECTOR_NODE__ILP_ADDRESS` | (required for `serve`) | our ILP address; children get `<this>.<username>` |
//! | `http.listen` | `ILP_CONNECTOR_HTTP__LISTEN` | `127.0.0.1:7770` | ILP-over-HTTP listener |
//! | `http.max_body_bytes` | `ILP_CONNECTOR_HTTP__MAX_BODY_BYTES` | `40000` | larger request bodies get 413 |
//! | `http.max_in_flight` | `ILP_CONNECTOR_HTTP__MAX_IN_FLIGHT` | `10000` | Prepares in flight at once; more get T03 |
//! | `http.max_in_flight_per_account` | `ILP_CONNECTOR_HTTP__MAX_IN_FLIGHT_PER_ACCOUNT` | `5000` | Prepares in flight at once from one account; more get T03 |
//! | `http.max_connections` | `ILP_CONNECTOR_HTTP__MAX_CONNECTIONS` | `8192` | connections open at once; more are closed at once |
//! | `http.header_read_timeout_secs` | `ILP_CONNECTOR_HTTP__HEADER_READ_TIMEOUT_SECS` | `30` | time a connection has to send a request head, from connecting or from its last response (the idle timeout) |
//! | `database.url` | `DATABASE_URL` or `ILP_CONNECTOR_DATABASE__URL` | (required) | PostgreSQL URL |
//! | `database.pool_size` | `ILP_CONNECTOR_DATABASE__POOL_SIZE` | `16` | connections |
//! | `database.statement_timeout_ms` | `ILP_CONNECTOR_DATABASE__STATEMENT_TIMEOUT_MS` | `5000` | per statement |
//! | `database.connect_timeout_ms` | `ILP_CONNECTOR_DATABASE__CONNECT_TIMEOUT_MS` | `5000` | waiting for a connection |
//! | `balances.stale_after_secs` | `ILP_CONNECTOR_BALANCES__STALE_AFTER_SECS` | `60` | a connector silent this long has its reservations given back |
//! | `admin.listen` | `ILP_CONNECTOR_ADMIN__LISTEN` | (disabled) | `/metrics` and `/health` listener, e.g. `127.0.0.1:7790` |
//! | `admin.max_connections`, `admin.header_read_timeout_secs` | `ILP_CONNECTOR_ADMIN__…` | `256`, `30` | as for `http` |
//! | `log.format` | `ILP_CONNECTOR_LOG__FORMAT` | `text` | `text` or `json` |
//! | `settlement_api.listen` | `ILP_CONNECTOR_SETTLEMENT_API__LISTEN` | (unset: disabled) | RFC 38 node API listener for our settlement engines, e.g. `127.0.0.1:7771` |
//! | `rates.spread` | `ILP_CONNECTOR_RATES__SPREAD` | `0` | fraction kept on conversions between asset codes (`0.002` = 0.2 %); an account's own `spread` overrides it |
//! | `rates.provider` | `ILP_CONNECTOR_RATES__PROVIDER` | (unset: rates only from the CLI) | `coincap` or `json`: a feed polled into the `rates` table |
//! | `rates.url` | `ILP_CONNECTOR_RATES__URL` | (required with a provider) | the feed's `http://` or `https://` URL |
//! | `rates.poll_interval_secs` | `ILP_CONNECTOR_RATES__POLL_INTERVAL_SECS` | `60` | time between fetches |
//! | `rates.max_age_secs` | `ILP_CONNECTOR_RATES__MAX_AGE_SECS` | `300` | a fetched rate is stale this long after its fetch (packets needing it get T00) |
//! | `http.tls_cert_file`, `http.tls_key_file` | `ILP_CONNECTOR_HTTP__TLS_CERT_FILE`, `…__TLS_KEY_FILE` | (unset: plain HTTP) | PEM certificate chain and key: the ILP listener speaks HTTPS (HTTP/2 or 1.1 by ALPN); read again on SIGHUP |
//! | `settlement_api.tls_cert_file`, `settlement_api.tls_key_file` | `ILP_CONNECTOR_SETTLEMENT_API__…` | (unset) | the same for the node API |
//! | `tls.ca_file` | `ILP_CONNECTOR_TLS__CA_FILE` | (unset) | PEM CA certificates trusted for outgoing HTTPS beside the system's (a private PKI) |
//! | `tls.ca_file_only` | `ILP_CONNECTOR_TLS__CA_FILE_ONLY` | `false` | trust `tls.ca_file` alone, not the system's roots |
//! | `tls.client_cert_file`, `tls.client_key_file` | `ILP_CONNECTOR_TLS__CLIENT_CERT_FILE`, `…__CLIENT_KEY_FILE` | (unset) | PEM certificate chain and key we present when a peer asks (mutual TLS) |
//! | `settlement_api.max_connections`, `settlement_api.header_read_timeout_secs` | `ILP_CONNECTOR_SETTLEMENT_API__…` | `256`, `30` | as for `http` |
//! | `settlement_api.token` | `ILP_CONNECTOR_SETTLEMENT_API__TOKEN` | (unset: no token asked; allowed only when `listen` is loopback) | bearer token the engines must send; visible ASCII, no spaces |
//!
//! Log levels come from `RUST_LOG` (default `info`).

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use runtime::config::{AdminConfig, DatabaseConfig, LogConfig, listener_limits, one_line};
use runtime::listener::{ListenerLimits, ServerTls};
use runtime::tls::TlsConfig;
use rust_decimal::Decimal;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::str::FromStr;

use crate::rates::provider::{Provider, ProviderKind};

/// Prefix of environment overrides; `__` separates sections from keys.
pub const ENV_PREFIX: &str = "ILP_CONNECTOR_";
/// Default ILP-over-HTTP listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7770";
/// Default request body limit: an ILP Prepare is at most about 32.8 kB (RFC 27: data ≤ 32767).
pub const DEFAULT_MAX_BODY_BYTES: usize = 40_000;
/// Default cap on Prepares in flight at once.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 10_000;
/// Default cap on Prepares in flight at once from one account.
pub const DEFAULT_MAX_IN_FLIGHT_PER_ACCOUNT: u32 = 5_000;

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    /// This node.
    #[serde(default)]
    pub node: NodeConfig,
    /// The ILP-over-HTTP listener.
    #[serde(default)]
    pub http: HttpConfig,
    /// PostgreSQL.
    #[serde(default)]
    pub database: DatabaseConfig,
    /// Balance bookkeeping.
    #[serde(default)]
    pub balances: BalancesConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// The admin listener.
    #[serde(default)]
    pub admin: AdminConfig,
    /// The RFC 38 node API for our settlement engines.
    #[serde(default)]
    pub settlement_api: SettlementApiConfig,
    /// Exchange rates: the spread and an optional provider.
    #[serde(default)]
    pub rates: RatesConfig,
    /// Outgoing HTTPS: extra CA bundle, client certificate.
    #[serde(default)]
    pub tls: TlsConfig,
}

/// `[rates]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatesConfig {
    /// Fraction kept on conversions between asset codes, as decimal text.
    #[serde(deserialize_with = "decimal_text")]
    pub spread: String,
    /// Feed format; `None`: no provider.
    pub provider: Option<ProviderKind>,
    /// The feed's URL.
    pub url: Option<String>,
    /// Seconds between fetches.
    pub poll_interval_secs: u64,
    /// Seconds a fetched rate may be used.
    pub max_age_secs: u64,
}

impl Default for RatesConfig {
    fn default() -> Self {
        RatesConfig {
            spread: "0".to_owned(),
            provider: None,
            url: None,
            poll_interval_secs: 60,
            max_age_secs: 300,
        }
    }
}

impl RatesConfig {
    /// The spread, checked to be in `[0, 1)`.
    pub fn spread(&self) -> anyhow::Result<Decimal> {
        let spread = Decimal::from_str(self.spread.trim())
            .or_else(|_| Decimal::from_scientific(self.spread.trim()))
            .map_err(|_| {
                anyhow::anyhow!("rates.spread: {:?} is not a decimal number", self.spread)
            })?;
        if spread < Decimal::ZERO || spread >= Decimal::ONE {
            bail!("rates.spread: {spread} must be at least 0 and below 1 (0.002 keeps 0.2 %)");
        }
        Ok(spread)
    }

    /// The provider, if one is configured.
    pub fn provider(&self) -> anyhow::Result<Option<Provider>> {
        let Some(kind) = self.provider else {
            if self.url.is_some() {
                bail!("rates.url: set, but rates.provider is not (coincap or json)");
            }
            return Ok(None);
        };
        let url = self
            .url
            .as_deref()
            .context("rates.url: required when rates.provider is set")?;
        let uri = url
            .parse::<hyper::Uri>()
            .map_err(|err| anyhow::anyhow!("rates.url: {url:?} does not parse: {err}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
            bail!("rates.url: {url:?} must be an http:// or https:// URL");
        }
        if self.poll_interval_secs == 0 {
            bail!("rates.poll_interval_secs: must be at least 1");
        }
        if self.max_age_secs < self.poll_interval_secs {
            bail!(
                "rates.max_age_secs: {} is shorter than rates.poll_interval_secs ({}): every rate would go stale between fetches",
                self.max_age_secs,
                self.poll_interval_secs
            );
        }
        Ok(Some(Provider {
            kind,
            url: uri,
            poll_interval: std::time::Duration::from_secs(self.poll_interval_secs),
            max_age: std::time::Duration::from_secs(self.max_age_secs),
        }))
    }
}

/// Decimal text from a TOML string or number (or an environment value figment read as one).
fn decimal_text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    struct Text;
    impl serde::de::Visitor<'_> for Text {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a decimal number such as \"0.002\"")
        }
        fn visit_str<E>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_i64<E>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E>(self, v: f64) -> Result<String, E> {
            // The shortest text that reads back as this float: "0.002" for 0.002.
            Ok(v.to_string())
        }
    }
    deserializer.deserialize_any(Text)
}

/// `[settlement_api]`: disabled unless `listen` is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettlementApiConfig {
    /// Listen address; `None`: no node API.
    pub listen: Option<SocketAddr>,
    /// Bearer token the engines send; required unless `listen` is a loopback address (stock
    /// engines send none). Never logged or printed.
    #[serde(skip_serializing)]
    pub token: Option<SecretString>,
    /// Connections open at once.
    pub max_connections: usize,
    /// Seconds a connection may take to send a request head (also its idle timeout).
    pub header_read_timeout_secs: u64,
    /// PEM certificate chain: the listener speaks TLS (reloaded on SIGHUP).
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<std::path::PathBuf>,
}

impl Default for SettlementApiConfig {
    fn default() -> Self {
        SettlementApiConfig {
            listen: None,
            token: None,
            tls_cert_file: None,
            tls_key_file: None,
            max_connections: runtime::listener::DEFAULT_MAX_ADMIN_CONNECTIONS,
            header_read_timeout_secs: runtime::listener::DEFAULT_HEADER_READ_TIMEOUT.as_secs(),
        }
    }
}

impl SettlementApiConfig {
    /// The listener's limits, checked.
    pub fn limits(&self) -> anyhow::Result<ListenerLimits> {
        listener_limits(
            "settlement_api",
            self.max_connections,
            self.header_read_timeout_secs,
        )
    }

    /// The listener's TLS, when configured.
    pub fn tls(&self) -> anyhow::Result<Option<ServerTls>> {
        server_tls("settlement_api", &self.tls_cert_file, &self.tls_key_file)
    }
}

/// `[balances]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalancesConfig {
    /// Seconds without a heartbeat after which a connector's reservations are given back.
    pub stale_after_secs: u64,
}

impl Default for BalancesConfig {
    fn default() -> Self {
        BalancesConfig {
            stale_after_secs: crate::balance::sweeper::STALE_AFTER.as_secs(),
        }
    }
}

/// `[node]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Our ILP address.
    pub ilp_address: Option<String>,
}

/// `[http]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Request body limit in bytes.
    pub max_body_bytes: usize,
    /// Prepares in flight at once.
    pub max_in_flight: usize,
    /// Prepares in flight at once from one account.
    pub max_in_flight_per_account: u32,
    /// Connections open at once.
    pub max_connections: usize,
    /// Seconds a connection may take to send a request head (also its idle timeout).
    pub header_read_timeout_secs: u64,
    /// PEM certificate chain: the listener speaks TLS (reloaded on SIGHUP).
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<std::path::PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: DEFAULT_LISTEN
                .parse()
                .expect("DEFAULT_LISTEN is a socket address"),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_in_flight_per_account: DEFAULT_MAX_IN_FLIGHT_PER_ACCOUNT,
            max_connections: runtime::listener::DEFAULT_MAX_CONNECTIONS,
            header_read_timeout_secs: runtime::listener::DEFAULT_HEADER_READ_TIMEOUT.as_secs(),
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

impl HttpConfig {
    /// The listener's limits, checked.
    pub fn limits(&self) -> anyhow::Result<ListenerLimits> {
        listener_limits("http", self.max_connections, self.header_read_timeout_secs)
    }

    /// The listener's TLS, when configured.
    pub fn tls(&self) -> anyhow::Result<Option<ServerTls>> {
        server_tls("http", &self.tls_cert_file, &self.tls_key_file)
    }
}

/// A listener's TLS from its section's `tls_cert_file` and `tls_key_file`.
fn server_tls(
    section: &str,
    cert: &Option<std::path::PathBuf>,
    key: &Option<std::path::PathBuf>,
) -> anyhow::Result<Option<ServerTls>> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => ServerTls::load(cert, key, section).map(Some),
        (Some(_), None) => bail!("{section}.tls_key_file: required with {section}.tls_cert_file"),
        (None, Some(_)) => bail!("{section}.tls_cert_file: required with {section}.tls_key_file"),
    }
}

impl ConnectorConfig {
    /// Reads `file` (when given), then the environment, and validates the result.
    /// Errors name the offending key.
    pub fn load(file: Option<&Path>) -> anyhow::Result<ConnectorConfig> {
        let mut figment = Figment::from(Serialized::defaults(ConnectorConfig::default_values()));
        if let Some(file) = file {
            if !file.exists() {
                bail!("config file {} does not exist", file.display());
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        // ILP_CONNECTOR_CONFIG names the file (clap reads it), it is not a key.
        figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__").ignore(&["config"]));
        if let Ok(url) = std::env::var("DATABASE_URL") {
            figment = figment.merge(Serialized::default("database.url", url));
        }
        let config: ConnectorConfig = figment
            .extract()
            .map_err(|err| anyhow::anyhow!(one_line(err)))?;
        config.validate()?;
        Ok(config)
    }

    fn default_values() -> ConnectorConfig {
        ConnectorConfig {
            node: NodeConfig::default(),
            http: HttpConfig::default(),
            database: DatabaseConfig::default(),
            balances: BalancesConfig::default(),
            log: LogConfig::default(),
            settlement_api: SettlementApiConfig::default(),
            admin: AdminConfig::default(),
            rates: RatesConfig::default(),
            tls: TlsConfig::default(),
        }
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(address) = &self.node.ilp_address {
            crate::packet::Address::new(address).map_err(|err| {
                anyhow::anyhow!("node.ilp_address: {address:?} is not an ILP address: {err}")
            })?;
        }
        if self.http.max_body_bytes < 1024 {
            bail!(
                "http.max_body_bytes: {} is too small for an ILP Prepare",
                self.http.max_body_bytes
            );
        }
        if self.http.max_in_flight == 0 {
            bail!("http.max_in_flight: must be at least 1");
        }
        if self.http.max_in_flight_per_account == 0 {
            bail!("http.max_in_flight_per_account: must be at least 1");
        }
        self.http.limits()?;
        self.http.tls()?;
        self.admin.limits()?;
        self.settlement_api.limits()?;
        self.settlement_api.tls()?;
        if self.balances.stale_after_secs == 0 {
            bail!("balances.stale_after_secs: must be at least 1");
        }
        self.database.validate()?;
        self.rates.spread()?;
        self.rates.provider()?;
        runtime::tls::build_client_config(&self.tls)?;
        if let Some(token) = self
            .settlement_api
            .token
            .as_ref()
            .map(ExposeSecret::expose_secret)
            && (token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()))
        {
            // A bearer token with spaces or control characters could never be sent in a header.
            bail!(
                "settlement_api.token: must be non-empty visible ASCII without spaces (the value is not shown)"
            );
        }
        if let Some(listen) = self.settlement_api.listen {
            // Stock engines (ilp-settlement-core) send no Authorization header: without a
            // token the node API is open to whoever can connect, so only loopback may go
            // without one.
            if self.settlement_api.token.is_none() && !listen.ip().is_loopback() {
                bail!(
                    "settlement_api.token: required when settlement_api.listen ({listen}) is not a loopback address; set it in the config file or ILP_CONNECTOR_SETTLEMENT_API__TOKEN, or listen on 127.0.0.1"
                );
            }
            if listen == self.http.listen && listen.port() != 0 {
                bail!("settlement_api.listen: {listen} is already http.listen");
            }
        }
        Ok(())
    }

    /// Our ILP address; `serve` needs one.
    pub fn ilp_address(&self) -> anyhow::Result<crate::packet::Address> {
        let address = self.node.ilp_address.as_deref().context(
            "node.ilp_address is not set: set it in the config file or ILP_CONNECTOR_NODE__ILP_ADDRESS",
        )?;
        crate::packet::Address::new(address)
            .map_err(|err| anyhow::anyhow!("node.ilp_address: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_api(listen: Option<&str>, token: Option<&str>) -> ConnectorConfig {
        let mut config = ConnectorConfig::default_values();
        config.settlement_api = SettlementApiConfig {
            listen: listen.map(|l| l.parse().unwrap()),
            token: token.map(|t| SecretString::from(t.to_owned())),
            ..SettlementApiConfig::default()
        };
        config
    }

    #[test]
    fn the_settlement_api_needs_a_usable_token_and_errors_name_the_key() {
        // Proves listen without a token is allowed on loopback only, and a token that cannot be
        // a bearer token is refused naming settlement_api.token, without echoing the token.
        assert!(with_api(None, None).validate().is_ok());
        assert!(
            with_api(Some("127.0.0.1:7771"), Some("s3cret"))
                .validate()
                .is_ok()
        );
        assert!(with_api(Some("127.0.0.1:7771"), None).validate().is_ok());
        assert!(with_api(Some("[::1]:7771"), None).validate().is_ok());
        let missing = with_api(Some("0.0.0.0:7771"), None).validate().unwrap_err();
        assert!(
            missing.to_string().starts_with("settlement_api.token:"),
            "{missing}"
        );
        for bad in ["", "has space", "tab\there"] {
            let err = with_api(Some("127.0.0.1:7771"), Some(bad))
                .validate()
                .unwrap_err();
            assert!(
                err.to_string().starts_with("settlement_api.token:"),
                "{err}"
            );
            assert!(bad.is_empty() || !err.to_string().contains(bad), "{err}");
        }
        let same = with_api(Some("127.0.0.1:7770"), Some("t"))
            .validate()
            .unwrap_err();
        assert!(
            same.to_string().starts_with("settlement_api.listen:"),
            "{same}"
        );
    }

    #[test]
    fn the_token_is_never_in_debug_output() {
        // Proves printing the configuration cannot leak the settlement API token or the
        // database password (both are secrecy types).
        let mut config = with_api(Some("127.0.0.1:7771"), Some("very-secret-token"));
        config.database.url = Some(String::from("postgres://ilp:hunter2@db/ilp").into());
        let printed = format!("{config:?}");
        assert!(!printed.contains("very-secret-token"), "{printed}");
        assert!(!printed.contains("hunter2"), "{printed}");
        let pool = config.database.pool_config("test").unwrap();
        assert!(!format!("{pool:?}").contains("hunter2"));
    }

    #[test]
    fn rates_settings_are_read_as_decimals_and_checked() {
        // Proves the spread is read exactly from a TOML string or number, absurd spreads and
        // provider settings are refused naming their key, and a provider needs an http URL.
        for (toml, expected) in [
            ("spread = \"0.002\"", "0.002"),
            ("spread = 0.25", "0.25"),
            ("spread = 0", "0"),
        ] {
            let rates: RatesConfig = toml_rates(toml);
            assert_eq!(rates.spread().unwrap().to_string(), expected);
        }
        for bad in ["spread = \"1\"", "spread = -0.1", "spread = \"x\""] {
            let err = toml_rates(bad).spread().unwrap_err();
            assert!(err.to_string().starts_with("rates.spread:"), "{err}");
        }
        let provider = |extra: &str| toml_rates(&format!("spread = 0\n{extra}")).provider();
        assert!(provider("").unwrap().is_none());
        let ok = provider("provider = \"json\"\nurl = \"http://127.0.0.1:1/r\"")
            .unwrap()
            .unwrap();
        assert_eq!(
            (ok.poll_interval.as_secs(), ok.max_age.as_secs()),
            (60, 300)
        );
        for (bad, key) in [
            ("provider = \"json\"", "rates.url:"),
            ("provider = \"json\"\nurl = \"ftp://x/r\"", "rates.url:"),
            ("url = \"http://x/r\"", "rates.url:"),
            (
                "provider = \"json\"\nurl = \"http://x/r\"\nmax_age_secs = 5\npoll_interval_secs = 10",
                "rates.max_age_secs:",
            ),
        ] {
            let err = provider(bad).unwrap_err();
            assert!(err.to_string().starts_with(key), "{bad}: {err}");
        }
    }

    fn toml_rates(toml: &str) -> RatesConfig {
        Figment::from(Serialized::defaults(RatesConfig::default()))
            .merge(Toml::string(toml))
            .extract()
            .unwrap()
    }
}
