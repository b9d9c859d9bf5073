//! Exchange rates: packets between accounts of different assets (or scales) are converted.
//!
//! - [`convert`]: the arithmetic, exact and rounded down.
//! - [`ExchangeRateService`]: the link of the outgoing chain that rewrites a Prepare's amount
//!   into the next hop's units, and an F08 coming back into the sender's.
//! - [`provider`]: optional feeds that keep the `rates` table fresh.
//!
//! Rates live in SQL (`rates`: per asset code, the value of one whole unit in the operator's
//! base asset); the [`RateTable`] is cached in the directory and reloaded on NOTIFY like
//! accounts and routes. A packet from asset A to asset B converts at `rate(A) / rate(B)`,
//! minus the spread (the sender's, else the node's). Between two scales of one asset code no
//! rate is needed and no spread is taken.

pub mod convert;
pub mod provider;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use rust_decimal::Decimal;
use schema::models::rate::Rate;

pub use convert::Conversion;

use crate::accounts::{AccountInfo, SharedDirectory};
use crate::packet::{Address, ErrorCode, MaxPacketAmountDetails, Reject};
use crate::service::{IlpResult, OutgoingRequest, OutgoingService, reject};

/// One asset's rate, as cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateInfo {
    /// Value of one whole unit in the base asset.
    pub rate: Decimal,
    /// When it becomes stale; `None`: never.
    pub expires_at: Option<SystemTime>,
}

/// Every rate, by asset code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateTable(HashMap<String, RateInfo>);

/// Why no conversion can be made; each is a Reject with its own code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateError {
    /// No rate for this asset code: F02, the destination cannot be reached from this asset.
    Missing(String),
    /// The rate expired (its provider stopped answering): T00, temporary.
    Stale(String),
    /// The ratio of the two rates does not fit a decimal: F02.
    OutOfRange,
}

impl RateTable {
    /// The table of these rows. Rows with a rate that is not positive are left out.
    pub fn from_rows(rows: &[Rate]) -> RateTable {
        let rates = rows
            .iter()
            .filter(|row| row.rate > Decimal::ZERO)
            .map(|row| {
                let info = RateInfo {
                    rate: row.rate,
                    expires_at: row.expires_at.map(SystemTime::from),
                };
                (row.asset_code.to_ascii_uppercase(), info)
            })
            .collect();
        RateTable(rates)
    }

    /// Number of rates.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn usable(&self, asset: &str, now: SystemTime) -> Result<Decimal, RateError> {
        // Codes are kept upper case; most accounts spell theirs so, and need no copy.
        let info = match self.0.get(asset) {
            Some(info) => info,
            None => self
                .0
                .get(&asset.to_ascii_uppercase())
                .ok_or_else(|| RateError::Missing(asset.to_owned()))?,
        };
        if info.expires_at.is_some_and(|at| at <= now) {
            return Err(RateError::Stale(asset.to_owned()));
        }
        Ok(info.rate)
    }

    /// How `from`'s amounts become `to`'s: `None` when the two share asset and scale. Spread
    /// `spread` applies between different asset codes only.
    pub fn conversion(
        &self,
        from: &AccountInfo,
        to: &AccountInfo,
        spread: Decimal,
        now: SystemTime,
    ) -> Result<Option<Conversion>, RateError> {
        let same_asset = from.asset_code.eq_ignore_ascii_case(&to.asset_code);
        if same_asset && from.asset_scale == to.asset_scale {
            return Ok(None);
        }
        let (rate, spread) = if same_asset {
            (Decimal::ONE, Decimal::ZERO)
        } else {
            let source = self.usable(&from.asset_code, now)?;
            let destination = self.usable(&to.asset_code, now)?;
            let rate = source
                .checked_div(destination)
                .filter(|rate| *rate > Decimal::ZERO)
                .ok_or(RateError::OutOfRange)?;
            (rate, spread)
        };
        Conversion::new(rate, spread, from.asset_scale, to.asset_scale)
            .map(Some)
            .ok_or(RateError::OutOfRange)
    }
}

/// Converts each Prepare's amount into the next hop's units (the amount the sender pays,
/// `original_amount`, stays), and records the conversion on the request so the post can
/// carry it into the books.
///
/// Rejects: no rate → F02; a stale rate → T00; a positive amount that converts to 0 → R01;
/// a result beyond 2^63 − 1 → F08 with the largest amount that converts. An F08 from
/// downstream comes back with its amounts in the sender's units.
#[derive(Debug)]
pub struct ExchangeRateService<O> {
    node: Arc<Address>,
    directory: Arc<SharedDirectory>,
    spread: Decimal,
    next: O,
}

impl<O> ExchangeRateService<O> {
    /// Converts with `directory`'s rates, keeping `spread` unless the sender has its own.
    pub fn new(
        node: Arc<Address>,
        directory: Arc<SharedDirectory>,
        spread: Decimal,
        next: O,
    ) -> Self {
        ExchangeRateService {
            node,
            directory,
            spread,
            next,
        }
    }

    fn rate_reject(&self, err: RateError, from: &AccountInfo, to: &AccountInfo) -> Reject {
        let (code, message) = match err {
            RateError::Missing(asset) => (
                ErrorCode::F02_UNREACHABLE,
                format!(
                    "no exchange rate for {asset}: cannot convert {}/{} to {}/{}",
                    from.asset_code, from.asset_scale, to.asset_code, to.asset_scale
                ),
            ),
            RateError::Stale(asset) => (
                ErrorCode::T00_INTERNAL_ERROR,
                format!("the exchange rate for {asset} is stale; try again later"),
            ),
            RateError::OutOfRange => (
                ErrorCode::F02_UNREACHABLE,
                format!(
                    "the exchange rate from {} to {} is out of range",
                    from.asset_code, to.asset_code
                ),
            ),
        };
        reject(&self.node, code, &message, &[])
    }
}

impl<O: OutgoingService> OutgoingService for ExchangeRateService<O> {
    async fn send_request(&self, mut request: OutgoingRequest) -> IlpResult {
        let spread = request.from.spread.unwrap_or(self.spread);
        let found = self.directory.current().rates().conversion(
            &request.from,
            &request.to,
            spread,
            SystemTime::now(),
        );
        let conversion = match found {
            Ok(None) => return self.next.send_request(request).await,
            Ok(Some(conversion)) => conversion,
            Err(err) => return Err(self.rate_reject(err, &request.from, &request.to)),
        };
        let source = request.prepare.amount();
        let destination = match conversion.apply(source) {
            Ok(0) if source > 0 => {
                return Err(reject(
                    &self.node,
                    ErrorCode::R01_INSUFFICIENT_SOURCE_AMOUNT,
                    &format!(
                        "{source} {}/{} is worth less than one unit of {}/{} at the current rate",
                        request.from.asset_code,
                        request.from.asset_scale,
                        request.to.asset_code,
                        request.to.asset_scale
                    ),
                    &[],
                ));
            }
            Ok(amount) => amount,
            Err(too_large) => {
                let details = MaxPacketAmountDetails {
                    amount_received: source,
                    max_amount: too_large.max_source,
                };
                return Err(reject(
                    &self.node,
                    ErrorCode::F08_AMOUNT_TOO_LARGE,
                    &format!(
                        "{source} converts to more than 2^63 - 1 units of {}; at most {} per packet",
                        request.to.asset_code, too_large.max_source
                    ),
                    &details.to_bytes(),
                ));
            }
        };
        request.prepare.set_amount(destination);
        request.conversion = Some(conversion);
        match self.next.send_request(request).await {
            Err(rejected) if rejected.code() == ErrorCode::F08_AMOUNT_TOO_LARGE => {
                Err(in_source_units(rejected, source))
            }
            other => other,
        }
    }
}

/// An F08 from downstream with its amounts turned into the sender's units: what we received,
/// and the maximum scaled by the same ratio. Relayed unchanged when its data is not F08 data.
fn in_source_units(rejected: Reject, source: u64) -> Reject {
    let Ok(details) = MaxPacketAmountDetails::from_bytes(rejected.data()) else {
        return rejected;
    };
    if details.amount_received == 0 {
        return rejected;
    }
    let scaled =
        u128::from(details.max_amount) * u128::from(source) / u128::from(details.amount_received);
    let details = MaxPacketAmountDetails {
        amount_received: source,
        max_amount: u64::try_from(scaled).unwrap_or(u64::MAX),
    };
    let builder = crate::packet::RejectBuilder {
        code: rejected.code(),
        triggered_by: rejected.triggered_by(),
        message: rejected.message(),
        data: &details.to_bytes(),
    };
    builder.build().unwrap_or(rejected.clone())
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;
    use std::time::Duration;

    use super::*;
    use crate::accounts::Directory;
    use crate::service::testing::*;

    fn dec(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    fn info(id: i64, asset: &str, scale: u8) -> Arc<AccountInfo> {
        let mut account = (*account(id, &format!("acct{id}"))).clone();
        account.asset_code = asset.to_owned();
        account.asset_scale = scale;
        Arc::new(account)
    }

    fn rate(asset: &str, rate: &str, expires_in: Option<i64>) -> Rate {
        let now = chrono::Utc::now();
        Rate {
            asset_code: asset.to_owned(),
            rate: dec(rate),
            source: "manual".into(),
            expires_at: expires_in.map(|s| now + chrono::Duration::seconds(s)),
            updated_at: now,
        }
    }

    fn service<O>(rates: &[Rate], next: O) -> ExchangeRateService<O> {
        let mut directory = Directory::default();
        directory.set_rates(RateTable::from_rows(rates));
        ExchangeRateService::new(
            Arc::new(node()),
            Arc::new(SharedDirectory::new(directory)),
            dec("0.01"),
            next,
        )
    }

    fn request(from: Arc<AccountInfo>, to: Arc<AccountInfo>, amount: u64) -> OutgoingRequest {
        OutgoingRequest {
            from,
            to,
            original_amount: amount,
            prepare: prepare("test.node.acct2", amount, Duration::from_secs(5)),
            conversion: None,
        }
    }

    #[tokio::test]
    async fn converts_at_the_ratio_of_the_rates_minus_the_spread() {
        // Proves USD/9 → EUR/6 at USD 1, EUR 2 (0.5 EUR per USD) with 1 % spread delivers
        // floor(amount × 0.5 × 0.99 / 1000), and the sender's own spread overrides the node's.
        let next = Recorder::new(|| Ok(fulfill()));
        let rates = [rate("USD", "1", None), rate("EUR", "2", None)];
        let service = service(&rates, next.clone());
        let (usd, eur) = (info(1, "USD", 9), info(2, "EUR", 6));
        service
            .send_request(request(usd.clone(), eur.clone(), 1_000_000_000))
            .await
            .unwrap();
        let mut cheap = (*usd).clone();
        cheap.spread = Some(Decimal::ZERO);
        service
            .send_request(request(Arc::new(cheap), eur, 1_000_000_000))
            .await
            .unwrap();
        let amounts: Vec<u64> = next.seen.lock().unwrap().iter().map(|s| s.1).collect();
        assert_eq!(amounts, vec![495_000, 500_000]);
    }

    #[tokio::test]
    async fn same_asset_other_scale_needs_no_rate_and_keeps_no_spread() {
        // Proves USD/2 → USD/9 multiplies by 10^7 exactly with an empty rate table.
        let next = Recorder::new(|| Ok(fulfill()));
        let service = service(&[], next.clone());
        service
            .send_request(request(info(1, "USD", 2), info(2, "USD", 9), 123))
            .await
            .unwrap();
        assert_eq!(next.seen.lock().unwrap()[0].1, 1_230_000_000);
    }

    #[tokio::test]
    async fn missing_stale_dust_and_overflow_each_get_their_reject() {
        // Proves the documented codes, each before anything is forwarded.
        let next = Recorder::new(|| Ok(fulfill()));
        let rates = [
            rate("USD", "1", None),
            rate("EUR", "2", Some(60)),
            rate("JPY", "0.0067", Some(-1)),
        ];
        let service = service(&rates, next.clone());
        let usd = info(1, "USD", 2);
        let cases = [
            (
                info(2, "GBP", 2),
                100,
                ErrorCode::F02_UNREACHABLE,
                "no exchange rate for GBP",
            ),
            (
                info(2, "JPY", 0),
                100,
                ErrorCode::T00_INTERNAL_ERROR,
                "JPY is stale",
            ),
            (
                info(2, "EUR", 2),
                1,
                ErrorCode::R01_INSUFFICIENT_SOURCE_AMOUNT,
                "less than one unit",
            ),
            (
                info(2, "EUR", 40),
                100,
                ErrorCode::F08_AMOUNT_TOO_LARGE,
                "at most",
            ),
        ];
        for (to, amount, code, says) in cases {
            let rejected = service
                .send_request(request(usd.clone(), to, amount))
                .await
                .unwrap_err();
            assert_eq!(rejected.code(), code, "{}", rejected.message_str());
            assert!(
                rejected.message_str().contains(says),
                "{}",
                rejected.message_str()
            );
        }
        assert_eq!(next.count(), 0);
        // The F08 names a maximum that does convert.
        let rejected = service
            .send_request(request(usd.clone(), info(2, "EUR", 20), u64::MAX))
            .await
            .unwrap_err();
        let details = MaxPacketAmountDetails::from_bytes(rejected.data()).unwrap();
        assert_eq!(details.amount_received, u64::MAX);
        service
            .send_request(request(usd, info(2, "EUR", 20), details.max_amount))
            .await
            .unwrap();
        assert_eq!(next.count(), 1);
    }

    #[tokio::test]
    async fn an_f08_from_downstream_comes_back_in_the_senders_units() {
        // Proves received/maximum are rescaled by the conversion's ratio (here ×1000 down).
        let next = Recorder::new(|| {
            let details = MaxPacketAmountDetails {
                amount_received: 5_000,
                max_amount: 2_000,
            };
            Err(reject(
                &node(),
                ErrorCode::F08_AMOUNT_TOO_LARGE,
                "too big",
                &details.to_bytes(),
            ))
        });
        let service = service(&[], next);
        let rejected = service
            .send_request(request(info(1, "USD", 2), info(2, "USD", 5), 5))
            .await
            .unwrap_err();
        let details = MaxPacketAmountDetails::from_bytes(rejected.data()).unwrap();
        assert_eq!((details.amount_received, details.max_amount), (5, 2));
        assert_eq!(rejected.message_str(), "too big");
    }
}
