//! What a request for the bank, on either API, must get before it reaches an operation: a
//! database the health checker last found up, a free slot among `MAX_CONCURRENT_REQUESTS`, and
//! an end within `REQUEST_TIMEOUT`. Health, metrics and the API documents do not pass through
//! here: they are cheap, and a liveness probe that failed under load would get a busy server
//! restarted.
//!
//! The slots are one pool for HTTP and gRPC together: both spend the same connections, memory and
//! cores, so a limit per transport would let the two of them together take twice what the server
//! can carry. A request over the limit is refused at once with `unavailable` — shedding load
//! beats queueing it until everything times out. The adapters (`http::guard`, `grpc::guard`)
//! turn the refusals into their own responses.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ServiceError;

/// `MAX_CONCURRENT_REQUESTS` and `REQUEST_TIMEOUT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Requests in progress on both APIs together; default 1,024.
    pub max_concurrent_requests: usize,
    /// How long one request may run before it is answered `unavailable`; default 30 s.
    pub request_timeout: Duration,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_concurrent_requests: 1024,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// The limits and their state; clones share both.
#[derive(Clone)]
pub struct Admission {
    limits: RequestLimits,
    in_progress: Arc<Semaphore>,
    /// Whether the database answered the last health check.
    database_reachable: Arc<AtomicBool>,
    /// Set when the server has been told to stop: it still serves every request, but reports
    /// itself not ready so balancers take it out of rotation before it stops accepting.
    draining: Arc<AtomicBool>,
}

/// A request's slot, given back when dropped.
pub type Slot = OwnedSemaphorePermit;

impl Admission {
    pub fn new(limits: RequestLimits) -> Self {
        Self {
            limits,
            in_progress: Arc::new(Semaphore::new(limits.max_concurrent_requests.max(1))),
            database_reachable: Arc::new(AtomicBool::new(true)),
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The server is stopping: readiness (`/readyz`, gRPC health) answers not ready from now on,
    /// while requests are still served.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Whether a balancer should send this replica new requests: the database was found up
    /// and the server is not stopping.
    pub fn check_ready(&self) -> Result<(), ServiceError> {
        if self.draining() {
            return Err(ServiceError::Unavailable(
                "the server is shutting down".into(),
            ));
        }
        self.check_database()
    }

    /// What the health checker found: the database answers, or not.
    pub fn set_database_reachable(&self, reachable: bool) {
        self.database_reachable.store(reachable, Ordering::Relaxed);
    }

    /// What the last health check found.
    pub fn database_reachable(&self) -> bool {
        self.database_reachable.load(Ordering::Relaxed)
    }

    /// Fails fast while the health checker finds the database down: without it every request
    /// would wait `DB_ACQUIRE_TIMEOUT` for a connection that cannot be made before giving the
    /// same answer.
    pub fn check_database(&self) -> Result<(), ServiceError> {
        if self.database_reachable.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(ServiceError::Unavailable(
                "the last health check found the database down".into(),
            ))
        }
    }

    /// The database check, then a slot. Both refusals are `unavailable` and pass within
    /// seconds, so the adapters add a retry hint.
    pub fn admit(&self) -> Result<Slot, ServiceError> {
        self.check_database()?;
        Arc::clone(&self.in_progress)
            .try_acquire_owned()
            .map_err(|_| ServiceError::Unavailable("too many requests in progress".into()))
    }

    /// `work`, unless it is still running after `REQUEST_TIMEOUT`: then it is dropped and the
    /// answer is `unavailable`. Dropping is safe for money: grouped movements run in tasks of
    /// their own and answer only after they commit, and every transaction path ends its
    /// transaction explicitly.
    pub async fn within_deadline<T>(
        &self,
        work: impl Future<Output = T>,
    ) -> Result<T, ServiceError> {
        let deadline = self.limits.request_timeout;
        tokio::time::timeout(deadline, work).await.map_err(|_| {
            ServiceError::Unavailable(
                format!("the request did not finish within {deadline:?}").into(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the log says (the client is told only `unavailable`).
    fn cause(error: &ServiceError) -> String {
        std::error::Error::source(error)
            .map(ToString::to_string)
            .unwrap_or_default()
    }

    fn limits(max: usize, timeout_ms: u64) -> RequestLimits {
        RequestLimits {
            max_concurrent_requests: max,
            request_timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[test]
    fn slots_are_shared_by_clones_and_given_back_on_drop() {
        let admission = Admission::new(limits(2, 1000));
        let other = admission.clone();
        let first = admission.admit().unwrap();
        let _second = other.admit().unwrap();
        let refused = admission.admit().unwrap_err();
        assert_eq!(refused.code().as_str(), "unavailable");
        drop(first);
        assert!(other.admit().is_ok());
    }

    #[test]
    fn a_database_found_down_refuses_until_found_up() {
        let admission = Admission::new(limits(4, 1000));
        admission.set_database_reachable(false);
        let refused = admission.admit().unwrap_err();
        assert!(cause(&refused).contains("database"), "{refused:?}");
        admission.set_database_reachable(true);
        assert!(admission.admit().is_ok());
    }

    #[test]
    fn a_draining_server_is_not_ready_but_still_admits_requests() {
        let admission = Admission::new(limits(4, 1000));
        assert!(admission.check_ready().is_ok());
        admission.clone().start_draining();
        let not_ready = admission.check_ready().unwrap_err();
        assert!(cause(&not_ready).contains("shutting down"), "{not_ready:?}");
        assert!(
            admission.admit().is_ok(),
            "requests that reach it are served"
        );
    }

    #[tokio::test]
    async fn work_past_the_deadline_is_dropped_with_unavailable() {
        let admission = Admission::new(limits(4, 50));
        assert_eq!(admission.within_deadline(async { 7 }).await.unwrap(), 7);
        let late = admission
            .within_deadline(tokio::time::sleep(Duration::from_secs(60)))
            .await
            .unwrap_err();
        assert_eq!(late.code().as_str(), "unavailable");
        assert!(cause(&late).contains("50ms"), "{late:?}");
    }
}
