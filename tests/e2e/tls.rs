//! HTTPS to next hops: a private CA, HTTP/2 by ALPN, a certificate for another name refused
//! with T01 and a clear log line, mutual TLS accepted and refused as configured.

// Fixtures panic where a step fails, like the tests.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use connector::packet::{ErrorCode, Packet};
use e2e::tls::{Alpn, TestPki, TlsReceiver};
use e2e::{Node, add_child, add_receiver, send_prepare};
use schema::test_db::TestDb;

/// A node whose bob is the HTTPS endpoint `url`, trusting `pki`'s CA alone, with `env`.
async fn node(url: &str, pki: &TestPki, env: &[(&str, &str)]) -> Node {
    let db = Arc::new(TestDb::new().await);
    add_child(db.url(), "alice", "");
    add_receiver(db.url(), url);
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
    add_receiver(db.url(), &receiver.url());
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

/// Turns TLS on in the test cluster (on this machine) with `leaf` as its certificate: the
/// files go into its data directory, owned by the server's user, and it reloads.
async fn enable_database_tls(url: &str, leaf: &e2e::tls::Leaf) {
    use diesel::sql_types::Text;
    use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
    #[derive(diesel::QueryableByName)]
    struct Setting {
        #[diesel(sql_type = Text)]
        setting: String,
    }
    let mut conn = diesel_async::AsyncPgConnection::establish(url)
        .await
        .unwrap();
    let dir: Setting = diesel::sql_query("SELECT current_setting('data_directory') AS setting")
        .get_result(&mut conn)
        .await
        .unwrap();
    for (file, pem) in [
        (
            "e2e-server.crt",
            std::fs::read_to_string(&leaf.cert_file).unwrap(),
        ),
        (
            "e2e-server.key",
            std::fs::read_to_string(&leaf.key_file).unwrap(),
        ),
    ] {
        let path = format!("{}/{file}", dir.setting);
        // Owned like the data directory (the server's user), readable by it alone: what
        // PostgreSQL asks of a key file.
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let owner = std::fs::metadata(&dir.setting).unwrap();
        std::fs::write(&path, pem).unwrap();
        std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid())).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    for statement in [
        "ALTER SYSTEM SET ssl_cert_file = 'e2e-server.crt'",
        "ALTER SYSTEM SET ssl_key_file = 'e2e-server.key'",
        "ALTER SYSTEM SET ssl = on",
        "SELECT pg_reload_conf()",
    ] {
        conn.batch_execute(statement).await.unwrap();
    }
    // Reloads are asynchronous: wait until a TLS connection goes through.
    let check = format!(
        "{url}{}sslmode=require",
        if url.contains('?') { '&' } else { '?' }
    );
    e2e::wait_for(Duration::from_secs(10), "TLS in the database", || async {
        schema::tls::connect_client(&check).await.ok().map(drop)
    })
    .await;
}

#[tokio::test]
async fn the_database_over_tls_with_verify_full_and_a_wrong_ca_refused() {
    // Proves sslmode=verify-full with sslrootcert: the pool, the LISTEN connection and the
    // balance writer all connect over TLS (pg_stat_ssl says so) and a packet is posted; a
    // CA that did not sign the server's certificate is refused with a clear error.
    let pki = TestPki::new();
    let leaf = pki.leaf("database", &["127.0.0.1", "localhost"]);
    let db = Arc::new(TestDb::new().await);
    enable_database_tls(db.url(), &leaf).await;
    let receiver = e2e::Receiver::start(e2e::Behaviour::Fulfill).await;
    add_child(db.url(), "alice", "");
    add_receiver(db.url(), &receiver.url());
    let separator = if db.url().contains('?') { '&' } else { '?' };
    let tls_url = format!(
        "{}{separator}sslmode=verify-full&sslrootcert={}",
        db.url(),
        pki.ca_file().display()
    );
    let node = Node::start_with_url(&tls_url, "test.node", "127.0.0.1:0", &[]);
    assert!(matches!(pay(&node).await, Packet::Fulfill(_)));
    let rows = e2e::account_balances(db.url()).await;
    assert_eq!(
        rows.iter().find(|r| r.username == "alice").unwrap().balance,
        -5
    );

    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::Int8)]
        n: i64,
    }
    use diesel_async::{AsyncConnection, RunQueryDsl};
    let mut conn = diesel_async::AsyncPgConnection::establish(db.url())
        .await
        .unwrap();
    let plain: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
         WHERE a.application_name LIKE 'ilp-connector%' AND a.datname = current_database() AND NOT s.ssl",
    )
    .get_result(&mut conn)
    .await
    .unwrap();
    let secured: Count = diesel::sql_query(
        "SELECT count(DISTINCT a.application_name) AS n FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
         WHERE a.application_name IN ('ilp-connector', 'ilp-connector-balances', 'ilp-connector-listen') \
         AND a.datname = current_database() AND s.ssl",
    )
    .get_result(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        (plain.n, secured.n),
        (0, 3),
        "pool, writer and LISTEN over TLS"
    );

    let stranger = TestPki::new();
    let wrong_url = format!(
        "{}{separator}sslmode=verify-full&sslrootcert={}",
        db.url(),
        stranger.ca_file().display()
    );
    let out = std::process::Command::new(e2e::binary("ilp-connector"))
        .args(["accounts", "list"])
        .env("DATABASE_URL", &wrong_url)
        .env_remove("ILP_CONNECTOR_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("certificate"), "{err}");
}
