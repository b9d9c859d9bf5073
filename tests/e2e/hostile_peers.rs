//! Listeners under hostile peers: connections that send headers slowly, too many
//! connections, one account flooding the connector, and Reject codes a peer makes up.

// Fixtures panic where a step fails, like the tests.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use connector::packet::{ErrorCode, Packet};
use e2e::{Behaviour, Node, Receiver, add_child, add_receiver, send_prepare};
use schema::test_db::TestDb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A node with alice (sender, unlimited) and bob (to `receiver`), and `env`.
async fn node(receiver: &Receiver, env: &[(&str, &str)]) -> Node {
    let db = Arc::new(TestDb::new().await);
    add_child(db.url(), "alice", "");
    add_child(db.url(), "carol", "");
    add_receiver(db.url(), &receiver.url());
    let mut env = env.to_vec();
    env.push(("ILP_CONNECTOR_ADMIN__LISTEN", "127.0.0.1:0"));
    Node::start_on(db, "test.node", &env)
}

async fn pay(node: &Node, token: &str) -> Packet {
    send_prepare(
        &node.url(),
        token,
        e2e::prepare("test.node.bob", 5, Duration::from_secs(10)),
    )
    .await
}

/// Opens `n` connections that send part of a request head and then nothing.
async fn slow_connections(node: &Node, n: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = TcpStream::connect(node.addr).await.unwrap();
        stream
            .write_all(b"POST /ilp HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer alice-")
            .await
            .unwrap();
        streams.push(stream);
    }
    streams
}

/// True when the server closed `stream` (EOF or reset) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(within, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // a 408 or similar before the close
        }
    }
}

async fn metric(node: &Node, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (_, text) = node.admin_get("/metrics").await;
    e2e::metric(&text, name, labels).unwrap_or(0.0)
}

#[tokio::test]
async fn slow_header_connections_neither_block_a_prepare_nor_stay_open() {
    // Proves 2,000 connections stalling in their request head do not keep a normal Prepare
    // from being fulfilled at once, and are closed after the header-read timeout.
    let receiver = Receiver::start(Behaviour::Fulfill).await;
    let node = node(
        &receiver,
        &[("ILP_CONNECTOR_HTTP__HEADER_READ_TIMEOUT_SECS", "3")],
    )
    .await;
    let mut slow = slow_connections(&node, 2_000).await;
    let started = Instant::now();
    assert!(matches!(
        pay(&node, "alice-token").await,
        Packet::Fulfill(_)
    ));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "a Prepare took {took:?} next to slow connections"
    );
    // Closed after about 3 s; none is still open after 3 s + a generous margin.
    let mut open = 0;
    for stream in &mut slow {
        if !closed_within(stream, Duration::from_secs(15)).await {
            open += 1;
        }
    }
    assert_eq!(
        open, 0,
        "slow connections left open past the header timeout"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "closed before the timeout"
    );
    // A connection is counted once its task ends, just after hyper has closed it: the count
    // may trail the last close by a moment on a busy machine.
    let counted = || async {
        metric(
            &node,
            "ilp_http_header_timeouts_total",
            &[("listener", "ilp-over-http")],
        )
        .await
    };
    let all = e2e::eventually(Duration::from_secs(5), || async {
        (counted().await >= 2_000.0).then_some(())
    })
    .await;
    assert!(all.is_some(), "{} header timeouts counted", counted().await);
    assert!(matches!(
        pay(&node, "alice-token").await,
        Packet::Fulfill(_)
    ));
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once_and_counted() {
    // Proves `http.max_connections`: with the cap taken by idle connections, one more is
    // closed at once; once they go, Prepares are served again.
    let receiver = Receiver::start(Behaviour::Fulfill).await;
    let node = node(&receiver, &[("ILP_CONNECTOR_HTTP__MAX_CONNECTIONS", "20")]).await;
    let held = slow_connections(&node, 20).await;
    let mut extra = TcpStream::connect(node.addr).await.unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_secs(5)).await,
        "a connection over the cap stayed open"
    );
    let refused = metric(
        &node,
        "ilp_http_connections_refused_total",
        &[("listener", "ilp-over-http")],
    )
    .await;
    assert!(refused >= 1.0, "{refused}");
    drop(held);
    let answer = e2e::wait_for(
        Duration::from_secs(10),
        "a free connection slot",
        || async {
            let prepare = e2e::prepare("test.node.bob", 5, Duration::from_secs(10));
            // The held connections close asynchronously: until one has, a new one is
            // closed at once, which is the cap working, not a failure.
            match e2e::try_send(
                &node.url(),
                Some("alice-token"),
                prepare.into_bytes().freeze(),
            )
            .await
            {
                Ok((hyper::StatusCode::OK, packet)) => Some(packet),
                _ => None,
            }
        },
    )
    .await;
    assert!(matches!(answer, Some(Packet::Fulfill(_))));
}

#[tokio::test]
async fn one_account_at_its_in_flight_cap_gets_t03_and_others_are_served() {
    // Proves `http.max_in_flight_per_account`: alice's Prepares beyond 4 in flight get T03
    // at once while carol's still go through.
    let receiver = Receiver::start(Behaviour::FulfillAfter(Duration::from_millis(1500))).await;
    let node = node(
        &receiver,
        &[("ILP_CONNECTOR_HTTP__MAX_IN_FLIGHT_PER_ACCOUNT", "4")],
    )
    .await;
    let node = Arc::new(node);
    let flood: Vec<_> = (0..10)
        .map(|_| {
            let node = node.clone();
            tokio::spawn(async move { pay(&node, "alice-token").await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let carol = pay(&node, "carol-token").await;
    assert!(
        matches!(carol, Packet::Fulfill(_)),
        "carol was held back by alice's flood"
    );
    let (mut fulfilled, mut busy) = (0, 0);
    for task in flood {
        match task.await.unwrap() {
            Packet::Fulfill(_) => fulfilled += 1,
            Packet::Reject(reject) if reject.code() == ErrorCode::T03_CONNECTOR_BUSY => {
                assert!(
                    reject.message_str().contains("alice"),
                    "{}",
                    reject.message_str()
                );
                busy += 1
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((fulfilled, busy), (4, 6));
    let counted = metric(&node, "ilp_packets_busy_total", &[("limit", "account")]).await;
    assert_eq!(counted, 6.0);
}

#[tokio::test]
async fn reject_codes_a_peer_makes_up_share_one_metric_label() {
    // Proves a next hop answering with codes RFC 27 does not define cannot add label values:
    // they count under code="other".
    let db = Arc::new(TestDb::new().await);
    let made_up = made_up_code_peer().await;
    add_child(db.url(), "alice", "");
    add_receiver(db.url(), &made_up);
    let node = Node::start_on(
        db,
        "test.node",
        &[("ILP_CONNECTOR_ADMIN__LISTEN", "127.0.0.1:0")],
    );
    for _ in 0..3 {
        let answer = pay(&node, "alice-token").await;
        assert!(matches!(answer, Packet::Reject(_)));
    }
    let (_, text) = node.admin_get("/metrics").await;
    let other = e2e::metric(
        &text,
        "ilp_packets_total",
        &[("outcome", "rejected"), ("code", "other")],
    );
    assert_eq!(other, Some(3.0), "{text}");
    assert!(!text.contains("code=\"F7"), "a made-up code became a label");
}

/// A next hop that rejects every Prepare with a different code RFC 27 does not define.
async fn made_up_code_peer() -> String {
    use connector::packet::{AddressRef, RejectBuilder};
    use http_body_util::Full;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counter = Arc::new(std::sync::atomic::AtomicU8::new(0));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request| {
                    let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async move {
                        let code: ErrorCode = format!("F7{}", n % 10).parse().unwrap();
                        let reject = RejectBuilder {
                            code,
                            triggered_by: Some(AddressRef::new("test.peer").unwrap()),
                            message: b"made up",
                            data: &[],
                        }
                        .build()
                        .unwrap();
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            reject.into_bytes().freeze(),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}/ilp")
}
