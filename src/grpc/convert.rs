//! Domain records → proto messages. (Proto requests → domain go through the same parsers the
//! HTTP adapter uses: `NewUserRequest::parse`, `parse_transfer`, ...)

use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use secrecy::ExposeSecret;

use super::pb;
use crate::auth::IssuedToken;
use crate::domain::{
    Account, Amount, Entry, Hold, HoldId, Transfer, TransferId, TransferReceipt, User,
};
use crate::service::LoginResult;

pub fn timestamp(at: DateTime<Utc>) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: at.timestamp(),
        // Always below 10^9 for a valid DateTime (leap seconds aside, which chrono folds in).
        nanos: at.timestamp_subsec_nanos().min(999_999_999) as i32,
    })
}

impl From<User> for pb::User {
    fn from(u: User) -> Self {
        pb::User {
            username: u.username.as_str().to_owned(),
            full_name: u.full_name.as_str().to_owned(),
            email: u.email.as_str().to_owned(),
            role: u.role.as_str().to_owned(),
            is_email_verified: u.is_email_verified,
            password_changed_at: timestamp(u.password_changed_at),
            created_at: timestamp(u.created_at),
        }
    }
}

impl From<Account> for pb::Account {
    fn from(a: Account) -> Self {
        pb::Account {
            id: a.id.get(),
            owner: a.owner.as_str().to_owned(),
            currency: a.currency.code().to_owned(),
            balance: a.balance,
            created_at: timestamp(a.created_at),
            status: a.status.as_str().to_owned(),
            overdraft_limit: a.overdraft_limit,
            available_balance: a.available_balance(),
        }
    }
}

impl From<Entry> for pb::Entry {
    fn from(e: Entry) -> Self {
        pb::Entry {
            id: e.id.get(),
            account_id: e.account_id.get(),
            transfer_id: e.transfer_id.get(),
            amount: e.amount,
            balance_after: e.balance_after,
            created_at: timestamp(e.created_at),
        }
    }
}

/// The recipient's entry without `balance_after`, which would be the recipient's balance.
impl From<Entry> for pb::CounterpartyEntry {
    fn from(e: Entry) -> Self {
        pb::CounterpartyEntry {
            id: e.id.get(),
            account_id: e.account_id.get(),
            transfer_id: e.transfer_id.get(),
            amount: e.amount,
            created_at: timestamp(e.created_at),
        }
    }
}

impl From<Transfer> for pb::Transfer {
    fn from(t: Transfer) -> Self {
        pb::Transfer {
            id: t.id.get(),
            from_account_id: t.from_account_id.get(),
            to_account_id: t.to_account_id.get(),
            amount: t.amount.minor_units(),
            currency: t.currency.code().to_owned(),
            created_at: timestamp(t.created_at),
            hold_id: t.hold_id.map_or(0, HoldId::get),
            reference: t.label.reference_str().unwrap_or_default().to_owned(),
            metadata: t
                .label
                .metadata
                .map(|m| m.into_entries().into_iter().collect())
                .unwrap_or_default(),
            reverses_transfer_id: t.reverses.map_or(0, TransferId::get),
        }
    }
}

impl From<TransferReceipt> for pb::CreateTransferResponse {
    fn from(r: TransferReceipt) -> Self {
        pb::CreateTransferResponse {
            transfer: Some(r.transfer.into()),
            from_account: Some(r.from_account.into()),
            from_entry: Some(r.from_entry.into()),
            to_entry: Some(r.to_entry.into()),
        }
    }
}

impl From<Hold> for pb::Hold {
    fn from(h: Hold) -> Self {
        pb::Hold {
            id: h.id.get(),
            from_account_id: h.from_account_id.get(),
            to_account_id: h.to_account_id.get(),
            amount: h.amount.minor_units(),
            currency: h.currency.code().to_owned(),
            status: h.status.as_str().to_owned(),
            captured_amount: h.captured_amount.map_or(0, Amount::minor_units),
            expires_at: timestamp(h.expires_at),
            created_at: timestamp(h.created_at),
            resolved_at: h.resolved_at.and_then(timestamp),
            reference: h
                .reference
                .map(|r| r.as_str().to_owned())
                .unwrap_or_default(),
            metadata: h
                .metadata
                .map(|m| m.into_entries().into_iter().collect())
                .unwrap_or_default(),
        }
    }
}

impl From<LoginResult> for pb::LoginUserResponse {
    fn from(login: LoginResult) -> Self {
        pb::LoginUserResponse {
            session_id: login.session_id.to_string(),
            access_token: login.access_token.token.expose_secret().to_owned(),
            access_token_expires_at: timestamp(login.access_token.claims.expires_at),
            refresh_token: login.refresh_token.token.expose_secret().to_owned(),
            refresh_token_expires_at: timestamp(login.refresh_token.claims.expires_at),
            user: Some(login.user.into()),
        }
    }
}

impl From<IssuedToken> for pb::RenewAccessTokenResponse {
    fn from(token: IssuedToken) -> Self {
        pb::RenewAccessTokenResponse {
            access_token: token.token.expose_secret().to_owned(),
            access_token_expires_at: timestamp(token.claims.expires_at),
        }
    }
}

impl From<crate::store::WebhookEndpoint> for pb::Webhook {
    fn from(w: crate::store::WebhookEndpoint) -> Self {
        pb::Webhook {
            id: w.id,
            url: w.url,
            event_types: w.event_types,
            description: w.description,
            created_by: w.created_by.as_str().to_owned(),
            created_at: timestamp(w.created_at),
        }
    }
}

impl From<crate::store::DeliveryAttempt> for pb::WebhookDeliveryAttempt {
    fn from(a: crate::store::DeliveryAttempt) -> Self {
        pb::WebhookDeliveryAttempt {
            delivery_id: a.delivery_id,
            event_id: a.event_id,
            event_type: a.event_type,
            attempt: a.attempt,
            attempted_at: timestamp(a.started_at),
            duration_ms: a.duration_ms,
            status_code: a.status_code.unwrap_or(0),
            error: a.error.unwrap_or_default(),
            delivery_status: a.delivery_status.to_owned(),
        }
    }
}

pub fn account_event(event: crate::store::Event) -> pb::AccountEvent {
    pb::AccountEvent {
        id: event.id,
        timestamp: timestamp(event.created_at),
        r#type: event.kind,
        data: event.data,
    }
}

/// How the server ends a stream: RESOURCE_EXHAUSTED for a slow consumer, UNAVAILABLE when the
/// database or the server goes away; the message and the `resume-after` trailer say where to
/// resume.
pub fn stream_end(end: crate::events::StreamEnd) -> tonic::Status {
    use crate::events::EndReason;
    let message = format!(
        "{}: resume after event id {}",
        match end.reason {
            EndReason::SlowConsumer => "the client did not keep up with the stream",
            EndReason::TokenExpired => "the access token that opened the stream expired",
            EndReason::Revoked => "the session that opened the stream was revoked",
            EndReason::Unavailable => "the database is unavailable",
            EndReason::ShuttingDown => "the server is shutting down",
        },
        end.resume_after
    );
    let mut status = match end.reason {
        EndReason::SlowConsumer => tonic::Status::resource_exhausted(message),
        EndReason::TokenExpired | EndReason::Revoked => tonic::Status::unauthenticated(message),
        EndReason::Unavailable | EndReason::ShuttingDown => tonic::Status::unavailable(message),
    };
    if let Ok(value) = end.resume_after.to_string().parse() {
        status.metadata_mut().insert("resume-after", value);
    }
    status
}
