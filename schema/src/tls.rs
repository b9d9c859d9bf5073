//! TLS to PostgreSQL, for the pool, the LISTEN connection and the balance writer alike,
//! chosen by the URL's `sslmode` as libpq reads it:
//!
//! | `sslmode` | what happens |
//! |---|---|
//! | `disable` | plain TCP |
//! | `prefer` (the default) | TLS when the server offers it, else plain; the certificate is not checked |
//! | `require` | TLS or no connection; the certificate is not checked (encryption only) |
//! | `verify-full` | TLS, the server's certificate must chain to `sslrootcert` (a PEM file; the system's roots when absent) and name the URL's host |
//!
//! `verify-ca` is refused (use `verify-full`). Only the URL form
//! (`postgres://…?sslmode=verify-full&sslrootcert=/etc/ilp/db-ca.pem`) carries these.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::DbError;

/// How a connection is secured, from `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when offered, unchecked.
    Prefer,
    /// TLS, unchecked.
    Require,
    /// TLS, certificate and host name checked.
    VerifyFull,
}

/// A URL ready for tokio-postgres, and the TLS connector its `sslmode` asks for.
pub struct Prepared {
    /// The URL without `sslrootcert`, with an `sslmode` tokio-postgres knows.
    pub url: String,
    /// The mode asked for.
    pub mode: SslMode,
    /// The TLS connector.
    pub tls: MakeRustlsConnect,
}

fn refused(why: String) -> DbError {
    DbError::Unavailable(why)
}

/// Reads `sslmode` and `sslrootcert` off `url`.
pub fn prepare(url: &str) -> Result<Prepared, DbError> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let mut mode = SslMode::Prefer;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => {
                mode = match value {
                    "disable" => SslMode::Disable,
                    "allow" | "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-full" => SslMode::VerifyFull,
                    "verify-ca" => {
                        return Err(refused(
                            "database URL: sslmode=verify-ca is not supported; use verify-full"
                                .into(),
                        ));
                    }
                    other => {
                        return Err(refused(format!("database URL: unknown sslmode {other:?}")));
                    }
                }
            }
            "sslrootcert" => root_cert = Some(percent_decode(value)),
            _ => kept.push(pair),
        }
    }
    let pg_mode = match mode {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        SslMode::Require | SslMode::VerifyFull => "require",
    };
    kept.push(match pg_mode {
        "disable" => "sslmode=disable",
        "prefer" => "sslmode=prefer",
        _ => "sslmode=require",
    });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| refused(format!("TLS: {err}")))?;
    let config = if mode == SslMode::VerifyFull {
        let mut roots = RootCertStore::empty();
        match &root_cert {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|err| refused(format!("database URL: sslrootcert {path}: {err}")))?;
                if certs.is_empty() {
                    return Err(refused(format!(
                        "database URL: sslrootcert {path} holds no certificate"
                    )));
                }
                for cert in certs {
                    roots.add(cert).map_err(|err| {
                        refused(format!("database URL: sslrootcert {path}: {err}"))
                    })?;
                }
            }
            None => {
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptionOnly(provider)))
            .with_no_client_auth()
    };
    Ok(Prepared {
        url: format!("{base}?{}", kept.join("&")),
        mode,
        tls: MakeRustlsConnect::new(config),
    })
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        if bytes[i] == b'%'
            && let Some(byte) = hex
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `sslmode=prefer` / `require`: encrypt, but accept any certificate (libpq's behaviour
/// without a root certificate). Signatures are still checked, so the session key is the
/// certificate holder's.
#[derive(Debug)]
struct EncryptionOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptionOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A tokio-postgres client for `url`, secured as its `sslmode` says; the connection is
/// driven by a spawned task.
pub async fn connect_client(url: &str) -> Result<tokio_postgres::Client, DbError> {
    let prepared = prepare(url)?;
    let (client, connection) = tokio_postgres::connect(&prepared.url, prepared.tls)
        .await
        .map_err(|err| DbError::Unavailable(crate::error::with_causes(&err)))?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "database connection closed");
        }
    });
    Ok(client)
}

/// A diesel-async connection for `url`, secured as its `sslmode` says.
pub async fn establish(url: &str) -> diesel::ConnectionResult<diesel_async::AsyncPgConnection> {
    let prepared =
        prepare(url).map_err(|err| diesel::ConnectionError::BadConnection(err.to_string()))?;
    let (client, connection) = tokio_postgres::connect(&prepared.url, prepared.tls)
        .await
        .map_err(|err| diesel::ConnectionError::BadConnection(crate::error::with_causes(&err)))?;
    diesel_async::AsyncPgConnection::try_from_client_and_connection(client, connection).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_read_and_taken_off_the_url() {
        // Proves each mode maps to one tokio-postgres knows, sslrootcert is removed, other
        // parameters stay, and verify-ca or a bad mode are refused with the reason.
        let p = prepare("postgres://u:p@h:5432/db").unwrap();
        assert_eq!(
            (p.mode, p.url.as_str()),
            (SslMode::Prefer, "postgres://u:p@h:5432/db?sslmode=prefer")
        );
        let p = prepare("postgres://h/db?application_name=x&sslmode=disable").unwrap();
        assert_eq!(
            (p.mode, p.url.as_str()),
            (
                SslMode::Disable,
                "postgres://h/db?application_name=x&sslmode=disable"
            )
        );
        let p = prepare("postgres://h/db?sslmode=require").unwrap();
        assert_eq!(p.mode, SslMode::Require);
        for bad in [
            "postgres://h/db?sslmode=verify-ca",
            "postgres://h/db?sslmode=nope",
        ] {
            let err = prepare(bad).err().unwrap().to_string();
            assert!(err.contains("sslmode"), "{err}");
        }
        let err = prepare("postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent%2Fca.pem")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
