//! The one outbox worker: verification emails (`mail::OutboxWorker`) and webhook deliveries
//! (`events::webhooks::WebhookWorker`) are both rows written in the transaction of the change
//! that caused them and drained here, by any number of workers on any number of replicas.
//!
//! A worker claims due items (`FOR UPDATE SKIP LOCKED`, then a lease that hides the claimed
//! rows from other workers while they are tried), tries each once, several at a time, and
//! records each outcome: done, retry later (exponential backoff with jitter), or given up.
//! One attempt is bounded by the outbox's own timeout, well within the lease, so an item is
//! never tried twice at once; a worker that dies mid-attempt leaves its items to come back when
//! their leases run out (at least once, never lost).

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::store::StoreError;

/// How long an attempt keeps trying to record its outcome while the database is unavailable.
/// An attempt that reached its recipient but could not say so is made again by whoever claims
/// the item once its lease runs out: a duplicate the recipient has to dedupe. A failover or a
/// planned switchover takes seconds, so waiting that long saves the duplicate; bounded, so a
/// worker still stops promptly at shutdown. Recording late is safe: each outcome is written
/// only while the item is still in the state this attempt claimed it in.
pub const RECORD_PATIENCE: Duration = Duration::from_secs(10);
const RECORD_RETRY: Duration = Duration::from_millis(250);

/// Runs `write` (an outcome's record) until it succeeds, fails for another reason than the
/// database being unavailable, or `RECORD_PATIENCE` has passed.
pub async fn record<T, F, Fut>(write: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    record_within(RECORD_PATIENCE, write).await
}

async fn record_within<T, F, Fut>(patience: Duration, mut write: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let until = tokio::time::Instant::now() + patience;
    loop {
        match write().await {
            Err(StoreError::Unavailable(_))
                if tokio::time::Instant::now() + RECORD_RETRY < until =>
            {
                tokio::time::sleep(RECORD_RETRY).await;
            }
            other => return other,
        }
    }
}

/// An outbox table and how to try one of its items.
#[async_trait]
pub trait Outbox: Clone + Send + Sync + 'static {
    type Item: Send + 'static;
    /// For logs: "email outbox", "webhook outbox".
    const NAME: &'static str;
    /// Claims up to `batch` due items, each hidden from other workers for `lease`.
    async fn claim(&self, batch: i64, lease: Duration) -> Result<Vec<Self::Item>, StoreError>;
    /// Tries `item` once and records the outcome.
    async fn attempt(&self, item: Self::Item) -> Result<Attempted, StoreError>;
}

/// What became of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempted {
    Sent,
    Retrying,
    Abandoned,
}

/// What one round did, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub claimed: usize,
    pub sent: usize,
    pub retrying: usize,
    pub abandoned: usize,
}

/// How a worker polls its outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Polling {
    /// How long to wait before looking again when nothing was due.
    pub interval: Duration,
    /// Items claimed per round, and the most attempts in flight at once.
    pub batch: i64,
    /// How long a claimed item stays invisible to other workers.
    pub lease: Duration,
}

/// One round: claim what is due and try each item once, all at once, and wait for all of them
/// (tests and `deliver_due` drive an outbox this way; `run` keeps attempts flowing instead).
pub async fn round<O: Outbox>(outbox: &O, polling: Polling) -> Result<Round, StoreError> {
    let due = outbox.claim(polling.batch, polling.lease).await?;
    let mut round = Round {
        claimed: due.len(),
        ..Round::default()
    };
    let mut attempts = JoinSet::new();
    for item in due {
        let outbox = outbox.clone();
        attempts.spawn(async move { outbox.attempt(item).await });
    }
    let mut failed = None;
    while let Some(done) = attempts.join_next().await {
        match done {
            Ok(Ok(Attempted::Sent)) => round.sent += 1,
            Ok(Ok(Attempted::Retrying)) => round.retrying += 1,
            Ok(Ok(Attempted::Abandoned)) => round.abandoned += 1,
            // The outcome was not recorded: the item comes back when its lease runs out.
            Ok(Err(error)) => failed = Some(error),
            Err(join) => tracing::error!(outbox = O::NAME, %join, "an attempt panicked"),
        }
    }
    match failed {
        Some(error) if round.sent + round.retrying + round.abandoned == 0 => Err(error),
        Some(error) => {
            tracing::warn!(outbox = O::NAME, %error, "recording an outcome failed");
            Ok(round)
        }
        None => Ok(round),
    }
}

/// Delivers until `stopped`, with up to `polling.batch` attempts in flight at once. Whenever
/// places are free it claims that many due items and starts each as soon as it is claimed, so
/// one slow receiver (an attempt may take its whole timeout) holds up only its own place, not
/// the items behind it. When nothing more was due it waits for `wakeup` (this replica just
/// queued something), a finished attempt, or the poll interval (other replicas' items, retries
/// coming due). At `stopped` the attempts in flight are finished (they are bounded) first.
pub async fn run<O: Outbox>(
    outbox: O,
    polling: Polling,
    wakeup: std::sync::Arc<Notify>,
    mut stopped: watch::Receiver<bool>,
) {
    let capacity = usize::try_from(polling.batch.max(1)).unwrap_or(1);
    let mut in_flight = JoinSet::new();
    loop {
        while let Some(done) = in_flight.try_join_next() {
            report::<O>(done);
        }
        let free = capacity - in_flight.len();
        let mut claimed_all = false;
        if free > 0 {
            match outbox.claim(free as i64, polling.lease).await {
                Ok(due) => {
                    claimed_all = due.len() == free;
                    for item in due {
                        let outbox = outbox.clone();
                        in_flight.spawn(async move { outbox.attempt(item).await });
                    }
                }
                Err(error) => {
                    tracing::warn!(outbox = O::NAME, %error, "claiming failed; will retry");
                }
            }
        }
        if claimed_all {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(polling.interval) => {}
            _ = wakeup.notified() => {}
            Some(done) = in_flight.join_next(), if !in_flight.is_empty() => report::<O>(done),
            _ = stopped.wait_for(|stop| *stop) => break,
        }
    }
    while let Some(done) = in_flight.join_next().await {
        report::<O>(done);
    }
}

fn report<O: Outbox>(done: Result<Result<Attempted, StoreError>, tokio::task::JoinError>) {
    match done {
        Ok(Ok(_)) => {}
        // The outcome was not recorded: the item comes back when its lease runs out.
        Ok(Err(error)) => tracing::warn!(outbox = O::NAME, %error, "recording an outcome failed"),
        Err(join) => tracing::error!(outbox = O::NAME, %join, "an attempt panicked"),
    }
}

/// `base` doubled after each failure beyond the first, up to `max`: the wait before attempt
/// `attempt + 1`.
pub fn backoff(base: Duration, max: Duration, attempt: i32) -> Duration {
    let doublings = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(20);
    base.saturating_mul(1 << doublings).min(max)
}

/// `wait` spread over 75%..125% of itself, so the items of one outage do not all come back in
/// the same instant.
pub fn jitter(wait: Duration) -> Duration {
    let mut byte = [0u8; 2];
    let spread = match getrandom::fill(&mut byte) {
        Ok(()) => f64::from(u16::from_le_bytes(byte)) / f64::from(u16::MAX),
        Err(_) => 0.5,
    };
    wait.mul_f64(0.75 + spread / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable() -> StoreError {
        StoreError::Unavailable(sqlx::Error::PoolTimedOut)
    }

    #[tokio::test]
    async fn an_outcome_is_recorded_once_the_database_is_back() {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let recorded = record(|| async {
            match calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) {
                0 | 1 => Err(unavailable()),
                _ => Ok("recorded"),
            }
        })
        .await;
        assert_eq!(recorded.unwrap(), "recorded");
        assert_eq!(calls.into_inner(), 3);
    }

    #[tokio::test]
    async fn recording_gives_up_after_its_patience_and_at_once_on_other_errors() {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let gave_up = record_within(Duration::from_millis(600), || async {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err::<(), _>(unavailable())
        })
        .await;
        assert!(matches!(gave_up, Err(StoreError::Unavailable(_))));
        // 600 ms at one try per 250 ms: the first try and two more, never unbounded.
        assert!((2..=4).contains(&calls.load(std::sync::atomic::Ordering::Relaxed)));
        let calls = std::sync::atomic::AtomicU32::new(0);
        let refused = record(|| async {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err::<(), _>(StoreError::Contended)
        })
        .await;
        assert!(matches!(refused, Err(StoreError::Contended)));
        assert_eq!(calls.into_inner(), 1);
    }

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap() {
        let waits: Vec<u64> = (1..=6)
            .map(|n| backoff(Duration::from_secs(5), Duration::from_secs(60), n).as_secs())
            .collect();
        assert_eq!(waits, [5, 10, 20, 40, 60, 60]);
        assert_eq!(
            backoff(Duration::from_secs(5), Duration::from_secs(60), i32::MAX).as_secs(),
            60
        );
    }

    #[test]
    fn jitter_stays_within_a_quarter_either_way() {
        for _ in 0..1000 {
            let d = jitter(Duration::from_secs(4)).as_secs_f64();
            assert!((3.0..=5.0).contains(&d), "{d}");
        }
    }
}
