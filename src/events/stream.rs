//! One live stream of an account's events (SSE and `WatchAccount` both): first the events after
//! the client's cursor up to the horizon, read from the database page by page, then each newly
//! final batch from the hub, filtered for the account.
//!
//! Memory is bounded per stream by its outgoing buffer (`EventSettings::stream_buffer`
//! events). A client that leaves the buffer full for `SLOW_CONSUMER_GRACE` is not waited on
//! any longer: its stream ends with `EndReason::SlowConsumer` and the last id it was given, from
//! which it resumes. Falling behind the hub's ring is different (it is the server's ring, not
//! the client's fault): the stream reads the gap from the database and goes on.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_stream::Stream;

use super::{EventHub, PAGE};
use crate::domain::AccountId;
use crate::metrics::Metrics;
use crate::store::Event;

/// How long a full buffer may stay full before the stream is ended as too slow.
pub const SLOW_CONSUMER_GRACE: Duration = Duration::from_secs(5);

/// Why a stream ended, and where to resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamEnd {
    pub reason: EndReason,
    /// The last event id this stream gave the client (or the cursor it started from).
    pub resume_after: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The client did not take what was sent for `SLOW_CONSUMER_GRACE`.
    SlowConsumer,
    /// The access token that opened the stream expired: a stream lives no longer than the
    /// right to open it. The client resumes with a fresh token.
    TokenExpired,
    /// The session that opened the stream was revoked (logout, a password change), or the
    /// caller lost the right to watch the account (a banker no longer one).
    Revoked,
    /// The database could not be read.
    Unavailable,
    /// The server is shutting down.
    ShuttingDown,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::SlowConsumer => "slow_consumer",
            EndReason::TokenExpired => "token_expired",
            EndReason::Revoked => "revoked",
            EndReason::Unavailable => "unavailable",
            EndReason::ShuttingDown => "shutting_down",
        }
    }
}

/// What a stream holds while it is open (its places among the replica's and its user's
/// streams), given back when it ends.
pub type Held = Box<dyn std::any::Any + Send + Sync>;

/// Asked every `REVALIDATE` while a stream is open: whether whoever opened it may still watch
/// (their session not revoked, their role what it was). `false` ends the stream (`Revoked`); an
/// error answering it (the database away) lets the stream go on until the next ask.
pub type StillAllowed = Box<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<bool>> + Send>>
        + Send
        + Sync,
>;

/// How often an open stream asks `StillAllowed`: how long a revoked session may keep watching.
pub const REVALIDATE: Duration = Duration::from_secs(10);

/// How long a stream may live, and how patient it is with its client.
pub struct Terms {
    /// How long a full buffer may stay full (`SLOW_CONSUMER_GRACE`; tests shorten it).
    pub grace: Duration,
    /// When the token that opened it expires.
    pub ends_at: Option<Instant>,
    /// Asked every `REVALIDATE`.
    pub still_allowed: Option<StillAllowed>,
}

impl Default for Terms {
    fn default() -> Self {
        Self {
            grace: SLOW_CONSUMER_GRACE,
            ends_at: None,
            still_allowed: None,
        }
    }
}

/// Events, then at most one `Err(StreamEnd)` when the server ended the stream.
pub struct WatchStream {
    events: mpsc::Receiver<Event>,
    end: Arc<Mutex<Option<StreamEnd>>>,
    ended: bool,
}

impl WatchStream {
    /// Starts the stream of `account`'s events after `after` (`None`: from the horizon, so only
    /// what commits from now on), for as long as `terms` allow. `place` is what the stream
    /// holds among `MAX_STREAMS` and its user's streams, until it ends. The caller has checked
    /// that the account may be watched.
    pub fn start(
        hub: &EventHub,
        account: AccountId,
        after: Option<i64>,
        place: Held,
        metrics: Arc<Metrics>,
        terms: Terms,
    ) -> Self {
        let Terms {
            grace,
            ends_at,
            still_allowed,
        } = terms;
        let (tx, events) = mpsc::channel(hub.settings().stream_buffer.max(1));
        let end = Arc::new(Mutex::new(None));
        let producer = Producer {
            hub: hub.clone(),
            account,
            seen: after.unwrap_or_else(|| hub.horizon()),
            given: after.unwrap_or_else(|| hub.horizon()),
            tx,
            grace,
            ends_at,
            still_allowed,
        };
        let slot = Arc::clone(&end);
        metrics.event_stream(1);
        tokio::spawn(async move {
            let _place = place;
            if let Some(ended) = producer.run().await {
                metrics.event_stream_ended(ended.reason.as_str());
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(ended);
            }
            metrics.event_stream(-1);
        });
        Self {
            events,
            end,
            ended: false,
        }
    }
}

impl Stream for WatchStream {
    type Item = Result<Event, StreamEnd>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.events.poll_recv(cx) {
            Poll::Ready(Some(event)) => Poll::Ready(Some(Ok(event))),
            Poll::Ready(None) => {
                self.ended = true;
                let end = self.end.lock().unwrap_or_else(|p| p.into_inner()).take();
                Poll::Ready(end.map(Err))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

struct Producer {
    hub: EventHub,
    account: AccountId,
    /// Every event id up to here has been looked at.
    seen: i64,
    /// The last event id handed to the client.
    given: i64,
    tx: mpsc::Sender<Event>,
    grace: Duration,
    ends_at: Option<Instant>,
    still_allowed: Option<StillAllowed>,
}

/// Why the producer stopped: the client left (nothing to say), or the stream ends with a reason.
enum Stop {
    Gone,
    End(EndReason),
}

impl Producer {
    /// Runs until the client leaves (`None`) or the stream must end (`Some`).
    async fn run(mut self) -> Option<StreamEnd> {
        let mut live = self.hub.subscribe();
        let mut closing = self.hub.closing();
        let ends_at = self.ends_at;
        let expiry = async move {
            match ends_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let still_allowed = self.still_allowed.take();
        let revoked = async move {
            let Some(ask) = still_allowed else {
                return std::future::pending().await;
            };
            loop {
                tokio::time::sleep(REVALIDATE).await;
                if ask().await == Some(false) {
                    return;
                }
            }
        };
        let outcome = tokio::select! {
            outcome = self.follow(&mut live) => outcome,
            _ = closing.wait_for(|closing| *closing) => Stop::End(EndReason::ShuttingDown),
            () = expiry => Stop::End(EndReason::TokenExpired),
            () = revoked => Stop::End(EndReason::Revoked),
        };
        match outcome {
            Stop::Gone => None,
            Stop::End(reason) => Some(StreamEnd {
                reason,
                resume_after: self.given,
            }),
        }
    }

    async fn follow(&mut self, live: &mut broadcast::Receiver<Arc<super::Batch>>) -> Stop {
        // Subscribed first, then the horizon read: anything after it arrives as a batch.
        let horizon = self.hub.horizon();
        if let Err(stop) = self.catch_up(horizon).await {
            return stop;
        }
        loop {
            let batch = tokio::select! {
                batch = live.recv() => batch,
                _ = self.tx.closed() => return Stop::Gone,
            };
            let batch = match batch {
                Ok(batch) => batch,
                // The next batch still in the ring starts past `seen`: the gap is read below.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => {
                    return Stop::End(EndReason::ShuttingDown);
                }
            };
            if batch.after > self.seen
                && let Err(stop) = self.catch_up(batch.after).await
            {
                return stop;
            }
            for event in &batch.events {
                if event.id > self.seen
                    && event.concerns(self.account)
                    && let Err(stop) = self.give(event.clone()).await
                {
                    return stop;
                }
            }
            self.seen = self.seen.max(batch.upto);
        }
    }

    /// The account's events after `seen` up to `upto`, from the database.
    async fn catch_up(&mut self, upto: i64) -> Result<(), Stop> {
        while self.seen < upto {
            let events = self
                .hub
                .store()
                .account_events_between(self.account, self.seen, upto, PAGE)
                .await
                .map_err(|_| Stop::End(EndReason::Unavailable))?;
            let full = events.len() as i64 >= PAGE;
            for event in events {
                let id = event.id;
                self.give(event).await?;
                self.seen = id;
            }
            if !full {
                self.seen = upto;
            }
        }
        Ok(())
    }

    async fn give(&mut self, event: Event) -> Result<(), Stop> {
        let id = event.id;
        match self.tx.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Stop::Gone),
            Err(mpsc::error::TrySendError::Full(event)) => {
                match tokio::time::timeout(self.grace, self.tx.send(event)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Err(Stop::Gone),
                    Err(_) => return Err(Stop::End(EndReason::SlowConsumer)),
                }
            }
        }
        self.given = id;
        Ok(())
    }
}
