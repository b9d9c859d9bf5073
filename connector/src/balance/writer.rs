//! The balance writer: one task per process that commits Fulfills and reservation changes in
//! durable batches, and the [`PgBalanceStore`] handle the packet path uses.
//!
//! Operations that arrive while a batch is committing form the next batch: group commit with
//! no timer, so a lone packet is not delayed. Every batch is one durable transaction (see
//! `schema::models::balance_batch`) carrying its identity in a fence row. The writer's rules:
//!
//! - A post's caller hears `Ok` only after its batch committed; a post is never submitted
//!   again before the fate of the batch it was in is known: after a lost answer the writer
//!   asks the database (which waits for that transaction to end) before anything else.
//! - While the database cannot commit, the store says so ([`Escrow::database_up`]): new
//!   Prepares get T00 at once; owed posts wait and are retried with backoff until their
//!   packets expire. One log line when an outage starts and one when it ends.
//! - A batch PostgreSQL refuses is split in halves until the refused operation is alone: it
//!   fails, every other operation is applied.
//! - Amounts are summed per account with checked arithmetic before any SQL; an operation that
//!   would overflow its batch's sums waits for the next batch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rust_decimal::Decimal;
use schema::PoolConfig;
use schema::models::balance_batch::{
    AccountMove, BalanceBatch, BalanceConnection, BatchError, ConversionMove,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::escrow::{Escrow, Hold, TryHold};
use super::{BalanceError, BalanceStore};
use crate::rates::Conversion;

/// Conversions are summed per sender, next hop, rate and spread.
type ConversionKey = (i64, i64, Decimal, Decimal);

/// Most operations applied in one transaction.
pub const MAX_BATCH_OPS: usize = 4096;
/// Operations waiting for the writer, at most; callers wait beyond it.
pub const MAX_QUEUED_OPS: usize = 65_536;
/// First pause after the database failed; doubled after each failure up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(25);
/// Longest pause between attempts while the database fails.
pub const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// How often reservations are resized and idle ones given back.
pub const TICK: Duration = Duration::from_millis(250);
/// A batch rolled back for no reason of its own (deadlock, timeout) is tried this often
/// before the writer waits as in an outage.
const MAX_RETRIES: u32 = 3;

type Reply<T> = oneshot::Sender<Result<T, BalanceError>>;

#[derive(Debug)]
enum Op {
    /// A Fulfill: the sender's hold becomes its debit, the next hop is owed `credit`.
    Post {
        hold: Hold,
        to: i64,
        credit: i64,
        /// The rate and spread that made `credit` from the hold's amount, for the books.
        conversion: Option<Conversion>,
        deadline: Instant,
        /// Taken when the caller is answered (possibly before the fate is known: expiry).
        reply: Option<Reply<()>>,
    },
    /// A Prepare the reservation did not cover.
    TopUp {
        account: i64,
        amount: i64,
        /// Top-ups committed for it already: Prepares held meanwhile may have used what one
        /// brought, so a second is tried before T04.
        tries: u8,
        reply: Reply<Hold>,
    },
    /// Reservation this instance no longer needs (already lowered in the escrow).
    GiveBack { account: i64, amount: i64 },
}

/// The PostgreSQL [`BalanceStore`]: the escrow, and a handle on the writer task.
#[derive(Debug, Clone)]
pub struct PgBalanceStore {
    escrow: Arc<Escrow>,
    ops: mpsc::Sender<Op>,
}

impl PgBalanceStore {
    /// Starts the writer for connector instance `instance` (see `sweeper`). If the instance
    /// turns out to have been swept, the writer cancels `fatal`: the process must stop.
    /// Returns the handle and the writer task; the task ends when every handle is dropped.
    pub fn start(
        config: PoolConfig,
        instance: Uuid,
        fatal: CancellationToken,
    ) -> (PgBalanceStore, impl Future<Output = ()> + Send + 'static) {
        let (ops, queue) = mpsc::channel(MAX_QUEUED_OPS);
        let escrow = Arc::new(Escrow::default());
        let writer = Writer {
            config,
            instance,
            fatal,
            escrow: escrow.clone(),
            conn: None,
            in_doubt: None,
            outage: None,
            retries: 0,
        };
        (PgBalanceStore { escrow, ops }, writer.run(queue))
    }

    /// The escrow: this instance's reservations and holds.
    pub fn escrow(&self) -> &Arc<Escrow> {
        &self.escrow
    }
}

impl BalanceStore for PgBalanceStore {
    async fn hold(&self, account: i64, amount: i64) -> Result<Hold, BalanceError> {
        if !self.escrow.database_up() {
            return Err(BalanceError::Unavailable);
        }
        match self.escrow.try_hold(account, amount) {
            TryHold::Held(hold) => Ok(hold),
            TryHold::Never => Err(BalanceError::InsufficientLiquidity),
            TryHold::NeedsTopUp => {
                let (reply, answer) = oneshot::channel();
                self.ops
                    .send(Op::TopUp {
                        account,
                        amount,
                        tries: 0,
                        reply,
                    })
                    .await
                    .map_err(|_| BalanceError::Unavailable)?;
                answer.await.map_err(|_| BalanceError::Unavailable)?
            }
        }
    }

    async fn post(
        &self,
        hold: Hold,
        to: i64,
        credit: i64,
        conversion: Option<Conversion>,
        deadline: SystemTime,
    ) -> Result<(), BalanceError> {
        let left = deadline
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let (reply, answer) = oneshot::channel();
        let op = Op::Post {
            hold,
            to,
            credit,
            conversion,
            deadline: Instant::now() + left,
            reply: Some(reply),
        };
        if self.ops.send(op).await.is_err() {
            self.escrow.end(hold);
            return Err(BalanceError::Unavailable);
        }
        answer.await.map_err(|_| BalanceError::Unavailable)?
    }

    fn release(&self, hold: Hold) {
        self.escrow.end(hold);
    }
}

/// An outage in progress: when it began, when to try again, what it cost so far.
#[derive(Debug)]
struct Outage {
    since: Instant,
    backoff: Duration,
    next_try: Instant,
    expired_posts: u64,
}

struct Writer {
    config: PoolConfig,
    instance: Uuid,
    fatal: CancellationToken,
    escrow: Arc<Escrow>,
    conn: Option<BalanceConnection>,
    /// A batch whose answer was lost, and its posts: settled before anything else is sent.
    in_doubt: Option<(Uuid, Vec<Op>)>,
    outage: Option<Outage>,
    /// Attempts in a row that rolled back for no reason of their own.
    retries: u32,
}

impl Writer {
    async fn run(mut self, mut queue: mpsc::Receiver<Op>) {
        let mut pending: Vec<Op> = Vec::with_capacity(MAX_BATCH_OPS);
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_tick = Instant::now();
        let mut open = true;
        metrics::gauge!("ilp_balance_database_up").set(1.0);
        loop {
            if !open && pending.is_empty() && self.in_doubt.is_none() {
                break;
            }
            if self.fatal.is_cancelled() {
                // Swept: nothing may be committed any more; answer what is left and stop.
                for op in pending.drain(..) {
                    self.refuse(op, BalanceError::Unavailable);
                }
                break;
            }
            let retry_at = self.outage.as_ref().map(|o| o.next_try);
            if pending.is_empty() || retry_at.is_some() {
                let due = retry_at.is_some_and(|at| at <= Instant::now());
                if !due {
                    let far = Instant::now() + Duration::from_secs(3600);
                    tokio::select! {
                        op = queue.recv(), if open => match op {
                            Some(op) => pending.push(op),
                            None => open = false,
                        },
                        _ = ticks.tick() => {
                            let now = Instant::now();
                            for (account, amount) in self.escrow.tick(now - last_tick) {
                                pending.push(Op::GiveBack { account, amount });
                            }
                            last_tick = now;
                        }
                        _ = tokio::time::sleep_until(retry_at.unwrap_or(far)), if retry_at.is_some() => {}
                    }
                }
            }
            while pending.len() < MAX_BATCH_OPS {
                match queue.try_recv() {
                    Ok(op) => pending.push(op),
                    Err(_) => break,
                }
            }
            self.answer_early(&mut pending);
            if let Some(outage) = &self.outage
                && outage.next_try > Instant::now()
            {
                continue;
            }
            if self.conn.as_ref().is_none_or(BalanceConnection::is_closed)
                || self.in_doubt.is_some()
            {
                match self.reconnect().await {
                    Ok(again) => {
                        // The resync put back the committed reservations, give-backs not yet
                        // sent included: sending those now would leave the escrow above the
                        // database. The next tick works them out again.
                        pending.retain(|op| !matches!(op, Op::GiveBack { .. }));
                        pending.splice(0..0, again);
                        self.database_answered();
                    }
                    Err(err) => {
                        self.database_failed(&err);
                        continue;
                    }
                }
            }
            if pending.is_empty() {
                continue;
            }
            let ops = std::mem::take(&mut pending);
            pending = self.attempt(ops).await;
        }
    }

    /// Answers what needs no database: top-ups during an outage (T00 at once), top-ups that
    /// fit by now, and posts whose packets expired (also those of a batch in doubt, whose
    /// fate is learnt later).
    fn answer_early(&mut self, pending: &mut Vec<Op>) {
        let now = Instant::now();
        let down = self.outage.is_some();
        let mut kept = Vec::with_capacity(pending.len());
        for op in pending.drain(..) {
            match op {
                Op::TopUp { reply, .. } if down => {
                    let _ = reply.send(Err(BalanceError::Unavailable));
                }
                Op::TopUp {
                    account,
                    amount,
                    tries,
                    reply,
                } => match self.escrow.try_hold(account, amount) {
                    TryHold::Held(hold) => {
                        let _ = reply.send(Ok(hold));
                    }
                    TryHold::Never => {
                        let _ = reply.send(Err(BalanceError::InsufficientLiquidity));
                    }
                    TryHold::NeedsTopUp => kept.push(Op::TopUp {
                        account,
                        amount,
                        tries,
                        reply,
                    }),
                },
                Op::Post {
                    hold,
                    deadline,
                    mut reply,
                    ..
                } if deadline <= now => self.expired(hold, &mut reply),
                other => kept.push(other),
            }
        }
        if let Some((id, mut ops)) = self.in_doubt.take() {
            for op in ops.iter_mut() {
                if let Op::Post {
                    hold,
                    deadline,
                    reply,
                    ..
                } = op
                    && *deadline <= now
                    && reply.is_some()
                {
                    self.expired(*hold, reply);
                }
            }
            self.in_doubt = Some((id, ops));
        }
        *pending = kept;
    }

    /// Answers a post at its packet's expiry: not recorded (as far as we know yet).
    fn expired(&mut self, hold: Hold, reply: &mut Option<Reply<()>>) {
        if let Some(reply) = reply.take() {
            if let Some(outage) = &mut self.outage {
                outage.expired_posts += 1;
            }
            metrics::counter!("ilp_balance_posts_expired_total").increment(1);
            self.escrow.end(hold);
            let _ = reply.send(Err(BalanceError::Expired));
        }
    }

    /// Answers an op that will not be applied.
    fn refuse(&mut self, op: Op, err: BalanceError) {
        match op {
            Op::Post {
                hold, mut reply, ..
            } => {
                if let Some(reply) = reply.take() {
                    self.escrow.end(hold);
                    let _ = reply.send(Err(err));
                }
            }
            Op::TopUp { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            // Already lowered in the escrow; a resync puts the committed figure back.
            Op::GiveBack { .. } => {}
        }
    }

    /// Connects when needed, settles a batch in doubt (returning its ops when it had not
    /// committed, to go again under a new identity) and reads this instance's reservations
    /// again, since a failure may have left the escrow's figures below the committed ones.
    async fn reconnect(&mut self) -> Result<Vec<Op>, BatchError> {
        // Kept only if every step below works: a failed step leaves `conn` empty.
        let conn = match self.conn.take() {
            Some(conn) if !conn.is_closed() => conn,
            _ => BalanceConnection::connect(&self.config)
                .await
                .map_err(|err| BatchError::NotApplied(err.to_string()))?,
        };
        let resolved = match &self.in_doubt {
            Some((batch_id, _)) => Some(conn.batch_committed(self.instance, *batch_id).await?),
            None => None,
        };
        let reservations = conn.reservations(self.instance).await?;
        self.conn = Some(conn);
        let mut again = Vec::new();
        if let Some(committed) = resolved
            && let Some((_, ops)) = self.in_doubt.take()
        {
            metrics::counter!("ilp_balance_batches_in_doubt_total").increment(1);
            if committed {
                tracing::info!(
                    ops = ops.len(),
                    "a balance batch whose answer was lost had committed; its posts stand"
                );
                again = self.answer_committed(ops);
            } else {
                again = ops;
            }
        }
        self.escrow.resync(&reservations);
        Ok(again)
    }

    /// Applies `ops`, splitting what PostgreSQL refuses; returns the ops left waiting for the
    /// database (all of them answered otherwise).
    async fn attempt(&mut self, ops: Vec<Op>) -> Vec<Op> {
        let mut work = vec![ops];
        let mut waiting = Vec::new();
        let mut failed = false;
        while let Some(ops) = work.pop() {
            if failed || self.in_doubt.is_some() || self.fatal.is_cancelled() {
                waiting.extend(ops);
                continue;
            }
            let (batch, conversions, ops, deferred) = self.build(ops);
            waiting.extend(deferred);
            if batch.values().all(AccountMove::is_empty) && conversions.is_empty() {
                waiting.extend(self.answer_committed(ops));
                continue;
            }
            let Some(conn) = self.conn.as_ref() else {
                waiting.extend(ops);
                continue;
            };
            let batch_id = Uuid::new_v4();
            let started = std::time::Instant::now();
            let outcome = conn
                .apply(self.instance, batch_id, &batch, &conversions)
                .await;
            metrics::histogram!("ilp_balance_batch_ops").record(ops.len() as f64);
            metrics::histogram!("ilp_balance_commit_seconds")
                .record(started.elapsed().as_secs_f64());
            match outcome {
                Ok(states) => {
                    self.retries = 0;
                    self.database_answered();
                    self.escrow.apply_states(&states);
                    waiting.extend(self.answer_committed(ops));
                }
                Err(BatchError::InstanceSwept(id)) => {
                    tracing::error!(connector.instance = %id, "this connector's reservations were swept; stopping");
                    self.escrow.set_database_up(false);
                    self.fatal.cancel();
                    for op in ops {
                        self.refuse(op, BalanceError::Unavailable);
                    }
                }
                Err(BatchError::Refused(why)) if ops.len() == 1 => {
                    metrics::counter!("ilp_balance_refused_total").increment(1);
                    tracing::error!(error = %why, "PostgreSQL refused a balance operation; it alone fails");
                    for op in ops {
                        self.refuse(op, BalanceError::Refused);
                    }
                }
                Err(BatchError::Refused(_)) => {
                    // Rolled back: find the refused operation by halves; the rest is applied.
                    let mut ops = ops;
                    let second = ops.split_off(ops.len() / 2);
                    work.push(second);
                    work.push(ops);
                }
                Err(BatchError::NotApplied(why)) => {
                    self.retries += 1;
                    if self.retries < MAX_RETRIES {
                        work.push(ops);
                    } else {
                        self.retries = 0;
                        self.database_failed(&BatchError::NotApplied(why));
                        waiting.extend(ops);
                        failed = true;
                    }
                }
                Err(err @ BatchError::InDoubt(_)) => {
                    self.conn = None;
                    let mut doubtful = Vec::new();
                    for op in ops {
                        match op {
                            Op::Post { .. } => doubtful.push(op),
                            other => self.refuse(other, BalanceError::Unavailable),
                        }
                    }
                    self.in_doubt = Some((batch_id, doubtful));
                    self.database_failed(&err);
                    failed = true;
                }
            }
        }
        waiting
    }

    /// Sums `ops` per account (and conversions per sender, next hop and rate) with checked
    /// arithmetic. Returns the batch, its conversions, the ops in it and the ops that would
    /// have overflowed its sums (for the next batch).
    fn build(&self, ops: Vec<Op>) -> (BalanceBatch, Vec<ConversionMove>, Vec<Op>, Vec<Op>) {
        let mut batch = BalanceBatch::new();
        let mut conversions: BTreeMap<ConversionKey, (i64, i64, i64)> = BTreeMap::new();
        let mut waiting: BTreeMap<i64, i64> = BTreeMap::new();
        let mut included = Vec::with_capacity(ops.len());
        let mut deferred = Vec::new();
        for op in ops {
            let fits = match &op {
                Op::Post {
                    hold,
                    to,
                    credit,
                    conversion,
                    ..
                } => {
                    let key = conversion.map(|c| (hold.account, *to, c.rate, c.spread));
                    let converted = match key {
                        None => None,
                        Some(key) => {
                            let (source, destination, packets) =
                                conversions.get(&key).copied().unwrap_or_default();
                            match (
                                source.checked_add(hold.amount),
                                destination.checked_add(*credit),
                            ) {
                                (Some(s), Some(d)) => Some(Some((key, (s, d, packets + 1)))),
                                _ => Some(None),
                            }
                        }
                    };
                    let from = batch.get(&hold.account).copied().unwrap_or_default();
                    let consumed = if hold.reserved { hold.amount } else { 0 };
                    let from = from.delta.checked_sub(hold.amount).and_then(|delta| {
                        Some(AccountMove {
                            delta,
                            consumed: from.consumed.checked_add(consumed)?,
                            packets: from.packets.checked_add(1)?,
                            ..from
                        })
                    });
                    // A payment to oneself moves the same row twice.
                    let base = match (&from, *to == hold.account) {
                        (Some(from), true) => Some(*from),
                        _ => Some(batch.get(to).copied().unwrap_or_default()),
                    };
                    let to_move = base.and_then(|to| {
                        Some(AccountMove {
                            delta: to.delta.checked_add(*credit)?,
                            packets: to.packets.checked_add(1)?,
                            ..to
                        })
                    });
                    match (from, to_move, converted) {
                        (_, _, Some(None)) => false,
                        (Some(from), Some(to_move), converted) => {
                            batch.insert(hold.account, from);
                            batch.insert(*to, to_move);
                            if let Some(Some((key, sums))) = converted {
                                conversions.insert(key, sums);
                            }
                            true
                        }
                        _ => false,
                    }
                }
                Op::TopUp {
                    account, amount, ..
                } => {
                    let sum = waiting.get(account).copied().unwrap_or(0);
                    match sum.checked_add(*amount) {
                        Some(sum) => {
                            waiting.insert(*account, sum);
                            true
                        }
                        None => false,
                    }
                }
                Op::GiveBack { account, amount } => {
                    let entry = batch.entry(*account).or_default();
                    match entry.give_back.checked_add(*amount) {
                        Some(sum) => {
                            entry.give_back = sum;
                            true
                        }
                        None => false,
                    }
                }
            };
            if fits {
                included.push(op);
            } else {
                deferred.push(op);
            }
        }
        for (account, amount) in waiting {
            if let Some(top_up) = self.escrow.top_up(account, amount) {
                let entry = batch.entry(account).or_default();
                entry.short = top_up.short;
                entry.want = top_up.want;
            }
        }
        let conversions = conversions
            .into_iter()
            .map(
                |((from, to, rate, spread), (source, destination, packets))| ConversionMove {
                    from,
                    to,
                    rate,
                    spread,
                    source,
                    destination,
                    packets,
                },
            )
            .collect();
        (batch, conversions, included, deferred)
    }

    /// Answers the ops of a committed batch: posts are recorded, waiting Prepares are held
    /// (in arrival order) if the reservation now covers them, T04 after a second top-up that
    /// did not cover them. Returns the Prepares that get that second top-up.
    fn answer_committed(&mut self, ops: Vec<Op>) -> Vec<Op> {
        let mut again = Vec::new();
        let mut late = 0u64;
        for op in ops {
            match op {
                Op::Post {
                    hold, mut reply, ..
                } => match reply.take() {
                    Some(reply) => {
                        self.escrow.end(hold);
                        let _ = reply.send(Ok(()));
                    }
                    None => late += 1,
                },
                Op::TopUp {
                    account,
                    amount,
                    tries,
                    reply,
                } => match self.escrow.try_hold(account, amount) {
                    TryHold::Held(hold) => {
                        let _ = reply.send(Ok(hold));
                    }
                    TryHold::NeedsTopUp if tries == 0 => again.push(Op::TopUp {
                        account,
                        amount,
                        tries: 1,
                        reply,
                    }),
                    TryHold::NeedsTopUp | TryHold::Never => {
                        let _ = reply.send(Err(BalanceError::InsufficientLiquidity));
                    }
                },
                Op::GiveBack { .. } => {}
            }
        }
        if late > 0 {
            metrics::counter!("ilp_balance_posts_committed_late_total").increment(late);
            tracing::error!(
                posts = late,
                "Fulfills were recorded after their packets expired: their senders were debited although they saw the packet rejected"
            );
        }
        again
    }

    /// The database did not commit: the first failure of an outage is logged, later ones
    /// only lengthen the pause.
    fn database_failed(&mut self, err: &BatchError) {
        let now = Instant::now();
        match &mut self.outage {
            Some(outage) => {
                outage.backoff = (outage.backoff * 2).min(MAX_BACKOFF);
                outage.next_try = now + outage.backoff;
            }
            None => {
                tracing::warn!(error = %err, "the balance database does not commit: new Prepares get T00, owed Fulfills are retried until their packets expire");
                metrics::counter!("ilp_balance_outages_total").increment(1);
                metrics::gauge!("ilp_balance_database_up").set(0.0);
                self.escrow.set_database_up(false);
                self.outage = Some(Outage {
                    since: now,
                    backoff: MIN_BACKOFF,
                    next_try: now + MIN_BACKOFF,
                    expired_posts: 0,
                });
            }
        }
    }

    /// The database answered: an outage, if any, is over.
    fn database_answered(&mut self) {
        if self.outage.is_none() && self.escrow.database_up() {
            return;
        }
        if let Some(outage) = self.outage.take() {
            tracing::info!(
                after = ?outage.since.elapsed(),
                posts_expired = outage.expired_posts,
                "the balance database commits again"
            );
        }
        metrics::gauge!("ilp_balance_database_up").set(1.0);
        self.escrow.set_database_up(true);
    }
}
