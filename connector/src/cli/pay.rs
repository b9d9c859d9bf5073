//! `ilp-connector pay`: a STREAM payment from one of our accounts, sent through the running
//! node over ILP-over-HTTP like any client of that account would (with its incoming token).
//!
//! The receiver is an SPSP URL (`http://` or `https://`), a payment pointer (`$host/path`,
//! which means `https://host/path`; `$host` alone means `https://host/.well-known/pay`), or
//! an ILP address with `--shared-secret`. What was delivered is printed at the end; a large
//! amount shows its progress on stderr. Every failure says what was delivered before it, so
//! nothing is half-known.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use bytes::Bytes;
use diesel_async::AsyncPgConnection;
use http_body_util::Full;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Request, StatusCode, Uri};
use runtime::http::{HttpClient, http_client, read_body};
use rust_decimal::Decimal;
use serde_json::json;

use super::{Output, find};
use crate::packet::{Address, ErrorCode, Fulfill, Packet, Prepare, Reject, RejectBuilder};
use crate::stream::{AssetDetails, IlpSend, PayError, PayOptions, PayReport, Progress, pay};

/// Who sends, and through which node: `pay`'s and `ping`'s first arguments.
#[derive(Debug, clap::Args)]
pub struct SendAs {
    /// The account that sends: the node debits it, as for any packet it sends.
    #[arg(long)]
    pub from: String,
    /// That account's incoming bearer token.
    #[arg(long, env = "ILP_CONNECTOR_TOKEN", hide_env_values = true)]
    pub token: String,
    /// The node's ILP-over-HTTP endpoint (default: `http.listen` of the configuration, as
    /// `http://<listen>/accounts/<from>/ilp`, with 127.0.0.1 for an unspecified address).
    #[arg(long)]
    pub node_url: Option<Uri>,
}

impl SendAs {
    /// The running node as a packet path, reached with the account's token.
    pub(super) fn path(&self, listen: std::net::SocketAddr) -> anyhow::Result<NodePath> {
        Ok(NodePath {
            client: http_client(Duration::from_secs(5), |pool| pool),
            url: match self.node_url.clone() {
                Some(url) => url,
                None => default_node_url(listen, &self.from)?,
            },
            authorization: HeaderValue::from_str(&format!("Bearer {}", self.token))
                .context("--token is not a valid header value")?,
        })
    }
}

/// `pay` arguments.
#[derive(Debug, clap::Args)]
pub struct PayArgs {
    /// The paying account and its node.
    #[command(flatten)]
    pub send_as: SendAs,
    /// The shared secret (base64) when RECEIVER is an ILP address.
    #[arg(long)]
    pub shared_secret: Option<String>,
    /// Largest shortfall against the rate measured at the start, as a fraction: each packet
    /// must deliver at least `amount × rate × (1 − max_slippage)`.
    #[arg(long, default_value = "0.01")]
    pub max_slippage: Decimal,
    /// Give up after this many seconds without a packet fulfilled.
    #[arg(long, default_value_t = 60)]
    pub idle_timeout_secs: u64,
    /// SPSP URL, payment pointer (`$host/path`) or ILP address (with --shared-secret).
    pub receiver: String,
    /// Amount to send, in the paying account's base units.
    pub amount: u64,
}

/// Longest SPSP response we read.
const MAX_SPSP_BYTES: usize = 16 * 1024;
/// Longest ILP response we read from the node.
const MAX_PACKET_BYTES: usize = 64 * 1024;

/// Runs `pay`.
pub async fn run_pay(
    conn: &mut AsyncPgConnection,
    args: PayArgs,
    listen: std::net::SocketAddr,
    out: Output,
) -> anyhow::Result<()> {
    if args.amount == 0 {
        bail!("the amount must be at least 1");
    }
    if args.max_slippage < Decimal::ZERO || args.max_slippage >= Decimal::ONE {
        bail!("--max-slippage must be at least 0 and below 1");
    }
    let from = find(conn, &args.send_as.from).await?;
    let scale = u8::try_from(from.asset_scale).context("the account's asset scale")?;
    let path = args.send_as.path(listen)?;
    let (destination, shared_secret) =
        resolve_receiver(&path.client, &args.receiver, args.shared_secret.as_deref()).await?;

    let show_progress = !out.json;
    let last_shown = Arc::new(std::sync::Mutex::new(std::time::Instant::now()));
    let progress = move |progress: Progress| {
        if !show_progress {
            return;
        }
        let mut last = last_shown.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() >= Duration::from_secs(1) {
            *last = std::time::Instant::now();
            eprintln!(
                "pay: sent {} of {}, delivered {}",
                progress.source_sent, progress.source_amount, progress.delivered
            );
        }
    };
    let options = PayOptions {
        max_slippage: args.max_slippage,
        idle_timeout: Duration::from_secs(args.idle_timeout_secs.clamp(1, 600)),
        source_asset: Some(AssetDetails {
            code: from.asset_code.clone(),
            scale,
        }),
        progress: Some(Arc::new(progress)),
        ..PayOptions::default()
    };
    let outcome = pay(
        &path,
        destination.clone(),
        shared_secret,
        args.amount,
        options,
    )
    .await;
    let (report, error) = match outcome {
        Ok(report) => (Some(report), None),
        Err(err) => (err.report().cloned(), Some(err)),
    };
    print_report(
        &destination,
        &from.asset_code,
        report.as_ref(),
        error.as_ref(),
        out,
    )?;
    match error {
        None => Ok(()),
        Some(err) => Err(anyhow::Error::new(err).context("the payment did not complete")),
    }
}

fn print_report(
    destination: &Address,
    source_code: &str,
    report: Option<&PayReport>,
    error: Option<&PayError>,
    out: Output,
) -> anyhow::Result<()> {
    let Some(report) = report else {
        // Refused before any money moved: the error says why.
        return Ok(());
    };
    let destination_asset = report
        .destination_asset
        .as_ref()
        .map(|asset| format!("{} (scale {})", asset.code, asset.scale))
        .unwrap_or_else(|| "units".to_owned());
    if out.json {
        say!(
            "{}",
            json!({
                "receiver": destination.as_str(),
                "complete": error.is_none(),
                "source_amount": report.source_amount,
                "source_sent": report.source_sent,
                "delivered": report.delivered,
                "destination_asset": report.destination_asset.as_ref().map(|a| json!({"code": a.code, "scale": a.scale})),
                "packets_fulfilled": report.packets_fulfilled,
                "packets_rejected": report.packets_rejected,
                "error": error.map(|err| err.to_string()),
            })
        );
    } else {
        say!(
            "{} {source_code} base units sent of {}; {} {destination_asset} base units delivered to {} in {} packets",
            report.source_sent,
            report.source_amount,
            report.delivered,
            destination.as_str(),
            report.packets_fulfilled,
        );
    }
    Ok(())
}

fn default_node_url(listen: std::net::SocketAddr, username: &str) -> anyhow::Result<Uri> {
    let ip = match listen.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
        ip if ip.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("http://{ip}:{}/accounts/{username}/ilp", listen.port())
        .parse()
        .context("the node URL made from http.listen")
}

/// Where `receiver` is and the secret to pay it with.
async fn resolve_receiver(
    client: &HttpClient,
    receiver: &str,
    shared_secret: Option<&str>,
) -> anyhow::Result<(Address, [u8; 32])> {
    let spsp_url = if let Some(pointer) = receiver.strip_prefix('$') {
        let (host, path) = pointer
            .split_once('/')
            .unwrap_or((pointer, ".well-known/pay"));
        let path = if path.is_empty() {
            ".well-known/pay"
        } else {
            path
        };
        Some(format!("https://{host}/{path}"))
    } else if receiver.starts_with("http://") || receiver.starts_with("https://") {
        Some(receiver.to_owned())
    } else {
        None
    };
    match (spsp_url, shared_secret) {
        (Some(_), Some(_)) => bail!("--shared-secret goes with an ILP address, not with SPSP"),
        (None, None) => bail!(
            "{receiver:?} is no SPSP URL or payment pointer; an ILP address needs --shared-secret"
        ),
        (None, Some(secret)) => {
            let address = Address::new(receiver)
                .map_err(|err| anyhow::anyhow!("{receiver:?} is not an ILP address: {err}"))?;
            Ok((address, decode_secret(secret).context("--shared-secret")?))
        }
        (Some(url), None) => query_spsp(client, &url).await,
    }
}

fn decode_secret(text: &str) -> anyhow::Result<[u8; 32]> {
    let engine = base64::engine::general_purpose::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::general_purpose::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let url_safe = base64::engine::general_purpose::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::general_purpose::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let bytes = engine
        .decode(text)
        .or_else(|_| url_safe.decode(text))
        .map_err(|err| anyhow::anyhow!("not base64: {err}"))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| anyhow::anyhow!("{} bytes, not 32", bytes.len()))
}

/// SPSP (RFC 9): `GET` the receiver's URL for a destination and shared secret.
async fn query_spsp(client: &HttpClient, url: &str) -> anyhow::Result<(Address, [u8; 32])> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("{url:?} is not a URL"))?;
    let request = Request::get(uri)
        .header(ACCEPT, "application/spsp4+json, application/spsp+json")
        .body(Full::new(Bytes::new()))
        .with_context(|| format!("cannot build a request to {url}"))?;
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .map_err(|_| anyhow::anyhow!("SPSP receiver {url} did not answer within 10 s"))?
        .map_err(|err| {
            anyhow::anyhow!(
                "SPSP receiver {url} unreachable: {}",
                schema::error::with_causes(&err)
            )
        })?;
    let status = response.status();
    let body = tokio::time::timeout(
        Duration::from_secs(10),
        read_body(response.into_body(), MAX_SPSP_BYTES),
    )
    .await
    .map_err(|_| anyhow::anyhow!("SPSP receiver {url} did not finish its answer within 10 s"))?
    .map_err(|err| anyhow::anyhow!("SPSP receiver {url}: unreadable answer: {err}"))?;
    if status != StatusCode::OK {
        bail!(
            "SPSP receiver {url} answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
    }
    #[derive(serde::Deserialize)]
    struct Spsp {
        destination_account: String,
        shared_secret: String,
    }
    let spsp: Spsp = serde_json::from_slice(&body)
        .map_err(|err| anyhow::anyhow!("SPSP receiver {url}: not an SPSP answer: {err}"))?;
    let address = Address::new(&spsp.destination_account).map_err(|err| {
        anyhow::anyhow!("SPSP receiver {url}: destination_account is not an ILP address: {err}")
    })?;
    let secret = decode_secret(&spsp.shared_secret)
        .with_context(|| format!("SPSP receiver {url}: shared_secret"))?;
    Ok((address, secret))
}

/// The running node, reached over ILP-over-HTTP as the paying account.
pub(super) struct NodePath {
    client: HttpClient,
    url: Uri,
    authorization: HeaderValue,
}

impl NodePath {
    /// A Reject of our own, for a node that could not be asked (the sender treats T-class
    /// codes as worth retrying and gives up when nothing is fulfilled for a while).
    fn failed(&self, code: ErrorCode, message: &str) -> Reject {
        RejectBuilder {
            code,
            triggered_by: None,
            message: message.as_bytes(),
            data: &[],
        }
        .build()
        .unwrap_or_else(|_| {
            RejectBuilder {
                code,
                triggered_by: None,
                message: b"",
                data: &[],
            }
            .build()
            .expect("an empty Reject builds")
        })
    }
}

impl IlpSend for NodePath {
    async fn send(&self, prepare: Prepare) -> Result<Fulfill, Reject> {
        let request = Request::post(self.url.clone())
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(AUTHORIZATION, self.authorization.clone())
            .body(Full::new(prepare.into_bytes().freeze()));
        let request = match request {
            Ok(request) => request,
            Err(err) => return Err(self.failed(ErrorCode::F00_BAD_REQUEST, &err.to_string())),
        };
        let response = match self.client.request(request).await {
            Ok(response) => response,
            Err(err) => {
                let why = schema::error::with_causes(&err);
                return Err(self.failed(
                    ErrorCode::T01_PEER_UNREACHABLE,
                    &format!("node {} unreachable: {why}", self.url),
                ));
            }
        };
        let status = response.status();
        let body = match read_body(response.into_body(), MAX_PACKET_BYTES).await {
            Ok(body) => body,
            Err(err) => {
                return Err(self.failed(
                    ErrorCode::T00_INTERNAL_ERROR,
                    &format!("the node's answer is unreadable: {err}"),
                ));
            }
        };
        match status {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED => {
                return Err(self.failed(
                    ErrorCode::F00_BAD_REQUEST,
                    "the node refused the token (401): --token must be the --from account's incoming token",
                ));
            }
            other => {
                return Err(self.failed(
                    ErrorCode::T00_INTERNAL_ERROR,
                    &format!(
                        "the node answered {other}: {}",
                        String::from_utf8_lossy(&body[..body.len().min(200)])
                    ),
                ));
            }
        }
        match Packet::try_from(bytes::BytesMut::from(&body[..])) {
            Ok(Packet::Fulfill(fulfill)) => Ok(fulfill),
            Ok(Packet::Reject(reject)) => Err(reject),
            _ => Err(self.failed(
                ErrorCode::T00_INTERNAL_ERROR,
                "the node answered with something other than a Fulfill or Reject",
            )),
        }
    }
}
