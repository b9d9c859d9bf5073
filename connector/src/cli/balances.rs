//! `ilp-connector balances [--watch]`: balances, reservations and settlements in flight.

use anyhow::Context;
use diesel_async::AsyncPgConnection;
use rust_decimal::Decimal;
use schema::models::{balance, settlement};
use serde_json::json;

use super::Output;

/// Balance in whole units of its asset, when the scale fits a decimal (≤ 28).
pub fn whole_units(base_units: i64, scale: i16) -> Option<Decimal> {
    let scale = u32::try_from(scale).ok()?;
    Decimal::try_from_i128_with_scale(i128::from(base_units), scale).ok()
}

/// Runs `balances`.
pub async fn run_balances(conn: &mut AsyncPgConnection, out: Output) -> anyhow::Result<()> {
    let rows = balance::list_balances(conn)
        .await
        .context("reading balances")?;
    let whole = |n: i64, scale: i16| whole_units(n, scale).map(|d| d.to_string());
    if out.json {
        let list: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "username": r.username,
                    "asset_code": r.asset_code,
                    "asset_scale": r.asset_scale,
                    "balance": r.balance,
                    "reserved": r.reserved,
                    "in_flight": r.in_flight,
                    "credit_limit": r.credit_limit,
                    // What connectors may still reserve; null: no credit limit.
                    "available": r.credit_limit.map(|limit| i128::from(r.balance) - i128::from(r.reserved) + i128::from(limit)).and_then(|a| i64::try_from(a).ok()),
                    "balance_whole": whole(r.balance, r.asset_scale),
                    "reserved_whole": whole(r.reserved, r.asset_scale),
                    "in_flight_whole": whole(r.in_flight, r.asset_scale),
                })
            })
            .collect();
        say!("{}", serde_json::Value::Array(list));
    } else {
        say!(
            "{:<20} {:<6} {:>20} {:>20} {:>20} {:>20} {:>24}",
            "USERNAME",
            "ASSET",
            "BALANCE",
            "RESERVED",
            "IN FLIGHT",
            "CREDIT LIMIT",
            "BALANCE (WHOLE)"
        );
        for r in &rows {
            say!(
                "{:<20} {:<6} {:>20} {:>20} {:>20} {:>20} {:>24}",
                r.username,
                r.asset_code,
                r.balance,
                r.reserved,
                r.in_flight,
                r.credit_limit
                    .map_or_else(|| "none".to_owned(), |limit| limit.to_string()),
                whole(r.balance, r.asset_scale).unwrap_or_else(|| "-".to_owned()),
            );
        }
        say!(
            "(positive: we owe the account holder; base units unless marked whole; reserved: credit \
             connectors set aside for the account's Prepares; in flight: as of their last heartbeat)"
        );
    }
    Ok(())
}

/// `balances --watch`: redraws balances, reservations and settlements in flight every `interval`
/// until Ctrl-C, and keeps trying while the database is away.
pub async fn watch_balances(
    config: &schema::PoolConfig,
    interval: std::time::Duration,
) -> anyhow::Result<()> {
    let mut conn: Option<AsyncPgConnection> = None;
    loop {
        // Clear the screen and go home, like watch(1).
        {
            use std::io::Write as _;
            write!(std::io::stdout(), "\x1b[2J\x1b[H")?;
        }
        say!(
            "ilp-connector balances  {}  (every {} s, Ctrl-C to stop)\n",
            chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC"),
            interval.as_secs()
        );
        if conn.is_none() {
            conn = schema::connect(config).await.ok();
        }
        let drawn = match conn.as_mut() {
            None => Err(anyhow::anyhow!("database unavailable; retrying")),
            Some(c) => {
                async {
                    run_balances(c, Output { json: false }).await?;
                    let pending = settlement::list_settlements_in_flight(c).await?;
                    say!("\nsettlements in flight:");
                    if pending.is_empty() {
                        say!("  none");
                    }
                    for p in pending {
                        say!(
                            "  {:<20} {:>6} pending, {:>20} base units, oldest {}",
                            p.ledger,
                            p.settlements,
                            p.amount,
                            p.oldest_age
                        );
                    }
                    Ok::<_, anyhow::Error>(())
                }
                .await
            }
        };
        if let Err(err) = drawn {
            say!("\n{err:#}");
            conn = None;
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
