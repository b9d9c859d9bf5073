//! `ilp-loadgen`: a closed-loop ILP-over-HTTP load generator, for `scripts/bench.sh`.
//!
//! `--concurrency` workers each keep one HTTP/1.1 keep-alive connection and one Prepare in
//! flight. Only loopback targets are accepted, and the run is bounded by `--duration` and
//! `--max-packets`. Prints fulfilled/s, latency percentiles of fulfilled packets, and
//! rejects by code; the last line is machine-readable:
//! `loadgen: fulfilled=N rejected=N errors=N elapsed_s=S pps=N p50_us=N p90_us=N p99_us=N p999_us=N max_us=N concurrency=N reject_codes=CODE:N,...`
//! With `--per-second`, one line per measured second comes first:
//! `loadgen-second: s=N fulfilled=N p999_us=N max_us=N` (packets by the second they were sent).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use clap::Parser;
use connector::packet::{AddressRef, Packet, PrepareBuilder, condition_for};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

/// Closed-loop ILP-over-HTTP load generator (loopback targets only).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// ILP-over-HTTP endpoint on a loopback address, e.g. http://127.0.0.1:7770/ilp
    /// (`https://` with --ca-file).
    #[arg(long)]
    url: hyper::Uri,
    /// PEM CA certificate(s) to trust for an `https://` URL.
    #[arg(long)]
    ca_file: Option<std::path::PathBuf>,
    /// Sent as `Authorization: Bearer TOKEN`.
    #[arg(long)]
    token: Option<String>,
    /// Destination ILP address of every Prepare.
    #[arg(long)]
    destination: String,
    /// Amount of every Prepare.
    #[arg(long, default_value_t = 10)]
    amount: u64,
    /// Connections, each with one Prepare in flight.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured seconds first.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Stop after starting this many Prepares (warm-up included).
    #[arg(long, default_value_t = 10_000_000)]
    max_packets: u64,
    /// Prepares expire this many seconds after they are sent.
    #[arg(long, default_value_t = 30)]
    expiry_secs: u64,
    /// Also print the fulfilled count, p99.9 and slowest packet of each measured second.
    #[arg(long)]
    per_second: bool,
    /// The receiver's fulfillment, 64 hex digits (default: the shared bench sink's).
    #[arg(
        long,
        default_value = "696c702d62656e63682d66697865642d707265696d6167652d33326279746573"
    )]
    fulfillment: String,
}

/// What one worker saw in the measured window.
#[derive(Default)]
struct Seen {
    /// (measured second the packet was sent in, latency in µs) of each fulfilled packet.
    latencies_us: Vec<(u32, u32)>,
    rejects: BTreeMap<String, u64>,
    errors: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ilp-loadgen: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let host = args
        .url
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let ip: std::net::IpAddr = if host == "localhost" {
        "127.0.0.1".parse()?
    } else {
        host.parse()?
    };
    anyhow::ensure!(
        ip.is_loopback(),
        "only loopback targets are allowed, not {host}"
    );
    let addr = SocketAddr::new(ip, args.url.port_u16().unwrap_or(80));
    let fulfillment: [u8; 32] = hex::decode(&args.fulfillment)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("--fulfillment must be 32 bytes"))?;
    AddressRef::new(&args.destination).map_err(|err| anyhow::anyhow!("--destination: {err}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let tls = match args.url.scheme_str() {
        Some("https") => Some(tls_connector(args.ca_file.as_deref())?),
        _ => None,
    };
    runtime.block_on(drive(args, addr, fulfillment, tls))
}

/// A TLS connector trusting the CA certificates in `ca_file`.
fn tls_connector(ca_file: Option<&std::path::Path>) -> anyhow::Result<tokio_rustls::TlsConnector> {
    use rustls_pki_types::pem::PemObject;
    let ca_file = ca_file.ok_or_else(|| anyhow::anyhow!("an https:// --url needs --ca-file"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca_file)? {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

async fn drive(
    args: Args,
    addr: SocketAddr,
    fulfillment: [u8; 32],
    tls: Option<tokio_rustls::TlsConnector>,
) -> anyhow::Result<()> {
    let args = Arc::new(args);
    let condition = condition_for(&fulfillment);
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.duration);
    let started = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (args, started, tls) = (args.clone(), started.clone(), tls.clone());
        workers.push(tokio::spawn(async move {
            let mut seen = Seen::default();
            let mut sender = None;
            while Instant::now() < end && started.fetch_add(1, Ordering::Relaxed) < args.max_packets
            {
                let prepare = PrepareBuilder {
                    amount: args.amount,
                    expires_at: SystemTime::now() + Duration::from_secs(args.expiry_secs),
                    execution_condition: &condition,
                    destination: AddressRef::new(&args.destination).expect("checked at start"),
                    data: &[],
                }
                .build()
                .expect("an empty-data Prepare builds");
                let sent = Instant::now();
                let outcome = exchange(
                    &mut sender,
                    addr,
                    &args,
                    tls.as_ref(),
                    prepare.into_bytes().freeze(),
                )
                .await;
                if sent < measure_from {
                    continue;
                }
                match outcome {
                    Ok(Packet::Fulfill(f)) if f.matches_condition(&condition) => {
                        let us = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
                        let second = (sent - measure_from).as_secs() as u32;
                        seen.latencies_us.push((second, us));
                    }
                    Ok(Packet::Fulfill(_)) => {
                        *seen.rejects.entry("wrong-fulfillment".into()).or_default() += 1
                    }
                    Ok(Packet::Reject(r)) => {
                        *seen.rejects.entry(r.code().to_string()).or_default() += 1
                    }
                    Ok(Packet::Prepare(_)) | Err(_) => {
                        seen.errors += 1;
                        sender = None;
                    }
                }
            }
            seen
        }));
    }
    let mut samples = Vec::new();
    let mut rejects: BTreeMap<String, u64> = BTreeMap::new();
    let mut errors = 0;
    for worker in workers {
        let seen = worker.await?;
        samples.extend(seen.latencies_us);
        errors += seen.errors;
        for (code, n) in seen.rejects {
            *rejects.entry(code).or_default() += n;
        }
    }
    let elapsed = (Instant::now().min(end) - measure_from)
        .as_secs_f64()
        .max(1e-9);
    if args.per_second {
        samples.sort_unstable();
        for second in samples.chunk_by(|a, b| a.0 == b.0) {
            let us: Vec<u32> = second.iter().map(|&(_, us)| us).collect();
            println!(
                "loadgen-second: s={} fulfilled={} p999_us={} max_us={}",
                second[0].0,
                us.len(),
                percentile(&us, 0.999),
                us.last().copied().unwrap_or(0),
            );
        }
    }
    let mut latencies: Vec<u32> = samples.into_iter().map(|(_, us)| us).collect();
    latencies.sort_unstable();
    let pct = |p: f64| percentile(&latencies, p);
    let fulfilled = latencies.len() as u64;
    let rejected: u64 = rejects.values().sum();
    let codes: Vec<String> = rejects.iter().map(|(c, n)| format!("{c}:{n}")).collect();
    println!(
        "loadgen: fulfilled={fulfilled} rejected={rejected} errors={errors} elapsed_s={elapsed:.3} pps={:.0} \
         p50_us={} p90_us={} p99_us={} p999_us={} max_us={} concurrency={} reject_codes={}",
        fulfilled as f64 / elapsed,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        latencies.last().copied().unwrap_or(0),
        args.concurrency,
        codes.join(","),
    );
    Ok(())
}

/// The `p` quantile (nearest rank) of sorted latencies; 0 when there are none.
fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Sends one Prepare over the worker's connection, (re)connecting when needed.
async fn exchange(
    sender: &mut Option<http1::SendRequest<Full<Bytes>>>,
    addr: SocketAddr,
    args: &Args,
    tls: Option<&tokio_rustls::TlsConnector>,
    body: Bytes,
) -> anyhow::Result<Packet> {
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let send = match tls {
            None => {
                let (send, connection) = http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(connection);
                send
            }
            Some(tls) => {
                let name = rustls_pki_types::ServerName::try_from(
                    args.url.host().unwrap_or("localhost").to_owned(),
                )?;
                let stream = tls.connect(name, stream).await?;
                let (send, connection) = http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(connection);
                send
            }
        };
        *sender = Some(send);
    }
    let Some(send) = sender.as_mut() else {
        anyhow::bail!("no connection")
    };
    send.ready().await?;
    let mut request = Request::post(args.url.path())
        .header("host", addr.to_string())
        .header("content-type", "application/octet-stream");
    if let Some(token) = &args.token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let timeout = Duration::from_secs(args.expiry_secs + 5);
    let response =
        tokio::time::timeout(timeout, send.send_request(request.body(Full::new(body))?)).await??;
    anyhow::ensure!(
        response.status() == StatusCode::OK,
        "HTTP {}",
        response.status()
    );
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Packet::try_from(BytesMut::from(&body[..]))?)
}
