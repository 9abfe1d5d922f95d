//! What the service needs from storage, as a trait: `Store` implements it against PostgreSQL, and
//! the service's unit tests use the mockall mock, for paths a real database cannot easily produce
//! (it being down, a broken invariant).
//!
//! `async_trait` rather than native async methods: its futures are `Send` and the trait is
//! dyn-compatible, so the service holds an `Arc<dyn BankStore>`. A boxed future per call is
//! nothing next to a database round trip.

use async_trait::async_trait;
use uuid::Uuid;

use crate::domain::{
    Account, AccountId, Amount, Currency, Entry, EntryId, IdempotencyKey, NewTransfer, NewUser,
    NewVerification, PageSize, Role, Session, TransferId, TransferParties, TransferReceipt, User,
    UserUpdate, Username, VerificationCode, VerifyOutcome,
};
use crate::store::{KeyedOutcome, MoneyMove, NewSession, Page, Store, StoreError};

#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait BankStore: Send + Sync {
    /// Also starts the email verification and queues its email, in the same transaction.
    async fn create_user(
        &self,
        new: &NewUser,
        verification: &NewVerification,
    ) -> Result<User, StoreError>;
    async fn get_user(&self, username: &Username) -> Result<User, StoreError>;
    /// `verification` is used only if the email changes.
    async fn update_user(
        &self,
        username: &Username,
        update: &UserUpdate,
        verification: &NewVerification,
    ) -> Result<User, StoreError>;
    async fn verify_email(
        &self,
        email_id: i64,
        code: &VerificationCode,
    ) -> Result<VerifyOutcome, StoreError>;
    async fn set_user_role(&self, username: &Username, role: Role) -> Result<User, StoreError>;

    async fn create_session(&self, new: &NewSession) -> Result<Session, StoreError>;
    async fn get_session(&self, id: Uuid) -> Result<Option<Session>, StoreError>;
    async fn block_session(&self, id: Uuid, username: &Username) -> Result<bool, StoreError>;

    async fn create_account(
        &self,
        owner: &Username,
        currency: Currency,
    ) -> Result<Account, StoreError>;
    async fn get_account(&self, id: AccountId) -> Result<Account, StoreError>;
    async fn list_accounts(
        &self,
        owner: Option<Username>,
        after: Option<AccountId>,
        size: PageSize,
    ) -> Result<Page<Account, AccountId>, StoreError>;
    async fn list_entries(
        &self,
        account: AccountId,
        before: Option<EntryId>,
        size: PageSize,
    ) -> Result<Page<Entry, EntryId>, StoreError>;

    async fn transfer(
        &self,
        cmd: &NewTransfer,
        owner: Option<Username>,
    ) -> Result<TransferReceipt, StoreError>;
    async fn deposit(
        &self,
        account: AccountId,
        amount: Amount,
        currency: Currency,
    ) -> Result<TransferReceipt, StoreError>;
    async fn withdraw(
        &self,
        account: AccountId,
        amount: Amount,
        currency: Currency,
    ) -> Result<TransferReceipt, StoreError>;
    /// A movement under an idempotency key: run once, then replayed (see `store::idempotency`).
    async fn move_money_once(
        &self,
        movement: &MoneyMove,
        caller: &Username,
        key: &IdempotencyKey,
    ) -> Result<KeyedOutcome, StoreError>;
    async fn get_transfer(&self, id: TransferId) -> Result<TransferParties, StoreError>;
}

#[async_trait]
impl BankStore for Store {
    async fn create_user(
        &self,
        new: &NewUser,
        verification: &NewVerification,
    ) -> Result<User, StoreError> {
        Store::create_user(self, new, verification).await
    }
    async fn get_user(&self, username: &Username) -> Result<User, StoreError> {
        Store::get_user(self, username).await
    }
    async fn update_user(
        &self,
        username: &Username,
        update: &UserUpdate,
        verification: &NewVerification,
    ) -> Result<User, StoreError> {
        Store::update_user(self, username, update, verification).await
    }
    async fn verify_email(
        &self,
        email_id: i64,
        code: &VerificationCode,
    ) -> Result<VerifyOutcome, StoreError> {
        Store::verify_email(self, email_id, code).await
    }
    async fn set_user_role(&self, username: &Username, role: Role) -> Result<User, StoreError> {
        Store::set_user_role(self, username, role).await
    }
    async fn create_session(&self, new: &NewSession) -> Result<Session, StoreError> {
        Store::create_session(self, new).await
    }
    async fn get_session(&self, id: Uuid) -> Result<Option<Session>, StoreError> {
        Store::get_session(self, id).await
    }
    async fn block_session(&self, id: Uuid, username: &Username) -> Result<bool, StoreError> {
        Store::block_session(self, id, username).await
    }
    async fn create_account(
        &self,
        owner: &Username,
        currency: Currency,
    ) -> Result<Account, StoreError> {
        Store::create_account(self, owner, currency).await
    }
    async fn get_account(&self, id: AccountId) -> Result<Account, StoreError> {
        Store::get_account(self, id).await
    }
    async fn list_accounts(
        &self,
        owner: Option<Username>,
        after: Option<AccountId>,
        size: PageSize,
    ) -> Result<Page<Account, AccountId>, StoreError> {
        Store::list_accounts(self, owner.as_ref(), after, size).await
    }
    async fn list_entries(
        &self,
        account: AccountId,
        before: Option<EntryId>,
        size: PageSize,
    ) -> Result<Page<Entry, EntryId>, StoreError> {
        Store::list_entries(self, account, before, size).await
    }
    async fn transfer(
        &self,
        cmd: &NewTransfer,
        owner: Option<Username>,
    ) -> Result<TransferReceipt, StoreError> {
        Store::transfer(self, cmd, owner.as_ref()).await
    }
    async fn deposit(
        &self,
        account: AccountId,
        amount: Amount,
        currency: Currency,
    ) -> Result<TransferReceipt, StoreError> {
        Store::deposit(self, account, amount, currency).await
    }
    async fn withdraw(
        &self,
        account: AccountId,
        amount: Amount,
        currency: Currency,
    ) -> Result<TransferReceipt, StoreError> {
        Store::withdraw(self, account, amount, currency).await
    }
    async fn move_money_once(
        &self,
        movement: &MoneyMove,
        caller: &Username,
        key: &IdempotencyKey,
    ) -> Result<KeyedOutcome, StoreError> {
        Store::move_money_once(self, movement, caller, key).await
    }
    async fn get_transfer(&self, id: TransferId) -> Result<TransferParties, StoreError> {
        Store::get_transfer(self, id).await
    }
}
