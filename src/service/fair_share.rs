//! Each authenticated user's fair share of the server: at most `concurrent` requests in
//! progress at once and `per_second` requests a second (a token bucket holding one second's
//! worth), on both APIs together (SPEC §10). Beyond either, `rate_limited` (429 /
//! RESOURCE_EXHAUSTED) with `Retry-After`, at once: the check is a map lookup under a mutex,
//! before the request takes a pool connection, a row lock or an idempotency record.
//!
//! It is taken where the access token is verified (`BankService::authenticate`), so no
//! authenticated operation can skip it, and held by the `Principal` until the request's handler
//! returns. A stream (SSE, `WatchAccount`) counts when it opens, not while it runs: streams have
//! their own bounds.
//!
//! The anonymous routes that cost the server work (sign-up hashes a password, email verification
//! reads the database) get the same kind of share per client address
//! (`ANONYMOUS_REQUESTS_PER_SECOND`): the key is the caller, whoever that is.
//!
//! The map forgets a key once it has nothing in progress and a full bucket, so it holds the
//! callers active in about the last second, not everyone who ever called.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ServiceError;
use crate::domain::Username;

/// `USER_MAX_CONCURRENT_REQUESTS` and `USER_REQUESTS_PER_SECOND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserLimits {
    /// Requests of one user in progress at once; default 32.
    pub concurrent: usize,
    /// Requests of one user a second, with bursts of up to as many at once; default 200.
    pub per_second: u32,
}

impl Default for UserLimits {
    fn default() -> Self {
        Self {
            concurrent: 32,
            per_second: 200,
        }
    }
}

/// Sign-ups and email verifications a second from one client address, by default.
pub const ANONYMOUS_REQUESTS_PER_SECOND: u32 = 20;

impl UserLimits {
    /// The anonymous routes' share of one address: `per_second` a second, as many at once.
    pub fn anonymous(per_second: u32) -> Self {
        Self {
            concurrent: per_second as usize,
            per_second,
        }
    }
}

/// Past this many users in the map, idle ones are forgotten before a new one is added.
const TRACKED: usize = 10_000;

#[derive(Debug)]
struct Share {
    slots: Arc<Semaphore>,
    tokens: f64,
    refilled: Instant,
}

/// The shares; clones share the map.
#[derive(Debug, Clone)]
pub struct FairShares {
    limits: UserLimits,
    users: Arc<Mutex<HashMap<String, Share>>>,
}

/// One request's place in its user's share, given back when dropped.
pub type ShareSlot = OwnedSemaphorePermit;

impl FairShares {
    pub fn new(limits: UserLimits) -> Self {
        Self {
            limits: UserLimits {
                concurrent: limits.concurrent.max(1),
                per_second: limits.per_second.max(1),
            },
            users: Arc::default(),
        }
    }

    /// A place for one more request of `user`, or `rate_limited` with when to try again.
    pub fn admit(&self, user: &Username) -> Result<ShareSlot, ServiceError> {
        self.admit_key(user.as_str())
    }

    /// `admit` for any caller key (a client address, for the anonymous routes).
    pub fn admit_key(&self, key: &str) -> Result<ShareSlot, ServiceError> {
        let now = Instant::now();
        let rate = f64::from(self.limits.per_second);
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if users.len() >= TRACKED && !users.contains_key(key) {
            let concurrent = self.limits.concurrent;
            users.retain(|_, share| {
                Self::refill(share, now, rate);
                share.slots.available_permits() < concurrent || share.tokens < rate
            });
        }
        let share = users.entry(key.to_owned()).or_insert_with(|| Share {
            slots: Arc::new(Semaphore::new(self.limits.concurrent)),
            tokens: rate,
            refilled: now,
        });
        Self::refill(share, now, rate);
        if share.tokens < 1.0 {
            return Err(ServiceError::RateLimited {
                retry_after: Duration::from_secs_f64((1.0 - share.tokens) / rate),
            });
        }
        let slot = Arc::clone(&share.slots).try_acquire_owned().map_err(|_| {
            ServiceError::RateLimited {
                // A slot frees when one of the user's own requests ends: soon.
                retry_after: Duration::from_secs(1),
            }
        })?;
        share.tokens -= 1.0;
        Ok(slot)
    }

    fn refill(share: &mut Share, now: Instant, rate: f64) {
        let elapsed = now.saturating_duration_since(share.refilled).as_secs_f64();
        share.tokens = (share.tokens + elapsed * rate).min(rate);
        share.refilled = now;
    }

    /// Users in the map now (tests).
    pub fn tracked(&self) -> usize {
        self.users.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// At most `max` long-lived places (event streams) per user; the map holds only users with a
/// place taken, so it is bounded by the places open.
#[derive(Debug, Clone)]
pub struct PerUserPlaces {
    max: usize,
    taken: Arc<Mutex<HashMap<Username, usize>>>,
}

/// One place, given back when dropped.
#[derive(Debug)]
pub struct UserPlace {
    places: PerUserPlaces,
    user: Username,
}

impl PerUserPlaces {
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            taken: Arc::default(),
        }
    }

    /// A place for `user`, or `None` when they hold `max` already.
    pub fn take(&self, user: &Username) -> Option<UserPlace> {
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        let count = taken.entry(user.clone()).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(UserPlace {
            places: self.clone(),
            user: user.clone(),
        })
    }
}

impl Drop for UserPlace {
    fn drop(&mut self) {
        let mut taken = self.places.taken.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = taken.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                taken.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Username {
        Username::parse(name).unwrap()
    }

    #[test]
    fn a_user_past_their_concurrent_share_is_refused_and_others_are_not() {
        let shares = FairShares::new(UserLimits {
            concurrent: 2,
            per_second: 1000,
        });
        let (alice, bob) = (user("alice"), user("bob"));
        let first = shares.admit(&alice).unwrap();
        let _second = shares.admit(&alice).unwrap();
        let refused = shares.admit(&alice).unwrap_err();
        assert_eq!(refused.code().as_str(), "rate_limited");
        assert_eq!(refused.retry_after_secs(), Some(1));
        assert!(shares.admit(&bob).is_ok(), "another user is not touched");
        drop(first);
        assert!(
            shares.admit(&alice).is_ok(),
            "a slot given back is free again"
        );
    }

    #[test]
    fn a_user_past_their_rate_waits_for_the_bucket_to_refill() {
        let shares = FairShares::new(UserLimits {
            concurrent: 100,
            per_second: 5,
        });
        let alice = user("alice");
        for _ in 0..5 {
            drop(shares.admit(&alice).unwrap());
        }
        let refused = shares.admit(&alice).unwrap_err();
        assert_eq!(refused.code().as_str(), "rate_limited");
        assert_eq!(refused.retry_after_secs(), Some(1));
        assert!(shares.admit(&user("bob")).is_ok());
    }

    #[test]
    fn idle_users_are_forgotten_once_the_map_is_full() {
        let shares = FairShares::new(UserLimits::default());
        for n in 0..TRACKED {
            drop(shares.admit(&user(&format!("u{n:05}"))).unwrap());
        }
        assert_eq!(shares.tracked(), TRACKED);
        // Each spent one token; a moment later their buckets are full again and they are idle.
        std::thread::sleep(Duration::from_millis(20));
        let _busy = shares.admit(&user("late")).unwrap();
        assert!(shares.tracked() < 10, "{}", shares.tracked());
    }

    #[test]
    fn places_per_user_are_bounded_and_given_back() {
        let places = PerUserPlaces::new(2);
        let (alice, bob) = (user("alice"), user("bob"));
        let first = places.take(&alice).unwrap();
        let _second = places.take(&alice).unwrap();
        assert!(places.take(&alice).is_none());
        assert!(places.take(&bob).is_some());
        drop(first);
        assert!(places.take(&alice).is_some());
        drop(_second);
        assert_eq!(places.taken.lock().unwrap().len(), 0, "no user left behind");
    }
}
