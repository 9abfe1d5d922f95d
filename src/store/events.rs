//! The event log (`events`, written by triggers: see the migration `events`) and the webhook
//! tables: what the stream hub, the webhook fan-out and the delivery worker read and write.
//!
//! ## The horizon: reading an id-ordered log that commits out of order
//!
//! Event ids come from an identity, drawn before commit: transaction A may draw 7, B draw 8, and
//! B commit first. A reader that saw 8 and moved its cursor past it would never see 7. So
//! readers only read up to a **horizon** `h` below which every id is final — committed, or
//! rolled back and never to appear. `probe_horizon` gives the raw material, in one round trip of
//! two statements:
//!
//! 1. `L`, the last id drawn so far;
//! 2. `Y`, a transaction id assigned to the probe itself *after* reading `L` (xids are handed
//!    out in increasing order), and the oldest transaction still running (the snapshot's xmin).
//!
//! Every id up to `L` was drawn by a transaction that already had a transaction id (events are
//! only inserted by triggers, after the write that fired them), which is therefore below `Y`.
//! Once a later probe finds its xmin at or above `Y`, all of those transactions have ended, and
//! `L` is a horizon. `events::Horizon` keeps the pairs until they qualify.
//!
//! Why not the snapshot's xmax as the bound: it is one past the last *completed* xid, and a
//! transaction that got its xid later but is still running is not below it — the concurrency
//! test `a_watcher_sees_every_event_of_its_account_once_in_order_under_concurrent_load` lost
//! events exactly that way. The probe's own xid costs a commit record without a WAL flush.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{Entity, Store, StoreError, decode};
use crate::domain::{AccountId, Username};

/// One committed event. `data` is the resource's JSON, as the database wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: i64,
    pub kind: String,
    pub account_id: Option<i64>,
    pub counter_account_id: Option<i64>,
    pub data: String,
    pub created_at: DateTime<Utc>,
}

impl Event {
    /// Whether watching `account` shows this event.
    pub fn concerns(&self, account: AccountId) -> bool {
        self.account_id == Some(account.get()) || self.counter_account_id == Some(account.get())
    }

    /// The event as streams and webhooks send it: `{"id", "type", "timestamp", "data"}`.
    pub fn to_json(&self) -> String {
        format!(
            r#"{{"id":{},"type":"{}","timestamp":"{}","data":{}}}"#,
            self.id,
            self.kind,
            self.timestamp(),
            self.data
        )
    }

    /// RFC 3339, UTC, microseconds (as the data's own timestamps).
    pub fn timestamp(&self) -> String {
        self.created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    }
}

/// What one horizon probe saw (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HorizonProbe {
    /// The last event id drawn (0 before the first).
    pub last_drawn: i64,
    /// The oldest transaction still running when the second statement began.
    pub xmin: i64,
    /// The probe's own transaction id, assigned after `last_drawn` was read.
    pub probe_xid: i64,
}

/// The columns `event_from_row` reads (macros, so the queries stay `&'static str`).
macro_rules! event_columns {
    () => {
        "id, type, account_id, counter_account_id, event_data(data, transfer_id)::text AS data, \
         created_at"
    };
}

fn event_from_row(row: &PgRow) -> Result<Event, StoreError> {
    Ok(Event {
        id: row.try_get("id")?,
        kind: row.try_get("type")?,
        account_id: row.try_get("account_id")?,
        counter_account_id: row.try_get("counter_account_id")?,
        data: row.try_get("data")?,
        created_at: row.try_get("created_at")?,
    })
}

/// A webhook endpoint as bankers see it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    pub id: i64,
    pub url: String,
    /// Empty: every type.
    pub event_types: Vec<String>,
    pub description: String,
    pub created_by: Username,
    pub created_at: DateTime<Utc>,
}

/// What signs deliveries to one endpoint: its salt, and during a rotation the previous one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningSalts {
    pub current: Vec<u8>,
    pub previous: Option<Vec<u8>>,
}

/// One claimed delivery: the attempt number is what the worker settles, so a worker whose
/// lease ran out cannot overwrite a later attempt's outcome.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub delivery_id: i64,
    pub attempt: i32,
    pub url: String,
    pub salts: SigningSalts,
    pub event: Event,
    /// When the delivery was queued: retries stop `WEBHOOK_RETRY_FOR` after it.
    pub queued_at: DateTime<Utc>,
    /// The endpoint was deleted since: the delivery is dropped, not sent.
    pub endpoint_deleted: bool,
}

/// One attempt, as the delivery log shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryAttempt {
    pub delivery_id: i64,
    pub event_id: i64,
    pub event_type: String,
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    /// `delivered`, `failed` or `retrying` (the delivery's state now).
    pub delivery_status: &'static str,
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptOutcome {
    pub started_at: DateTime<Utc>,
    pub duration: Duration,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    /// What becomes of the delivery.
    pub next: NextStep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    Delivered,
    RetryAt(DateTime<Utc>),
    Failed,
}

/// The most webhook endpoints live at once: each one multiplies the deliveries of every event.
pub const MAX_WEBHOOK_ENDPOINTS: i64 = 100;

/// Reading the event log.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// See the module documentation.
    async fn probe_horizon(&self) -> Result<HorizonProbe, StoreError>;
    /// Events with `after < id <= upto`, in id order, at most `limit`.
    async fn events_between(
        &self,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> Result<Vec<Event>, StoreError>;
    /// The same, only those concerning `account`.
    async fn account_events_between(
        &self,
        account: AccountId,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> Result<Vec<Event>, StoreError>;
}

#[async_trait]
impl EventStore for Store {
    async fn probe_horizon(&self) -> Result<HorizonProbe, StoreError> {
        // Two statements in one simple query: one round trip, and the xid is assigned (by
        // `pg_current_xact_id`) after the first has read the sequence.
        let rows = sqlx::raw_sql(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS v FROM events_id_seq; \
             SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin, \
                    pg_current_xact_id()::text::bigint AS xid",
        )
        .fetch_all(&self.pool)
        .await?;
        let [first, second] = rows.as_slice() else {
            return Err(StoreError::Internal(sqlx::Error::Protocol(
                "the horizon probe returned the wrong number of rows".into(),
            )));
        };
        Ok(HorizonProbe {
            last_drawn: first.try_get("v")?,
            xmin: second.try_get("xmin")?,
            probe_xid: second.try_get("xid")?,
        })
    }

    async fn events_between(
        &self,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE id > $1 AND id <= $2 ORDER BY id LIMIT $3"
        ))
        .bind(after)
        .bind(upto)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn account_events_between(
        &self,
        account: AccountId,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> Result<Vec<Event>, StoreError> {
        // Two index ranges (payer side, payee side) merged: each is served by its own index.
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events \
             WHERE (account_id = $1 OR counter_account_id = $1) AND id > $2 AND id <= $3 \
             ORDER BY id LIMIT $4"
        ))
        .bind(account.get())
        .bind(after)
        .bind(upto)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }
}

/// Webhook endpoints and their deliveries.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Creates an endpoint signed with `salt`; `Unavailable`-like refusal when
    /// `MAX_WEBHOOK_ENDPOINTS` are live (`StoreError::LimitReached`).
    async fn create_webhook(
        &self,
        url: &str,
        event_types: &[String],
        description: &str,
        salt: &[u8],
        created_by: &Username,
    ) -> Result<WebhookEndpoint, StoreError>;
    async fn list_webhooks(&self) -> Result<Vec<WebhookEndpoint>, StoreError>;
    async fn delete_webhook(&self, id: i64) -> Result<(), StoreError>;
    /// A new salt; the current one keeps signing (a second signature) for `overlap`.
    async fn rotate_webhook_secret(
        &self,
        id: i64,
        salt: &[u8],
        overlap: Duration,
    ) -> Result<WebhookEndpoint, StoreError>;
    /// The newest attempts first, at most `limit`.
    async fn list_delivery_attempts(
        &self,
        endpoint: i64,
        limit: i64,
    ) -> Result<Vec<DeliveryAttempt>, StoreError>;
    /// Queues `event` to `endpoint` again, due now; returns the delivery id.
    async fn redeliver(&self, endpoint: i64, event: i64) -> Result<i64, StoreError>;
}

macro_rules! endpoint_columns {
    () => {
        "id, url, event_types, description, created_by, created_at"
    };
}

fn endpoint_from_row(row: &PgRow) -> Result<WebhookEndpoint, StoreError> {
    Ok(WebhookEndpoint {
        id: row.try_get("id")?,
        url: row.try_get("url")?,
        event_types: row.try_get("event_types")?,
        description: row.try_get("description")?,
        created_by: decode(row, "created_by", |s: String| Username::parse(&s))?,
        created_at: row.try_get("created_at")?,
    })
}

#[async_trait]
impl WebhookStore for Store {
    async fn create_webhook(
        &self,
        url: &str,
        event_types: &[String],
        description: &str,
        salt: &[u8],
        created_by: &Username,
    ) -> Result<WebhookEndpoint, StoreError> {
        // The count and the insert in one statement; two bankers racing for the last place
        // may both get it, which bounds the total at the limit plus the racers.
        let row = sqlx::query(concat!(
            "INSERT INTO webhook_endpoints \
                 (url, event_types, description, secret_salt, created_by, after_event_id) \
             SELECT $1, $2, $3, $4, $5, \
                    (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM events_id_seq) \
             WHERE (SELECT count(*) FROM webhook_endpoints WHERE deleted_at IS NULL) < $6 \
             RETURNING ",
            endpoint_columns!()
        ))
        .bind(url)
        .bind(event_types)
        .bind(description)
        .bind(salt)
        .bind(created_by.as_str())
        .bind(MAX_WEBHOOK_ENDPOINTS)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => endpoint_from_row(&row),
            None => Err(StoreError::LimitReached("webhook endpoints")),
        }
    }

    async fn list_webhooks(&self) -> Result<Vec<WebhookEndpoint>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            endpoint_columns!(),
            " FROM webhook_endpoints WHERE deleted_at IS NULL ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(endpoint_from_row).collect()
    }

    async fn delete_webhook(&self, id: i64) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE webhook_endpoints SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(Entity::Webhook));
        }
        Ok(())
    }

    async fn rotate_webhook_secret(
        &self,
        id: i64,
        salt: &[u8],
        overlap: Duration,
    ) -> Result<WebhookEndpoint, StoreError> {
        sqlx::query(concat!(
            "UPDATE webhook_endpoints \
             SET previous_secret_salt = secret_salt, \
                 previous_secret_expires_at = now() + make_interval(secs => $3), \
                 secret_salt = $2 \
             WHERE id = $1 AND deleted_at IS NULL \
             RETURNING ",
            endpoint_columns!()
        ))
        .bind(id)
        .bind(salt)
        .bind(overlap.as_secs_f64())
        .fetch_optional(&self.pool)
        .await?
        .map(|row| endpoint_from_row(&row))
        .unwrap_or(Err(StoreError::NotFound(Entity::Webhook)))
    }

    async fn list_delivery_attempts(
        &self,
        endpoint: i64,
        limit: i64,
    ) -> Result<Vec<DeliveryAttempt>, StoreError> {
        let known = sqlx::query("SELECT 1 FROM webhook_endpoints WHERE id = $1")
            .bind(endpoint)
            .fetch_optional(&self.pool)
            .await?;
        if known.is_none() {
            return Err(StoreError::NotFound(Entity::Webhook));
        }
        let rows = sqlx::query(
            "SELECT a.delivery_id, d.event_id, e.type, a.attempt, a.started_at, a.duration_ms, \
                    a.status_code, a.error, \
                    CASE WHEN d.delivered_at IS NOT NULL THEN 'delivered' \
                         WHEN d.failed_at IS NOT NULL THEN 'failed' ELSE 'retrying' END AS state \
             FROM webhook_deliveries d \
             JOIN webhook_attempts a ON a.delivery_id = d.id \
             JOIN events e ON e.id = d.event_id \
             WHERE d.endpoint_id = $1 \
             ORDER BY a.started_at DESC, a.delivery_id DESC, a.attempt DESC LIMIT $2",
        )
        .bind(endpoint)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DeliveryAttempt {
                    delivery_id: row.try_get("delivery_id")?,
                    event_id: row.try_get("event_id")?,
                    event_type: row.try_get("type")?,
                    attempt: row.try_get("attempt")?,
                    started_at: row.try_get("started_at")?,
                    duration_ms: row.try_get("duration_ms")?,
                    status_code: row.try_get("status_code")?,
                    error: row.try_get("error")?,
                    delivery_status: match row.try_get::<&str, _>("state")? {
                        "delivered" => "delivered",
                        "failed" => "failed",
                        _ => "retrying",
                    },
                })
            })
            .collect()
    }

    async fn redeliver(&self, endpoint: i64, event: i64) -> Result<i64, StoreError> {
        let row = sqlx::query(
            // Only what the endpoint was sent, or would have been: an event of a type it
            // subscribes to, from after it was created. Anything else would let a banker copy
            // the whole event history out through an endpoint of their choosing.
            "INSERT INTO webhook_deliveries (endpoint_id, event_id) \
             SELECT w.id, e.id FROM webhook_endpoints w, events e \
             WHERE w.id = $1 AND w.deleted_at IS NULL AND e.id = $2 \
               AND e.id > w.after_event_id \
               AND (cardinality(w.event_types) = 0 OR e.type = ANY (w.event_types)) \
             RETURNING id",
        )
        .bind(endpoint)
        .bind(event)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(row.try_get("id")?),
            None => {
                let live = sqlx::query(
                    "SELECT 1 FROM webhook_endpoints WHERE id = $1 AND deleted_at IS NULL",
                )
                .bind(endpoint)
                .fetch_optional(&self.pool)
                .await?;
                Err(StoreError::NotFound(if live.is_some() {
                    Entity::Event
                } else {
                    Entity::Webhook
                }))
            }
        }
    }
}

/// Fans the events after the 'webhooks' cursor, up to `horizon`, out into deliveries for every
/// live endpoint that wants them, and moves the cursor — one transaction. The cursor row is
/// taken with SKIP LOCKED: while one replica fans out, the others skip the round.
const FAN_OUT: &str = r#"
WITH cursor AS (
    SELECT last_event_id FROM event_cursors WHERE name = 'webhooks' FOR UPDATE SKIP LOCKED
),
-- The cursor is read as a scalar so that it bounds the index scan. Joined as a table, it became
-- a join filter, and every round walked the events index from id 1 (231 ms at 540k events).
batch AS (
    SELECT e.id, e.type FROM events e
    WHERE e.id > (SELECT last_event_id FROM cursor) AND e.id <= $1
    ORDER BY e.id LIMIT $2
),
queued AS (
    INSERT INTO webhook_deliveries (endpoint_id, event_id)
    SELECT w.id, b.id FROM batch b
    JOIN webhook_endpoints w
      ON w.deleted_at IS NULL AND b.id > w.after_event_id
     AND (cardinality(w.event_types) = 0 OR b.type = ANY (w.event_types))
    ORDER BY b.id, w.id
    RETURNING 1
),
moved AS (
    UPDATE event_cursors SET last_event_id = CASE
            WHEN (SELECT count(*) FROM batch) < $2 THEN GREATEST(last_event_id, $1)
            ELSE (SELECT max(id) FROM batch) END
    WHERE name = 'webhooks' AND EXISTS (SELECT 1 FROM cursor)
    RETURNING last_event_id
)
SELECT (SELECT count(*) FROM batch) AS events, (SELECT count(*) FROM queued) AS deliveries,
       EXISTS (SELECT 1 FROM moved) AS ours
"#;

/// Claims up to `$1` due deliveries for one attempt each, leased for `$2` seconds (as
/// `email_outbox`'s CLAIM).
const CLAIM_DELIVERIES: &str = r#"
UPDATE webhook_deliveries d
SET attempts = d.attempts + 1,
    next_attempt_at = now() + make_interval(secs => $2)
FROM (
    SELECT id FROM webhook_deliveries
    WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
) due, webhook_endpoints w, events e
WHERE d.id = due.id AND w.id = d.endpoint_id AND e.id = d.event_id
RETURNING d.id AS delivery_id, d.attempts, d.created_at AS queued_at, w.url, w.secret_salt,
          CASE WHEN w.previous_secret_expires_at > now() THEN w.previous_secret_salt END
              AS previous_salt,
          w.deleted_at IS NOT NULL AS endpoint_deleted,
          e.id, e.type, e.account_id, e.counter_account_id, event_data(e.data, e.transfer_id)::text AS data,
          e.created_at
"#;

/// What one fan-out round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FanOut {
    pub events: i64,
    pub deliveries: i64,
    /// False when another replica held the cursor.
    pub ours: bool,
}

impl Store {
    /// See `FAN_OUT`.
    pub async fn fan_out_webhooks(&self, horizon: i64, batch: i64) -> Result<FanOut, StoreError> {
        let row = sqlx::query(FAN_OUT)
            .bind(horizon)
            .bind(batch)
            .fetch_one(&self.pool)
            .await?;
        Ok(FanOut {
            events: row.try_get("events")?,
            deliveries: row.try_get("deliveries")?,
            ours: row.try_get("ours")?,
        })
    }

    /// See `CLAIM_DELIVERIES`.
    pub async fn claim_due_deliveries(
        &self,
        batch: i64,
        lease: Duration,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let rows = sqlx::query(CLAIM_DELIVERIES)
            .bind(batch)
            .bind(lease.as_secs_f64())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(DueDelivery {
                    delivery_id: row.try_get("delivery_id")?,
                    attempt: row.try_get("attempts")?,
                    url: row.try_get("url")?,
                    salts: SigningSalts {
                        current: row.try_get("secret_salt")?,
                        previous: row.try_get("previous_salt")?,
                    },
                    event: event_from_row(row)?,
                    queued_at: row.try_get("queued_at")?,
                    endpoint_deleted: row.try_get("endpoint_deleted")?,
                })
            })
            .collect()
    }

    /// Logs the attempt and settles the delivery as `outcome.next` says — only if `attempt` is
    /// still the delivery's latest claim and it is unsettled, so a late report cannot undo a
    /// later one. One statement.
    pub async fn settle_delivery(
        &self,
        delivery: i64,
        attempt: i32,
        outcome: &AttemptOutcome,
    ) -> Result<(), StoreError> {
        let (delivered, failed, retry_at) = match outcome.next {
            NextStep::Delivered => (true, false, None),
            NextStep::Failed => (false, true, None),
            NextStep::RetryAt(at) => (false, false, Some(at)),
        };
        sqlx::query(
            "WITH logged AS ( \
                 INSERT INTO webhook_attempts \
                     (delivery_id, attempt, started_at, duration_ms, status_code, error) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT DO NOTHING RETURNING 1) \
             UPDATE webhook_deliveries SET \
                 delivered_at = CASE WHEN $7 THEN now() END, \
                 failed_at = CASE WHEN $8 THEN now() END, \
                 next_attempt_at = COALESCE($9, next_attempt_at), \
                 last_error = $6 \
             WHERE id = $1 AND attempts = $2 AND delivered_at IS NULL AND failed_at IS NULL",
        )
        .bind(delivery)
        .bind(attempt)
        .bind(outcome.started_at)
        .bind(i32::try_from(outcome.duration.as_millis()).unwrap_or(i32::MAX))
        .bind(outcome.status_code.map(i32::from))
        .bind(outcome.error.as_deref())
        .bind(delivered)
        .bind(failed)
        .bind(retry_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// How old the oldest event not yet delivered to every endpoint is, in seconds: the oldest
    /// pending delivery, or the oldest event the fan-out has not reached that some live
    /// endpoint will get. 0 when none.
    pub async fn webhook_lag_seconds(&self) -> Result<f64, StoreError> {
        let row = sqlx::query(
            "SELECT COALESCE(extract(epoch FROM now() - LEAST( \
                 (SELECT min(e.created_at) FROM webhook_deliveries d JOIN events e ON e.id = d.event_id \
                  WHERE d.delivered_at IS NULL AND d.failed_at IS NULL), \
                 (SELECT min(e.created_at) FROM events e, event_cursors c \
                  WHERE c.name = 'webhooks' AND e.id > c.last_event_id \
                    AND e.id > (SELECT min(after_event_id) FROM webhook_endpoints \
                                WHERE deleted_at IS NULL)))), 0)::float8 AS lag",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<f64, _>("lag")?.max(0.0))
    }
}
