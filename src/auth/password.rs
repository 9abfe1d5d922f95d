//! Password hashing with argon2id (the crate's defaults: 19 MiB, 2 passes, 1 lane — OWASP's
//! minimum recommendation), on a small pool of dedicated threads with a bounded queue.
//!
//! Why a pool of its own rather than `spawn_blocking`: each hash needs a 19 MiB block. With
//! `spawn_blocking`, a burst of logins ran one hash per blocking thread (up to 512 of them), so
//! memory grew with the burst — 64 concurrent logins held 4.5 GB — and it was not given back:
//! glibc serves a thread's allocations from per-thread arenas and, after the first large block
//! is freed, raises its mmap threshold so later blocks come from those arenas and stay there.
//! Here at most `PASSWORD_HASH_CONCURRENCY` hashes run at once, at most
//! `PASSWORD_HASH_QUEUE` more wait, and anything beyond is refused at once (`Busy`, answered
//! `unavailable` + `Retry-After`) before any hashing. Memory is bounded by construction, and
//! `tune_allocator` keeps large blocks on mmap so that what a hash frees goes back to the OS.
//!
//! The threads run at a lower scheduling priority (nice 10): on a small machine a flood of
//! logins must not take the CPU from money movement; hashing is what waits.

use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, LazyLock, Mutex};

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::domain::Password;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password hashing failed")]
    Hashing,
    #[error("the password hashing task did not complete")]
    Task,
    /// Every hashing thread is busy and the queue is full: refused before any work.
    #[error("password hashing is at capacity")]
    Busy,
}

/// How many hashes run at once and how many may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashLimits {
    /// `PASSWORD_HASH_CONCURRENCY`: threads, each hashing one password at a time.
    pub concurrency: usize,
    /// `PASSWORD_HASH_QUEUE`: requests that may wait for a thread; beyond, `Busy`.
    pub queue: usize,
}

impl Default for HashLimits {
    /// One thread per core, and a queue of four per thread (a few hundred milliseconds of work).
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            concurrency: cores,
            queue: 4 * cores,
        }
    }
}

type Job = Box<dyn FnOnce(&Argon2<'static>) + Send>;

/// The hashing pool: cheap to clone; the threads end when the last clone is dropped.
#[derive(Clone)]
pub struct Passwords {
    /// A place among the threads or in the queue: taken before the caller does any other work
    /// (a login's user look-up included), so that a refusal costs nothing but this check.
    places: Arc<Semaphore>,
    jobs: SyncSender<Job>,
}

/// A hash of a random password nobody knows, with the same parameters as real hashes, so that
/// checking an unknown username costs the same as a wrong password. One per process, made on
/// a hashing thread at its first use (not at start, and not once per pool).
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let mut random = [0u8; 32];
    // The OS CSPRNG; the result of checking against the dummy is discarded either way.
    let _ = getrandom::fill(&mut random);
    Argon2::default()
        .hash_password(&random)
        .map(|hash| hash.to_string())
        .unwrap_or_default()
});

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords").finish_non_exhaustive()
    }
}

impl Passwords {
    pub fn new(limits: HashLimits) -> Self {
        tune_allocator();
        let threads = limits.concurrency.max(1);
        // Room for every place, so a job whose caller holds a place is never refused here.
        let (jobs, queue) = mpsc::sync_channel::<Job>(threads + limits.queue);
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("password-hash-{n}"))
                .spawn(move || {
                    lower_priority();
                    let argon2 = Argon2::default();
                    loop {
                        // The lock is held only while waiting for the next job, not while hashing.
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(&argon2),
                            Err(_) => return, // every sender is gone
                        }
                    }
                })
                .expect("spawning a password hashing thread");
        }
        Self {
            places: Arc::new(Semaphore::new(threads + limits.queue)),
            jobs,
        }
    }

    /// A place for one hash, or `Busy` at once. Take it before any work the hash is for.
    pub fn place(&self) -> Result<HashPlace, PasswordError> {
        let permit = Arc::clone(&self.places)
            .try_acquire_owned()
            .map_err(|_| PasswordError::Busy)?;
        Ok(HashPlace {
            passwords: self.clone(),
            permit,
        })
    }

    /// Runs `work` on a hashing thread. The place is given back when the work is done, even if
    /// the caller stopped waiting: what is running or queued is what the place counts.
    async fn run<T: Send + 'static>(
        &self,
        place: OwnedSemaphorePermit,
        work: impl FnOnce(&Argon2<'static>) -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move |argon2| {
            let _ = done.send(work(argon2));
            drop(place);
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(PasswordError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(PasswordError::Task),
        }
        result.await.map_err(|_| PasswordError::Task)
    }

    /// A PHC string for a new password, with a fresh random salt (`place` then `hash`).
    pub async fn hash(&self, password: Password) -> Result<SecretString, PasswordError> {
        self.place()?.hash(password).await
    }

    /// Whether `password` matches `hash` (`place` then `verify`).
    pub async fn verify(
        &self,
        password: Password,
        hash: Option<SecretString>,
    ) -> Result<bool, PasswordError> {
        self.place()?.verify(password, hash).await
    }
}

/// A place taken for one hash (`Passwords::place`): spent by `hash` or `verify`, given back if
/// dropped unused.
pub struct HashPlace {
    passwords: Passwords,
    permit: OwnedSemaphorePermit,
}

impl HashPlace {
    /// A PHC string for a new password, with a fresh random salt.
    pub async fn hash(self, password: Password) -> Result<SecretString, PasswordError> {
        self.passwords
            .run(self.permit, move |argon2| {
                argon2
                    .hash_password(password.expose().as_bytes())
                    .map(|hash| SecretString::from(hash.to_string()))
                    .map_err(|_| PasswordError::Hashing)
            })
            .await?
    }

    /// Whether `password` matches `hash`. `None` (no such user) still costs one full
    /// verification against the dummy hash, so that a login for an unknown username takes as
    /// long as one with a wrong password and the response time does not reveal which usernames
    /// exist.
    ///
    /// A stored hash that is not a valid PHC string (the bank's own user has `!`) never matches.
    pub async fn verify(
        self,
        password: Password,
        hash: Option<SecretString>,
    ) -> Result<bool, PasswordError> {
        self.passwords
            .run(self.permit, move |argon2| match hash {
                Some(hash) => argon2
                    .verify_password(password.expose().as_bytes(), hash.expose_secret())
                    .is_ok(),
                None => {
                    let _ =
                        argon2.verify_password(password.expose().as_bytes(), DUMMY_HASH.as_str());
                    false
                }
            })
            .await
    }
}

impl Default for Passwords {
    fn default() -> Self {
        Self::new(HashLimits::default())
    }
}

/// Keeps blocks of 1 MiB and more on mmap, so that freeing one (an argon2 block is 19 MiB)
/// returns it to the OS at once. glibc's default threshold starts at 128 KiB but rises to the
/// size of the largest block freed (up to 32 MiB), after which such blocks come from arenas
/// that are rarely trimmed: that is how freed hashing memory stayed in the process. Setting the
/// threshold fixes it and turns the rise off. Process-wide and idempotent.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static TUNED: std::sync::Once = std::sync::Once::new();
        TUNED.call_once(|| {
            // SAFETY: mallopt only changes allocator parameters; any value is valid to pass.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
            }
        });
    }
}

/// `SCHED_IDLE` for the calling thread: it runs only on CPU time nothing else wants.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: sched_setscheduler on the calling thread (pid 0) with a valid parameter; failure
    // only leaves the thread's policy as it was.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn password(raw: &str) -> Password {
        Password::parse(raw).unwrap()
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_nothing_else() {
        let passwords = Passwords::default();
        let hash = passwords.hash(password("correct horse")).await.unwrap();
        assert!(hash.expose_secret().starts_with("$argon2id$"));
        assert!(!hash.expose_secret().contains("correct horse"));
        assert!(
            passwords
                .verify(password("correct horse"), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify(password("correct horsE"), Some(hash))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn the_same_password_hashes_differently_each_time() {
        let passwords = Passwords::default();
        let a = passwords.hash(password("same password")).await.unwrap();
        let b = passwords.hash(password("same password")).await.unwrap();
        assert_ne!(a.expose_secret(), b.expose_secret(), "salted");
    }

    #[tokio::test]
    async fn unknown_users_and_unusable_hashes_never_match() {
        let passwords = Passwords::default();
        assert!(!passwords.verify(password("whatever1"), None).await.unwrap());
        let bank = SecretString::from("!");
        assert!(
            !passwords
                .verify(password("whatever1"), Some(bank))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn beyond_the_threads_and_the_queue_a_request_is_refused_at_once() {
        let passwords = Passwords::new(HashLimits {
            concurrency: 1,
            queue: 1,
        });
        // Hold the one thread, then fill the one queue place.
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let (started, running) = oneshot::channel();
        let busy = {
            let place = passwords.place().unwrap().permit;
            let passwords = passwords.clone();
            tokio::spawn(async move {
                passwords
                    .run(place, move |_| {
                        let _ = started.send(());
                        let _ = hold.recv();
                    })
                    .await
            })
        };
        running.await.unwrap();
        // The thread is held; the queue's one place is taken by a caller still doing its
        // other work (a login looking its user up).
        let queued = passwords.place().unwrap();
        let refused = passwords.hash(password("one too many")).await;
        assert!(matches!(refused, Err(PasswordError::Busy)), "{refused:?}");
        assert!(passwords.place().is_err(), "refused before any work");
        release.send(()).unwrap();
        busy.await.unwrap().unwrap();
        assert!(queued.hash(password("queued one")).await.is_ok());
        // Free again: work is accepted.
        assert!(passwords.hash(password("after the burst")).await.is_ok());
    }
}
