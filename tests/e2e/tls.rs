//! HTTPS to next hops: a private CA, HTTP/2 by ALPN, a certificate for another name refused
//! with T01 and a clear log line, mutual TLS accepted and refused as configured.

// Fixtures panic where a step fails, like the tests.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use connector::packet::{ErrorCode, Packet};
use e2e::tls::{Alpn, TestPki, TlsReceiver};
use e2e::{Node, add_child, cli, send_prepare};
use schema::test_db::TestDb;

/// A node whose bob is the HTTPS endpoint `url`, trusting `pki`'s CA alone, with `env`.
async fn node(url: &str, pki: &TestPki, env: &[(&str, &str)]) -> Node {
    let db = Arc::new(TestDb::new().await);
    add_child(db.url(), "alice", "");
    cli(
        db.url(),
        &[
            "accounts",
            "add",
            "bob",
            "--relation",
            "child",
            "--asset-code",
            "USD",
            "--asset-scale",
            "2",
            "--outgoing-url",
            url,
            "--outgoing-token",
            "secret-over-tls",
        ],
    );
    let ca = pki.ca_file().display().to_string();
    let mut all = vec![
        ("ILP_CONNECTOR_TLS__CA_FILE", ca.as_str()),
        ("ILP_CONNECTOR_TLS__CA_FILE_ONLY", "true"),
    ];
    all.extend_from_slice(env);
    Node::start_on(db, "test.node", &all)
}

async fn pay(node: &Node) -> Packet {
    let prepare = e2e::prepare("test.node.bob", 5, Duration::from_secs(10));
    send_prepare(&node.url(), "alice-token", prepare).await
}

#[tokio::test]
async fn packets_reach_an_https_next_hop_of_a_private_ca_over_http2_or_http1() {
    // Proves outgoing HTTPS with the operator's CA bundle, HTTP/2 when the next hop offers
    // only h2 by ALPN, and HTTP/1.1 when it offers only that.
    let pki = TestPki::new();
    let leaf = pki.leaf("localhost", &["localhost"]);
    for alpn in [Alpn::Http2, Alpn::Http1] {
        let receiver = TlsReceiver::start(&leaf, None, alpn).await;
        let node = node(&receiver.url(), &pki, &[]).await;
        for _ in 0..3 {
            let answer = pay(&node).await;
            assert!(matches!(answer, Packet::Fulfill(_)), "{alpn:?}: {answer:?}");
        }
        assert_eq!(receiver.fulfilled(), 3);
        let expected_h2 = if alpn == Alpn::Http2 { 3 } else { 0 };
        assert_eq!(receiver.over_http2(), expected_h2, "{alpn:?}");
    }
}

#[tokio::test]
async fn a_next_hop_with_a_certificate_for_another_name_gets_t01_and_a_log_line() {
    // Proves the name is checked: a valid certificate of our CA for another host is refused,
    // nothing reaches the next hop, the sender gets T01 and the log says why.
    let pki = TestPki::new();
    let leaf = pki.leaf("other", &["other.example"]);
    let receiver = TlsReceiver::start(&leaf, None, Alpn::Http2).await;
    let node = node(&receiver.url(), &pki, &[]).await;
    let Packet::Reject(reject) = pay(&node).await else {
        panic!("a Fulfill through a certificate for another name");
    };
    assert_eq!(reject.code(), ErrorCode::T01_PEER_UNREACHABLE);
    assert!(
        reject.message_str().contains("certificate"),
        "{}",
        reject.message_str()
    );
    assert_eq!(receiver.fulfilled(), 0);
    let lines = e2e::wait_for(Duration::from_secs(5), "the log line", || async {
        let lines = node.log_lines("peer unreachable");
        (!lines.is_empty()).then_some(lines)
    })
    .await;
    assert!(
        lines[0].contains("certificate not valid for name") && lines[0].contains("\"WARN\""),
        "{lines:?}"
    );
}

#[tokio::test]
async fn mutual_tls_is_accepted_with_our_client_certificate_and_refused_without() {
    // Proves tls.client_cert_file/client_key_file: a next hop that asks for a certificate of
    // its CA fulfills when we present one, and is unreachable (T01) when we present none.
    let pki = TestPki::new();
    let server = pki.leaf("localhost", &["localhost"]);
    let client = pki.leaf("us", &["test.node"]);
    let receiver = TlsReceiver::start(&server, Some(&pki), Alpn::Http2).await;

    let without = node(&receiver.url(), &pki, &[]).await;
    let answer = pay(&without).await;
    let Packet::Reject(reject) = answer else {
        panic!("fulfilled without a client certificate");
    };
    assert_eq!(reject.code(), ErrorCode::T01_PEER_UNREACHABLE);

    let (cert, key) = (
        client.cert_file.display().to_string(),
        client.key_file.display().to_string(),
    );
    let with = node(
        &receiver.url(),
        &pki,
        &[
            ("ILP_CONNECTOR_TLS__CLIENT_CERT_FILE", cert.as_str()),
            ("ILP_CONNECTOR_TLS__CLIENT_KEY_FILE", key.as_str()),
        ],
    )
    .await;
    let answer = pay(&with).await;
    assert!(matches!(answer, Packet::Fulfill(_)), "{answer:?}");
    assert_eq!(receiver.fulfilled(), 1);
}

/// A TLS connection to `node` trusting `pki`, with the certificate the server showed.
async fn connect(
    node: &Node,
    pki: &TestPki,
) -> (
    hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    Vec<u8>,
) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let shown = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    (sender, shown)
}

async fn pay_on(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
) -> Packet {
    use http_body_util::BodyExt;
    let prepare = e2e::prepare("test.node.bob", 5, Duration::from_secs(10));
    let request = hyper::Request::post("/ilp")
        .header("host", "localhost")
        .header("authorization", "Bearer alice-token")
        .header("content-type", "application/octet-stream")
        .body(http_body_util::Full::new(prepare.into_bytes().freeze()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), hyper::StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Packet::try_from(bytes::BytesMut::from(&body[..])).unwrap()
}

#[tokio::test]
async fn a_tls_listener_reloads_its_certificate_on_sighup_and_keeps_its_connections() {
    // Proves http.tls_cert_file/tls_key_file: the ILP listener speaks HTTPS; after the files
    // change and SIGHUP, new connections get the new certificate while a connection opened
    // before goes on being served; a broken file on SIGHUP keeps the certificate in use.
    let pki = TestPki::new();
    let first = pki.leaf("listener", &["localhost"]);
    let receiver = e2e::Receiver::start(e2e::Behaviour::Fulfill).await;
    let db = Arc::new(TestDb::new().await);
    add_child(db.url(), "alice", "");
    cli(
        db.url(),
        &[
            "accounts",
            "add",
            "bob",
            "--relation",
            "child",
            "--asset-code",
            "USD",
            "--asset-scale",
            "2",
            "--outgoing-url",
            &receiver.url(),
        ],
    );
    let (cert, key) = (
        first.cert_file.display().to_string(),
        first.key_file.display().to_string(),
    );
    let node = Node::start_on(
        db,
        "test.node",
        &[
            ("ILP_CONNECTOR_HTTP__TLS_CERT_FILE", cert.as_str()),
            ("ILP_CONNECTOR_HTTP__TLS_KEY_FILE", key.as_str()),
        ],
    );
    let (mut old, shown) = connect(&node, &pki).await;
    assert_eq!(shown, first.cert.to_vec());
    assert!(matches!(pay_on(&mut old).await, Packet::Fulfill(_)));

    // A new certificate under the same file names (leaf() writes listener.pem/.key again).
    let second = pki.leaf("listener", &["localhost", "127.0.0.1"]);
    node.signal("HUP");
    e2e::wait_for(Duration::from_secs(10), "the reload", || async {
        (!node.log_lines("TLS certificate reloaded").is_empty()).then_some(())
    })
    .await;
    let (mut new, shown) = connect(&node, &pki).await;
    assert_eq!(
        shown,
        second.cert.to_vec(),
        "a new connection has the new certificate"
    );
    assert!(matches!(pay_on(&mut new).await, Packet::Fulfill(_)));
    assert!(
        matches!(pay_on(&mut old).await, Packet::Fulfill(_)),
        "the connection opened before the reload is still served"
    );

    std::fs::write(&second.key_file, "not a key").unwrap();
    node.signal("HUP");
    e2e::wait_for(Duration::from_secs(10), "the failed reload", || async {
        (!node.log_lines("TLS certificate not reloaded").is_empty()).then_some(())
    })
    .await;
    let (mut after, shown) = connect(&node, &pki).await;
    assert_eq!(
        shown,
        second.cert.to_vec(),
        "a broken file keeps the certificate in use"
    );
    assert!(matches!(pay_on(&mut after).await, Packet::Fulfill(_)));
}
