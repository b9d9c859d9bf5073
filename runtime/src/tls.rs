//! TLS for every outgoing HTTPS call (peers, settlement engines, rate feeds): rustls, trusting
//! the system's roots plus an optional CA bundle (a private PKI), with an optional client
//! certificate for mutual TLS. HTTP/2 is offered by ALPN; a peer that does not take it gets
//! HTTP/1.1.
//!
//! [`ServerTls`]: a listener's certificate and key, read again on SIGHUP (new connections get
//! the new certificate, open ones keep theirs).
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

/// A listener's TLS: the certificate chain and key from two PEM files, swapped whole when
/// [`ServerTls::reload`] reads them again.
#[derive(Clone)]
pub struct ServerTls {
    cert_file: PathBuf,
    key_file: PathBuf,
    config: Arc<arc_swap::ArcSwap<rustls::ServerConfig>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

fn server_config(
    cert_file: &Path,
    key_file: &Path,
    what: &str,
) -> anyhow::Result<rustls::ServerConfig> {
    let chain = read_certs(cert_file, &format!("{what}.tls_cert_file"))?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|err| {
        anyhow::anyhow!(
            "{what}.tls_key_file: {} is not a PEM private key: {err}",
            key_file.display()
        )
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .with_context(|| format!("{what}.tls_key_file: does not match {what}.tls_cert_file"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

impl ServerTls {
    /// Reads `cert_file` and `key_file` (PEM) for the listener of section `what`; errors name
    /// `<what>.tls_cert_file` or `<what>.tls_key_file`.
    pub fn load(cert_file: &Path, key_file: &Path, what: &str) -> anyhow::Result<ServerTls> {
        let config = server_config(cert_file, key_file, what)?;
        Ok(ServerTls {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            config: Arc::new(arc_swap::ArcSwap::from_pointee(config)),
        })
    }

    /// Reads the files again; on failure the certificate in use stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let config = server_config(&self.cert_file, &self.key_file, "tls")?;
        self.config.store(Arc::new(config));
        Ok(())
    }

    /// An acceptor with the current certificate.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.load_full())
    }

    /// Reloads on every SIGHUP until `shutdown`, logging the outcome.
    pub fn reload_on_sighup(
        self,
        name: &'static str,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    got = hangups.recv() => if got.is_none() { return },
                }
                match self.reload() {
                    Ok(()) => {
                        tracing::info!(listener = name, cert_file = %self.cert_file.display(), "TLS certificate reloaded")
                    }
                    Err(err) => {
                        tracing::error!(listener = name, error = %format!("{err:#}"), "TLS certificate not reloaded; the previous one stays")
                    }
                }
            }
        });
        Ok(())
    }
}

/// Keeps SIGHUP from ending the process when no listener has a certificate to read again
/// (`systemctl reload` sends it): it is logged and otherwise ignored, until `shutdown`.
pub fn ignore_sighup(shutdown: tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                got = hangups.recv() => if got.is_none() { return },
            }
            tracing::info!("SIGHUP: no TLS listener, nothing to reload");
        }
    });
    Ok(())
}
