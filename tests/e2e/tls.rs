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
