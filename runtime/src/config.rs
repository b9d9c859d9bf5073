//! The settings both binaries have: `[database]`, `[log]`, `[admin]`, with their checks, and
//! the one-line form of a configuration error.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::bail;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// `[database]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// PostgreSQL URL; never printed (it may hold a password).
    #[serde(skip_serializing)]
    pub url: Option<SecretString>,
    /// Pool size.
    pub pool_size: usize,
    /// Per-statement timeout, milliseconds.
    pub statement_timeout_ms: u64,
    /// Connection wait timeout, milliseconds.
    pub connect_timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            pool_size: schema::pool::DEFAULT_POOL_SIZE,
            statement_timeout_ms: schema::pool::DEFAULT_STATEMENT_TIMEOUT.as_millis() as u64,
            connect_timeout_ms: schema::pool::DEFAULT_CONNECT_TIMEOUT.as_millis() as u64,
        }
    }
}

impl DatabaseConfig {
    /// The defaults, with `pool_size` connections (each binary has its own default).
    pub fn with_pool_size(pool_size: usize) -> DatabaseConfig {
        DatabaseConfig {
            pool_size,
            ..DatabaseConfig::default()
        }
    }

    /// The pool settings, for a process named `application_name`.
    pub fn pool_config(&self, application_name: &str) -> anyhow::Result<schema::PoolConfig> {
        let Some(url) = &self.url else {
            bail!(
                "database.url is not set: pass --database-url, set DATABASE_URL, or set it in the config file"
            );
        };
        Ok(schema::PoolConfig {
            url: url.clone(),
            application_name: application_name.to_owned(),
            size: self.pool_size,
            statement_timeout: Duration::from_millis(self.statement_timeout_ms),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
        })
    }
}

/// `[admin]`: `/metrics` and `/health`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Listen address; `None`: no admin listener.
    pub listen: Option<SocketAddr>,
    /// Connections open at once.
    pub max_connections: usize,
    /// Seconds a connection may take to send a request head (also its idle timeout).
    pub header_read_timeout_secs: u64,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: None,
            max_connections: crate::listener::DEFAULT_MAX_ADMIN_CONNECTIONS,
            header_read_timeout_secs: crate::listener::DEFAULT_HEADER_READ_TIMEOUT.as_secs(),
        }
    }
}

impl AdminConfig {
    /// The listener's limits, checked.
    pub fn limits(&self) -> anyhow::Result<crate::listener::ListenerLimits> {
        listener_limits("admin", self.max_connections, self.header_read_timeout_secs)
    }
}

/// Limits from a section's `max_connections` and `header_read_timeout_secs`; errors name
/// `section`'s key.
pub fn listener_limits(
    section: &str,
    max_connections: usize,
    header_read_timeout_secs: u64,
) -> anyhow::Result<crate::listener::ListenerLimits> {
    if max_connections == 0 {
        bail!("{section}.max_connections: must be at least 1");
    }
    if header_read_timeout_secs == 0 || header_read_timeout_secs > 3600 {
        bail!("{section}.header_read_timeout_secs: must be between 1 and 3600");
    }
    Ok(crate::listener::ListenerLimits {
        header_read_timeout: Duration::from_secs(header_read_timeout_secs),
        max_connections,
    })
}

/// `[log]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl DatabaseConfig {
    /// Checks values that parse but make no sense; errors name the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.pool_size == 0 {
            bail!("database.pool_size: must be at least 1");
        }
        if self.statement_timeout_ms == 0 {
            bail!("database.statement_timeout_ms: must be at least 1");
        }
        if self.connect_timeout_ms == 0 {
            bail!("database.connect_timeout_ms: must be at least 1");
        }
        Ok(())
    }
}

/// Folds a figment error (which can span lines and list several keys) into one line that
/// names each offending key: the binaries promise one-line reasons.
pub fn one_line(err: figment::Error) -> String {
    let mut message = String::new();
    for e in err {
        if !message.is_empty() {
            message.push_str("; ");
        }
        let key = e.path.join(".");
        let source = e
            .metadata
            .as_ref()
            .and_then(|m| m.source.as_ref())
            .map(|s| format!(" in {s}"))
            .unwrap_or_default();
        if key.is_empty() {
            message.push_str(&format!("{}{source}", e.kind));
        } else {
            message.push_str(&format!("{key}: {}{source}", e.kind));
        }
    }
    message
}
