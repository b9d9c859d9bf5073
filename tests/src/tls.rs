//! Certificates made in the test ([`TestPki`], with rcgen) and an HTTPS next hop that
//! fulfills ([`TlsReceiver`]), optionally asking for a client certificate and speaking
//! HTTP/2 or HTTP/1.1 as ALPN settles.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use connector::packet::{FulfillBuilder, Prepare};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, Version};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::FULFILLMENT;

/// A private CA, and the files the connector reads.
pub struct TestPki {
    issuer: Issuer<'static, KeyPair>,
    ca: CertificateDer<'static>,
    dir: PathBuf,
}

/// A certificate issued by a [`TestPki`], with its key, in memory and as PEM files.
pub struct Leaf {
    /// The certificate.
    pub cert: CertificateDer<'static>,
    /// Its key.
    pub key: PrivateKeyDer<'static>,
    /// The certificate's PEM file.
    pub cert_file: PathBuf,
    /// The key's PEM file.
    pub key_file: PathBuf,
}

impl TestPki {
    /// A new CA; its files go to a fresh directory under the system's temp dir.
    pub fn new() -> TestPki {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ilp-e2e-pki-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("creating the PKI directory");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "ilp e2e test CA");
        let key = KeyPair::generate().expect("a CA key");
        let cert = params.self_signed(&key).expect("the CA certificate");
        std::fs::write(dir.join("ca.pem"), cert.pem()).expect("writing ca.pem");
        TestPki {
            ca: cert.der().clone(),
            issuer: Issuer::new(params, key),
            dir,
        }
    }

    /// The CA certificate's PEM file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The CA certificate.
    pub fn ca(&self) -> CertificateDer<'static> {
        self.ca.clone()
    }

    /// A certificate for `names` (DNS names or IP addresses), saved as `<file>.pem` and
    /// `<file>.key`.
    pub fn leaf(&self, file: &str, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("leaf parameters");
        params.distinguished_name.push(DnType::CommonName, file);
        let key = KeyPair::generate().expect("a leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("signing a leaf");
        let (cert_file, key_file) = (
            self.dir.join(format!("{file}.pem")),
            self.dir.join(format!("{file}.key")),
        );
        std::fs::write(&cert_file, cert.pem()).expect("writing a certificate");
        std::fs::write(&key_file, key.serialize_pem()).expect("writing a key");
        Leaf {
            cert: cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            cert_file,
            key_file,
        }
    }
}

impl Default for TestPki {
    fn default() -> Self {
        TestPki::new()
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How a [`TlsReceiver`] talks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// Offers only `h2`.
    Http2,
    /// Offers only `http/1.1`.
    Http1,
}

/// A fulfilling ILP-over-HTTPS endpoint on 127.0.0.1.
pub struct TlsReceiver {
    /// Its address.
    pub addr: SocketAddr,
    fulfilled: Arc<AtomicU64>,
    http2: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsReceiver {
    /// Serves with `leaf`, asking for a client certificate from `client_ca` when given.
    pub async fn start(leaf: &Leaf, client_ca: Option<&TestPki>, alpn: Alpn) -> TlsReceiver {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS versions");
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(pki) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(pki.ca()).expect("the CA as a root");
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .expect("a client verifier");
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(vec![leaf.cert.clone()], leaf.key.clone_key())
            .expect("the server certificate");
        config.alpn_protocols = match alpn {
            Alpn::Http2 => vec![b"h2".to_vec()],
            Alpn::Http1 => vec![b"http/1.1".to_vec()],
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the TLS receiver");
        let addr = listener.local_addr().expect("its address");
        let fulfilled = Arc::new(AtomicU64::new(0));
        let http2 = Arc::new(AtomicU64::new(0));
        let (counter, h2_counter) = (fulfilled.clone(), http2.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let (counter, h2_counter) = (counter.clone(), h2_counter.clone());
                tokio::spawn(async move {
                    // A handshake the client refuses (or that needs a certificate it lacks)
                    // ends here.
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    let service = hyper::service::service_fn(move |request: Request<_>| {
                        let (counter, h2_counter) = (counter.clone(), h2_counter.clone());
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                fulfil(request, &counter, &h2_counter).await,
                            )
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(tls);
                    if h2 {
                        let _ = hyper::server::conn::http2::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(io, service)
                        .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, service)
                            .await;
                    }
                });
            }
        });
        TlsReceiver {
            addr,
            fulfilled,
            http2,
            task,
        }
    }

    /// `https://localhost:<port>/ilp`.
    pub fn url(&self) -> String {
        format!("https://localhost:{}/ilp", self.addr.port())
    }

    /// Prepares fulfilled so far.
    pub fn fulfilled(&self) -> u64 {
        self.fulfilled.load(Ordering::SeqCst)
    }

    /// Of those, how many came over HTTP/2.
    pub fn over_http2(&self) -> u64 {
        self.http2.load(Ordering::SeqCst)
    }
}

impl Drop for TlsReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn fulfil(
    request: Request<hyper::body::Incoming>,
    counter: &AtomicU64,
    h2_counter: &AtomicU64,
) -> Response<Full<Bytes>> {
    let version = request.version();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if Prepare::try_from(BytesMut::from(&body[..])).is_ok() {
        counter.fetch_add(1, Ordering::SeqCst);
        if version == Version::HTTP_2 {
            h2_counter.fetch_add(1, Ordering::SeqCst);
        }
    }
    let fulfill = FulfillBuilder {
        fulfillment: &FULFILLMENT,
        data: b"over tls",
    }
    .build()
    .expect("a small Fulfill builds");
    Response::new(Full::new(fulfill.into_bytes().freeze()))
}
