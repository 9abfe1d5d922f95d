//! Each customer account's share of the connection pool.
//!
//! A money movement that runs in a transaction of its own holds a pooled connection while it
//! waits for its accounts' row locks. When one account is stuck (a long transaction holds its
//! row, or a client hammers it with keyed retries), the requests touching it used to take every
//! connection, and transfers between *other* customers failed for lack of one. So a
//! single-movement transaction first takes a pass for each customer account it touches: at most
//! `per_account` of them hold connections for one account at a time, at most `max_waiting` more
//! wait (without a connection) for up to the pool's acquire timeout, and beyond that the answer is
//! `unavailable` at once — the same answer as a pool that had no connection to give.
//!
//! Group-commit batches do not take passes: their lanes are few and bounded already, and a
//! batch carries many movements of a hot account on one connection, which is the point of it.
//! The map holds only accounts with a pass out or a waiter, so it is bounded by the requests in
//! flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::StoreError;
use crate::domain::AccountId;

#[derive(Debug)]
struct Slot {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
}

#[derive(Debug)]
pub(super) struct AccountGate {
    per_account: usize,
    max_waiting: usize,
    wait_at_most: Duration,
    accounts: Mutex<HashMap<AccountId, Arc<Slot>>>,
}

/// The passes of one movement; dropping it lets the next waiter of each account in.
#[derive(Debug)]
pub(super) struct Pass<'g> {
    gate: &'g AccountGate,
    held: Vec<(AccountId, Arc<Slot>, OwnedSemaphorePermit)>,
}

impl AccountGate {
    /// For a pool of `pool_size` connections: a quarter of it per account (at least one), and
    /// 32 waiters per account (or eight per pass, if more), each waiting at most `wait_at_most`
    /// (the pool's acquire timeout). Waiters hold request slots, not connections, so their
    /// bound is generous: it only stops one account from filling `MAX_CONCURRENT_REQUESTS`.
    pub(super) fn for_pool(pool_size: u32, wait_at_most: Duration) -> Self {
        let per_account = (pool_size as usize / 4).max(1);
        Self {
            per_account,
            max_waiting: (8 * per_account).max(32),
            wait_at_most,
            accounts: Mutex::new(HashMap::new()),
        }
    }

    /// Passes for `accounts` (customer accounts only; duplicates are fine), taken in ascending
    /// id order so that two movements over the same pair can never hold one each and wait for
    /// the other.
    pub(super) async fn enter(&self, accounts: &[AccountId]) -> Result<Pass<'_>, StoreError> {
        let (ids, mut pass) = self.empty_pass(accounts);
        for id in ids {
            let slot = self.slot(&mut self.accounts.lock().expect("account gate lock"), id);
            let permit = match Arc::clone(&slot.permits).try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    if slot.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
                        slot.waiting.fetch_sub(1, Ordering::SeqCst);
                        self.release(id, slot);
                        return Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut));
                    }
                    let waited = tokio::time::timeout(
                        self.wait_at_most,
                        Arc::clone(&slot.permits).acquire_owned(),
                    )
                    .await;
                    slot.waiting.fetch_sub(1, Ordering::SeqCst);
                    match waited {
                        Ok(Ok(permit)) => permit,
                        _ => {
                            self.release(id, slot);
                            return Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut));
                        }
                    }
                }
            };
            pass.held.push((id, slot, permit));
        }
        Ok(pass)
    }

    /// The accounts in ascending id order, once each, and a pass holding nothing yet.
    fn empty_pass(&self, accounts: &[AccountId]) -> (Vec<AccountId>, Pass<'_>) {
        let mut ids = accounts.to_vec();
        ids.sort();
        ids.dedup();
        let pass = Pass {
            gate: self,
            held: Vec::with_capacity(ids.len()),
        };
        (ids, pass)
    }

    /// `id`'s slot, made on first use (the caller holds the map's lock).
    fn slot(&self, map: &mut HashMap<AccountId, Arc<Slot>>, id: AccountId) -> Arc<Slot> {
        Arc::clone(map.entry(id).or_insert_with(|| {
            Arc::new(Slot {
                permits: Arc::new(Semaphore::new(self.per_account)),
                waiting: AtomicUsize::new(0),
            })
        }))
    }

    /// Passes for `accounts` only if every one is free right now; `None` otherwise (nothing
    /// held).
    pub(super) fn try_enter(&self, accounts: &[AccountId]) -> Option<Pass<'_>> {
        let (ids, mut pass) = self.empty_pass(accounts);
        let mut map = self.accounts.lock().expect("account gate lock");
        for id in ids {
            let slot = self.slot(&mut map, id);
            match Arc::clone(&slot.permits).try_acquire_owned() {
                Ok(permit) => pass.held.push((id, slot, permit)),
                Err(_) => {
                    drop(map);
                    self.release(id, slot);
                    return None; // `pass` gives back what it took
                }
            }
        }
        Some(pass)
    }

    /// Forgets `id` once nobody holds or waits for it (checked under the map's lock, which every
    /// newcomer takes to find the slot).
    fn release(&self, id: AccountId, slot: Arc<Slot>) {
        let mut map = self.accounts.lock().expect("account gate lock");
        // Ours and the map's: nobody else has it.
        if Arc::strong_count(&slot) == 2 {
            map.remove(&id);
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.accounts.lock().unwrap().len()
    }

    #[cfg(test)]
    fn waiting(&self, id: AccountId) -> usize {
        self.accounts
            .lock()
            .unwrap()
            .get(&id)
            .map_or(0, |slot| slot.waiting.load(Ordering::SeqCst))
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        for (id, slot, permit) in self.held.drain(..) {
            drop(permit);
            self.gate.release(id, slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: i64) -> AccountId {
        AccountId::new(n).unwrap()
    }

    #[tokio::test]
    async fn one_account_gets_its_share_the_waiters_are_bounded_and_others_pass() {
        // Pool of 8: two passes per account, 32 waiters.
        let gate = Arc::new(AccountGate::for_pool(8, Duration::from_secs(30)));
        let first = gate.enter(&[id(1), id(2)]).await.unwrap();
        let second = gate.enter(&[id(1), id(3)]).await.unwrap();
        // Account 1 is at its share: the next ones wait, up to 32 of them...
        let waiters: Vec<_> = (0..32)
            .map(|_| {
                let gate = Arc::clone(&gate);
                tokio::spawn(async move { gate.enter(&[id(1)]).await.map(drop) })
            })
            .collect();
        while gate.waiting(id(1)) < 32 {
            tokio::task::yield_now().await;
        }
        // ...and the 33rd is refused at once, as a pool with nothing to give.
        let refused = gate.enter(&[id(1)]).await.unwrap_err();
        assert!(matches!(refused, StoreError::Unavailable(_)));
        // Another account is not held up at all.
        drop(gate.enter(&[id(4), id(5)]).await.unwrap());
        // Passes given back: every waiter gets in, and the map empties.
        drop(first);
        drop(second);
        for waiter in waiters {
            waiter.await.unwrap().unwrap();
        }
        assert_eq!(gate.tracked(), 0);
    }

    #[tokio::test]
    async fn a_waiter_gives_up_after_the_acquire_timeout() {
        let gate = AccountGate::for_pool(4, Duration::from_millis(20));
        let held = gate.enter(&[id(7)]).await.unwrap();
        assert!(matches!(
            gate.enter(&[id(7)]).await.unwrap_err(),
            StoreError::Unavailable(_)
        ));
        drop(held);
        assert_eq!(gate.tracked(), 0);
    }
}
