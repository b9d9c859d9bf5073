//! TLS for every outgoing HTTPS call (peers, settlement engines, rate feeds): rustls, trusting
//! the system's roots plus an optional CA bundle (a private PKI), with an optional client
//! certificate for mutual TLS. HTTP/2 is offered by ALPN; a peer that does not take it gets
//! HTTP/1.1.
//!
//! [`init`] is called once at start-up from the `[tls]` section; [`client_config`] is what
//! [`crate::http::http_client`] builds every client with (system roots only, before `init`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::{Context, bail};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// `[tls]`: how outgoing HTTPS connections are made.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of extra CA certificates to trust, beside the system's.
    pub ca_file: Option<PathBuf>,
    /// Trust only `ca_file`, not the system's roots.
    #[serde(default)]
    pub ca_file_only: bool,
    /// PEM certificate chain we present when a server asks (mutual TLS).
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
}

static CLIENT: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("{what}: cannot read {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{what}: {} is not PEM certificates", path.display()))?;
    if certs.is_empty() {
        bail!("{what}: {} holds no certificate", path.display());
    }
    Ok(certs)
}

/// Builds the client configuration `config` describes. Errors name the key and the file.
pub fn build_client_config(config: &TlsConfig) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    if !config.ca_file_only {
        let native = rustls_native_certs::load_native_certs();
        for err in &native.errors {
            tracing::debug!(error = %err, "skipped a system root certificate source");
        }
        roots.add_parsable_certificates(native.certs);
    }
    if let Some(path) = &config.ca_file {
        for cert in read_certs(path, "tls.ca_file")? {
            roots.add(cert).with_context(|| {
                format!(
                    "tls.ca_file: a certificate in {} is unusable",
                    path.display()
                )
            })?;
        }
    } else if config.ca_file_only {
        bail!("tls.ca_file_only: set, but tls.ca_file is not");
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots);
    let client = match (&config.client_cert_file, &config.client_key_file) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert, "tls.client_cert_file")?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|err| {
                anyhow::anyhow!(
                    "tls.client_key_file: {} is not a PEM private key: {err}",
                    key.display()
                )
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .context("tls.client_key_file: does not match tls.client_cert_file")?
        }
        (Some(_), None) => bail!("tls.client_key_file: required with tls.client_cert_file"),
        (None, Some(_)) => bail!("tls.client_cert_file: required with tls.client_key_file"),
    };
    Ok(client)
}

/// Sets the configuration every client of this process uses. Call once, before the first
/// client is built; a second call fails.
pub fn init(config: &TlsConfig) -> anyhow::Result<()> {
    let client = Arc::new(build_client_config(config)?);
    CLIENT
        .set(client)
        .map_err(|_| anyhow::anyhow!("TLS was set up already"))
}

/// The process's client configuration: [`init`]'s, or (before `init`, as when a
/// configuration is checked) the system's roots alone, built afresh and not kept.
pub fn client_config() -> Arc<rustls::ClientConfig> {
    if let Some(config) = CLIENT.get() {
        return config.clone();
    }
    match build_client_config(&TlsConfig::default()) {
        Ok(config) => Arc::new(config),
        Err(err) => {
            tracing::warn!(error = %format!("{err:#}"), "no system roots: HTTPS peers will be refused");
            let empty = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map(|b| {
                    b.with_root_certificates(RootCertStore::empty())
                        .with_no_client_auth()
                });
            Arc::new(empty.unwrap_or_else(|_| unreachable!("ring supports the default versions")))
        }
    }
}
