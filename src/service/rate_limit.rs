//! Login throttling, lock-out proof (SPEC §10).
//!
//! Logging in is the one operation a stranger can repeat at will that costs the server real work
//! (an argon2 hash) and can guess a password. Three limits, all checked **before** the password
//! is hashed, so a flood costs a map look-up rather than a hash:
//!
//! - per client address, every attempt takes a token: one machine cannot hammer the endpoint;
//! - per username *and* client address, only *failed* attempts take a token: one address that
//!   keeps guessing one user's password is refused (429) — and only that address: the owner,
//!   from their own address, is not locked out by a stranger's failures;
//! - per username, from anywhere, failed attempts take a token too, and a username whose bucket
//!   is empty is *slowed*, never closed: each attempt on it waits `UNDER_ATTACK_DELAY` first.
//!   Guessing from many addresses gets slower; the owner's correct password still works.
//!
//! Re-authentication of a logged-in caller (a password or email change) counts its failures per
//! username and session instead of per address: a stolen token's guesses lock that session out
//! of re-authenticating, not the owner out of logging in.
//!
//! All of it applies to usernames that do not exist exactly as to those that do, so no answer
//! reveals which usernames exist. A refused attempt says when to come back (`Retry-After`).
//!
//! The buckets live in this process. Behind several replicas each one limits on its own, so the
//! effective limit is the configured one times the replicas; that is the trade for needing no
//! shared store on the login path.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Attempts per minute, by client address and by username; 0 turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// `LOGIN_ATTEMPTS_PER_IP`: every login attempt from one address.
    pub per_ip: u32,
    /// `LOGIN_FAILURES_PER_USERNAME`: failed attempts for one username from one address (past
    /// it, that address is refused for that username), and from anywhere (past it, every
    /// attempt on that username is slowed by `UNDER_ATTACK_DELAY`).
    pub per_username: u32,
}

/// How long each attempt on a username under attack waits before it is checked: bounded, so the
/// owner still gets in, and long enough that guessing from many addresses stays slow.
pub const UNDER_ATTACK_DELAY: Duration = Duration::from_secs(1);

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            per_ip: 30,
            per_username: 10,
        }
    }
}

/// How many keys a bucket set tracks before it forgets the idle ones.
const SWEEP_AT: usize = 10_000;
/// The most keys tracked at all: beyond, new keys go unlimited until the set shrinks, rather than
/// letting an attacker with many addresses grow the map without bound.
const MAX_KEYS: usize = 100_000;

/// Token buckets of `capacity`, refilled at `capacity` per minute, by key.
#[derive(Debug)]
struct Buckets {
    capacity: f64,
    per_second: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Buckets {
    fn per_minute(n: u32) -> Option<Self> {
        (n > 0).then(|| Self {
            capacity: f64::from(n),
            per_second: f64::from(n) / 60.0,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> Bucket {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        Bucket {
            tokens: (bucket.tokens + elapsed * self.per_second).min(self.capacity),
            at: now,
        }
    }

    /// How long until `key` has a token, or `None` if it has one now.
    fn wait(&self, key: &str, now: Instant) -> Option<Duration> {
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = self.refilled(*buckets.get(key)?, now);
        (bucket.tokens < 1.0)
            .then(|| Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_second))
    }

    /// Takes a token from `key`'s bucket; `Err` says how long until one is there.
    fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= SWEEP_AT && !buckets.contains_key(key) {
            // Forget keys whose bucket has filled up again: they are as good as new.
            let (capacity, per_second) = (self.capacity, self.per_second);
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_second < capacity
            });
            if buckets.len() >= MAX_KEYS {
                return Ok(());
            }
        }
        let full = Bucket {
            tokens: self.capacity,
            at: now,
        };
        let bucket = buckets.entry(key.to_owned()).or_insert(full);
        *bucket = self.refilled(*bucket, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }
}

/// The login limits of one server process.
#[derive(Debug)]
pub struct LoginLimiter {
    per_ip: Option<Buckets>,
    /// Failures by `username|address` (or `username|session:id` for re-authentication).
    per_pair: Option<Buckets>,
    /// Failures by username from anywhere: an empty bucket slows, never refuses.
    per_username: Option<Buckets>,
}

impl LoginLimiter {
    pub fn new(limits: LoginLimits) -> Self {
        Self {
            per_ip: Buckets::per_minute(limits.per_ip),
            per_pair: Buckets::per_minute(limits.per_username),
            per_username: Buckets::per_minute(limits.per_username),
        }
    }

    /// Before a login attempt from `client_ip`: `Ok` with how long to wait first (zero, or
    /// `UNDER_ATTACK_DELAY` for a username under attack), or `Err` with how long until this
    /// address may try again.
    pub fn admit(&self, client_ip: &str, username: &str) -> Result<Duration, Duration> {
        self.admit_pair(username, client_ip)?;
        if let Some(buckets) = &self.per_ip {
            buckets.take(client_ip, Instant::now())?;
        }
        Ok(self.slowdown(username))
    }

    /// Before re-authenticating a logged-in caller (changing its password or email), in their
    /// session `session`: a request with a token is not a stranger's login, so no address pays.
    pub fn admit_reauth(&self, username: &str, session: &str) -> Result<Duration, Duration> {
        self.admit_pair(username, &format!("session:{session}"))?;
        Ok(self.slowdown(username))
    }

    /// After a failed attempt from `from` (the client address, or `session:id`).
    pub fn failed(&self, username: &str, from: &str) {
        let now = Instant::now();
        let username = username.to_ascii_lowercase();
        // Already empty is fine: the next attempt will be refused or slowed either way.
        if let Some(buckets) = &self.per_pair {
            let _ = buckets.take(&pair(&username, from), now);
        }
        if let Some(buckets) = &self.per_username {
            let _ = buckets.take(&username, now);
        }
    }

    /// `failed` for a re-authentication in session `session`.
    pub fn failed_reauth(&self, username: &str, session: &str) {
        self.failed(username, &format!("session:{session}"));
    }

    fn admit_pair(&self, username: &str, from: &str) -> Result<(), Duration> {
        let key = pair(&username.to_ascii_lowercase(), from);
        match self
            .per_pair
            .as_ref()
            .and_then(|b| b.wait(&key, Instant::now()))
        {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    fn slowdown(&self, username: &str) -> Duration {
        let under_attack = self
            .per_username
            .as_ref()
            .and_then(|b| b.wait(&username.to_ascii_lowercase(), Instant::now()))
            .is_some();
        if under_attack {
            UNDER_ATTACK_DELAY
        } else {
            Duration::ZERO
        }
    }
}

fn pair(username: &str, from: &str) -> String {
    format!("{username}|{from}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_burst_then_waits_for_the_refill() {
        let limiter = LoginLimiter::new(LoginLimits {
            per_ip: 3,
            per_username: 0,
        });
        for _ in 0..3 {
            limiter.admit("10.0.0.1", "alice").unwrap();
        }
        let wait = limiter.admit("10.0.0.1", "bob").unwrap_err();
        // 3 per minute: a token every 20 s.
        assert!(
            wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        limiter.admit("10.0.0.2", "alice").unwrap();
    }

    #[test]
    fn a_strangers_failures_refuse_their_address_and_only_slow_the_owner() {
        let limiter = LoginLimiter::new(LoginLimits {
            per_ip: 0,
            per_username: 2,
        });
        // Successes cost nothing.
        for _ in 0..5 {
            assert_eq!(limiter.admit("10.0.0.1", "alice"), Ok(Duration::ZERO));
        }
        limiter.failed("alice", "10.0.0.66");
        limiter.failed("ALICE", "10.0.0.66");
        // The guessing address is refused, whatever the case of the name...
        assert!(limiter.admit("10.0.0.66", "Alice").is_err());
        // ...the owner's address is let in, slowed; other users are not touched.
        assert_eq!(limiter.admit("10.0.0.1", "alice"), Ok(UNDER_ATTACK_DELAY));
        assert_eq!(limiter.admit("10.0.0.66", "bob"), Ok(Duration::ZERO));
        // A stolen session's failed re-authentications lock that session, not the owner.
        limiter.failed_reauth("bob", "s1");
        limiter.failed_reauth("bob", "s1");
        assert!(limiter.admit_reauth("bob", "s1").is_err());
        assert_eq!(limiter.admit_reauth("bob", "s2"), Ok(UNDER_ATTACK_DELAY));
        assert_eq!(limiter.admit("10.0.0.1", "bob"), Ok(UNDER_ATTACK_DELAY));
    }

    #[test]
    fn buckets_refill_with_time() {
        let buckets = Buckets::per_minute(60).unwrap();
        let start = Instant::now();
        for _ in 0..60 {
            buckets.take("k", start).unwrap();
        }
        assert!(buckets.take("k", start).is_err());
        buckets.take("k", start + Duration::from_secs(1)).unwrap();
    }

    #[test]
    fn idle_keys_are_forgotten_and_the_map_stays_bounded() {
        let buckets = Buckets::per_minute(1).unwrap();
        let start = Instant::now();
        for i in 0..SWEEP_AT {
            buckets.take(&i.to_string(), start).unwrap();
        }
        // A minute later every bucket is full again, so the sweep forgets them all.
        buckets
            .take("new", start + Duration::from_secs(61))
            .unwrap();
        assert_eq!(buckets.buckets.lock().unwrap().len(), 1);
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let limiter = LoginLimiter::new(LoginLimits {
            per_ip: 0,
            per_username: 0,
        });
        for _ in 0..1_000 {
            assert_eq!(limiter.admit("10.0.0.1", "alice"), Ok(Duration::ZERO));
            limiter.failed("alice", "10.0.0.1");
        }
    }
}
