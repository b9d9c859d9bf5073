//! The balance writer's SQL: one durable transaction per batch of Fulfills and reservation
//! changes, fenced by the batch's identity so that an unknown outcome is settled by asking.
//!
//! A batch is, per account, the balance change of its posted Fulfills, the part of this
//! instance's reservation they consumed, a top-up asked for, and a reservation given back.
//! It is sent as one pipeline (one round trip):
//!
//! 1. `BEGIN`
//! 2. the fence: this instance's row records the batch id (and fails if the instance was
//!    swept); it is also the first lock taken, the same order the sweeper uses;
//! 3. the balance rows of the batch locked in account-id order, so replicas never deadlock;
//! 4. the changes (balances, journal, this instance's reservations, and the
//!    `balance_conversions` rows of packets converted between assets), only if the fence holds;
//! 5. `COMMIT`, durable (`synchronous_commit` on).
//!
//! When the answer is lost (connection cut, PostgreSQL killed during the commit),
//! [`BalanceConnection::batch_committed`] waits for that transaction to end and reads the
//! fence: the batch was applied exactly when the fence holds its id. The writer asks this
//! before it submits any operation of the batch again, so nothing is applied twice.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use tokio_postgres::error::SqlState;
use tokio_postgres::{SimpleQueryMessage, SimpleQueryRow};
use uuid::Uuid;

use crate::{DbError, PoolConfig};

/// What one batch changes on one account. Every amount is in the account's base units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountMove {
    /// Change of `balances.balance` (credits minus debits of the posted Fulfills).
    pub delta: i64,
    /// Part of this instance's reservation the posted debits used up (0 for accounts without
    /// a credit limit, whose Prepares need no reservation).
    pub consumed: i64,
    /// Fulfills posted on this account (journal `packet_count`).
    pub packets: i64,
    /// Top-up this instance needs at least for the Prepares waiting on it.
    pub short: i64,
    /// Top-up this instance would like (`>= short`), to cover the next moments of traffic.
    pub want: i64,
    /// Reservation this instance gives back (idle, or more than its traffic needs).
    pub give_back: i64,
}

impl AccountMove {
    /// True when the move changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == AccountMove::default()
    }
}

/// One batch: moves keyed (and so sorted) by account id.
pub type BalanceBatch = BTreeMap<i64, AccountMove>;

/// What one batch converted from one account's asset to another's at one rate: a row of
/// `balance_conversions`, written in the batch's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConversionMove {
    /// The sender.
    pub from: i64,
    /// The next hop.
    pub to: i64,
    /// Mid rate: destination whole units per source whole unit.
    pub rate: Decimal,
    /// Fraction kept.
    pub spread: Decimal,
    /// Debited from the sender, its base units.
    pub source: i64,
    /// Credited to the next hop, its base units.
    pub destination: i64,
    /// Fulfills converted.
    pub packets: i64,
}

/// An account after a committed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountState {
    /// The account.
    pub account_id: i64,
    /// Its balance after the batch.
    pub balance: i64,
    /// True when it has no credit limit (its Prepares need no reservation).
    pub unlimited: bool,
    /// This instance's reservation on it after the batch.
    pub reserved: i64,
}

/// Why a batch was not (known to be) applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// This connector instance is no longer registered: a sweeper released its reservations
    /// after its heartbeat stopped. Nothing was applied; the process must not go on.
    #[error("connector instance {0} was swept; its reservations were released")]
    InstanceSwept(Uuid),
    /// PostgreSQL refused an operation of the batch (a CHECK, an amount out of range): the
    /// transaction rolled back. Split the batch to find the operation.
    #[error("refused: {0}")]
    Refused(String),
    /// The transaction rolled back for a reason that has nothing to do with its content
    /// (statement timeout, deadlock): apply it again as it is.
    #[error("not applied: {0}")]
    NotApplied(String),
    /// The connection failed: the batch may or may not have committed. Ask
    /// [`BalanceConnection::batch_committed`] before applying any of it again.
    #[error("outcome unknown: {0}")]
    InDoubt(String),
}

/// Locks the fence row first: the sweeper locks instance rows before balance rows too.
const FENCE: &str = "UPDATE connector_instances SET last_batch_id = $2::text::uuid, heartbeat_at = now() \
                     WHERE id = $1::text::uuid";

/// Locks the balance rows of the batch in account-id order (LockRows runs above the sort).
const LOCK: &str = "SELECT account_id FROM balances WHERE account_id = ANY($1::int8[]) ORDER BY account_id FOR UPDATE";

/// Applies the moves when the fence holds this batch. A top-up is granted from what the
/// account has left (`balance - reserved + credit_limit`, after this batch's own moves): at
/// least `short` when that much is left, otherwise all that is left, and beyond `short` at
/// most half of what is left, so replicas share the last of an account's credit. All of it
/// in NUMERIC, so no amount overflows. Returns, per account, its new balance, whether it is
/// unlimited and this instance's reservation on it.
const APPLY: &str = "\
WITH v AS (SELECT * FROM unnest($3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::int8[], $8::int8[], $9::int8[]) \
                AS v(account_id, delta, consumed, packets, short, want, give_back) \
           WHERE EXISTS (SELECT 1 FROM connector_instances WHERE id = $1::text::uuid AND last_batch_id = $2::text::uuid)), \
c AS (SELECT v.*, b.credit_limit IS NULL AS unlimited, \
             CASE WHEN b.credit_limit IS NULL OR v.want = 0 THEN 0::int8 \
                  ELSE GREATEST(0, LEAST(w.available, \
                                         GREATEST(v.short::numeric, LEAST(v.want::numeric, floor(w.available / 2))), \
                                         9223372036854775807::numeric - w.kept))::int8 END AS granted \
      FROM v JOIN balances b ON b.account_id = v.account_id \
      CROSS JOIN LATERAL (SELECT b.reserved::numeric - v.consumed - v.give_back AS kept) k \
      CROSS JOIN LATERAL (SELECT b.balance::numeric + v.delta + b.credit_limit - k.kept AS available, k.kept) w), \
moved AS (UPDATE balances b SET balance = b.balance + c.delta, \
                               reserved = b.reserved - c.consumed - c.give_back + c.granted, updated_at = now() \
          FROM c WHERE b.account_id = c.account_id \
          RETURNING b.account_id, b.balance, c.unlimited, c.granted - c.consumed - c.give_back AS share_delta), \
journal AS (INSERT INTO balance_journal (account_id, amount, kind, reference, packet_count) \
            SELECT account_id, delta, 'packets', $2, packets FROM v WHERE delta <> 0), \
share AS (UPDATE balance_reservations r SET amount = r.amount + m.share_delta FROM moved m \
          WHERE r.instance_id = $1::text::uuid AND r.account_id = m.account_id AND m.share_delta <> 0 \
          RETURNING r.account_id, r.amount), \
fresh AS (INSERT INTO balance_reservations (instance_id, account_id, amount) \
          SELECT $1::text::uuid, m.account_id, m.share_delta FROM moved m \
          WHERE m.share_delta > 0 AND NOT EXISTS (SELECT 1 FROM balance_reservations r \
                WHERE r.instance_id = $1::text::uuid AND r.account_id = m.account_id) \
          RETURNING account_id, amount) \
SELECT m.account_id, m.balance, m.unlimited, \
       coalesce(s.amount, f.amount, (SELECT r.amount FROM balance_reservations r \
                WHERE r.instance_id = $1::text::uuid AND r.account_id = m.account_id), 0) AS reserved \
FROM moved m LEFT JOIN share s USING (account_id) LEFT JOIN fresh f USING (account_id)";

/// The batch's conversions (`$10` to `$16`), recorded only if the fence holds this batch: a
/// CTE put in front of [`APPLY`] for batches that converted (`ilp_apply_fx`), so they cost no
/// statement of their own. The assets are read from `accounts` at commit time.
const CONVERT: &str = "\
conv AS (INSERT INTO balance_conversions (reference, from_account_id, to_account_id, from_asset_code, from_asset_scale, \
                                          to_asset_code, to_asset_scale, rate, spread, source_amount, destination_amount, packet_count) \
         SELECT $2, x.from_id, x.to_id, f.asset_code, f.asset_scale, t.asset_code, t.asset_scale, \
                x.rate, x.spread, x.source, x.destination, x.packets \
         FROM unnest($10::int8[], $11::int8[], $12::numeric[], $13::numeric[], $14::int8[], $15::int8[], $16::int8[]) \
              AS x(from_id, to_id, rate, spread, source, destination, packets) \
         CROSS JOIN LATERAL (SELECT asset_code, asset_scale FROM accounts WHERE id = x.from_id) f \
         CROSS JOIN LATERAL (SELECT asset_code, asset_scale FROM accounts WHERE id = x.to_id) t \
         WHERE EXISTS (SELECT 1 FROM connector_instances WHERE id = $1::text::uuid AND last_batch_id = $2::text::uuid))";

/// Waits for any transaction still holding this instance's row (a batch whose answer was
/// lost) to end, then reads the fence.
const RESOLVE: &str =
    "SELECT last_batch_id::text FROM connector_instances WHERE id = $1::text::uuid FOR SHARE";

/// This instance's reservations, as committed.
const RESERVATIONS: &str =
    "SELECT account_id, amount FROM balance_reservations WHERE instance_id = $1::text::uuid";

/// The balance writer's own connection: tokio-postgres with its statements prepared once.
///
/// A batch is one simple-query message that `EXECUTE`s statements prepared by name at
/// connect time: PostgreSQL answers it with one write (an extended-protocol pipeline gets one
/// write per statement), and reuses their plans. Its values are integers and UUIDs formatted
/// here, never text from outside.
pub struct BalanceConnection {
    client: tokio_postgres::Client,
    resolve: tokio_postgres::Statement,
    reservations: tokio_postgres::Statement,
}

impl std::fmt::Debug for BalanceConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalanceConnection").finish_non_exhaustive()
    }
}

/// The text of a tokio-postgres error, with its constraint or cause.
fn error_text(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => match db.constraint() {
            Some(constraint) => format!("{} ({constraint})", db.message()),
            None => db.message().to_owned(),
        },
        None => crate::error::with_causes(err),
    }
}

/// Sorts a failed batch statement into what the writer does next.
fn classify(err: &tokio_postgres::Error) -> BatchError {
    let text = error_text(err);
    let Some(code) = err.code() else {
        return BatchError::InDoubt(text); // the connection, not the statement, failed
    };
    let class = &code.code()[..2];
    if class == "08"
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
    {
        BatchError::InDoubt(text)
    } else if class == "40"
        || *code == SqlState::QUERY_CANCELED
        || *code == SqlState::LOCK_NOT_AVAILABLE
        || *code == SqlState::IN_FAILED_SQL_TRANSACTION
    {
        BatchError::NotApplied(text)
    } else {
        BatchError::Refused(text)
    }
}

/// One row of the apply statement, as text: account, balance, unlimited, reservation.
fn account_state(row: &SimpleQueryRow) -> Option<AccountState> {
    let number = |i: usize| row.get(i)?.parse::<i64>().ok();
    Some(AccountState {
        account_id: number(0)?,
        balance: number(1)?,
        unlimited: row.get(2)? == "t",
        reserved: number(3)?,
    })
}

fn unavailable(err: tokio_postgres::Error) -> DbError {
    DbError::Unavailable(error_text(&err))
}

impl BalanceConnection {
    /// Connects as `config` says and prepares the statements. Every commit on it is durable:
    /// `synchronous_commit` is raised to `on` when the server's default is `off`.
    pub async fn connect(config: &PoolConfig) -> Result<BalanceConnection, DbError> {
        let connecting = async {
            let client =
                crate::tls::connect_client(secrecy::ExposeSecret::expose_secret(&config.url))
                    .await?;
            client
                .batch_execute(&format!(
                    "{}; SET plan_cache_mode = force_generic_plan",
                    crate::pool::setup_sql(config)
                ))
                .await
                .map_err(unavailable)?;
            let commit_mode: String = client
                .query_one("SHOW synchronous_commit", &[])
                .await
                .map_err(unavailable)?
                .get(0);
            if commit_mode == "off" {
                client
                    .batch_execute("SET synchronous_commit = on")
                    .await
                    .map_err(unavailable)?;
            }
            client
                .batch_execute(&format!(
                    "PREPARE ilp_fence(text, text) AS {FENCE}; \
                     PREPARE ilp_lock(int8[]) AS {LOCK}; \
                     PREPARE ilp_apply(text, text, int8[], int8[], int8[], int8[], int8[], int8[], int8[]) AS {APPLY}; \
                     PREPARE ilp_apply_fx(text, text, int8[], int8[], int8[], int8[], int8[], int8[], int8[], \
                                          int8[], int8[], numeric[], numeric[], int8[], int8[], int8[]) AS {apply_fx}",
                    apply_fx = APPLY.replacen("WITH ", &format!("WITH {CONVERT}, "), 1),
                ))
                .await
                .map_err(unavailable)?;
            Ok(BalanceConnection {
                resolve: client.prepare(RESOLVE).await.map_err(unavailable)?,
                reservations: client.prepare(RESERVATIONS).await.map_err(unavailable)?,
                client,
            })
        };
        tokio::time::timeout(config.connect_timeout, connecting)
            .await
            .map_err(|_| {
                DbError::Unavailable(format!("no connection within {:?}", config.connect_timeout))
            })?
    }

    /// True once the server side of the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Applies `batch` and records `conversions` in one durable transaction under the
    /// identity `batch_id` and returns the state of every account it touched. Empty moves
    /// are skipped.
    pub async fn apply(
        &self,
        instance: Uuid,
        batch_id: Uuid,
        batch: &BalanceBatch,
        conversions: &[ConversionMove],
    ) -> Result<Vec<AccountState>, BatchError> {
        let moves: Vec<(i64, &AccountMove)> = batch
            .iter()
            .filter(|(_, m)| !m.is_empty())
            .map(|(id, m)| (*id, m))
            .collect();
        let array = |f: fn(&(i64, &AccountMove)) -> i64| {
            let items: Vec<String> = moves.iter().map(|m| f(m).to_string()).collect();
            format!("'{{{}}}'", items.join(","))
        };
        let ids = array(|(id, _)| *id);
        let (i, b) = (instance, batch_id);
        let (apply, convert) = if conversions.is_empty() {
            ("ilp_apply", String::new())
        } else {
            // Decimals print as plain digits and a point; nothing else reaches the text.
            let column = |f: &dyn Fn(&ConversionMove) -> String| {
                let items: Vec<String> = conversions.iter().map(f).collect();
                format!("'{{{}}}'", items.join(","))
            };
            let columns = format!(
                ", {}, {}, {}, {}, {}, {}, {}",
                column(&|c| c.from.to_string()),
                column(&|c| c.to.to_string()),
                column(&|c| c.rate.to_string()),
                column(&|c| c.spread.to_string()),
                column(&|c| c.source.to_string()),
                column(&|c| c.destination.to_string()),
                column(&|c| c.packets.to_string()),
            );
            ("ilp_apply_fx", columns)
        };
        let sql = format!(
            "BEGIN; EXECUTE ilp_fence('{i}', '{b}'); EXECUTE ilp_lock({ids}); \
             EXECUTE {apply}('{i}', '{b}', {ids}, {}, {}, {}, {}, {}, {}{convert}); COMMIT",
            array(|(_, m)| m.delta),
            array(|(_, m)| m.consumed),
            array(|(_, m)| m.packets),
            array(|(_, m)| m.short),
            array(|(_, m)| m.want),
            array(|(_, m)| m.give_back),
        );
        let messages = match self.client.simple_query(&sql).await {
            Ok(messages) => messages,
            Err(err) => {
                let error = classify(&err);
                if !matches!(error, BatchError::InDoubt(_)) {
                    // The statements after the failed one were skipped, COMMIT among them:
                    // end the aborted transaction so the connection can go on. Should this
                    // fail too, the connection is gone and the writer opens another.
                    let _ = self.client.batch_execute("ROLLBACK").await;
                }
                return Err(error);
            }
        };
        // Statements complete in order: BEGIN, fence, lock, apply, COMMIT. The apply's rows
        // come after the third completion.
        let mut completed = 0;
        let mut fenced = 0;
        let mut states = Vec::with_capacity(moves.len());
        for message in &messages {
            match message {
                SimpleQueryMessage::CommandComplete(rows) => {
                    if completed == 1 {
                        fenced = *rows;
                    }
                    completed += 1;
                }
                SimpleQueryMessage::Row(row) if completed == 3 => {
                    states.push(account_state(row).ok_or_else(|| {
                        // Committed, but unreadable: let the writer ask and read again.
                        BatchError::InDoubt(format!("unreadable batch result row {row:?}"))
                    })?)
                }
                _ => {}
            }
        }
        if completed != 5 {
            return Err(BatchError::InDoubt(format!(
                "batch answered {completed} of 5 statements"
            )));
        }
        if fenced == 0 {
            return Err(BatchError::InstanceSwept(instance));
        }
        Ok(states)
    }

    /// Whether batch `batch_id` of `instance` committed. Waits until no transaction holds the
    /// instance's row any more (a batch whose answer was lost may still be committing), so
    /// the answer is final. This transaction only reads, so it does not wait for a
    /// synchronous standby.
    pub async fn batch_committed(
        &self,
        instance: Uuid,
        batch_id: Uuid,
    ) -> Result<bool, BatchError> {
        let instance_text = instance.to_string();
        let (begun, row, committed) = futures_util::future::join3(
            self.client
                .batch_execute("BEGIN; SET LOCAL synchronous_commit = local"),
            self.client.query_opt(&self.resolve, &[&instance_text]),
            self.client.batch_execute("COMMIT"),
        )
        .await;
        begun.map_err(|e| classify(&e))?;
        let row = row.map_err(|e| classify(&e))?;
        committed.map_err(|e| classify(&e))?;
        let Some(row) = row else {
            return Err(BatchError::InstanceSwept(instance));
        };
        Ok(row.get::<_, Option<String>>(0) == Some(batch_id.to_string()))
    }

    /// This instance's reservations as committed: (account, amount).
    pub async fn reservations(&self, instance: Uuid) -> Result<Vec<(i64, i64)>, BatchError> {
        let rows = self
            .client
            .query(&self.reservations, &[&instance.to_string()])
            .await
            .map_err(|e| classify(&e))?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }
}
