//! Work the server does on its own, beside the requests: each task runs until the shutdown
//! signal and then returns, so `run_until_stopped` can wait for it before closing the pool.

use std::time::Duration;

use tokio::sync::watch;

use crate::store::Store;
use crate::store::prelude::HoldStore;

/// How often idempotency records past their retention are deleted: a quarter of the retention,
/// so a record outlives it by at most 25%, between a second and an hour.
pub fn purge_interval(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(60 * 60))
}

/// Deletes idempotency records older than `retention`, every `purge_interval(retention)`.
/// A failed round (database down) is logged and tried again next time.
pub async fn purge_idempotency_keys(
    store: Store,
    retention: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let every = purge_interval(retention);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        match store.purge_idempotency_keys(retention).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "purged expired idempotency keys"),
            Err(error) => tracing::warn!(%error, "purging idempotency keys failed; will retry"),
        }
    }
}

/// How often the sweep looks for holds past their expiry.
const SWEEP_HOLDS_EVERY: Duration = Duration::from_secs(30);

/// Every `SWEEP_HOLDS_EVERY`, marks pending holds past `expires_at` as `expired`, until
/// shutdown. They stopped reserving funds at `expires_at` already (every read and every rule
/// checks the clock); the sweep makes the rows and the payers' `holds_pending` say so, which
/// spares the money path a look at the holds table. Replicas share the work: the sweep skips
/// holds another has locked.
pub async fn sweep_expired_holds(store: Store, mut stopped: watch::Receiver<bool>) {
    const BATCH: i64 = 500;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_HOLDS_EVERY) => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        let mut expired = 0;
        loop {
            match store.expire_due_holds(BATCH, None).await {
                Ok(0) => break,
                Ok(n) => expired += n,
                Err(error) => {
                    tracing::warn!(%error, "sweeping expired holds failed; will retry");
                    break;
                }
            }
        }
        if expired > 0 {
            tracing::info!(expired, "marked expired holds");
        }
    }
}

/// How often freed memory is handed back to the OS.
const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Every `TRIM_EVERY`, gives the free pages of the allocator's arenas back to the OS
/// (`malloc_trim`), until shutdown. glibc returns memory on its own only from the top of each
/// arena; a burst of requests (hundreds of connections' buffers, spread over the worker
/// threads' arenas) leaves free memory in the middle of them, and the process kept tens of
/// MiB it no longer used after a flood. A trim of a quiet heap takes microseconds.
pub async fn release_free_memory(mut stopped: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TRIM_EVERY) => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only returns free pages to the OS; it is safe to call any time.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_runs_a_quarter_of_the_retention_within_bounds() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!(purge_interval(h(24)), h(1));
        assert_eq!(purge_interval(h(2)), Duration::from_secs(30 * 60));
        assert_eq!(
            purge_interval(Duration::from_secs(1)),
            Duration::from_secs(1)
        );
    }
}
