//! The JSON shapes of SPEC §3. Requests deny unknown fields and convert into domain values through
//! `TryFrom`, reporting every bad field at once, by calling the same parsers the gRPC adapter
//! calls; the rules themselves live in `domain`, not here.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::IssuedToken;
use crate::domain::{
    Account, Amount, Currency, Entry, Hold, HoldId, Label, Metadata, NewHold, NewTransfer,
    PageKind, Password, Transfer, TransferId, TransferReceipt, User, Username, ValidationError,
    both,
};
use crate::service::WebhookWithSecret;
use crate::service::{
    BalanceAt, HoldRequest, LoginResult, NewUserRequest, PageRequest, UpdateUserRequest,
    parse_credentials, parse_hold, parse_money, parse_transfer,
};
use crate::store::{CapturedHold, DeliveryAttempt, PlacedHold, WebhookEndpoint};

// --- requests ----------------------------------------------------------------------------------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserBody {
    /// 3 to 32 of a-z, 0-9 and _.
    #[schema(example = "alice")]
    pub username: String,
    #[schema(example = "Alice Liddell")]
    pub full_name: String,
    #[schema(example = "alice@example.com")]
    pub email: String,
    /// 8 to 128 characters.
    #[schema(example = "wonderland1")]
    pub password: String,
}

impl TryFrom<CreateUserBody> for NewUserRequest {
    type Error = Vec<ValidationError>;

    fn try_from(body: CreateUserBody) -> Result<Self, Self::Error> {
        NewUserRequest::parse(&body.username, &body.full_name, &body.email, &body.password)
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    pub username: String,
    pub password: String,
}

impl TryFrom<LoginBody> for (Username, Password) {
    type Error = Vec<ValidationError>;

    fn try_from(body: LoginBody) -> Result<Self, Self::Error> {
        parse_credentials(&body.username, &body.password)
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshTokenBody {
    pub refresh_token: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserBody {
    pub full_name: Option<String>,
    pub email: Option<String>,
    pub password: Option<String>,
    /// The caller's own password: required with `email` or `password`.
    pub current_password: Option<String>,
}

impl TryFrom<UpdateUserBody> for UpdateUserRequest {
    type Error = Vec<ValidationError>;

    fn try_from(body: UpdateUserBody) -> Result<Self, Self::Error> {
        UpdateUserRequest::parse(
            body.full_name.as_deref(),
            body.email.as_deref(),
            body.password.as_deref(),
            body.current_password.as_deref(),
        )
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    pub role: String,
}

/// A banker's change of an account's status.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountStatusBody {
    /// `active`, `frozen` or `closed` (only at a zero balance; final).
    #[schema(example = "frozen")]
    pub status: String,
    /// Why, kept with the account (at most 256 characters).
    pub reason: Option<String>,
}

/// A banker's overdraft limit for an account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverdraftLimitBody {
    /// Minor units the balance may go below zero; 0 for none.
    pub limit: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccountBody {
    pub currency: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    /// An account of the caller's.
    #[schema(example = 1)]
    pub from_account_id: i64,
    #[schema(example = 2)]
    pub to_account_id: i64,
    /// Minor units (cents), greater than zero.
    #[schema(example = 2500)]
    pub amount: i64,
    /// ISO 4217 code of both accounts.
    #[schema(example = "USD")]
    pub currency: String,
    /// 1 to 64 printable ASCII characters, e.g. an invoice number; searchable with
    /// `GET /v1/accounts/{id}/transfers?reference=`.
    #[schema(example = "INV-2291")]
    pub reference: Option<String>,
    /// String values only, at most 4 KiB as JSON.
    pub metadata: Option<BTreeMap<String, String>>,
}

impl TryFrom<TransferBody> for NewTransfer {
    type Error = Vec<ValidationError>;

    fn try_from(body: TransferBody) -> Result<Self, Self::Error> {
        let transfer = parse_transfer(
            body.from_account_id,
            body.to_account_id,
            body.amount,
            &body.currency,
        );
        let label = Label::parse(body.reference.as_deref(), body.metadata);
        both(transfer, label).map(|(transfer, label)| transfer.with_label(label))
    }
}

/// A deposit or a withdrawal.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoneyBody {
    pub amount: i64,
    pub currency: String,
    /// 1 to 64 printable ASCII characters.
    pub reference: Option<String>,
    /// String values only, at most 4 KiB as JSON.
    pub metadata: Option<BTreeMap<String, String>>,
}

impl TryFrom<MoneyBody> for (Amount, Currency, Label) {
    type Error = Vec<ValidationError>;

    fn try_from(body: MoneyBody) -> Result<Self, Self::Error> {
        let money = parse_money(body.amount, &body.currency);
        let label = Label::parse(body.reference.as_deref(), body.metadata);
        both(money, label).map(|((amount, currency), label)| (amount, currency, label))
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Rows per page, 1 to 100 (default 20).
    pub page_size: Option<i64>,
    /// The `next_page_token` of the previous page.
    pub page_token: Option<String>,
}

impl PageQuery {
    pub fn parse(self, kind: PageKind) -> Result<PageRequest, Vec<ValidationError>> {
        PageRequest::parse(self.page_size, self.page_token.as_deref(), kind)
    }
}

/// A hold to place: the payer authorises `amount` for the payee to capture later.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldBody {
    /// The payer's account (the caller's, unless a banker places it).
    #[schema(example = 1)]
    pub from_account_id: i64,
    /// The payee's account.
    #[schema(example = 2)]
    pub to_account_id: i64,
    /// Minor units reserved, greater than zero.
    #[schema(example = 5000)]
    pub amount: i64,
    #[schema(example = "USD")]
    pub currency: String,
    /// Seconds until it expires, 1 to 2592000 (30 days); the server's `HOLD_TTL` when absent.
    #[schema(example = 3600)]
    pub expires_in: Option<i64>,
    /// 1 to 64 printable ASCII characters.
    #[schema(example = "order-1042")]
    pub reference: Option<String>,
    /// String values only, at most 4 KiB as JSON.
    pub metadata: Option<BTreeMap<String, String>>,
}

impl TryFrom<HoldBody> for NewHold {
    type Error = Vec<ValidationError>;

    fn try_from(body: HoldBody) -> Result<Self, Self::Error> {
        parse_hold(HoldRequest {
            from_account_id: body.from_account_id,
            to_account_id: body.to_account_id,
            amount: body.amount,
            currency: &body.currency,
            expires_in: body.expires_in,
            reference: body.reference.as_deref(),
            metadata: body.metadata,
        })
    }
}

/// A reversal: all of the transfer unless `amount` says less.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReversalBody {
    /// Minor units, at most the original's amount.
    #[schema(example = 1000)]
    pub amount: Option<i64>,
    /// 1 to 64 printable ASCII characters.
    #[schema(example = "refund-INV-2291")]
    pub reference: Option<String>,
    /// String values only, at most 4 KiB as JSON.
    pub metadata: Option<BTreeMap<String, String>>,
}

/// A capture: all of the hold unless `amount` says less.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureBody {
    /// Minor units, at most the hold's amount; the rest is released.
    #[schema(example = 3000)]
    pub amount: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HoldsQuery {
    /// Only holds in this status: `pending`, `captured`, `voided` or `expired` (as of now).
    pub status: Option<String>,
    /// Rows per page, 1 to 100 (default 20).
    pub page_size: Option<i64>,
    /// The `next_page_token` of the previous page.
    pub page_token: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EntriesQuery {
    /// JSON: rows per page, 1 to 100 (default 20).
    pub page_size: Option<i64>,
    /// JSON: the `next_page_token` of the previous page.
    pub page_token: Option<String>,
    /// CSV only (`Accept: text/csv`): RFC 3339, entries at or after it.
    pub since: Option<String>,
    /// CSV only: RFC 3339, entries before it.
    pub until: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TransfersQuery {
    /// `in` (money received), `out` (money sent) or `any` (the default).
    pub direction: Option<String>,
    /// RFC 3339; only transfers at or after it.
    pub since: Option<String>,
    /// RFC 3339; only transfers before it.
    pub until: Option<String>,
    /// Only transfers with this reference.
    pub reference: Option<String>,
    /// Rows per page, 1 to 100 (default 20).
    pub page_size: Option<i64>,
    /// The `next_page_token` of the previous page.
    pub page_token: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BalanceQuery {
    /// RFC 3339, e.g. `2026-11-30T23:59:59Z`; now when absent. Not in the future.
    pub at: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AccountsQuery {
    /// Rows per page, 1 to 100 (default 20).
    pub page_size: Option<i64>,
    /// The `next_page_token` of the previous page.
    pub page_token: Option<String>,
    /// Bankers: list this owner's accounts (all accounts when absent).
    pub owner: Option<String>,
}

// --- responses ---------------------------------------------------------------------------------

#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub username: String,
    pub full_name: String,
    pub email: String,
    pub role: &'static str,
    pub is_email_verified: bool,
    pub password_changed_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        UserView {
            username: u.username.as_str().to_owned(),
            full_name: u.full_name.as_str().to_owned(),
            email: u.email.as_str().to_owned(),
            role: u.role.as_str(),
            is_email_verified: u.is_email_verified,
            password_changed_at: u.password_changed_at,
            created_at: u.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserResponse {
    pub user: UserView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    pub id: i64,
    pub owner: String,
    pub currency: &'static str,
    /// Minor units; never below `-overdraft_limit`.
    pub balance: i64,
    /// `active`, `frozen` (no debits; credits still land) or `closed` (final).
    #[schema(example = "active")]
    pub status: &'static str,
    /// How far below zero the balance may go, in minor units (set by bankers).
    pub overdraft_limit: i64,
    /// `balance` minus what pending, unexpired holds reserve: what debits may take, with the
    /// overdraft limit on top.
    pub available_balance: i64,
    pub created_at: DateTime<Utc>,
}

impl From<Account> for AccountView {
    fn from(a: Account) -> Self {
        AccountView {
            id: a.id.get(),
            owner: a.owner.as_str().to_owned(),
            currency: a.currency.code(),
            balance: a.balance,
            status: a.status.as_str(),
            overdraft_limit: a.overdraft_limit,
            available_balance: a.available_balance(),
            created_at: a.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountResponse {
    pub account: AccountView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountList {
    pub accounts: Vec<AccountView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EntryView {
    pub id: i64,
    pub account_id: i64,
    pub transfer_id: i64,
    pub amount: i64,
    pub balance_after: i64,
    pub created_at: DateTime<Utc>,
}

impl From<Entry> for EntryView {
    fn from(e: Entry) -> Self {
        EntryView {
            id: e.id.get(),
            account_id: e.account_id.get(),
            transfer_id: e.transfer_id.get(),
            amount: e.amount,
            balance_after: e.balance_after,
            created_at: e.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EntryList {
    pub entries: Vec<EntryView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TransferView {
    pub id: i64,
    pub from_account_id: i64,
    pub to_account_id: i64,
    pub amount: i64,
    pub currency: &'static str,
    /// The hold this transfer captured; absent for other transfers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// The transfer this one reverses; absent for other transfers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reverses_transfer_id: Option<i64>,
    pub created_at: DateTime<Utc>,
}

impl From<Transfer> for TransferView {
    fn from(t: Transfer) -> Self {
        TransferView {
            id: t.id.get(),
            from_account_id: t.from_account_id.get(),
            to_account_id: t.to_account_id.get(),
            amount: t.amount.minor_units(),
            currency: t.currency.code(),
            hold_id: t.hold_id.map(HoldId::get),
            reference: t.label.reference_str().map(str::to_owned),
            metadata: t.label.metadata.map(Metadata::into_entries),
            reverses_transfer_id: t.reverses.map(TransferId::get),
            created_at: t.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TransferList {
    pub transfers: Vec<TransferView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TransferResponse {
    pub transfer: TransferView,
}

/// The recipient's side of a transfer, as the sender sees it: the entry without `balance_after`,
/// which would be the recipient's balance.
#[derive(Debug, Serialize, ToSchema)]
pub struct CounterpartyEntryView {
    pub id: i64,
    pub account_id: i64,
    pub transfer_id: i64,
    pub amount: i64,
    pub created_at: DateTime<Utc>,
}

impl From<Entry> for CounterpartyEntryView {
    fn from(e: Entry) -> Self {
        CounterpartyEntryView {
            id: e.id.get(),
            account_id: e.account_id.get(),
            transfer_id: e.transfer_id.get(),
            amount: e.amount,
            created_at: e.created_at,
        }
    }
}

/// The result of a transfer: the caller's account after it, never the recipient's balance.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransferResult {
    pub transfer: TransferView,
    pub from_account: AccountView,
    pub from_entry: EntryView,
    pub to_entry: CounterpartyEntryView,
}

/// An account's balance at a moment: its last entry's `balance_after` at or before it (0 before
/// the first).
#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceResponse {
    pub account_id: i64,
    pub currency: &'static str,
    pub at: DateTime<Utc>,
    /// Minor units.
    pub balance: i64,
}

impl From<BalanceAt> for BalanceResponse {
    fn from(b: BalanceAt) -> Self {
        BalanceResponse {
            account_id: b.account_id.get(),
            currency: b.currency.code(),
            at: b.at,
            balance: b.balance,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HoldView {
    pub id: i64,
    pub from_account_id: i64,
    pub to_account_id: i64,
    /// Minor units reserved.
    pub amount: i64,
    pub currency: &'static str,
    /// `pending`, `captured`, `voided` or `expired` (a pending hold past `expires_at` reads
    /// `expired` at once).
    #[schema(example = "pending")]
    pub status: &'static str,
    /// What the capture took; present once captured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub captured_amount: Option<i64>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// When it was captured or voided, or its `expires_at` once expired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

impl From<Hold> for HoldView {
    fn from(h: Hold) -> Self {
        HoldView {
            id: h.id.get(),
            from_account_id: h.from_account_id.get(),
            to_account_id: h.to_account_id.get(),
            amount: h.amount.minor_units(),
            currency: h.currency.code(),
            status: h.status.as_str(),
            captured_amount: h.captured_amount.map(Amount::minor_units),
            expires_at: h.expires_at,
            created_at: h.created_at,
            resolved_at: h.resolved_at,
            reference: h.reference.map(|r| r.as_str().to_owned()),
            metadata: h.metadata.map(|m| m.into_entries()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HoldResponse {
    pub hold: HoldView,
}

/// A placed hold, and the payer's account with the amount reserved.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlacedHoldResult {
    pub hold: HoldView,
    pub from_account: AccountView,
}

impl From<PlacedHold> for PlacedHoldResult {
    fn from(placed: PlacedHold) -> Self {
        PlacedHoldResult {
            hold: placed.hold.into(),
            from_account: placed.from_account.into(),
        }
    }
}

/// A captured hold, the transfer that captured it and the payee's entry (the payer's balance is
/// not the payee's to see).
#[derive(Debug, Serialize, ToSchema)]
pub struct CaptureResult {
    pub hold: HoldView,
    pub transfer: TransferView,
    pub to_entry: EntryView,
}

impl From<CapturedHold> for CaptureResult {
    fn from(captured: CapturedHold) -> Self {
        CaptureResult {
            hold: captured.hold.into(),
            transfer: captured.receipt.transfer.into(),
            to_entry: captured.receipt.to_entry.into(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HoldList {
    pub holds: Vec<HoldView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// A reversal as the banker sees it: the new transfer and both its entries.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReversalResult {
    pub transfer: TransferView,
    pub from_entry: EntryView,
    pub to_entry: EntryView,
}

impl From<TransferReceipt> for ReversalResult {
    fn from(r: TransferReceipt) -> Self {
        ReversalResult {
            transfer: r.transfer.into(),
            from_entry: r.from_entry.into(),
            to_entry: r.to_entry.into(),
        }
    }
}

/// The result of a deposit or withdrawal: the customer's account and entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct MoneyResult {
    pub transfer: TransferView,
    pub account: AccountView,
    pub entry: EntryView,
}

impl MoneyResult {
    /// In a deposit the customer's account receives: the to-side.
    pub fn of_deposit(receipt: TransferReceipt) -> Self {
        MoneyResult {
            transfer: receipt.transfer.into(),
            account: receipt.to_account.into(),
            entry: receipt.to_entry.into(),
        }
    }

    /// In a withdrawal the customer's account pays: the from-side.
    pub fn of_withdrawal(receipt: TransferReceipt) -> Self {
        MoneyResult {
            transfer: receipt.transfer.into(),
            account: receipt.from_account.into(),
            entry: receipt.from_entry.into(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    pub session_id: String,
    pub access_token: String,
    pub access_token_expires_at: DateTime<Utc>,
    pub refresh_token: String,
    pub refresh_token_expires_at: DateTime<Utc>,
    pub user: UserView,
}

impl From<LoginResult> for LoginResponse {
    fn from(login: LoginResult) -> Self {
        LoginResponse {
            session_id: login.session_id.to_string(),
            access_token: login.access_token.token.expose_secret().to_owned(),
            access_token_expires_at: login.access_token.claims.expires_at,
            refresh_token: login.refresh_token.token.expose_secret().to_owned(),
            refresh_token_expires_at: login.refresh_token.claims.expires_at,
            user: login.user.into(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RenewResponse {
    pub access_token: String,
    pub access_token_expires_at: DateTime<Utc>,
}

impl From<IssuedToken> for RenewResponse {
    fn from(token: IssuedToken) -> Self {
        RenewResponse {
            access_token: token.token.expose_secret().to_owned(),
            access_token_expires_at: token.claims.expires_at,
        }
    }
}

/// The optional idempotency header of the money-moving routes. Documentation only: the `IdemKey`
/// extractor reads the header.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKeyHeader {
    /// 1–255 printable ASCII characters naming this money movement, unique per user. A retry
    /// with the same key and the same request gets the first answer again, success or refusal,
    /// marked `Idempotent-Replayed: true`, and moves no money; the same key with a different
    /// request gets 422 `idempotency_mismatch`; while the first is still running, 409
    /// `conflict`. Keys are remembered for 24 hours (`IDEMPOTENCY_KEY_RETENTION`).
    #[serde(rename = "Idempotency-Key")]
    #[param(value_type = String, required = false, min_length = 1, max_length = 255, pattern = "^[ -~]+$")]
    #[allow(dead_code)]
    pub idempotency_key: Option<String>,
}

/// The two halves of a verification link.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VerifyEmailQuery {
    /// The `email_id` of the verification link.
    pub email_id: i64,
    /// The `secret_code` of the verification link: 64 hex characters.
    pub secret_code: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyEmailResult {
    /// True: the address is verified now (every failure is an error response instead).
    pub is_verified: bool,
}

// --- webhooks and events -----------------------------------------------------------------------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookBody {
    /// Where deliveries are POSTed: http(s); in production not a loopback, private or
    /// link-local address (unless WEBHOOK_ALLOW_PRIVATE=true).
    #[schema(example = "https://hooks.example.com/simplebank")]
    pub url: Option<String>,
    /// The event types to send; empty or absent: every type.
    #[serde(default)]
    #[schema(example = json!(["deposit.created", "hold.captured"]))]
    pub event_types: Vec<String>,
    /// Up to 256 characters, for the bankers' own use.
    pub description: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    pub id: i64,
    pub url: String,
    /// Empty: every type.
    pub event_types: Vec<String>,
    pub description: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

impl From<WebhookEndpoint> for WebhookView {
    fn from(w: WebhookEndpoint) -> Self {
        WebhookView {
            id: w.id,
            url: w.url,
            event_types: w.event_types,
            description: w.description,
            created_by: w.created_by.as_str().to_owned(),
            created_at: w.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookCreated {
    pub webhook: WebhookView,
    /// The signing secret (`whsec_` + base64), shown only in this response. Verify deliveries
    /// with any Standard Webhooks library.
    pub secret: String,
}

impl From<WebhookWithSecret> for WebhookCreated {
    fn from(w: WebhookWithSecret) -> Self {
        WebhookCreated {
            webhook: w.endpoint.into(),
            secret: w.secret,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryAttemptView {
    pub delivery_id: i64,
    pub event_id: i64,
    pub event_type: String,
    /// 1 for the first attempt of this delivery.
    pub attempt: i32,
    pub attempted_at: DateTime<Utc>,
    pub duration_ms: i32,
    /// The receiver's HTTP status; absent when there was none (refused, timed out, blocked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The delivery now: `delivered`, `retrying` or `failed`.
    #[schema(example = "delivered")]
    pub delivery_status: &'static str,
}

impl From<DeliveryAttempt> for DeliveryAttemptView {
    fn from(a: DeliveryAttempt) -> Self {
        DeliveryAttemptView {
            delivery_id: a.delivery_id,
            event_id: a.event_id,
            event_type: a.event_type,
            attempt: a.attempt,
            attempted_at: a.started_at,
            duration_ms: a.duration_ms,
            status_code: a.status_code,
            error: a.error,
            delivery_status: a.delivery_status,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    /// The newest 100 attempts, newest first.
    pub deliveries: Vec<DeliveryAttemptView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeliverBody {
    pub event_id: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RedeliverResult {
    /// The new delivery; its attempts show in the delivery log.
    pub delivery_id: i64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Resume after this event id (the `Last-Event-ID` header wins when both are given);
    /// absent: only events from now on.
    pub after: Option<i64>,
}
