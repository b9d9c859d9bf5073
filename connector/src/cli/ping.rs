//! `ilp-connector ping`: round trips to an ILP address over the echo protocol, sent through
//! the running node as one of our accounts (see [`crate::service::echo`]).
//!
//! Each ping is a 0-amount Prepare to ADDRESS asking it to echo back to
//! `<node>.~ping.<nonce>`; our node fulfills that return leg with a fulfillment derived from
//! the node's `stream` secret, which this command reads from the database, so the Fulfill that
//! reaches us proves the packet went there and back. Moves no money.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use diesel_async::AsyncPgConnection;
use schema::models::node_secret::{self, node_secret};
use serde_json::json;

use super::pay::SendAs;
use super::{Output, find};
use crate::packet::{Address, AddressRef, PrepareBuilder, condition_for};
use crate::service::echo::{PING_SEGMENT, echo_request_data, ping_fulfillment, ping_key};
use crate::stream::IlpSend;

/// `ping` arguments.
#[derive(Debug, clap::Args)]
pub struct PingArgs {
    /// The account that sends the pings and its node.
    #[command(flatten)]
    pub send_as: SendAs,
    /// Pings to send, one a second.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub count: u32,
    /// Seconds each ping may take (its expiry).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=60))]
    pub timeout_secs: u64,
    /// The address to ping: a node that answers echo requests (ours: `node.ilp_address`).
    pub address: String,
}

/// Runs `ping`; `node` is our node address (`node.ilp_address`).
pub async fn run_ping(
    conn: &mut AsyncPgConnection,
    args: PingArgs,
    node: Option<&Address>,
    listen: std::net::SocketAddr,
    out: Output,
) -> anyhow::Result<()> {
    let Some(node) = node else {
        bail!("node.ilp_address is not set: pings come back to it");
    };
    let target = AddressRef::new(&args.address)
        .map_err(|err| anyhow::anyhow!("{:?} is not an ILP address: {err}", args.address))?
        .to_address();
    find(conn, &args.send_as.from).await?;
    let key = ping_key(
        &node_secret(conn, node_secret::STREAM)
            .await
            .context("reading the node's stream secret (run `ilp-connector migrate`)")?,
    );
    let path = args.send_as.path(listen)?;
    let mut rtts = Vec::new();
    let mut failures = Vec::new();
    for seq in 1..=args.count {
        if seq > 1 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let source = node
            .with_suffix(PING_SEGMENT)
            .and_then(|address| address.with_suffix(&nonce))
            .context("the return address")?;
        let condition = condition_for(&ping_fulfillment(&key, &nonce));
        let prepare = PrepareBuilder {
            amount: 0,
            expires_at: SystemTime::now() + Duration::from_secs(args.timeout_secs),
            execution_condition: &condition,
            destination: target.as_address_ref(),
            data: &echo_request_data(&source),
        }
        .build()
        .context("building the ping")?;
        let sent = Instant::now();
        let answer = tokio::time::timeout(
            Duration::from_secs(args.timeout_secs + 1),
            path.send(prepare),
        )
        .await;
        let ms = sent.elapsed().as_secs_f64() * 1000.0;
        let line = match answer {
            Ok(Ok(fulfill)) if fulfill.matches_condition(&condition) => {
                rtts.push(ms);
                format!("reply from {target}: seq={seq} time={ms:.2} ms")
            }
            Ok(Ok(_)) => {
                failures.push(format!("seq={seq}: fulfillment does not match"));
                format!("seq={seq}: a Fulfill whose fulfillment does not match")
            }
            Ok(Err(reject)) => {
                let why = format!(
                    "{} {}",
                    reject.code(),
                    String::from_utf8_lossy(reject.message())
                );
                failures.push(format!("seq={seq}: {why}"));
                format!("seq={seq}: rejected {why} ({ms:.2} ms)")
            }
            Err(_) => {
                failures.push(format!("seq={seq}: no answer"));
                format!("seq={seq}: no answer within {} s", args.timeout_secs + 1)
            }
        };
        if !out.json {
            say!("{line}");
        }
    }
    let stats = |f: fn(f64, f64) -> f64| rtts.iter().copied().reduce(f).unwrap_or(0.0);
    let (min, max) = (stats(f64::min), stats(f64::max));
    let avg = if rtts.is_empty() {
        0.0
    } else {
        rtts.iter().sum::<f64>() / rtts.len() as f64
    };
    if out.json {
        say!(
            "{}",
            json!({
                "address": target.as_str(),
                "sent": args.count,
                "replies": rtts.len(),
                "rtt_ms": rtts,
                "failures": failures,
            })
        );
    } else {
        say!(
            "{} pings, {} replies; round trip min/avg/max {min:.2}/{avg:.2}/{max:.2} ms",
            args.count,
            rtts.len()
        );
    }
    if rtts.is_empty() {
        bail!("no reply from {target}");
    }
    Ok(())
}
