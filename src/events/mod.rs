//! Events after they commit: the horizon below which the log is final, the hub that hands new
//! events to this replica's live streams, and webhook delivery.
//!
//! One task per replica (`EventHub::run`) probes the horizon (`store/events.rs` says why there
//! is one) every `poll` and, when it moves and someone is watching, reads the newly final events
//! once and broadcasts them. Streams filter for their account; the webhook fan-out follows the
//! same horizon. Nothing here holds more than a bounded number of events: the broadcast ring
//! (`RING`), and each stream's outgoing buffer (`stream.rs`).

mod stream;
pub mod webhooks;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, broadcast, watch};

pub use stream::{EndReason, Held, REVALIDATE, StillAllowed, StreamEnd, Terms, WatchStream};

use crate::store::{Event, EventStore, HorizonProbe};

/// Batches the broadcast ring keeps for streams that have not taken them yet (at most `PAGE`
/// events each). A stream that falls further behind reads what it missed from the database: it
/// is not dropped for that.
const RING: usize = 32;
/// Events read from the database per query.
pub const PAGE: i64 = 256;
/// Probes waiting to qualify; past this the newest is replaced (which only delays, never
/// skips: a later pair is more conservative).
const MAX_PENDING: usize = 256;

/// The horizon's bookkeeping: the probes whose `last_drawn` is not yet known to be final.
#[derive(Debug, Default)]
pub struct Horizon {
    pending: VecDeque<(i64, i64)>,
    safe: i64,
}

impl Horizon {
    /// Takes one probe; returns the horizon, which never goes back.
    pub fn observe(&mut self, probe: HorizonProbe) -> i64 {
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_back();
        }
        self.pending.push_back((probe.last_drawn, probe.probe_xid));
        while let Some(&(last_drawn, xid)) = self.pending.front() {
            if xid > probe.xmin {
                break;
            }
            self.safe = self.safe.max(last_drawn);
            self.pending.pop_front();
        }
        self.safe
    }

    pub fn safe(&self) -> i64 {
        self.safe
    }
}

/// `EVENTS_POLL_INTERVAL` and `MAX_STREAMS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSettings {
    /// How often the horizon is probed: the latency a stream or webhook adds, at most.
    pub poll: Duration,
    /// Live streams (SSE and `WatchAccount` together) at once.
    pub max_streams: usize,
    /// Live streams of one user at once (`MAX_STREAMS_PER_USER`).
    pub max_streams_per_user: usize,
    /// Events a stream may have waiting for its client before it is ended as too slow.
    pub stream_buffer: usize,
}

impl Default for EventSettings {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(100),
            max_streams: 256,
            max_streams_per_user: 8,
            stream_buffer: 64,
        }
    }
}

/// Every event with `after < id <= upto`: a stream that has seen everything up to `after` has,
/// with these, seen everything up to `upto`. A stream that finds `after` beyond what it has
/// seen (it lagged, or a publish failed) reads the gap from the database first.
#[derive(Debug)]
pub struct Batch {
    pub after: i64,
    pub upto: i64,
    pub events: Vec<Event>,
}

/// The replica's view of the event log; cheap to clone.
#[derive(Clone)]
pub struct EventHub {
    store: Arc<dyn EventStore>,
    horizon: watch::Receiver<i64>,
    horizon_tx: Arc<watch::Sender<i64>>,
    live: broadcast::Sender<Arc<Batch>>,
    streams: Arc<Semaphore>,
    /// Set when the server stops: every stream ends (`EndReason::ShuttingDown`), so graceful
    /// shutdown does not wait on clients that would listen forever.
    closing: Arc<watch::Sender<bool>>,
    settings: EventSettings,
}

impl EventHub {
    pub fn new(store: Arc<dyn EventStore>, settings: EventSettings) -> Self {
        let (horizon_tx, horizon) = watch::channel(0);
        let (live, _) = broadcast::channel(RING);
        Self {
            store,
            horizon,
            horizon_tx: Arc::new(horizon_tx),
            live,
            streams: Arc::new(Semaphore::new(settings.max_streams.max(1))),
            closing: Arc::new(watch::channel(false).0),
            settings,
        }
    }

    /// The current horizon: every event id up to it is final.
    pub fn horizon(&self) -> i64 {
        *self.horizon.borrow()
    }

    /// Changes whenever the horizon moves (the webhook fan-out waits on it).
    pub fn horizon_changes(&self) -> watch::Receiver<i64> {
        self.horizon.clone()
    }

    pub fn settings(&self) -> EventSettings {
        self.settings
    }

    /// Probes until `stopped`. A failed probe (database down) is retried at the next tick;
    /// the horizon just stays where it is meanwhile.
    pub async fn run(self, mut stopped: watch::Receiver<bool>) {
        let mut horizon = Horizon::default();
        let mut published = None::<i64>;
        let mut tick = tokio::time::interval(self.settings.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopped.wait_for(|stop| *stop) => {
                    self.closing.send_replace(true);
                    return;
                }
            }
            let probe = match self.store.probe_horizon().await {
                Ok(probe) => probe,
                Err(error) => {
                    tracing::debug!(%error, "event horizon: probe failed; will retry");
                    continue;
                }
            };
            let safe = horizon.observe(probe);
            let Some(from) = published else {
                // The first horizon: streams opened from now on start here.
                self.horizon_tx.send_replace(safe);
                published = Some(safe);
                continue;
            };
            if safe <= from {
                continue;
            }
            // The horizon first, then the events: a stream that subscribes in between reads
            // them from the database up to the new horizon and skips their broadcast copies
            // by id; published the other way round, it could miss them.
            self.horizon_tx.send_replace(safe);
            if self.live.receiver_count() == 0 {
                published = Some(safe);
                continue;
            }
            if let Err(error) = self.publish(from, safe).await {
                // Streams see the gap in the next batch and read it from the database.
                tracing::warn!(%error, "event hub: reading new events failed");
            }
            published = Some(safe);
        }
    }

    async fn publish(&self, mut after: i64, upto: i64) -> Result<(), crate::store::StoreError> {
        while after < upto {
            let events = self.store.events_between(after, upto, PAGE).await?;
            let end = match events.last() {
                Some(last) if events.len() as i64 >= PAGE => last.id,
                _ => upto,
            };
            // No receivers left is not an error: the next round checks again.
            let _ = self.live.send(Arc::new(Batch {
                after,
                upto: end,
                events,
            }));
            after = end;
        }
        Ok(())
    }

    /// A place among `max_streams`, or `None` when all are taken.
    pub fn stream_place(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.streams).try_acquire_owned().ok()
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Batch>> {
        self.live.subscribe()
    }

    pub(crate) fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    pub(crate) fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(last_drawn: i64, xmin: i64, probe_xid: i64) -> HorizonProbe {
        HorizonProbe {
            last_drawn,
            xmin,
            probe_xid,
        }
    }

    #[test]
    fn ids_become_final_once_every_transaction_that_could_hold_one_has_ended() {
        let mut horizon = Horizon::default();
        // Nothing else running: what was drawn is final at once.
        assert_eq!(horizon.observe(probe(5, 100, 100)), 5);
        // Transaction 101 is running (it may hold an id up to 9): not yet.
        assert_eq!(horizon.observe(probe(9, 101, 103)), 5);
        // 101 is still the oldest running: 9 waits, 12 too.
        assert_eq!(horizon.observe(probe(12, 101, 104)), 5);
        // 101 ended; the oldest running is 104's successor: both earlier probes qualify.
        assert_eq!(horizon.observe(probe(12, 105, 106)), 12);
        // Never backwards.
        assert_eq!(horizon.observe(probe(3, 1, 107)), 12);
    }

    #[test]
    fn the_pending_probes_are_bounded_and_only_delay_when_full() {
        let mut horizon = Horizon::default();
        for n in 0..(MAX_PENDING as i64 * 4) {
            horizon.observe(probe(n, 1, 10 + n));
        }
        assert!(horizon.pending.len() <= MAX_PENDING);
        assert_eq!(horizon.safe(), 0);
        assert_eq!(horizon.observe(probe(2000, 1_000_000, 1_000_000)), 2000);
    }
}
