//! The balance writer: one task per process that applies balance operations in batches.
//!
//! Operations that arrive while a batch is committing wait in a channel and form the next
//! batch: natural group commit, with no timer, so a lone packet is not delayed. A batch of
//! holds and releases commits with `synchronous_commit = off` (its packets die with the
//! process anyway, and the sweeper releases what a dead process held); a batch with a post
//! commits durably, and each post's caller hears `Ok` only after that commit.

use schema::PoolConfig;
use schema::models::balance::{BalanceBatch, BalanceConnection, BatchError, Post};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{BalanceError, BalanceStore};

/// Most operations applied in one transaction.
pub const MAX_BATCH_OPS: usize = 4096;
/// Operations waiting for the writer, at most; callers wait beyond it.
pub const MAX_QUEUED_OPS: usize = 65_536;

type Reply = oneshot::Sender<Result<(), BalanceError>>;

#[derive(Debug)]
enum Op {
    Hold {
        account: i64,
        amount: i64,
        reply: Reply,
    },
    Post {
        post: Post,
        reply: Reply,
    },
    Release {
        account: i64,
        amount: i64,
        reply: Reply,
    },
}

/// The PostgreSQL [`BalanceStore`]: a handle on the writer task.
#[derive(Debug, Clone)]
pub struct PgBalanceStore {
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
        (
            PgBalanceStore { ops },
            run_writer(queue, config, instance, fatal),
        )
    }

    async fn submit(&self, make: impl FnOnce(Reply) -> Op) -> Result<(), BalanceError> {
        let (reply, answer) = oneshot::channel();
        self.ops
            .send(make(reply))
            .await
            .map_err(|_| BalanceError::Unavailable("balance writer stopped".to_owned()))?;
        answer
            .await
            .map_err(|_| BalanceError::Unavailable("balance writer stopped".to_owned()))?
    }
}

impl BalanceStore for PgBalanceStore {
    async fn hold(&self, account: i64, amount: i64) -> Result<(), BalanceError> {
        self.submit(|reply| Op::Hold {
            account,
            amount,
            reply,
        })
        .await
    }
    async fn post(&self, post: Post) -> Result<(), BalanceError> {
        self.submit(|reply| Op::Post { post, reply }).await
    }
    async fn release(&self, account: i64, amount: i64) -> Result<(), BalanceError> {
        self.submit(|reply| Op::Release {
            account,
            amount,
            reply,
        })
        .await
    }
}

async fn run_writer(
    mut queue: mpsc::Receiver<Op>,
    config: PoolConfig,
    instance: Uuid,
    fatal: CancellationToken,
) {
    let mut conn: Option<BalanceConnection> = None;
    let mut ops = Vec::with_capacity(MAX_BATCH_OPS);
    while let Some(first) = queue.recv().await {
        ops.push(first);
        while ops.len() < MAX_BATCH_OPS {
            match queue.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let mut batch = BalanceBatch::default();
        for op in &ops {
            match op {
                Op::Hold {
                    account, amount, ..
                } => batch.holds.push((*account, *amount)),
                Op::Post { post, .. } => batch.posts.push(*post),
                Op::Release {
                    account, amount, ..
                } => batch.releases.push((*account, *amount)),
            }
        }
        let started = std::time::Instant::now();
        let outcome = apply(&mut conn, &config, instance, &batch).await;
        metrics::histogram!("ilp_balance_batch_ops").record(ops.len() as f64);
        metrics::histogram!("ilp_balance_commit_seconds").record(started.elapsed().as_secs_f64());
        if outcome.is_err() {
            metrics::counter!("ilp_balance_batch_failures_total").increment(1);
        }
        if let Err(BalanceError::Unavailable(why)) = &outcome
            && why.starts_with(SWEPT)
        {
            tracing::error!(connector.instance = %instance, "this connector's holds were swept; stopping");
            fatal.cancel();
        }
        let mut fits = match &outcome {
            Ok(fits) => fits.clone().into_iter(),
            Err(_) => Vec::new().into_iter(),
        };
        for op in ops.drain(..) {
            let (reply, result) = match op {
                Op::Hold { reply, .. } => {
                    let result = match &outcome {
                        Ok(_) if fits.next() == Some(true) => Ok(()),
                        Ok(_) => Err(BalanceError::InsufficientLiquidity),
                        Err(err) => Err(err.clone()),
                    };
                    (reply, result)
                }
                Op::Post { reply, .. } | Op::Release { reply, .. } => {
                    (reply, outcome.as_ref().map(|_| ()).map_err(Clone::clone))
                }
            };
            // The caller may have given up (its packet expired); nothing to tell then.
            let _ = reply.send(result);
        }
    }
}

const SWEPT: &str = "swept:";

/// Applies one batch on the writer's connection, (re)connecting as needed. After an error
/// it asks the database whether the batch committed anyway, so a post is never applied
/// twice nor reported lost when it was kept.
async fn apply(
    conn: &mut Option<BalanceConnection>,
    config: &PoolConfig,
    instance: Uuid,
    batch: &BalanceBatch,
) -> Result<Vec<bool>, BalanceError> {
    let durable = !batch.posts.is_empty();
    let batch_id = Uuid::new_v4();
    if conn.as_ref().is_none_or(BalanceConnection::is_closed) {
        *conn = Some(
            BalanceConnection::connect(config)
                .await
                .map_err(|err| BalanceError::Unavailable(err.to_string()))?,
        );
    }
    let Some(connection) = conn.as_ref() else {
        return Err(BalanceError::Unavailable("no connection".to_owned()));
    };
    match connection.apply(instance, batch_id, batch, durable).await {
        Ok(fits) => Ok(fits),
        Err(BatchError::InstanceSwept(id)) => {
            Err(BalanceError::Unavailable(format!("{SWEPT} instance {id}")))
        }
        Err(BatchError::Db(err)) => {
            *conn = None;
            tracing::warn!(error = %err, ops = batch.holds.len() + batch.posts.len() + batch.releases.len(), "balance batch failed");
            // Did it commit after all (e.g. the connection broke during COMMIT)?
            let committed = match BalanceConnection::connect(config).await {
                Ok(fresh) => {
                    let committed = fresh
                        .batch_committed(instance, batch_id)
                        .await
                        .unwrap_or(false);
                    *conn = Some(fresh);
                    committed
                }
                Err(_) => false,
            };
            if committed && batch.holds.is_empty() {
                return Ok(Vec::new());
            }
            if committed {
                // Which holds fit is unknown: report them failed; what they placed stays held
                // under this instance until it is swept (after a restart).
                tracing::error!(
                    holds = batch.holds.len(),
                    "a balance batch committed without an answer; its holds stay until this instance is swept"
                );
                return Err(BalanceError::Unavailable(
                    "outcome of holds unknown".to_owned(),
                ));
            }
            Err(BalanceError::Unavailable(err.to_string()))
        }
    }
}
