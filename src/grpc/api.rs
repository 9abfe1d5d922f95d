//! `SimpleBank` over `BankService`: parse the proto request with the shared parsers, authenticate
//! from the `authorization` metadata with the one verifier, call the service, convert back.

use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use super::error::{invalid, to_status};
use super::guard::Guarded;
use super::pb::{self, simple_bank_server::SimpleBank};
use crate::auth::Principal;
use crate::domain::{
    AccountId, Currency, HoldId, IdempotencyKey, PageKind, Role, TransferId, Username, both,
};
use crate::service::edge;
use crate::service::{
    BankService, ClientAddress, ClientInfo, HoldRequest, MoneyAnswer, NewUserRequest, PageRequest,
    UpdateUserRequest, parse_account_status, parse_amount_or_all, parse_credentials, parse_hold,
    parse_hold_status, parse_id, parse_moment, parse_money, parse_overdraft_limit, parse_reversal,
    parse_transfer, parse_transfer_filter, parse_verification, parse_webhook,
};

/// The gRPC face of the bank.
#[derive(Clone)]
pub struct GrpcApi {
    service: BankService,
}

impl GrpcApi {
    pub fn new(service: BankService) -> Self {
        Self { service }
    }

    /// The bank's server: every RPC behind the service's `Admission` (see `guard.rs`), requests
    /// over `message_limit` bytes refused.
    pub fn server(
        service: BankService,
        message_limit: usize,
    ) -> Guarded<pb::simple_bank_server::SimpleBankServer<GrpcApi>> {
        let admission = service.admission().clone();
        let server = pb::simple_bank_server::SimpleBankServer::new(Self::new(service))
            .max_decoding_message_size(message_limit);
        Guarded::new(server, admission, message_limit)
    }

    /// The caller, from `authorization: Bearer <access token>` metadata.
    fn caller<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        let value = request.metadata().get(edge::AUTHORIZATION);
        let token = edge::bearer_token(value.map(|v| v.as_bytes()))?;
        Ok(self.service.authenticate(token)?)
    }
}

fn client<T>(request: &Request<T>) -> ClientInfo {
    edge::client_info(
        request
            .metadata()
            .get(edge::USER_AGENT)
            .map(|v| v.as_bytes()),
        request.extensions().get::<ClientAddress>().copied(),
        request.remote_addr().map(|a| a.ip()),
    )
}

fn username(raw: &str) -> Result<Username, Status> {
    Username::parse(raw).map_err(|e| invalid(vec![e]))
}

fn account_id(raw: i64, field: &'static str) -> Result<AccountId, Status> {
    AccountId::new(raw).map_err(|e| invalid(vec![e.for_field(field)]))
}

/// proto3 has no "absent" for scalars: 0 and "" mean "not given".
fn page(size: i32, token: &str, kind: PageKind) -> Result<PageRequest, Status> {
    let size = (size != 0).then_some(i64::from(size));
    PageRequest::parse(size, Some(token), kind).map_err(invalid)
}

type RpcResult<T> = Result<Response<T>, Status>;

pub use crate::service::edge::{IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED};

/// The optional `idempotency-key` metadata, parsed; a malformed one is refused before anything
/// runs.
fn idempotency_key<T>(request: &Request<T>) -> Result<Option<IdempotencyKey>, Status> {
    let value = request.metadata().get(IDEMPOTENCY_KEY);
    Ok(edge::idempotency_key(
        value.map(|v| v.as_bytes()),
        IDEMPOTENCY_KEY,
    )?)
}

/// The rendered receipt or the error; with `idempotent-replayed: true` metadata when the answer
/// is an earlier request's under the same key.
fn money_response<R, T>(answer: MoneyAnswer<R>, render: impl FnOnce(R) -> T) -> RpcResult<T> {
    let replayed = answer.replayed.then(|| MetadataValue::from_static("true"));
    match answer.outcome {
        Ok(receipt) => {
            let mut response = Response::new(render(receipt));
            if let Some(flag) = replayed {
                response.metadata_mut().insert(IDEMPOTENT_REPLAYED, flag);
            }
            Ok(response)
        }
        Err(error) => {
            let mut status = to_status(error);
            if let Some(flag) = replayed {
                status.metadata_mut().insert(IDEMPOTENT_REPLAYED, flag);
            }
            Err(status)
        }
    }
}

#[tonic::async_trait]
impl SimpleBank for GrpcApi {
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> RpcResult<pb::CreateUserResponse> {
        let client = client(&request);
        let r = request.into_inner();
        let new = NewUserRequest::parse(&r.username, &r.full_name, &r.email, &r.password)
            .map_err(invalid)?;
        let user = self.service.create_user(new, &client).await?;
        Ok(Response::new(pb::CreateUserResponse {
            user: Some(user.into()),
        }))
    }

    async fn login_user(
        &self,
        request: Request<pb::LoginUserRequest>,
    ) -> RpcResult<pb::LoginUserResponse> {
        let client = client(&request);
        let r = request.into_inner();
        let (username, password) = parse_credentials(&r.username, &r.password).map_err(invalid)?;
        let login = self.service.login(username, password, client).await?;
        Ok(Response::new(login.into()))
    }

    async fn renew_access_token(
        &self,
        request: Request<pb::RenewAccessTokenRequest>,
    ) -> RpcResult<pb::RenewAccessTokenResponse> {
        let token = self
            .service
            .renew_access_token(&request.into_inner().refresh_token)
            .await?;
        Ok(Response::new(token.into()))
    }

    async fn logout_user(
        &self,
        request: Request<pb::LogoutUserRequest>,
    ) -> RpcResult<pb::LogoutUserResponse> {
        self.service
            .logout(&request.into_inner().refresh_token)
            .await?;
        Ok(Response::new(pb::LogoutUserResponse {}))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> RpcResult<pb::GetUserResponse> {
        let caller = self.caller(&request)?;
        let name = username(&request.into_inner().username)?;
        let user = self.service.get_user(&caller, &name).await?;
        Ok(Response::new(pb::GetUserResponse {
            user: Some(user.into()),
        }))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> RpcResult<pb::UpdateUserResponse> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let name = username(&r.username)?;
        let update = UpdateUserRequest::parse(
            r.full_name.as_deref(),
            r.email.as_deref(),
            r.password.as_deref(),
            r.current_password.as_deref(),
        )
        .map_err(invalid)?;
        let user = self.service.update_user(&caller, &name, update).await?;
        Ok(Response::new(pb::UpdateUserResponse {
            user: Some(user.into()),
        }))
    }

    async fn verify_email(
        &self,
        request: Request<pb::VerifyEmailRequest>,
    ) -> RpcResult<pb::VerifyEmailResponse> {
        let client = client(&request);
        let r = request.into_inner();
        let (email_id, code) = parse_verification(r.email_id, &r.secret_code).map_err(invalid)?;
        self.service.verify_email(email_id, code, &client).await?;
        Ok(Response::new(pb::VerifyEmailResponse { is_verified: true }))
    }

    async fn set_user_role(
        &self,
        request: Request<pb::SetUserRoleRequest>,
    ) -> RpcResult<pb::SetUserRoleResponse> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let name = username(&r.username)?;
        let role: Role = r.role.parse().map_err(|e| invalid(vec![e]))?;
        let user = self.service.set_user_role(&caller, &name, role).await?;
        Ok(Response::new(pb::SetUserRoleResponse {
            user: Some(user.into()),
        }))
    }

    async fn create_account(
        &self,
        request: Request<pb::CreateAccountRequest>,
    ) -> RpcResult<pb::CreateAccountResponse> {
        let caller = self.caller(&request)?;
        let currency: Currency = request
            .into_inner()
            .currency
            .parse()
            .map_err(|e| invalid(vec![e]))?;
        let account = self.service.create_account(&caller, currency).await?;
        Ok(Response::new(pb::CreateAccountResponse {
            account: Some(account.into()),
        }))
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> RpcResult<pb::GetAccountResponse> {
        let caller = self.caller(&request)?;
        let id = account_id(request.into_inner().id, "id")?;
        let account = self.service.get_account(&caller, id).await?;
        Ok(Response::new(pb::GetAccountResponse {
            account: Some(account.into()),
        }))
    }

    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> RpcResult<pb::ListAccountsResponse> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let owner = match r.owner.as_str() {
            "" => None,
            raw => Some(Username::parse(raw).map_err(|e| invalid(vec![e.for_field("owner")]))?),
        };
        let page = page(r.page_size, &r.page_token, PageKind::Accounts)?;
        let found = self.service.list_accounts(&caller, owner, page).await?;
        Ok(Response::new(pb::ListAccountsResponse {
            accounts: found.items.into_iter().map(Into::into).collect(),
            next_page_token: found.next_page_token.unwrap_or_default(),
        }))
    }

    async fn list_entries(
        &self,
        request: Request<pb::ListEntriesRequest>,
    ) -> RpcResult<pb::ListEntriesResponse> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let account = account_id(r.account_id, "account_id")?;
        let page = page(r.page_size, &r.page_token, PageKind::Entries)?;
        let found = self.service.list_entries(&caller, account, page).await?;
        Ok(Response::new(pb::ListEntriesResponse {
            entries: found.items.into_iter().map(Into::into).collect(),
            next_page_token: found.next_page_token.unwrap_or_default(),
        }))
    }

    async fn create_transfer(
        &self,
        request: Request<pb::CreateTransferRequest>,
    ) -> RpcResult<pb::CreateTransferResponse> {
        let caller = self.caller(&request)?;
        let key = idempotency_key(&request)?;
        let r = request.into_inner();
        let transfer = parse_transfer(r.from_account_id, r.to_account_id, r.amount, &r.currency);
        let label = label_of(&r.reference, r.metadata);
        let (transfer, label) = both(transfer, label).map_err(invalid)?;
        let transfer = transfer.with_label(label);
        let answer = self.service.create_transfer(&caller, transfer, key).await;
        money_response(answer, Into::into)
    }

    async fn get_transfer(
        &self,
        request: Request<pb::GetTransferRequest>,
    ) -> RpcResult<pb::GetTransferResponse> {
        let caller = self.caller(&request)?;
        let id = TransferId::new(request.into_inner().id)
            .map_err(|e| invalid(vec![e.for_field("id")]))?;
        let transfer = self.service.get_transfer(&caller, id).await?;
        Ok(Response::new(pb::GetTransferResponse {
            transfer: Some(transfer.into()),
        }))
    }

    async fn deposit(
        &self,
        request: Request<pb::DepositRequest>,
    ) -> RpcResult<pb::DepositResponse> {
        let caller = self.caller(&request)?;
        let key = idempotency_key(&request)?;
        let r = request.into_inner();
        let account = account_id(r.account_id, "account_id")?;
        let money = parse_money(r.amount, &r.currency);
        let label = label_of(&r.reference, r.metadata);
        let ((amount, currency), label) = both(money, label).map_err(invalid)?;
        let answer = self
            .service
            .deposit(&caller, account, amount, currency, label, key)
            .await;
        money_response(answer, |receipt| pb::DepositResponse {
            transfer: Some(receipt.transfer.into()),
            account: Some(receipt.to_account.into()),
            entry: Some(receipt.to_entry.into()),
        })
    }

    async fn withdraw(
        &self,
        request: Request<pb::WithdrawRequest>,
    ) -> RpcResult<pb::WithdrawResponse> {
        let caller = self.caller(&request)?;
        let key = idempotency_key(&request)?;
        let r = request.into_inner();
        let account = account_id(r.account_id, "account_id")?;
        let money = parse_money(r.amount, &r.currency);
        let label = label_of(&r.reference, r.metadata);
        let ((amount, currency), label) = both(money, label).map_err(invalid)?;
        let answer = self
            .service
            .withdraw(&caller, account, amount, currency, label, key)
            .await;
        money_response(answer, |receipt| pb::WithdrawResponse {
            transfer: Some(receipt.transfer.into()),
            account: Some(receipt.from_account.into()),
            entry: Some(receipt.from_entry.into()),
        })
    }

    async fn set_account_status(
        &self,
        request: Request<pb::SetAccountStatusRequest>,
    ) -> RpcResult<pb::SetAccountStatusResponse> {
        let caller = self.caller(&request)?;
        let key = idempotency_key(&request)?;
        let r = request.into_inner();
        let id = account_id(r.account_id, "account_id")?;
        let (status, reason) = parse_account_status(&r.status, Some(&r.reason)).map_err(invalid)?;
        let answer = self
            .service
            .set_account_status(&caller, id, status, reason, key)
            .await;
        money_response(answer, |account| pb::SetAccountStatusResponse {
            account: Some(account.into()),
        })
    }

    async fn set_overdraft_limit(
        &self,
        request: Request<pb::SetOverdraftLimitRequest>,
    ) -> RpcResult<pb::SetOverdraftLimitResponse> {
        let caller = self.caller(&request)?;
        let key = idempotency_key(&request)?;
        let r = request.into_inner();
        let id = account_id(r.account_id, "account_id")?;
        let limit = parse_overdraft_limit(r.limit).map_err(|e| invalid(vec![e]))?;
        let answer = self
            .service
            .set_overdraft_limit(&caller, id, limit, key)
            .await;
        money_response(answer, |account| pb::SetOverdraftLimitResponse {
            account: Some(account.into()),
        })
    }

    async fn create_hold(
        &self,
        request: Request<pb::CreateHoldRequest>,
    ) -> RpcResult<pb::CreateHoldResponse> {
        let caller = self.caller(&request)?;
        let key = idempotency_key(&request)?;
        let r = request.into_inner();
        let hold = parse_hold(HoldRequest {
            from_account_id: r.from_account_id,
            to_account_id: r.to_account_id,
            amount: r.amount,
            currency: &r.currency,
            // proto3 has no absent integer or string: 0 and "" mean "not given".
            expires_in: (r.expires_in != 0).then_some(r.expires_in),
            reference: (!r.reference.is_empty()).then_some(r.reference.as_str()),
            metadata: (!r.metadata.is_empty()).then(|| r.metadata.into_iter().collect()),
        })
        .map_err(invalid)?;
        let answer = self.service.create_hold(&caller, hold, key).await;
        money_response(answer, |placed| pb::CreateHoldResponse {
            hold: Some(placed.hold.into()),
            from_account: Some(placed.from_account.into()),
        })
    }

    async fn capture_hold(
        &self,
        request: Request<pb::CaptureHoldRequest>,
    ) -> RpcResult<pb::CaptureHoldResponse> {
        let caller = self.caller(&request)?;
        let key = idempotency_key(&request)?;
        let r = request.into_inner();
        let id = hold_id(r.hold_id)?;
        let amount = parse_amount_or_all(Some(r.amount)).map_err(|e| invalid(vec![e]))?;
        let answer = self.service.capture_hold(&caller, id, amount, key).await;
        money_response(answer, |captured| pb::CaptureHoldResponse {
            hold: Some(captured.hold.into()),
            transfer: Some(captured.receipt.transfer.into()),
            to_entry: Some(captured.receipt.to_entry.into()),
        })
    }

    async fn void_hold(
        &self,
        request: Request<pb::VoidHoldRequest>,
    ) -> RpcResult<pb::VoidHoldResponse> {
        let caller = self.caller(&request)?;
        let key = idempotency_key(&request)?;
        let id = hold_id(request.get_ref().hold_id)?;
        let answer = self.service.void_hold(&caller, id, key).await;
        money_response(answer, |hold| pb::VoidHoldResponse {
            hold: Some(hold.into()),
        })
    }

    async fn get_hold(
        &self,
        request: Request<pb::GetHoldRequest>,
    ) -> RpcResult<pb::GetHoldResponse> {
        let caller = self.caller(&request)?;
        let id = hold_id(request.get_ref().hold_id)?;
        let hold = self.service.get_hold(&caller, id).await?;
        Ok(Response::new(pb::GetHoldResponse {
            hold: Some(hold.into()),
        }))
    }

    async fn list_holds(
        &self,
        request: Request<pb::ListHoldsRequest>,
    ) -> RpcResult<pb::ListHoldsResponse> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let account = account_id(r.account_id, "account_id")?;
        let status = parse_hold_status(Some(&r.status)).map_err(|e| invalid(vec![e]))?;
        let page = page(r.page_size, &r.page_token, PageKind::Holds)?;
        let found = self
            .service
            .list_holds(&caller, account, status, page)
            .await?;
        Ok(Response::new(pb::ListHoldsResponse {
            holds: found.items.into_iter().map(Into::into).collect(),
            next_page_token: found.next_page_token.unwrap_or_default(),
        }))
    }

    async fn get_balance(
        &self,
        request: Request<pb::GetBalanceRequest>,
    ) -> RpcResult<pb::GetBalanceResponse> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let account = account_id(r.account_id, "account_id")?;
        let at = r.at.map(|ts| rfc3339_of(&ts));
        let at = parse_moment(at.as_deref(), "at").map_err(|e| invalid(vec![e]))?;
        let found = self.service.balance_at(&caller, account, at).await?;
        Ok(Response::new(pb::GetBalanceResponse {
            account_id: found.account_id.get(),
            currency: found.currency.code().to_owned(),
            at: super::convert::timestamp(found.at),
            balance: found.balance,
        }))
    }

    async fn list_transfers(
        &self,
        request: Request<pb::ListTransfersRequest>,
    ) -> RpcResult<pb::ListTransfersResponse> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let account = account_id(r.account_id, "account_id")?;
        let since = r.since.map(|ts| rfc3339_of(&ts));
        let until = r.until.map(|ts| rfc3339_of(&ts));
        let filter = parse_transfer_filter(
            Some(&r.direction),
            since.as_deref(),
            until.as_deref(),
            Some(&r.reference),
        )
        .map_err(invalid)?;
        let page = page(r.page_size, &r.page_token, PageKind::Transfers)?;
        let found = self
            .service
            .list_transfers(&caller, account, filter, page)
            .await?;
        Ok(Response::new(pb::ListTransfersResponse {
            transfers: found.items.into_iter().map(Into::into).collect(),
            next_page_token: found.next_page_token.unwrap_or_default(),
        }))
    }

    async fn reverse_transfer(
        &self,
        request: Request<pb::ReverseTransferRequest>,
    ) -> RpcResult<pb::ReverseTransferResponse> {
        let caller = self.caller(&request)?;
        let key = idempotency_key(&request)?;
        let r = request.into_inner();
        let of = TransferId::new(r.transfer_id)
            .map_err(|e| invalid(vec![e.for_field("transfer_id")]))?;
        let reversal = parse_reversal(
            of,
            Some(r.amount),
            (!r.reference.is_empty()).then_some(r.reference.as_str()),
            (!r.metadata.is_empty()).then(|| r.metadata.into_iter().collect()),
        )
        .map_err(invalid)?;
        let answer = self.service.reverse_transfer(&caller, reversal, key).await;
        money_response(answer, |receipt| pb::ReverseTransferResponse {
            transfer: Some(receipt.transfer.into()),
            from_entry: Some(receipt.from_entry.into()),
            to_entry: Some(receipt.to_entry.into()),
        })
    }

    async fn create_webhook(
        &self,
        request: Request<pb::CreateWebhookRequest>,
    ) -> RpcResult<pb::CreateWebhookResponse> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let webhook = parse_webhook(
            (!r.url.is_empty()).then_some(r.url),
            r.event_types,
            Some(r.description),
        )?;
        let created = self.service.create_webhook(&caller, webhook).await?;
        Ok(Response::new(pb::CreateWebhookResponse {
            webhook: Some(created.endpoint.into()),
            secret: created.secret,
        }))
    }

    async fn list_webhooks(
        &self,
        request: Request<pb::ListWebhooksRequest>,
    ) -> RpcResult<pb::ListWebhooksResponse> {
        let caller = self.caller(&request)?;
        let webhooks = self.service.list_webhooks(&caller).await?;
        Ok(Response::new(pb::ListWebhooksResponse {
            webhooks: webhooks.into_iter().map(Into::into).collect(),
        }))
    }

    async fn delete_webhook(
        &self,
        request: Request<pb::DeleteWebhookRequest>,
    ) -> RpcResult<pb::DeleteWebhookResponse> {
        let caller = self.caller(&request)?;
        let id = parse_id("id", request.into_inner().id)?;
        self.service.delete_webhook(&caller, id).await?;
        Ok(Response::new(pb::DeleteWebhookResponse {}))
    }

    async fn rotate_webhook_secret(
        &self,
        request: Request<pb::RotateWebhookSecretRequest>,
    ) -> RpcResult<pb::RotateWebhookSecretResponse> {
        let caller = self.caller(&request)?;
        let id = parse_id("id", request.into_inner().id)?;
        let rotated = self.service.rotate_webhook_secret(&caller, id).await?;
        Ok(Response::new(pb::RotateWebhookSecretResponse {
            webhook: Some(rotated.endpoint.into()),
            secret: rotated.secret,
        }))
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> RpcResult<pb::ListWebhookDeliveriesResponse> {
        let caller = self.caller(&request)?;
        let id = parse_id("id", request.into_inner().id)?;
        let attempts = self.service.list_webhook_deliveries(&caller, id).await?;
        Ok(Response::new(pb::ListWebhookDeliveriesResponse {
            deliveries: attempts.into_iter().map(Into::into).collect(),
        }))
    }

    async fn redeliver_webhook(
        &self,
        request: Request<pb::RedeliverWebhookRequest>,
    ) -> RpcResult<pb::RedeliverWebhookResponse> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let id = parse_id("id", r.id)?;
        let event = parse_id("event_id", r.event_id)?;
        let delivery_id = self.service.redeliver_webhook(&caller, id, event).await?;
        Ok(Response::new(pb::RedeliverWebhookResponse { delivery_id }))
    }

    type WatchAccountStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::AccountEvent, Status>> + Send + 'static>,
    >;

    async fn watch_account(
        &self,
        request: Request<pb::WatchAccountRequest>,
    ) -> RpcResult<Self::WatchAccountStream> {
        use tokio_stream::StreamExt;
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let account = account_id(r.account_id, "account_id")?;
        let stream = self
            .service
            .watch_account(&caller, account, r.after_event_id)
            .await?;
        Ok(Response::new(Box::pin(stream.map(|item| match item {
            Ok(event) => Ok(super::convert::account_event(event)),
            Err(end) => Err(super::convert::stream_end(end)),
        }))))
    }
}

/// A reference and metadata from proto fields (proto3 has no absent string or map: empty is
/// none).
fn label_of(
    reference: &str,
    metadata: std::collections::HashMap<String, String>,
) -> Result<crate::domain::Label, Vec<crate::domain::ValidationError>> {
    crate::domain::Label::parse(
        (!reference.is_empty()).then_some(reference),
        (!metadata.is_empty()).then(|| metadata.into_iter().collect()),
    )
}

/// A proto timestamp as the RFC 3339 text the shared parsers read (an invalid one as text they
/// refuse, naming the field).
fn rfc3339_of(ts: &prost_types::Timestamp) -> String {
    u32::try_from(ts.nanos)
        .ok()
        .and_then(|nanos| chrono::DateTime::from_timestamp(ts.seconds, nanos))
        .map_or_else(
            || "invalid".to_owned(),
            |at| at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        )
}

fn hold_id(raw: i64) -> Result<HoldId, Status> {
    HoldId::new(raw).map_err(|e| invalid(vec![e]))
}
