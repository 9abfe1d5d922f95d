//! Login sessions: one per refresh token, holding a hash of it (never the token).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use super::{Store, StoreError, decode};
use crate::domain::{Session, Username};

/// What a new session is created with.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: Uuid,
    pub username: Username,
    pub refresh_token_hash: Vec<u8>,
    pub user_agent: String,
    pub client_ip: String,
    pub expires_at: DateTime<Utc>,
}

macro_rules! session_columns {
    () => {
        "id, username, refresh_token_hash, user_agent, client_ip, is_blocked, expires_at, created_at"
    };
}

/// Login sessions, as the service sees them.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait SessionStore: Send + Sync {
    async fn create_session(&self, new: &NewSession) -> Result<Session, StoreError>;
    /// `None` when there is no such session.
    async fn get_session(&self, id: Uuid) -> Result<Option<Session>, StoreError>;
    /// Revokes one session of `username`; `false` if it has no such session.
    async fn block_session(&self, id: Uuid, username: &Username) -> Result<bool, StoreError>;
}

#[async_trait]
impl SessionStore for Store {
    async fn create_session(&self, new: &NewSession) -> Result<Session, StoreError> {
        let row = sqlx::query(concat!(
            "INSERT INTO sessions (id, username, refresh_token_hash, user_agent, client_ip, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
            session_columns!()
        ))
        .bind(new.id)
        .bind(new.username.as_str())
        .bind(&new.refresh_token_hash)
        .bind(&new.user_agent)
        .bind(&new.client_ip)
        .bind(new.expires_at)
        .fetch_one(&self.pool)
        .await?;
        session_from_row(&row)
    }
    async fn get_session(&self, id: Uuid) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(session_from_row).transpose()
    }
    async fn block_session(&self, id: Uuid, username: &Username) -> Result<bool, StoreError> {
        let result =
            sqlx::query("UPDATE sessions SET is_blocked = true WHERE id = $1 AND username = $2")
                .bind(id)
                .bind(username.as_str())
                .execute(&self.pool)
                .await?;
        Ok(result.rows_affected() == 1)
    }
}

impl Store {
    /// Revokes every live session of `username` except `keep`; returns how many.
    pub async fn block_user_sessions(
        &self,
        username: &Username,
        keep: Option<Uuid>,
    ) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "UPDATE sessions SET is_blocked = true \
             WHERE username = $1 AND NOT is_blocked AND id IS DISTINCT FROM $2",
        )
        .bind(username.as_str())
        .bind(keep)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }
}

fn session_from_row(row: &PgRow) -> Result<Session, StoreError> {
    Ok(Session {
        id: row.try_get("id")?,
        username: decode(row, "username", |s: String| Username::parse(&s))?,
        refresh_token_hash: row.try_get("refresh_token_hash")?,
        user_agent: row.try_get("user_agent")?,
        client_ip: row.try_get("client_ip")?,
        is_blocked: row.try_get("is_blocked")?,
        expires_at: row.try_get("expires_at")?,
        created_at: row.try_get("created_at")?,
    })
}
