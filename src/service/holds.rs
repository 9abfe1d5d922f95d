//! Holds (SPEC §6): the payer (or a banker) places one, the payee (or a banker) captures or
//! voids it, either side reads it. The rules of the money are the store's, under the row locks.

use std::collections::BTreeMap;

use super::transfers::keyed_answer;
use super::{BankService, ListPage, MoneyAnswer, PageRequest, ServiceError, require_party};
use crate::auth::Principal;
use crate::domain::{
    AccountId, Amount, Currency, Hold, HoldId, HoldStatus, IdempotencyKey, Metadata, NewHold,
    PageKind, Reference, ValidationError, Violations, parse_expires_in,
};
use crate::store::{CapturedHold, HoldAnswer, HoldOp, PlacedHold, StoreError};

/// A hold as a client writes it, from either transport, every bad field reported.
#[derive(Debug, Clone, Default)]
pub struct HoldRequest<'a> {
    pub from_account_id: i64,
    pub to_account_id: i64,
    pub amount: i64,
    pub currency: &'a str,
    /// Seconds; absent: `HOLD_TTL`.
    pub expires_in: Option<i64>,
    pub reference: Option<&'a str>,
    pub metadata: Option<BTreeMap<String, String>>,
}

pub fn parse_hold(request: HoldRequest<'_>) -> Result<NewHold, Vec<ValidationError>> {
    let mut v = Violations::default();
    let from = v
        .check(AccountId::new(request.from_account_id).map_err(|e| e.for_field("from_account_id")));
    let to =
        v.check(AccountId::new(request.to_account_id).map_err(|e| e.for_field("to_account_id")));
    let amount = v.check(Amount::new(request.amount));
    let currency = v.check(request.currency.parse::<Currency>());
    let expires_in = v.check(request.expires_in.map(parse_expires_in).transpose());
    let reference = v.check(request.reference.map(Reference::parse).transpose());
    let metadata = v.check(request.metadata.map(Metadata::new).transpose());
    if let (Some(f), Some(t)) = (from, to)
        && f == t
    {
        v.check::<()>(Err(ValidationError::new(
            "to_account_id",
            "must differ from from_account_id",
        )));
    }
    v.finish(|| {
        Some(NewHold {
            from: from?,
            to: to?,
            amount: amount?,
            currency: currency?,
            expires_in: expires_in?,
            reference: reference?,
            metadata: metadata?,
        })
    })
}

/// A list filter: absent or empty means every status.
pub fn parse_hold_status(raw: Option<&str>) -> Result<Option<HoldStatus>, ValidationError> {
    match raw {
        None | Some("") => Ok(None),
        Some(raw) => raw.parse().map(Some),
    }
}

impl BankService {
    /// The payer's owner or a banker. Funds, statuses and currencies are the store's to check,
    /// under the payer's lock.
    pub async fn create_hold(
        &self,
        principal: &Principal,
        mut hold: NewHold,
        key: Option<IdempotencyKey>,
    ) -> MoneyAnswer<PlacedHold> {
        hold.expires_in.get_or_insert(self.hold_ttl);
        let (from, to) = (hold.from, hold.to);
        if let Err(refused) = self.require_payer(principal, from).await {
            return self.count("hold", MoneyAnswer::fresh(Err(refused)));
        }
        let op = HoldOp::Place {
            hold,
            owner: (!principal.is_banker()).then(|| principal.username.clone()),
        };
        let (caller, ownership) = (principal.clone(), self.ownership.clone());
        let refusal = move |e| match super::ownership::payee_refusal(&caller, &ownership, to, e) {
            Ok(hidden) => hidden,
            Err(e) => settlement_field(e, from),
        };
        self.write_hold(principal, op, key, refusal, |answer| match answer {
            HoldAnswer::Placed(placed) => Some(placed),
            _ => None,
        })
        .await
    }

    /// The payee's owner or a banker.
    pub async fn capture_hold(
        &self,
        principal: &Principal,
        id: HoldId,
        amount: Option<Amount>,
        key: Option<IdempotencyKey>,
    ) -> MoneyAnswer<CapturedHold> {
        let op = HoldOp::Capture {
            id,
            amount,
            payee: (!principal.is_banker()).then(|| principal.username.clone()),
        };
        self.write_hold(principal, op, key, Into::into, |answer| match answer {
            HoldAnswer::Captured(captured) => Some(*captured),
            _ => None,
        })
        .await
    }

    /// The payee's owner or a banker: a payee may always decline money it was promised.
    pub async fn void_hold(
        &self,
        principal: &Principal,
        id: HoldId,
        key: Option<IdempotencyKey>,
    ) -> MoneyAnswer<Hold> {
        let op = HoldOp::Void {
            id,
            payee: (!principal.is_banker()).then(|| principal.username.clone()),
        };
        self.write_hold(principal, op, key, Into::into, |answer| match answer {
            HoldAnswer::Voided(hold) => Some(hold),
            _ => None,
        })
        .await
    }

    /// Runs `op` — once per key when the caller gave one — and counts its outcome with the
    /// money movements (`money_movements_total`, kinds `hold`, `capture`, `void`): a hold is
    /// money promised.
    async fn write_hold<T>(
        &self,
        principal: &Principal,
        op: HoldOp,
        key: Option<IdempotencyKey>,
        refusal: impl Fn(StoreError) -> ServiceError,
        pick: impl FnOnce(HoldAnswer) -> Option<T>,
    ) -> MoneyAnswer<T> {
        let answer = match key {
            None => MoneyAnswer::fresh(self.store.holds.write_hold(&op).await.map_err(refusal)),
            Some(key) => keyed_answer(
                self.store
                    .holds
                    .write_hold_once(&op, &principal.username, &key)
                    .await,
                refusal,
            ),
        };
        let answer = MoneyAnswer {
            outcome: answer.outcome.and_then(|done| {
                pick(done).ok_or_else(|| {
                    ServiceError::internal("a hold write answered for another operation")
                })
            }),
            replayed: answer.replayed,
        };
        self.count(op.kind(), answer)
    }

    /// The owner of either account, or a banker.
    pub async fn get_hold(&self, principal: &Principal, id: HoldId) -> Result<Hold, ServiceError> {
        let parties = self.store.holds.get_hold(id).await?;
        require_party(principal, [&parties.from_owner, &parties.to_owner], || {
            format!("hold {id} does not involve your accounts")
        })?;
        Ok(parties.hold)
    }

    /// The holds an account pays or receives, newest first: its owner or a banker.
    pub async fn list_holds(
        &self,
        principal: &Principal,
        account: AccountId,
        status: Option<HoldStatus>,
        page: PageRequest,
    ) -> Result<ListPage<Hold>, ServiceError> {
        self.get_account(principal, account).await?;
        let before = page.token.map(|t| HoldId::new(t.key())).transpose()?;
        let found = self
            .store
            .holds
            .list_holds(account, status, before, page.size)
            .await?;
        Ok(ListPage {
            items: found.items,
            next_page_token: found
                .next
                .map(|id| crate::domain::PageToken::new(PageKind::Holds, id.get()).encode()),
        })
    }
}

/// A settlement account given as either side names the field the client used.
fn settlement_field(err: StoreError, from: AccountId) -> ServiceError {
    match err {
        StoreError::NotCustomerAccount(id) => ServiceError::invalid(
            if id == from {
                "from_account_id"
            } else {
                "to_account_id"
            },
            format!("account {id} is a bank settlement account"),
        ),
        other => other.into(),
    }
}
