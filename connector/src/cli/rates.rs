//! `ilp-connector rates ...`: the exchange rates every connector converts with.
//!
//! A rate is what one whole unit of an asset is worth in the operator's base asset (any
//! asset, used for every rate alike); forwarding from A to B converts at rate(A) / rate(B).

use std::str::FromStr;

use anyhow::{Context, bail};
use clap::Subcommand;
use diesel_async::AsyncPgConnection;
use rust_decimal::Decimal;
use schema::DbError;
use schema::models::rate::{self, MANUAL, Rate};
use serde_json::json;

use super::{Output, db_refusal};

/// `ilp-connector rates ...`
#[derive(Debug, Subcommand)]
pub enum RatesCommand {
    /// Set ASSET's rate: the value of one whole unit in the base asset (replaces any, also a
    /// provider's; a provider never overwrites a rate set here).
    Set {
        /// Asset code, e.g. EUR.
        asset_code: String,
        /// Positive decimal, e.g. 1.08.
        rate: String,
        /// Seconds after which the rate is stale and no longer used (default: never).
        #[arg(long)]
        max_age_secs: Option<u64>,
    },
    /// List the rates, with their source, age and whether they are stale.
    List,
    /// Remove ASSET's rate: packets between it and other assets get F02.
    Remove {
        /// Asset code.
        asset_code: String,
    },
}

/// A decimal in `[0, 1)` given as `flag`.
pub fn parse_spread(flag: &str, text: &str) -> anyhow::Result<Decimal> {
    let spread = Decimal::from_str(text.trim())
        .map_err(|_| anyhow::anyhow!("{flag} {text:?} is not a decimal number"))?;
    if spread < Decimal::ZERO || spread >= Decimal::ONE {
        bail!("{flag} {spread} must be at least 0 and below 1 (0.002 keeps 0.2 %)");
    }
    Ok(spread)
}

fn parse_rate(text: &str) -> anyhow::Result<Decimal> {
    let rate = Decimal::from_str(text.trim())
        .or_else(|_| Decimal::from_scientific(text.trim()))
        .map_err(|_| anyhow::anyhow!("rate {text:?} is not a decimal number"))?;
    if rate <= Decimal::ZERO || rate >= Decimal::from(10u64.pow(18)) {
        bail!("rate {rate} must be positive and below 10^18");
    }
    Ok(rate)
}

fn parse_asset_code(code: &str) -> anyhow::Result<String> {
    if code.is_empty() || code.len() > 16 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
        bail!("asset code {code:?} must be 1-16 letters or digits");
    }
    Ok(code.to_ascii_uppercase())
}

fn rate_json(rate: &Rate, now: chrono::DateTime<chrono::Utc>) -> serde_json::Value {
    json!({
        "asset_code": rate.asset_code,
        "rate": rate.rate.to_string(),
        "source": rate.source,
        "updated_at": rate.updated_at.to_rfc3339(),
        "expires_at": rate.expires_at.map(|at| at.to_rfc3339()),
        "stale": rate.expires_at.is_some_and(|at| at <= now),
    })
}

/// Runs a `rates` command.
pub async fn run_rates(
    conn: &mut AsyncPgConnection,
    command: RatesCommand,
    out: Output,
) -> anyhow::Result<()> {
    let now = chrono::Utc::now();
    match command {
        RatesCommand::Set {
            asset_code,
            rate,
            max_age_secs,
        } => {
            let code = parse_asset_code(&asset_code)?;
            let value = parse_rate(&rate)?;
            let expires_at = match max_age_secs {
                None => None,
                Some(0) => bail!("--max-age-secs must be at least 1"),
                Some(secs) => Some(
                    now + chrono::Duration::seconds(
                        i64::try_from(secs).context("--max-age-secs is too large")?,
                    ),
                ),
            };
            let row = rate::upsert_rate(conn, &code, value, MANUAL, expires_at)
                .await
                .map_err(|err| db_refusal(err, &format!("rate {code}")))?;
            if out.json {
                say!("{}", rate_json(&row, now));
            } else {
                say!("rate {} = {}", row.asset_code, row.rate);
            }
        }
        RatesCommand::List => {
            let rates = rate::list_rates(conn).await.context("listing rates")?;
            if out.json {
                let list: Vec<_> = rates.iter().map(|r| rate_json(r, now)).collect();
                say!("{}", serde_json::Value::Array(list));
            } else {
                say!(
                    "{:<16} {:>30} {:<10} {:<26} EXPIRES",
                    "ASSET",
                    "RATE",
                    "SOURCE",
                    "UPDATED"
                );
                for r in &rates {
                    let expires = match r.expires_at {
                        None => "never".to_owned(),
                        Some(at) if at <= now => format!("{} (stale)", at.to_rfc3339()),
                        Some(at) => at.to_rfc3339(),
                    };
                    say!(
                        "{:<16} {:>30} {:<10} {:<26} {expires}",
                        r.asset_code,
                        r.rate.to_string(),
                        r.source,
                        r.updated_at.to_rfc3339()
                    );
                }
            }
        }
        RatesCommand::Remove { asset_code } => {
            let code = parse_asset_code(&asset_code)?;
            rate::delete_rate(conn, &code)
                .await
                .map_err(|err| match err {
                    DbError::NotFound => anyhow::anyhow!("no rate for {code:?}"),
                    other => anyhow::Error::new(other).context("removing the rate"),
                })?;
            if out.json {
                say!("{}", json!({ "removed": code }));
            } else {
                say!("removed rate {code}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_spreads_are_checked_before_the_database() {
        // Proves absurd rates, spreads and codes are refused with the value in the message.
        assert_eq!(
            parse_rate("1.08").unwrap(),
            Decimal::from_str("1.08").unwrap()
        );
        assert_eq!(
            parse_rate("1e-3").unwrap(),
            Decimal::from_str("0.001").unwrap()
        );
        for bad in ["0", "-1", "abc", "1e30", ""] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        assert!(parse_spread("--spread", "0.002").is_ok());
        for bad in ["1", "-0.1", "x", "1.5"] {
            assert!(parse_spread("--spread", bad).is_err(), "{bad}");
        }
        assert_eq!(parse_asset_code("eur").unwrap(), "EUR");
        assert!(parse_asset_code("E-U").is_err());
    }
}
