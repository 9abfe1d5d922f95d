//! Accounts and account statements.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::transfers::keyed_answer;
use super::{BankService, MoneyAnswer, ServiceError, require_banker};
use crate::auth::Principal;
use crate::domain::{
    Account, AccountId, AccountStatus, Currency, Entry, EntryId, IdempotencyKey, PageKind,
    PageSize, PageToken, Username, ValidationError, Violations,
};
use crate::store::AccountControl;

/// A CSV statement on its way: the chunks, and the export's place among `MAX_EXPORTS` (freed
/// when this is dropped, with the response body).
#[derive(Debug)]
pub struct Statement {
    pub chunks: tokio::sync::mpsc::Receiver<Result<Vec<u8>, crate::store::StoreError>>,
    /// Its places among the replica's exports and its user's.
    _permit: (
        tokio::sync::OwnedSemaphorePermit,
        super::fair_share::UserPlace,
    ),
}

impl Statement {
    /// The chunks as a stream that holds the export's place until it is dropped (with the
    /// response body, when the client is done or gone).
    pub fn into_stream(
        self,
    ) -> impl tokio_stream::Stream<Item = Result<Vec<u8>, crate::store::StoreError>> {
        let place = self._permit;
        tokio_stream::StreamExt::map(
            tokio_stream::wrappers::ReceiverStream::new(self.chunks),
            move |chunk| {
                let _held = &place;
                chunk
            },
        )
    }
}

/// Statement exports streaming at once, per server.
pub const MAX_EXPORTS: usize = 4;
/// Statement exports streaming at once, per user (SPEC §10's default).
pub const EXPORTS_PER_USER: usize = 1;

/// An account's balance at a moment, in minor units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceAt {
    pub account_id: AccountId,
    pub currency: Currency,
    pub at: DateTime<Utc>,
    pub balance: i64,
}

/// A moment as a client writes it: RFC 3339 (`2026-11-30T23:59:59Z`); absent or empty: none.
pub fn parse_moment(
    raw: Option<&str>,
    field: &'static str,
) -> Result<Option<DateTime<Utc>>, ValidationError> {
    match raw {
        None | Some("") => Ok(None),
        Some(raw) => DateTime::parse_from_rfc3339(raw)
            .map(|at| Some(at.with_timezone(&Utc)))
            .map_err(|_| {
                ValidationError::new(field, "must be an RFC 3339 time, like 2026-11-30T23:59:59Z")
            }),
    }
}

/// A page request, parsed: the size, and where the previous page ended.
#[derive(Debug, Clone, Copy, Default)]
pub struct PageRequest {
    pub size: PageSize,
    pub token: Option<PageToken>,
}

impl PageRequest {
    /// Parses a page size (absent: the default) and a page token of the `kind` list (absent or
    /// empty: the first page).
    pub fn parse(
        size: Option<i64>,
        token: Option<&str>,
        kind: PageKind,
    ) -> Result<Self, Vec<ValidationError>> {
        let mut v = Violations::default();
        let size = v.check(size.map_or(Ok(PageSize::default()), PageSize::new));
        let token = match token {
            None | Some("") => Some(None),
            Some(raw) => v.check(PageToken::decode(raw, kind)).map(Some),
        };
        v.finish(|| {
            Some(PageRequest {
                size: size?,
                token: token?,
            })
        })
    }
}

/// simple_bank's numbered pages (`page_id` from 1, `page_size` from 5 to 10), which its gin
/// route `GET /accounts` takes: how many items to skip and to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetPage {
    pub skip: usize,
    pub take: usize,
}

impl OffsetPage {
    /// Parses both numbers, reporting each bad one.
    pub fn parse(page_id: i64, page_size: i64) -> Result<Self, Vec<ValidationError>> {
        let mut problems = Vec::new();
        if !(1..=i64::from(i32::MAX)).contains(&page_id) {
            problems.push(ValidationError::new("page_id", "must be at least 1"));
        }
        if !(5..=10).contains(&page_size) {
            problems.push(ValidationError::new("page_size", "must be from 5 to 10"));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(OffsetPage {
            skip: usize::try_from((page_id - 1) * page_size).unwrap_or(usize::MAX),
            take: usize::try_from(page_size).unwrap_or(0),
        })
    }
}

/// One page of a list, with the opaque token of the next page (`None` on the last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}

impl BankService {
    /// Opens an account for the caller (the owner is always the caller).
    pub async fn create_account(
        &self,
        principal: &Principal,
        currency: Currency,
    ) -> Result<Account, ServiceError> {
        let account = self
            .store
            .accounts
            .create_account(&principal.username, currency)
            .await?;
        self.ownership.remember(&principal.username, account.id);
        Ok(account)
    }

    /// The owner or a banker. Anyone else gets `not_found`, as for an account that does not
    /// exist: a stranger learns nothing of other customers' accounts (SPEC §10).
    pub async fn get_account(
        &self,
        principal: &Principal,
        id: AccountId,
    ) -> Result<Account, ServiceError> {
        let account = self.store.accounts.get_account(id).await?;
        if !principal.may_act_for(&account.owner) {
            return Err(super::ownership::not_found(id));
        }
        Ok(account)
    }

    /// A depositor lists their own accounts (naming another owner is refused); a banker lists
    /// one owner's, or everyone's when no owner is given.
    pub async fn list_accounts(
        &self,
        principal: &Principal,
        owner: Option<Username>,
        page: PageRequest,
    ) -> Result<ListPage<Account>, ServiceError> {
        let owner = match owner {
            Some(owner) if !principal.may_act_for(&owner) => {
                return Err(ServiceError::PermissionDenied(
                    "you may only list your own accounts".to_owned(),
                ));
            }
            Some(owner) => Some(owner),
            None if principal.is_banker() => None,
            None => Some(principal.username.clone()),
        };
        let after = page.token.map(|t| AccountId::new(t.key())).transpose()?;
        let found = self
            .store
            .accounts
            .list_accounts(owner, after, page.size)
            .await?;
        Ok(ListPage {
            items: found.items,
            next_page_token: found
                .next
                .map(|id| PageToken::new(PageKind::Accounts, id.get()).encode()),
        })
    }

    /// The account's balance at a moment (now when not given): the owner or a banker. A moment
    /// in the future is refused: its balance is not known yet.
    pub async fn balance_at(
        &self,
        principal: &Principal,
        account: AccountId,
        at: Option<DateTime<Utc>>,
    ) -> Result<BalanceAt, ServiceError> {
        let now = Utc::now();
        let at = at.unwrap_or(now);
        if at > now {
            return Err(ServiceError::invalid("at", "must not be in the future"));
        }
        let found = self.get_account(principal, account).await?;
        let balance = self.store.accounts.balance_at(account, at).await?;
        Ok(BalanceAt {
            account_id: account,
            currency: found.currency,
            at,
            balance,
        })
    }

    /// The whole statement of an account over a range, as CSV chunks, oldest first: the owner
    /// or a banker. At most `MAX_EXPORTS` run at once per replica (beyond, `unavailable`) and
    /// `EXPORTS_PER_USER` per user (beyond, `rate_limited`): one user's exports cannot take
    /// everyone's. An export holds a connection only while it reads a page.
    pub async fn statement_csv(
        &self,
        principal: &Principal,
        account: AccountId,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> Result<Statement, ServiceError> {
        if let (Some(since), Some(until)) = (since, until)
            && since >= until
        {
            return Err(ServiceError::invalid("until", "must be after since"));
        }
        let found = self.get_account(principal, account).await?;
        let mine =
            self.exports_per_user
                .take(&principal.username)
                .ok_or(ServiceError::RateLimited {
                    retry_after: std::time::Duration::from_secs(1),
                })?;
        let permit = Arc::clone(&self.exports)
            .try_acquire_owned()
            .map_err(|_| ServiceError::Unavailable("too many statement exports at once".into()))?;
        Ok(Statement {
            chunks: self
                .store
                .accounts
                .statement_csv(account, found.currency, since, until),
            _permit: (permit, mine),
        })
    }

    /// The statement of an account, newest first: the owner or a banker.
    pub async fn list_entries(
        &self,
        principal: &Principal,
        account: AccountId,
        page: PageRequest,
    ) -> Result<ListPage<Entry>, ServiceError> {
        self.get_account(principal, account).await?;
        let before = page.token.map(|t| EntryId::new(t.key())).transpose()?;
        let found = self
            .store
            .accounts
            .list_entries(account, before, page.size)
            .await?;
        Ok(ListPage {
            items: found.items,
            next_page_token: found
                .next
                .map(|id| PageToken::new(PageKind::Entries, id.get()).encode()),
        })
    }
}

/// The longest reason kept with a status change.
const MAX_STATUS_REASON_CHARS: usize = 256;

/// A banker's status change as a client writes it: `active`, `frozen` or `closed`, and an
/// optional reason (at most 256 characters, no control characters; blank is none).
pub fn parse_account_status(
    status: &str,
    reason: Option<&str>,
) -> Result<(AccountStatus, Option<String>), Vec<ValidationError>> {
    let status = status.parse::<AccountStatus>();
    let reason = match reason.map(str::trim).filter(|r| !r.is_empty()) {
        None => Ok(None),
        Some(r) if r.chars().count() > MAX_STATUS_REASON_CHARS => Err(ValidationError::new(
            "reason",
            format!("must be at most {MAX_STATUS_REASON_CHARS} characters"),
        )),
        Some(r) if r.chars().any(char::is_control) => Err(ValidationError::new(
            "reason",
            "must not contain control characters",
        )),
        Some(r) => Ok(Some(r.to_owned())),
    };
    match (status, reason) {
        (Ok(status), Ok(reason)) => Ok((status, reason)),
        (status, reason) => Err(status.err().into_iter().chain(reason.err()).collect()),
    }
}

/// An overdraft limit: a whole number of minor units, zero or more.
pub fn parse_overdraft_limit(limit: i64) -> Result<i64, ValidationError> {
    if limit >= 0 {
        Ok(limit)
    } else {
        Err(ValidationError::new(
            "limit",
            "must be zero or a positive whole number of minor units",
        ))
    }
}

impl BankService {
    /// Bankers only: freeze, unfreeze or close a customer account (SPEC §6).
    pub async fn set_account_status(
        &self,
        principal: &Principal,
        id: AccountId,
        status: AccountStatus,
        reason: Option<String>,
        key: Option<IdempotencyKey>,
    ) -> MoneyAnswer<Account> {
        let control = AccountControl::Status { id, status, reason };
        self.control_account(principal, "change an account's status", control, key)
            .await
    }

    /// Bankers only: how far below zero a customer account may go.
    pub async fn set_overdraft_limit(
        &self,
        principal: &Principal,
        id: AccountId,
        limit: i64,
        key: Option<IdempotencyKey>,
    ) -> MoneyAnswer<Account> {
        let control = AccountControl::OverdraftLimit { id, limit };
        self.control_account(principal, "set overdraft limits", control, key)
            .await
    }

    /// A banker's change, once per key when the caller gave one.
    async fn control_account(
        &self,
        principal: &Principal,
        what: &str,
        control: AccountControl,
        key: Option<IdempotencyKey>,
    ) -> MoneyAnswer<Account> {
        if let Err(denied) = require_banker(principal, what) {
            return MoneyAnswer::fresh(Err(denied));
        }
        let accounts = &self.store.accounts;
        match (&control, key) {
            (_, Some(key)) => keyed_answer(
                accounts
                    .control_account_once(&control, &principal.username, &key)
                    .await,
                Into::into,
            ),
            (AccountControl::Status { id, status, reason }, None) => MoneyAnswer::fresh(
                (accounts
                    .set_account_status(*id, *status, reason.clone())
                    .await)
                    .map_err(Into::into),
            ),
            (AccountControl::OverdraftLimit { id, limit }, None) => MoneyAnswer::fresh(
                (accounts.set_overdraft_limit(*id, *limit).await).map_err(Into::into),
            ),
        }
    }
}
