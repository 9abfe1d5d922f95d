//! `BankService`: one method per operation of SPEC §3, shared by the HTTP and gRPC adapters.
//!
//! Every method takes already-parsed domain values and, when the operation needs a caller, the
//! `Principal` that the adapter authenticated. **Authorization happens here**, and only here: the
//! owner/banker rules live in these methods, so both transports enforce exactly the same ones.

mod accounts;
mod admission;
mod client_address;
pub mod edge;
mod error;
mod events;
mod fair_share;
mod holds;
mod ownership;
mod port;
mod rate_limit;
mod transfers;
mod users;

use std::sync::Arc;
use std::time::Duration;

pub use accounts::{
    BalanceAt, ListPage, MAX_EXPORTS, OffsetPage, PageRequest, Statement, parse_account_status,
    parse_moment, parse_overdraft_limit,
};
pub use admission::{Admission, RequestLimits, Slot};
pub use client_address::{ClientAddress, TrustedProxies, client_from_headers};
pub use error::{ErrorCode, ServiceError};
pub use events::{
    DELIVERY_LOG_LIMIT, EVENT_TYPES, EventPorts, WebhookRequest, WebhookWithSecret, parse_id,
    parse_webhook,
};
pub use fair_share::{ANONYMOUS_REQUESTS_PER_SECOND, FairShares, PerUserPlaces, UserLimits};
pub use holds::{HoldRequest, parse_hold, parse_hold_status};
use ownership::Ownership;
pub use port::StorePorts;
pub use rate_limit::{LoginLimiter, LoginLimits};
pub use transfers::{
    MoneyAnswer, parse_amount_or_all, parse_money, parse_reversal, parse_transfer,
    parse_transfer_filter,
};
pub use users::{
    ClientInfo, LoginResult, NewUserRequest, UpdateUserRequest, parse_credentials,
    parse_verification,
};

use crate::auth::{HashLimits, Passwords, Principal, TokenMaker};
use crate::metrics::Metrics;

/// How long tokens live (simple_bank's defaults: 15 minutes and 24 hours).
#[derive(Debug, Clone, Copy)]
pub struct TokenLifetimes {
    pub access: Duration,
    pub refresh: Duration,
}

impl Default for TokenLifetimes {
    fn default() -> Self {
        Self {
            access: Duration::from_secs(15 * 60),
            refresh: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// The service: cheap to clone, shared by every request of both transports.
#[derive(Clone)]
pub struct BankService {
    store: StorePorts,
    tokens: Arc<TokenMaker>,
    lifetimes: TokenLifetimes,
    /// How long an email verification code stays valid.
    verification_ttl: Duration,
    /// How long a hold lives when its payer does not say (`HOLD_TTL`).
    hold_ttl: Duration,
    /// Places for CSV statement exports (`accounts::MAX_EXPORTS`), and per user
    /// (`accounts::EXPORTS_PER_USER`).
    exports: Arc<tokio::sync::Semaphore>,
    exports_per_user: PerUserPlaces,
    metrics: Arc<Metrics>,
    /// Login attempts per client address and failures per username (`rate_limit.rs`).
    login_limiter: Arc<LoginLimiter>,
    /// The database check, the request slots and the deadline both adapters apply.
    admission: Admission,
    /// Each user's share of concurrent requests and request rate (`fair_share.rs`).
    fair_shares: FairShares,
    /// Each client address's share of the anonymous routes that cost work (sign-up, email
    /// verification); login has its own limits (`rate_limit.rs`).
    anonymous: FairShares,
    /// The accounts each caller owns, as far as seen (`ownership.rs`).
    ownership: Ownership,
    /// Rung after a commit that queued an email, so this replica's outbox worker sends it at
    /// once instead of at its next poll (other replicas still find it by polling).
    mail_queued: Arc<tokio::sync::Notify>,
    /// Password hashing: a few threads and a bounded queue (`auth::Passwords`).
    passwords: Passwords,
    /// `TRUSTED_PROXIES`: whose forwarding headers name the client (`client_address.rs`).
    trusted_proxies: Arc<TrustedProxies>,
    /// Streams and webhook secrets; `None` serves neither (the service's unit tests).
    events: Option<EventPorts>,
}

/// simple_bank's verification lifetime: 15 minutes.
pub const DEFAULT_VERIFICATION_TTL: Duration = Duration::from_secs(15 * 60);

impl BankService {
    pub fn new(store: StorePorts, tokens: Arc<TokenMaker>, lifetimes: TokenLifetimes) -> Self {
        Self {
            store,
            tokens,
            lifetimes,
            verification_ttl: DEFAULT_VERIFICATION_TTL,
            hold_ttl: crate::domain::HOLD_TTL_DEFAULT,
            exports: Arc::new(tokio::sync::Semaphore::new(accounts::MAX_EXPORTS)),
            exports_per_user: PerUserPlaces::new(accounts::EXPORTS_PER_USER),
            metrics: Arc::default(),
            login_limiter: Arc::new(LoginLimiter::new(LoginLimits::default())),
            admission: Admission::new(RequestLimits::default()),
            fair_shares: FairShares::new(UserLimits::default()),
            anonymous: FairShares::new(UserLimits::anonymous(ANONYMOUS_REQUESTS_PER_SECOND)),
            ownership: Ownership::default(),
            mail_queued: Arc::default(),
            passwords: Passwords::default(),
            trusted_proxies: Arc::default(),
            events: None,
        }
    }

    /// Serve event streams from `ports.hub` and sign webhooks with `ports.secrets`.
    pub fn with_events(mut self, ports: EventPorts) -> Self {
        self.events = Some(ports);
        self
    }

    pub fn with_trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.trusted_proxies = Arc::new(proxies);
        self
    }

    /// The proxies both adapters believe about the client's address.
    pub fn trusted_proxies(&self) -> Arc<TrustedProxies> {
        Arc::clone(&self.trusted_proxies)
    }

    /// `PASSWORD_HASH_CONCURRENCY` and `PASSWORD_HASH_QUEUE`. Call while building.
    pub fn with_password_limits(mut self, limits: HashLimits) -> Self {
        self.passwords = Passwords::new(limits);
        self
    }

    /// Notified whenever an email has been queued in the outbox (`OutboxWorker::with_wakeup`).
    pub fn mail_queued(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.mail_queued)
    }

    /// What every request of either API must get before its operation runs (`admission.rs`).
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// Call while building, before the service is cloned: clones made earlier keep the old
    /// limits.
    pub fn with_request_limits(mut self, limits: RequestLimits) -> Self {
        self.admission = Admission::new(limits);
        self
    }

    /// `USER_MAX_CONCURRENT_REQUESTS` and `USER_REQUESTS_PER_SECOND`. Call while building.
    pub fn with_user_limits(mut self, limits: UserLimits) -> Self {
        self.fair_shares = FairShares::new(limits);
        self
    }

    /// `ANONYMOUS_REQUESTS_PER_SECOND`: sign-ups and email verifications per client address.
    pub fn with_anonymous_limit(mut self, per_second: u32) -> Self {
        self.anonymous = FairShares::new(UserLimits::anonymous(per_second));
        self
    }

    pub fn with_login_limits(mut self, limits: LoginLimits) -> Self {
        self.login_limiter = Arc::new(LoginLimiter::new(limits));
        self
    }

    /// Money movements are counted here, by outcome, whichever transport asked.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn with_hold_ttl(mut self, ttl: Duration) -> Self {
        self.hold_ttl = ttl;
        self
    }

    pub fn with_verification_ttl(mut self, ttl: Duration) -> Self {
        self.verification_ttl = ttl;
        self
    }

    /// Turns a bearer access token into the caller, or `unauthenticated`. The one verifier both
    /// transports call before handing a `Principal` to any other method. The caller comes with
    /// a place in their fair share, held until the `Principal` is dropped (at the end of the
    /// request), or the request is refused here with `rate_limited`.
    pub fn authenticate(&self, access_token: &str) -> Result<Principal, ServiceError> {
        let mut principal = self
            .tokens
            .verify(
                access_token,
                crate::auth::TokenType::Access,
                chrono::Utc::now(),
            )
            .map(Principal::from)
            .map_err(|_| ServiceError::Unauthenticated("the access token is invalid or expired"))?;
        principal.share = Some(Arc::new(self.fair_shares.admit(&principal.username)?));
        Ok(principal)
    }
}

/// Refuses a caller that is not a banker.
fn require_banker(principal: &Principal, what: &str) -> Result<(), ServiceError> {
    if principal.is_banker() {
        Ok(())
    } else {
        Err(ServiceError::PermissionDenied(format!(
            "only bankers may {what}"
        )))
    }
}

/// Refuses a caller who is neither a banker nor the owner of one of `owners` (the two sides of
/// a transfer or a hold).
fn require_party(
    principal: &Principal,
    owners: [&crate::domain::Username; 2],
    denied: impl FnOnce() -> String,
) -> Result<(), ServiceError> {
    if owners.into_iter().any(|owner| principal.may_act_for(owner)) {
        Ok(())
    } else {
        Err(ServiceError::PermissionDenied(denied()))
    }
}

#[cfg(test)]
mod tests;
