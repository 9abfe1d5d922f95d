//! Webhook endpoints (bankers only) and watching an account's events (its owner, or a banker).

use std::sync::Arc;

use super::{BankService, ServiceError, require_banker};
use crate::auth::Principal;
use crate::domain::{AccountId, Username};
use crate::events::webhooks::{Secrets, check_url};
use crate::events::{EventHub, StillAllowed, Terms, WatchStream};
use crate::store::{DeliveryAttempt, WebhookEndpoint};

/// Every event type (SPEC §7), as endpoints subscribe to them.
pub const EVENT_TYPES: [&str; 11] = [
    "transfer.created",
    "deposit.created",
    "withdrawal.created",
    "hold.created",
    "hold.captured",
    "hold.voided",
    "hold.expired",
    "transfer.reversed",
    "account.created",
    "account.status_changed",
    "user.email_verified",
];

/// Attempts the delivery log shows, newest first.
pub const DELIVERY_LOG_LIMIT: i64 = 100;

/// What the service needs for events: the hub (streams) and the webhook secrets.
#[derive(Clone)]
pub struct EventPorts {
    pub hub: EventHub,
    /// `MAX_STREAMS_PER_USER`: each user's live streams, beside the replica's `MAX_STREAMS`.
    pub streams_per_user: super::fair_share::PerUserPlaces,
    pub secrets: Secrets,
    /// `WEBHOOK_ALLOW_PRIVATE`.
    pub allow_private: bool,
}

/// A webhook endpoint as a banker asks for it, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRequest {
    pub url: String,
    pub event_types: Vec<String>,
    pub description: String,
}

/// An endpoint and its signing secret, shown this once.
#[derive(Clone)]
pub struct WebhookWithSecret {
    pub endpoint: WebhookEndpoint,
    pub secret: String,
}

/// Never the secret: a `{:?}` in a log line or a panic message must not leak it.
impl std::fmt::Debug for WebhookWithSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookWithSecret")
            .field("endpoint", &self.endpoint)
            .field("secret", &"whsec_[redacted]")
            .finish()
    }
}

/// Checks the shape of a webhook request (the URL's address is checked by the service, which
/// knows `WEBHOOK_ALLOW_PRIVATE`). Every bad field is reported at once.
pub fn parse_webhook(
    url: Option<String>,
    event_types: Vec<String>,
    description: Option<String>,
) -> Result<WebhookRequest, ServiceError> {
    let mut problems = Vec::new();
    let url = url.unwrap_or_default();
    if url.is_empty() {
        problems.push(crate::domain::ValidationError::new("url", "is required"));
    }
    let mut types = Vec::new();
    for kind in event_types {
        if !EVENT_TYPES.contains(&kind.as_str()) {
            problems.push(crate::domain::ValidationError::new(
                "event_types",
                format!(
                    "{kind:?} is not an event type; known: {}",
                    EVENT_TYPES.join(", ")
                ),
            ));
        } else if !types.contains(&kind) {
            types.push(kind);
        }
    }
    let description = description.unwrap_or_default();
    if description.chars().count() > 256 || description.chars().any(char::is_control) {
        problems.push(crate::domain::ValidationError::new(
            "description",
            "must be at most 256 characters, without control characters",
        ));
    }
    if !problems.is_empty() {
        return Err(ServiceError::InvalidArgument(problems));
    }
    Ok(WebhookRequest {
        url,
        event_types: types,
        description,
    })
}

/// A positive id from a path or message field.
pub fn parse_id(field: &'static str, id: i64) -> Result<i64, ServiceError> {
    if id > 0 {
        Ok(id)
    } else {
        Err(ServiceError::invalid(field, "must be a positive id"))
    }
}

impl BankService {
    fn events(&self) -> Result<&EventPorts, ServiceError> {
        self.events
            .as_ref()
            .ok_or_else(|| ServiceError::Unavailable("events are not served here".into()))
    }

    pub async fn create_webhook(
        &self,
        principal: &Principal,
        request: WebhookRequest,
    ) -> Result<WebhookWithSecret, ServiceError> {
        require_banker(principal, "manage webhooks")?;
        let events = self.events()?;
        check_url(&request.url, events.allow_private)
            .await
            .map_err(|problem| ServiceError::invalid("url", problem))?;
        let salt = Secrets::new_salt()?;
        let endpoint = self
            .store
            .webhooks
            .create_webhook(
                &request.url,
                &request.event_types,
                &request.description,
                &salt,
                &principal.username,
            )
            .await?;
        Ok(WebhookWithSecret {
            endpoint,
            secret: events.secrets.display(&salt),
        })
    }

    pub async fn list_webhooks(
        &self,
        principal: &Principal,
    ) -> Result<Vec<WebhookEndpoint>, ServiceError> {
        require_banker(principal, "manage webhooks")?;
        Ok(self.store.webhooks.list_webhooks().await?)
    }

    pub async fn delete_webhook(&self, principal: &Principal, id: i64) -> Result<(), ServiceError> {
        require_banker(principal, "manage webhooks")?;
        Ok(self.store.webhooks.delete_webhook(id).await?)
    }

    /// A new secret, shown once; the old one keeps signing too for a day.
    pub async fn rotate_webhook_secret(
        &self,
        principal: &Principal,
        id: i64,
    ) -> Result<WebhookWithSecret, ServiceError> {
        require_banker(principal, "manage webhooks")?;
        let events = self.events()?;
        let salt = Secrets::new_salt()?;
        let endpoint = self
            .store
            .webhooks
            .rotate_webhook_secret(id, &salt, crate::events::webhooks::ROTATION_OVERLAP)
            .await?;
        Ok(WebhookWithSecret {
            endpoint,
            secret: events.secrets.display(&salt),
        })
    }

    pub async fn list_webhook_deliveries(
        &self,
        principal: &Principal,
        id: i64,
    ) -> Result<Vec<DeliveryAttempt>, ServiceError> {
        require_banker(principal, "manage webhooks")?;
        Ok(self
            .store
            .webhooks
            .list_delivery_attempts(id, DELIVERY_LOG_LIMIT)
            .await?)
    }

    /// Queues `event` to the endpoint again; returns the new delivery's id.
    pub async fn redeliver_webhook(
        &self,
        principal: &Principal,
        id: i64,
        event: i64,
    ) -> Result<i64, ServiceError> {
        require_banker(principal, "manage webhooks")?;
        Ok(self.store.webhooks.redeliver(id, event).await?)
    }

    /// The account's events after `after` (`None`: from now on), live. Whoever may read the
    /// account may watch it; `unavailable` when `MAX_STREAMS` are open.
    pub async fn watch_account(
        &self,
        principal: &Principal,
        account: AccountId,
        after: Option<i64>,
    ) -> Result<WatchStream, ServiceError> {
        if let Some(after) = after
            && after < 0
        {
            return Err(ServiceError::invalid(
                "after",
                "must be an event id, 0 or more",
            ));
        }
        let watched = self.get_account(principal, account).await?;
        let events = self.events()?;
        // The user's own bound first: one user's idle streams cannot take the replica's.
        let mine = events
            .streams_per_user
            .take(&principal.username)
            .ok_or_else(|| ServiceError::RateLimited {
                retry_after: std::time::Duration::from_secs(1),
            })?;
        let replica = events
            .hub
            .stream_place()
            .ok_or_else(|| ServiceError::Unavailable("too many event streams open".into()))?;
        // The stream ends when the token that opened it does (`token_expired`).
        let left = (principal.expires_at - chrono::Utc::now())
            .to_std()
            .unwrap_or_default();
        Ok(WatchStream::start(
            &events.hub,
            account,
            after,
            Box::new((mine, replica)),
            Arc::clone(&self.metrics),
            Terms {
                ends_at: Some(tokio::time::Instant::now() + left),
                still_allowed: Some(self.still_allowed(principal, watched.owner)),
                ..Terms::default()
            },
        ))
    }

    /// Whether the caller may still watch an account of `owner`: their session is neither
    /// revoked nor expired, and, watching someone else's account, they are still a banker.
    fn still_allowed(&self, principal: &Principal, owner: Username) -> StillAllowed {
        let (sessions, users) = (
            Arc::clone(&self.store.sessions),
            Arc::clone(&self.store.users),
        );
        let (session, username) = (principal.session_id, principal.username.clone());
        Box::new(move || {
            let (sessions, users) = (Arc::clone(&sessions), Arc::clone(&users));
            let (username, owner) = (username.clone(), owner.clone());
            Box::pin(async move {
                let live = match sessions.get_session(session).await.ok()? {
                    Some(found) => !found.is_blocked && found.expires_at > chrono::Utc::now(),
                    None => false,
                };
                if !live {
                    return Some(false);
                }
                if username == owner {
                    return Some(true);
                }
                let user = users.get_user(&username).await.ok()?;
                Some(user.role == crate::domain::Role::Banker)
            })
        })
    }
}
