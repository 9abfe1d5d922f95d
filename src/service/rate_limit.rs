//! Login throttling: a token bucket per client address and one per username.
//!
//! Logging in is the one operation a stranger can repeat at will that costs the server real work
//! (an argon2 hash) and can guess a password. Two limits, both checked **before** the password
//! is hashed, so a flood costs a map look-up rather than a hash:
//!
//! - per client address, every attempt takes a token: one machine cannot hammer the endpoint;
//! - per username, only *failed* attempts take a token: guessing one user's password is slow
//!   from any number of addresses, while the user, who knows the password, is not locked out by
//!   their own successful logins.
//!
//! Both apply to usernames that do not exist exactly as to those that do, so a refusal reveals
//! nothing about which usernames exist. A refused attempt says when to come back (`Retry-After`).
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
    /// `LOGIN_FAILURES_PER_USERNAME`: failed attempts for one username, from anywhere.
    pub per_username: u32,
}

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
    per_username: Option<Buckets>,
}

impl LoginLimiter {
    pub fn new(limits: LoginLimits) -> Self {
        Self {
            per_ip: Buckets::per_minute(limits.per_ip),
            per_username: Buckets::per_minute(limits.per_username),
        }
    }

    /// Before an attempt: takes the address's token and checks the username still has one.
    /// `Err` is how long to wait.
    pub fn admit(&self, client_ip: &str, username: &str) -> Result<(), Duration> {
        self.admit_username(username)?;
        match &self.per_ip {
            Some(buckets) => buckets.take(client_ip, Instant::now()),
            None => Ok(()),
        }
    }

    /// Checks that the username still has a failure token (takes none). Alone, before
    /// re-authenticating a logged-in caller (changing its password or email): a request with a
    /// token is not a stranger's login, so its address pays nothing.
    pub fn admit_username(&self, username: &str) -> Result<(), Duration> {
        let wait = self
            .per_username
            .as_ref()
            .and_then(|b| b.wait(&username.to_ascii_lowercase(), Instant::now()));
        wait.map_or(Ok(()), Err)
    }

    /// After a failed attempt: the username pays for it.
    pub fn failed(&self, username: &str) {
        if let Some(buckets) = &self.per_username {
            // Already empty is fine: the next attempt will be refused either way.
            let _ = buckets.take(&username.to_ascii_lowercase(), Instant::now());
        }
    }
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
    fn only_failures_count_against_a_username_whatever_the_address() {
        let limiter = LoginLimiter::new(LoginLimits {
            per_ip: 0,
            per_username: 2,
        });
        for _ in 0..5 {
            limiter.admit("10.0.0.1", "alice").unwrap();
        }
        limiter.failed("alice");
        limiter.failed("ALICE");
        assert!(limiter.admit("10.0.0.9", "Alice").is_err());
        limiter.admit("10.0.0.9", "bob").unwrap();
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
            limiter.admit("10.0.0.1", "alice").unwrap();
            limiter.failed("alice");
        }
    }
}
