//! Email verification in the store, and the outbox worker that delivers the emails.

use simplebank::store::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use simplebank::domain::{Email, UserUpdate, VerificationCode, VerifyOutcome};
use simplebank::mail::{MailError, MailSender, OutboxSettings, OutboxWorker, OutgoingEmail, Round};
use simplebank::store::Store;

use crate::helpers::{TestDb, create_user, username, verification};

mockall::mock! {
    pub Sender {}
    #[async_trait]
    impl MailSender for Sender {
        async fn send(&self, email: &OutgoingEmail) -> Result<(), MailError>;
    }
}

/// Fast retries, so a test does not wait out production backoffs.
fn quick() -> OutboxSettings {
    OutboxSettings {
        backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(40),
        max_attempts: 3,
        link_base: "https://bank.example".into(),
        ..OutboxSettings::default()
    }
}

#[derive(Debug, sqlx::FromRow)]
struct OutboxRow {
    attempts: i32,
    secret_code: Option<String>,
    sent: bool,
    abandoned: bool,
    last_error: Option<String>,
}

async fn outbox(store: &Store) -> Vec<OutboxRow> {
    sqlx::query_as(
        "SELECT attempts, secret_code, sent_at IS NOT NULL AS sent, \
                abandoned_at IS NOT NULL AS abandoned, last_error \
         FROM email_outbox ORDER BY id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
}

/// The id and code of `user`'s newest verification, read from its still-pending outbox row.
async fn pending_code(store: &Store, user: &str) -> (i64, VerificationCode) {
    let (id, code): (i64, String) = sqlx::query_as(
        "SELECT v.id, o.secret_code FROM verify_emails v \
         JOIN email_outbox o ON o.verify_email_id = v.id \
         WHERE v.username = $1 ORDER BY v.id DESC LIMIT 1",
    )
    .bind(user)
    .fetch_one(store.pool())
    .await
    .unwrap();
    (id, VerificationCode::parse(&code).unwrap())
}

/// Runs rounds until nothing is pending (sent or given up).
async fn run_until_idle(worker: &OutboxWorker, store: &Store) -> Round {
    let mut total = Round::default();
    for _ in 0..50 {
        let round = worker.deliver_due().await.unwrap();
        total.claimed += round.claimed;
        total.sent += round.sent;
        total.retrying += round.retrying;
        total.abandoned += round.abandoned;
        let pending: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM email_outbox WHERE sent_at IS NULL AND abandoned_at IS NULL",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        if pending == 0 {
            return total;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the outbox never drained: {total:?}")
}

fn worker(
    store: &Store,
    sender: impl MailSender + 'static,
    settings: OutboxSettings,
) -> OutboxWorker {
    OutboxWorker::new(store.clone(), Arc::new(sender), settings)
}

#[tokio::test]
async fn signing_up_stores_the_user_its_verification_and_the_queued_email_together() {
    let db = TestDb::new().await;
    create_user(&db.store, "alice").await;
    let rows = outbox(&db.store).await;
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].sent && rows[0].attempts == 0);
    let (id, code) = pending_code(&db.store, "alice").await;
    let stored_hash: String =
        sqlx::query_scalar("SELECT secret_code_hash FROM verify_emails WHERE id = $1")
            .bind(id)
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(
        stored_hash,
        code.hash(),
        "only the hash is kept beside the user"
    );

    // A refused sign-up (taken username) leaves no verification and no email behind.
    let duplicate = simplebank::domain::NewUser {
        username: username("alice"),
        hashed_password: secrecy::SecretString::from("x"),
        full_name: simplebank::domain::FullName::parse("Alice Two").unwrap(),
        email: Email::parse("other@example.com").unwrap(),
        role: simplebank::domain::Role::Depositor,
    };
    assert!(
        db.store
            .create_user(&duplicate, &verification())
            .await
            .is_err()
    );
    assert_eq!(outbox(&db.store).await.len(), 1);
    let verifications: i64 = sqlx::query_scalar("SELECT count(*) FROM verify_emails")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(verifications, 1);
}

#[tokio::test]
async fn the_worker_sends_the_link_and_then_forgets_the_code() {
    let db = TestDb::new().await;
    create_user(&db.store, "alice").await;
    let (id, code) = pending_code(&db.store, "alice").await;
    let link = format!(
        "https://bank.example/v1/verify_email?email_id={id}&secret_code={}",
        code.expose()
    );
    let mut sender = MockSender::new();
    sender
        .expect_send()
        .times(1)
        .withf(move |email| email.to.as_str() == "alice@example.com" && email.body.contains(&link))
        .returning(|_| Ok(()));
    let round = run_until_idle(&worker(&db.store, sender, quick()), &db.store).await;
    assert_eq!((round.claimed, round.sent), (1, 1));
    let rows = outbox(&db.store).await;
    assert!(rows[0].sent && rows[0].secret_code.is_none() && rows[0].last_error.is_none());
}

#[tokio::test]
async fn a_failing_sender_leaves_the_email_queued_and_it_is_retried() {
    let db = TestDb::new().await;
    create_user(&db.store, "alice").await;
    let mut sender = MockSender::new();
    let mut seq = mockall::Sequence::new();
    sender
        .expect_send()
        .times(2)
        .in_sequence(&mut seq)
        .returning(|_| Err(MailError::transient("421 try again later")));
    sender
        .expect_send()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    let settings = OutboxSettings {
        backoff: Duration::from_millis(300),
        max_backoff: Duration::from_millis(300),
        ..quick()
    };
    let w = worker(&db.store, sender, settings);

    // The first attempt fails: the row stays, with the error and a later retry time.
    let first = w.deliver_due().await.unwrap();
    assert_eq!((first.claimed, first.retrying), (1, 1));
    let rows = outbox(&db.store).await;
    assert!(!rows[0].sent && !rows[0].abandoned && rows[0].secret_code.is_some());
    assert_eq!(rows[0].last_error.as_deref(), Some("421 try again later"));
    // Not due again at once: the backoff holds it back.
    assert_eq!(w.deliver_due().await.unwrap().claimed, 0);

    let rest = run_until_idle(&w, &db.store).await;
    assert_eq!((rest.retrying, rest.sent), (1, 1));
    let rows = outbox(&db.store).await;
    assert!(rows[0].sent);
    assert_eq!(rows[0].attempts, 3);
}

#[tokio::test]
async fn permanent_refusals_too_many_failures_and_expired_codes_are_given_up() {
    let db = TestDb::new().await;
    for user in ["alice", "bob", "carol"] {
        create_user(&db.store, user).await;
    }
    // Carol's code expired before any worker got to it.
    sqlx::query(
        "UPDATE verify_emails SET expired_at = now() - interval '1 second' WHERE username = 'carol'",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let mut sender = MockSender::new();
    sender
        .expect_send()
        .withf(|email| email.to.as_str() == "alice@example.com")
        .times(1)
        .returning(|_| Err(MailError::permanent("550 no such mailbox")));
    sender
        .expect_send()
        .withf(|email| email.to.as_str() == "bob@example.com")
        .times(3)
        .returning(|_| Err(MailError::transient("connection reset")));
    let round = run_until_idle(&worker(&db.store, sender, quick()), &db.store).await;
    assert_eq!(round.abandoned, 3);
    for row in outbox(&db.store).await {
        assert!(
            row.abandoned && !row.sent && row.secret_code.is_none(),
            "{row:?}"
        );
    }
}

/// A sender that records every email and takes a while, so concurrent workers overlap.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

#[async_trait]
impl MailSender for Recorder {
    async fn send(&self, email: &OutgoingEmail) -> Result<(), MailError> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.0.lock().unwrap().push(email.to.as_str().to_owned());
        Ok(())
    }
}

#[tokio::test]
async fn two_workers_never_send_the_same_email_twice() {
    let db = TestDb::with_pool_size(8).await;
    let users: Vec<String> = (0..30).map(|n| format!("user{n:02}")).collect();
    for user in &users {
        create_user(&db.store, user).await;
    }
    let sent = Recorder::default();
    let settings = OutboxSettings {
        batch: 4,
        ..quick()
    };
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let w = OutboxWorker::new(db.store.clone(), Arc::new(sent.clone()), settings.clone());
            tokio::spawn(async move {
                let mut claimed = 0;
                loop {
                    let round = w.deliver_due().await.unwrap();
                    if round.claimed == 0 {
                        return claimed;
                    }
                    claimed += round.claimed;
                }
            })
        })
        .collect();
    let mut per_worker = Vec::new();
    for w in workers {
        per_worker.push(w.await.unwrap());
    }
    let sent = sent.0.lock().unwrap().clone();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for to in &sent {
        *counts.entry(to.as_str()).or_default() += 1;
    }
    assert_eq!(sent.len(), 30, "{per_worker:?}");
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    assert!(
        per_worker.iter().all(|&n| n > 0),
        "both workers took part: {per_worker:?}"
    );
}

#[tokio::test]
async fn a_code_verifies_once_and_every_other_attempt_says_why_it_failed() {
    let db = TestDb::new().await;
    create_user(&db.store, "alice").await;
    let (id, code) = pending_code(&db.store, "alice").await;

    let wrong = VerificationCode::generate();
    assert_eq!(
        db.store.verify_email(id, &wrong).await.unwrap(),
        VerifyOutcome::WrongCode
    );
    assert_eq!(
        db.store.verify_email(id + 1_000, &code).await.unwrap(),
        VerifyOutcome::NotFound
    );
    assert!(
        !db.store
            .get_user(&username("alice"))
            .await
            .unwrap()
            .is_email_verified
    );

    assert_eq!(
        db.store.verify_email(id, &code).await.unwrap(),
        VerifyOutcome::Verified
    );
    assert!(
        db.store
            .get_user(&username("alice"))
            .await
            .unwrap()
            .is_email_verified
    );
    assert_eq!(
        db.store.verify_email(id, &code).await.unwrap(),
        VerifyOutcome::Used
    );

    create_user(&db.store, "bob").await;
    let (bob_id, bob_code) = pending_code(&db.store, "bob").await;
    sqlx::query("UPDATE verify_emails SET expired_at = now() - interval '1 second' WHERE id = $1")
        .bind(bob_id)
        .execute(db.pool())
        .await
        .unwrap();
    assert_eq!(
        db.store.verify_email(bob_id, &bob_code).await.unwrap(),
        VerifyOutcome::Expired
    );
    assert!(
        !db.store
            .get_user(&username("bob"))
            .await
            .unwrap()
            .is_email_verified
    );
}

#[tokio::test]
async fn a_new_address_needs_its_own_verification_and_voids_the_old_one() {
    let db = TestDb::new().await;
    create_user(&db.store, "alice").await;
    let (old_id, old_code) = pending_code(&db.store, "alice").await;

    // A change of letter case is the same address: no new verification.
    let same = UserUpdate {
        email: Some(Email::parse("ALICE@example.com").unwrap()),
        ..Default::default()
    };
    db.store
        .update_user(&username("alice"), &same, &verification())
        .await
        .unwrap();
    assert_eq!(outbox(&db.store).await.len(), 1);

    let moved = UserUpdate {
        email: Some(Email::parse("alice@elsewhere.org").unwrap()),
        ..Default::default()
    };
    let user = db
        .store
        .update_user(&username("alice"), &moved, &verification())
        .await
        .unwrap();
    assert!(!user.is_email_verified);
    let rows = outbox(&db.store).await;
    assert_eq!(rows.len(), 2);
    assert!(
        rows[0].abandoned && rows[0].secret_code.is_none(),
        "the old email is not sent"
    );
    assert!(!rows[1].abandoned && rows[1].secret_code.is_some());

    // The old code, still unused, no longer verifies anything.
    assert_eq!(
        db.store.verify_email(old_id, &old_code).await.unwrap(),
        VerifyOutcome::Superseded
    );
    assert!(
        !db.store
            .get_user(&username("alice"))
            .await
            .unwrap()
            .is_email_verified
    );
    let (new_id, new_code) = pending_code(&db.store, "alice").await;
    assert_ne!(new_id, old_id);
    assert_eq!(
        db.store.verify_email(new_id, &new_code).await.unwrap(),
        VerifyOutcome::Verified
    );
    let user = db.store.get_user(&username("alice")).await.unwrap();
    assert!(user.is_email_verified);
    assert_eq!(user.email.as_str(), "alice@elsewhere.org");
}
