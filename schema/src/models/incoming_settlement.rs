//! `incoming_settlements` and `settlement_leftovers`: RFC 38 credits of settlements peers
//! made to us, exactly once per (account, idempotency key), at any scale, leftovers kept.
//! A credit raises the balance (journal `settlement_received`, reference = the key).

use diesel::prelude::*;
use diesel::sql_types::{Int4, Int8, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use crate::models::balance::move_balance;
use crate::schema::{incoming_settlements, settlement_leftovers};
use crate::{DbError, JournalKind};

/// Most decimal digits of an incoming amount (`incoming_settlements.amount` is NUMERIC(40, 0)).
pub const MAX_AMOUNT_DIGITS: usize = 40;
/// Longest idempotency key, in characters (the `incoming_settlements` CHECK).
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 200;

/// What [`credit_incoming_settlement`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingCredit {
    /// Account base units credited by this call (0 on a replay, and 0 when the amount only
    /// added to the leftovers).
    pub credited: i64,
    /// The RFC 38 `Quantity` answered for this key, stored and replayed: the amount this
    /// request accepted, at its own scale (all of it: what was credited now plus what went to
    /// the leftovers, which the node keeps and credits later). Acknowledging less would make
    /// engines such as `ilp-settlement-core` send the leftovers again.
    pub response: serde_json::Value,
    /// Whether the key was seen before (nothing credited now).
    pub replayed: bool,
}

/// Why an incoming settlement was not credited. Nothing changed in any case.
#[derive(Debug, thiserror::Error)]
pub enum CreditError {
    /// Not a non-negative decimal integer of at most [`MAX_AMOUNT_DIGITS`] digits, or the
    /// credit does not fit the balance (64 bits) after conversion.
    #[error("invalid amount: {0}")]
    InvalidAmount(String),
    /// No live account has this id.
    #[error("unknown account")]
    UnknownAccount,
    /// The database failed (a bad idempotency key is [`DbError::Refused`]).
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for CreditError {
    fn from(err: diesel::result::Error) -> Self {
        CreditError::Db(err.into())
    }
}

#[derive(QueryableByName)]
struct CreditTarget {
    #[diesel(sql_type = diesel::sql_types::Int2)]
    asset_scale: i16,
    #[diesel(sql_type = Int8)]
    balance: i64,
}

#[derive(QueryableByName)]
struct Leftover {
    #[diesel(sql_type = Text)]
    amount: String,
    #[diesel(sql_type = diesel::sql_types::Int2)]
    scale: i16,
}

#[derive(QueryableByName)]
struct Converted {
    #[diesel(sql_type = Text)]
    credit: String,
    #[diesel(sql_type = Text)]
    leftover: String,
    #[diesel(sql_type = Int4)]
    leftover_scale: i32,
}

/// Credits an incoming settlement exactly once per (account, idempotency_key).
///
/// `amount` is a non-negative decimal integer string in units of 10^-`scale`; it is
/// converted to the account's scale with the account's leftovers added, the whole base units
/// are credited (balance and journal `settlement_received`, reference = the key) and the rest
/// is kept in `settlement_leftovers`, never rounded away: at account scale 2, 12345 at scale 4
/// credits 123 and keeps 45 at scale 4; a later 55 at scale 4 then credits 1. The arithmetic
/// is PostgreSQL NUMERIC (exact, any scale). One transaction with the balance row locked, so
/// concurrent calls with one key credit once. For a key seen before, returns the stored
/// response and credits nothing.
pub async fn credit_incoming_settlement(
    conn: &mut AsyncPgConnection,
    account_id: i64,
    idempotency_key: &str,
    amount: &str,
    scale: u8,
) -> Result<IncomingCredit, CreditError> {
    let key_chars = idempotency_key.chars().count();
    if key_chars == 0 || key_chars > MAX_IDEMPOTENCY_KEY_CHARS {
        return Err(CreditError::Db(DbError::Refused(format!(
            "an idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters"
        ))));
    }
    let amount = parse_amount(amount)?;
    conn.transaction::<_, CreditError, _>(async |conn| {
        let target: Option<CreditTarget> = diesel::sql_query(
            "SELECT a.asset_scale, b.balance FROM accounts a JOIN balances b ON b.account_id = a.id \
             WHERE a.id = $1 AND a.deleted_at IS NULL FOR UPDATE OF b",
        )
        .bind::<Int8, _>(account_id)
        .get_result(conn)
        .await
        .optional()?;
        let Some(target) = target else {
            return Err(CreditError::UnknownAccount);
        };
        // Under the balance lock: a concurrent call with this key has committed or not started.
        let replay: Option<Option<serde_json::Value>> = incoming_settlements::table
            .filter(incoming_settlements::account_id.eq(account_id))
            .filter(incoming_settlements::idempotency_key.eq(idempotency_key))
            .select(incoming_settlements::response)
            .first(conn)
            .await
            .optional()?;
        if let Some(response) = replay {
            let response = response.unwrap_or(serde_json::Value::Null);
            return Ok(IncomingCredit {
                credited: 0,
                response,
                replayed: true,
            });
        }

        let leftover: Option<Leftover> = diesel::sql_query(
            "SELECT amount::text AS amount, scale FROM settlement_leftovers WHERE account_id = $1",
        )
        .bind::<Int8, _>(account_id)
        .get_result(conn)
        .await
        .optional()?;
        let (leftover_amount, leftover_scale) = match &leftover {
            Some(row) => (row.amount.as_str(), i32::from(row.scale)),
            None => ("0", i32::from(scale)),
        };
        // total at scale t = max(scale, leftover scale); then whole account units and the rest.
        let converted: Converted = diesel::sql_query(
            "SELECT trunc(CASE WHEN t >= a THEN div(total, power(10::numeric, t - a)) \
                               ELSE total * power(10::numeric, a - t) END)::text AS credit, \
                    trunc(CASE WHEN t >= a THEN mod(total, power(10::numeric, t - a)) \
                               ELSE 0 END)::text AS leftover, \
                    t AS leftover_scale \
             FROM (SELECT $1::numeric * power(10::numeric, t - $2) \
                          + $3::numeric * power(10::numeric, t - $4) AS total, t, $5 AS a \
                   FROM (SELECT greatest($2, $4) AS t) s) v",
        )
        .bind::<Text, _>(&amount)
        .bind::<Int4, _>(i32::from(scale))
        .bind::<Text, _>(leftover_amount)
        .bind::<Int4, _>(leftover_scale)
        .bind::<Int4, _>(i32::from(target.asset_scale))
        .get_result(conn)
        .await?;
        let credit: i64 = converted.credit.parse().map_err(|_| {
            CreditError::InvalidAmount(format!(
                "{amount} at scale {scale} is {} base units, more than a balance holds",
                converted.credit
            ))
        })?;
        target.balance.checked_add(credit).ok_or_else(|| {
            CreditError::InvalidAmount(format!(
                "crediting {credit} would overflow the balance"
            ))
        })?;
        let (rest, rest_scale) = normalize_leftover(
            &converted.leftover,
            converted.leftover_scale,
            i32::from(target.asset_scale),
        );
        if rest.len() > MAX_AMOUNT_DIGITS {
            return Err(CreditError::InvalidAmount(format!(
                "scale {scale} is too fine: the leftover would exceed {MAX_AMOUNT_DIGITS} digits"
            )));
        }

        if credit > 0 {
            move_balance(
                conn,
                account_id,
                credit,
                JournalKind::SettlementReceived,
                idempotency_key,
            )
            .await?;
        }
        if rest == "0" {
            diesel::delete(settlement_leftovers::table.find(account_id))
                .execute(conn)
                .await?;
        } else {
            diesel::sql_query(
                "INSERT INTO settlement_leftovers (account_id, amount, scale) VALUES ($1, $2::numeric, $3) \
                 ON CONFLICT (account_id) DO UPDATE SET amount = excluded.amount, scale = excluded.scale",
            )
            .bind::<Int8, _>(account_id)
            .bind::<Text, _>(&rest)
            .bind::<diesel::sql_types::Int2, _>(i16::try_from(rest_scale).unwrap_or(i16::MAX))
            .execute(conn)
            .await?;
        }
        let response = serde_json::json!({ "amount": amount, "scale": scale });
        diesel::sql_query(
            "INSERT INTO incoming_settlements (account_id, idempotency_key, amount, scale, credited, response) \
             VALUES ($1, $2, $3::numeric, $4, $5, $6::jsonb)",
        )
        .bind::<Int8, _>(account_id)
        .bind::<Text, _>(idempotency_key)
        .bind::<Text, _>(&amount)
        .bind::<diesel::sql_types::Int2, _>(i16::from(scale))
        .bind::<Int8, _>(credit)
        .bind::<Text, _>(response.to_string())
        .execute(conn)
        .await?;
        Ok(IncomingCredit {
            credited: credit,
            response,
            replayed: false,
        })
    })
    .await
}

/// `amount` as a canonical decimal integer (no sign, no leading zeros), or why it is not one.
fn parse_amount(amount: &str) -> Result<String, CreditError> {
    if !crate::digits::is_digits(amount) {
        return Err(CreditError::InvalidAmount(format!(
            "{:?} is not a non-negative decimal integer",
            amount.chars().take(64).collect::<String>()
        )));
    }
    let trimmed = amount.trim_start_matches('0');
    let canonical = if trimmed.is_empty() { "0" } else { trimmed };
    if canonical.len() > MAX_AMOUNT_DIGITS {
        return Err(CreditError::InvalidAmount(format!(
            "more than {MAX_AMOUNT_DIGITS} digits"
        )));
    }
    Ok(canonical.to_owned())
}

/// Drops trailing zeros of a leftover while its scale is finer than the account's (45000 at
/// scale 7 is 45 at scale 4): the same value, fewer digits.
fn normalize_leftover(amount: &str, scale: i32, account_scale: i32) -> (String, i32) {
    let mut amount = amount.to_owned();
    let mut scale = scale;
    if amount.is_empty() || amount.bytes().all(|b| b == b'0') {
        return ("0".to_owned(), account_scale);
    }
    while scale > account_scale && amount.ends_with('0') {
        amount.pop();
        scale -= 1;
    }
    (amount, scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves only canonical non-negative decimal integers of at most 40 digits pass.
    #[test]
    fn amounts_are_parsed_strictly() {
        assert_eq!(parse_amount("00123").unwrap(), "123");
        assert_eq!(parse_amount("0").unwrap(), "0");
        assert_eq!(parse_amount("000").unwrap(), "0");
        for bad in ["", "-1", "+1", "1.5", "1e3", " 1", "12a", "１"] {
            assert!(parse_amount(bad).is_err(), "{bad:?}");
        }
        assert!(parse_amount(&"9".repeat(MAX_AMOUNT_DIGITS)).is_ok());
        assert!(parse_amount(&"9".repeat(MAX_AMOUNT_DIGITS + 1)).is_err());
    }

    // Proves leftovers shrink to their shortest form without changing value.
    #[test]
    fn leftovers_normalize() {
        assert_eq!(normalize_leftover("45000", 7, 2), ("45".to_owned(), 4));
        assert_eq!(normalize_leftover("450", 4, 2), ("45".to_owned(), 3));
        assert_eq!(normalize_leftover("451", 4, 2), ("451".to_owned(), 4));
        assert_eq!(normalize_leftover("0", 9, 2), ("0".to_owned(), 2));
        assert_eq!(normalize_leftover("10", 3, 2), ("1".to_owned(), 2));
    }
}
