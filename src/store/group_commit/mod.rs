//! Group commit: money movements that arrive together are applied in one database transaction.
//!
//! One transaction per transfer caps throughput at what PostgreSQL can commit, and each commit
//! costs a WAL flush plus a transaction's bookkeeping. Under load, requests queue here instead and
//! a *lane* applies everything queued as one batch, in **one round trip**: one call of the
//! database function `move_money_batch`, sent in autocommit mode, which
//!
//! 1. locks every account the batch touches in ascending id order, the same global order the
//!    one-movement path (`MOVE_MONEY`) uses, so batches and single transfers queue behind each
//!    other and never deadlock;
//! 2. judges each movement **in arrival order** by `movement_verdict`, the one text of the rules
//!    the one-movement path runs too, against the balances the earlier ones left; a refused
//!    movement changes nothing and its neighbours go on;
//! 3. commits once, when the call returns; only then is any caller answered. Durability is
//!    exactly that of one commit.
//!
//! This file is the queue and the lanes (when a batch forms, what happens when it fails);
//! `batch.rs` is the call itself.
//!
//! When does a batch form? Only when there is load: a movement that finds a lane free and
//! nothing queued takes the lane and runs alone, in its caller's task, through the one-movement
//! path — no hand-over, no added latency. Once every lane is busy, movements queue; a lane takes
//! everything queued the moment it is free, so batches grow with the load by themselves. Only
//! while other batches are running does a lane wait, up to the window (`GROUP_COMMIT_WINDOW`)
//! measured from the first queued movement's arrival, for more to join.
//!
//! Failures: a batch the database answered with an error has rolled back; a deadlock or
//! serialization failure retries it, anything else (including waiting more than 250 ms for a row
//! lock) runs its movements again one by one, each in its own task through the one-movement
//! path, so one bad or blocked movement cannot fail or hold up its neighbours. If the connection
//! breaks after the call was sent the outcome is unknown (as for any commit whose answer is lost)
//! and every caller gets the error; nothing is re-run, so nothing can be applied twice.
//!
//! Keyed (idempotent) requests do not come here: they need their key locked and recorded in the
//! transaction that moves the money, which `idempotency.rs` does one request at a time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, oneshot};

mod batch;

pub use batch::MOVE_MONEY_BATCH;
use batch::{Failure, apply};

use super::rules::Movement;
use super::{Store, StoreError, retrying_when};
use crate::domain::TransferReceipt;

/// How group commit behaves (`GROUP_COMMIT`, `GROUP_COMMIT_WINDOW`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommitSettings {
    /// While other batches are in flight, how long a batch waits for more movements to join,
    /// from its first one's arrival. Zero: take what is queued and go.
    pub window: Duration,
    /// Batches in flight at once. More lanes keep PostgreSQL busy while one batch commits; each
    /// holds a pooled connection while it runs.
    pub lanes: usize,
    /// The most movements in one batch.
    pub max_batch: usize,
}

impl Default for GroupCommitSettings {
    fn default() -> Self {
        // No window: measured by `make bench` (2 cores), with every lane busy the queue fills by
        // itself while a batch runs, and a window only adds its length to every batched
        // request's latency (at 4 clients a 1 ms window made group commit lose).
        Self {
            window: Duration::ZERO,
            lanes: Self::default_lanes(usize::MAX),
            max_batch: 256,
        }
    }
}

impl GroupCommitSettings {
    /// Lanes when `GROUP_COMMIT_LANES` is not set: four, or half a pool of `max_connections`
    /// (at least one) if that is fewer, so that busy lanes leave the rest of the pool to
    /// everything else.
    ///
    /// Why four and not two: up to `lanes` concurrent movements each run alone, exactly as with
    /// group commit off, so below that concurrency group commit cannot lose. With two lanes, 4
    /// clients queued into batches of 2.1 and lost to `GROUP_COMMIT=false` in four
    /// `bench/bench.py --rows C,C1` runs out of four (C/C1 0.79 to 0.88): two batches of two in
    /// flight do no more than four lone movements, and each batched one also pays the hand-over.
    /// Four lanes ran 4 clients alone (C/C1 1.12 in the same kind of run); at 16 and 64
    /// clients batches still form (7 and 17 movements), with fewer per batch than two lanes make.
    pub fn default_lanes(max_connections: usize) -> usize {
        (max_connections / 2).clamp(1, 4)
    }
}

/// The most a window may be: every movement in a batch waits for it.
pub const MAX_GROUP_COMMIT_WINDOW: Duration = Duration::from_millis(2);

/// One movement waiting for its batch, and where its answer goes.
#[derive(Debug)]
struct Job {
    movement: Movement,
    arrived: Instant,
    reply: oneshot::Sender<Result<TransferReceipt, StoreError>>,
}

impl Job {
    /// This movement in a transaction of its own, through the one-statement path.
    async fn run_alone(&self, single: &Store) -> Result<TransferReceipt, StoreError> {
        single.move_money_alone(&self.movement).await
    }
}

/// The queue in front of the lanes. Dropping the last `Store` clone closes it, which ends the
/// collector task once the queue is empty.
#[derive(Debug)]
pub(super) struct GroupCommit {
    queue: mpsc::Sender<Job>,
    /// One permit per lane, shared with the collector: a movement that finds one free (and
    /// nothing queued) takes it and runs at once.
    lanes: Arc<Semaphore>,
}

impl GroupCommit {
    /// Starts the collector on the current tokio runtime. `single` is the store the lanes use for
    /// lone movements and fall-backs: it must not itself group (it would queue to itself).
    pub(super) fn start(single: Store, settings: GroupCommitSettings) -> Self {
        let settings = GroupCommitSettings {
            window: settings.window.min(MAX_GROUP_COMMIT_WINDOW),
            lanes: settings.lanes.max(1),
            max_batch: settings.max_batch.max(1),
        };
        let (queue, jobs) = mpsc::channel(settings.max_batch * settings.lanes * 4);
        let lanes = Arc::new(Semaphore::new(settings.lanes));
        tokio::spawn(collect(jobs, single, Arc::clone(&lanes), settings));
        Self { queue, lanes }
    }

    /// Queues a movement and waits for its batch to commit (or refuse it).
    pub(super) async fn submit(
        &self,
        single: &Store,
        movement: Movement,
    ) -> Result<TransferReceipt, StoreError> {
        // No load to batch with: nothing is queued and a lane is free. The movement then runs at
        // once, alone, in the caller's own task: no hand-over to the collector and back, so a
        // lone request costs what it costs with group commit off. (The permit is fair: it is
        // never taken past the collector while the collector waits for one.)
        //
        // "A lane is free", not "every lane is free": with two lanes at 4 clients, waiting for
        // both made half the requests queue for batches of 2.0, and group commit lost to
        // GROUP_COMMIT=false (C/C1 0.62 in one `bench/bench.py --rows C,C1` run); taking any
        // free lane gave 1.10 in the same run, and batches still form once both lanes are busy.
        if self.queue.capacity() == self.queue.max_capacity()
            && let Ok(lane) = self.lanes.try_acquire()
        {
            let outcome = single.move_money_alone(&movement).await;
            drop(lane);
            return outcome;
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            movement,
            arrived: Instant::now(),
            reply,
        };
        if let Err(refused) = self.queue.send(job).await {
            // The collector is gone (the runtime is shutting down): do it alone.
            return refused.0.run_alone(single).await;
        }
        answer.await.unwrap_or_else(|_| {
            // The lane died without answering (a panic): whether the batch committed is unknown.
            Err(StoreError::Internal(sqlx::Error::Protocol(
                "group commit lane stopped before answering".into(),
            )))
        })
    }
}

/// Takes queued movements into batches and hands each to a free lane.
async fn collect(
    mut jobs: mpsc::Receiver<Job>,
    single: Store,
    lanes: Arc<Semaphore>,
    settings: GroupCommitSettings,
) {
    while let Some(first) = jobs.recv().await {
        let Ok(lane) = Arc::clone(&lanes).acquire_owned().await else {
            return;
        };
        let deadline = first.arrived + settings.window;
        let mut batch = vec![first];
        while batch.len() < settings.max_batch {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Another batch running means load: worth waiting a little for company. Alone, go now.
        let busy = lanes.available_permits() + 1 < settings.lanes;
        if busy && !settings.window.is_zero() {
            while batch.len() < settings.max_batch {
                match tokio::time::timeout_at(deadline.into(), jobs.recv()).await {
                    Ok(Some(job)) => batch.push(job),
                    Ok(None) | Err(_) => break,
                }
            }
        }
        let single = single.clone();
        tokio::spawn(async move {
            run_batch(&single, batch).await;
            drop(lane);
        });
    }
}

/// One batch applied as a lane applies it (no retry, no fall-back), for `store::paths`.
pub(super) async fn apply_batch(
    pool: &sqlx::PgPool,
    movements: &[&Movement],
) -> Result<Vec<Result<TransferReceipt, StoreError>>, String> {
    apply(pool, movements)
        .await
        .map_err(|failure| format!("{failure:?}"))
}

/// Applies one batch and answers every movement in it.
async fn run_batch(single: &Store, batch: Vec<Job>) {
    if batch.len() == 1 {
        let job = batch.into_iter().next().expect("one job");
        let outcome = job.run_alone(single).await;
        let _ = job.reply.send(outcome);
        return;
    }

    let conflicted =
        |failure: &Failure| matches!(failure, Failure::BeforeCommit(StoreError::Contended));
    let movements: Vec<&Movement> = batch.iter().map(|job| &job.movement).collect();
    let calls = single.money_calls();
    let failure = match retrying_when(conflicted, || {
        calls.batches.inc();
        calls.batched.inc_by(movements.len() as u64);
        apply(single.pool(), &movements)
    })
    .await
    {
        Ok(outcomes) => {
            for (job, outcome) in batch.into_iter().zip(outcomes) {
                // A caller that went away no longer needs its answer; the money moved anyway.
                let _ = job.reply.send(outcome);
            }
            return;
        }
        Err(failure) => failure,
    };
    match failure {
        Failure::BeforeCommit(err) => {
            // Rolled back: nothing of the batch happened. Each movement runs alone, in a task of
            // its own, and gets its own answer; the lane is free at once, so a movement that has
            // to wait (for a row lock held elsewhere) holds up nobody but itself.
            tracing::warn!(error = %err, size = batch.len(), "group commit failed; running the batch one by one");
            for job in batch {
                let single = single.clone();
                tokio::spawn(async move {
                    let outcome = job.run_alone(&single).await;
                    let _ = job.reply.send(outcome);
                });
            }
        }
        Failure::AtCommit(err) => {
            tracing::error!(error = %err, size = batch.len(), "group commit: COMMIT failed; outcome unknown");
            let unavailable = matches!(err, StoreError::Unavailable(_));
            for job in batch {
                let lost = sqlx::Error::Protocol("the batch's COMMIT got no answer".into());
                let _ = job.reply.send(Err(if unavailable {
                    StoreError::Unavailable(lost)
                } else {
                    StoreError::Internal(lost)
                }));
            }
        }
    }
}
