//! Rate providers: poll a feed on an interval and write its rates into the `rates` table,
//! which every connector then reloads (NOTIFY). Each rate written expires `max_age` after the
//! fetch: when the feed stops answering, its rates go stale and packets that need them get
//! T00, rather than converting at a rate nobody vouches for any more.
//!
//! Two formats:
//! - `coincap`: CoinCap's `GET /v2/rates` answer, `{"data": [{"symbol": "EUR", "rateUsd":
//!   "1.08…"}, …]}`: base USD.
//! - `json`: a plain document an operator can serve themselves, `{"rates": {"EUR": "1.08",
//!   "USD": 1}}`; values are strings or numbers (numbers are read by their shortest decimal
//!   form, exact up to 15 significant digits: use strings beyond).
//!
//! Rates set by hand (`rates set`, source `manual`) are never overwritten by a provider.

use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::Full;
use rust_decimal::Decimal;
use schema::DbPool;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// Largest provider answer read, in bytes.
pub const MAX_ANSWER_BYTES: usize = 4 << 20;
/// Longest wait for a provider's answer.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The feed formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// CoinCap `/v2/rates` (base USD).
    Coincap,
    /// `{"rates": {"ASSET": rate, …}}`.
    Json,
}

impl ProviderKind {
    /// The `source` written with its rates.
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Coincap => "coincap",
            ProviderKind::Json => "json",
        }
    }
}

/// A decimal from a JSON string or number.
fn decimal(value: &serde_json::Value) -> Option<Decimal> {
    let text = match value {
        serde_json::Value::String(text) => text.trim().to_owned(),
        serde_json::Value::Number(number) => number.to_string(),
        _ => return None,
    };
    Decimal::from_str(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .ok()
}

fn asset_code(text: &str) -> Option<String> {
    let ok = (1..=16).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric());
    ok.then(|| text.to_ascii_uppercase())
}

/// The rates in a provider's answer: (asset code, rate), usable ones only. Fails when the
/// answer is not the format's JSON or holds no usable rate.
pub fn parse(kind: ProviderKind, body: &[u8]) -> anyhow::Result<Vec<(String, Decimal)>> {
    let document: serde_json::Value =
        serde_json::from_slice(body).context("the answer is not JSON")?;
    let mut rates = Vec::new();
    let mut skipped = 0usize;
    let mut keep = |code: Option<String>, rate: Option<Decimal>| match (code, rate) {
        (Some(code), Some(rate)) if rate > Decimal::ZERO && rate < Decimal::from(10u64.pow(18)) => {
            rates.push((code, rate))
        }
        _ => skipped += 1,
    };
    match kind {
        ProviderKind::Coincap => {
            let data = document
                .get("data")
                .and_then(|d| d.as_array())
                .context("no \"data\" array")?;
            for item in data {
                let code = item
                    .get("symbol")
                    .and_then(|s| s.as_str())
                    .and_then(asset_code);
                keep(code, item.get("rateUsd").and_then(decimal));
            }
        }
        ProviderKind::Json => {
            let map = document
                .get("rates")
                .and_then(|r| r.as_object())
                .context("no \"rates\" object")?;
            for (code, value) in map {
                keep(asset_code(code), decimal(value));
            }
        }
    }
    if skipped > 0 {
        tracing::debug!(
            skipped,
            "rate provider entries without a usable code and rate"
        );
    }
    if rates.is_empty() {
        bail!("the answer holds no usable rate");
    }
    Ok(rates)
}

/// A provider, as configured.
#[derive(Debug, Clone)]
pub struct Provider {
    /// Its format.
    pub kind: ProviderKind,
    /// Where to fetch (plain `http://`).
    pub url: hyper::Uri,
    /// Time between fetches.
    pub poll_interval: Duration,
    /// How long a fetched rate may be used.
    pub max_age: Duration,
}

impl Provider {
    async fn fetch(&self, client: &runtime::http::HttpClient) -> anyhow::Result<Bytes> {
        let request = hyper::Request::get(self.url.clone())
            .header(hyper::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .context("building the request")?;
        let call = async {
            let response = client
                .request(request)
                .await
                .map_err(|err| anyhow::anyhow!(schema::error::with_causes(&err)))?;
            if !response.status().is_success() {
                bail!("answered {}", response.status());
            }
            runtime::http::read_body(response.into_body(), MAX_ANSWER_BYTES)
                .await
                .map_err(|err| anyhow::anyhow!(err.to_string()))
        };
        tokio::time::timeout(FETCH_TIMEOUT, call)
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {FETCH_TIMEOUT:?}"))?
    }

    async fn poll_once(
        &self,
        client: &runtime::http::HttpClient,
        pool: &DbPool,
    ) -> anyhow::Result<usize> {
        let body = self.fetch(client).await?;
        let rates = parse(self.kind, &body)?;
        let max_age = chrono::Duration::from_std(self.max_age).context("max_age out of range")?;
        let expires_at = chrono::Utc::now() + max_age;
        let mut conn = pool.get().await?;
        let written = schema::models::rate::store_provided_rates(
            &mut conn,
            &rates,
            self.kind.name(),
            expires_at,
        )
        .await?;
        Ok(written)
    }

    /// Polls until `stop`: logs the first failure of a run of failures and the recovery, not
    /// every attempt.
    pub async fn run(self, pool: DbPool, stop: CancellationToken) {
        let client = runtime::http::http_client(FETCH_TIMEOUT, |pool| pool);
        let source = self.kind.name();
        let mut failing = false;
        let mut ticks = tokio::time::interval(self.poll_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            match self.poll_once(&client, &pool).await {
                Ok(written) => {
                    metrics::counter!("ilp_rate_provider_polls_total", "source" => source, "outcome" => "ok").increment(1);
                    metrics::gauge!("ilp_rate_provider_last_success_seconds", "source" => source)
                        .set(chrono::Utc::now().timestamp() as f64);
                    if failing {
                        tracing::info!(
                            rates.source = source,
                            rates = written,
                            "the rate provider answers again"
                        );
                    }
                    failing = false;
                }
                Err(err) => {
                    metrics::counter!("ilp_rate_provider_polls_total", "source" => source, "outcome" => "failed").increment(1);
                    if !failing {
                        tracing::warn!(rates.source = source, url = %self.url, error = %format!("{err:#}"), max_age = ?self.max_age,
                            "the rate provider failed; its rates go stale when their max age passes");
                    }
                    failing = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coincap_and_json_answers_are_read_exactly() {
        // Proves both formats give exact decimals, skip unusable entries, and refuse an answer
        // with no usable rate.
        let coincap = br#"{"data":[{"id":"euro","symbol":"EUR","rateUsd":"1.0812345678901234567"},
            {"id":"bad","symbol":"B@D","rateUsd":"1"},{"id":"zero","symbol":"ZZZ","rateUsd":"0"},
            {"id":"bitcoin","symbol":"BTC","rateUsd":"97000.5"}],"timestamp":1}"#;
        let rates = parse(ProviderKind::Coincap, coincap).unwrap();
        assert_eq!(
            rates,
            vec![
                (
                    "EUR".to_owned(),
                    Decimal::from_str("1.0812345678901234567").unwrap()
                ),
                ("BTC".to_owned(), Decimal::from_str("97000.5").unwrap()),
            ]
        );
        let json = br#"{"rates":{"eur":1.08,"USD":1,"JPY":"0.0067","X":null}}"#;
        let mut rates = parse(ProviderKind::Json, json).unwrap();
        rates.sort();
        assert_eq!(
            rates,
            vec![
                ("EUR".to_owned(), Decimal::from_str("1.08").unwrap()),
                ("JPY".to_owned(), Decimal::from_str("0.0067").unwrap()),
                ("USD".to_owned(), Decimal::ONE),
            ]
        );
        for bad in [
            &b"not json"[..],
            br#"{"rates":{}}"#,
            br#"{"data":"x"}"#,
            br#"[]"#,
        ] {
            assert!(parse(ProviderKind::Json, bad).is_err());
            assert!(parse(ProviderKind::Coincap, bad).is_err());
        }
    }
}
