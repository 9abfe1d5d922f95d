//! What the service needs from storage: the store's own traits, one per concern — `UserStore`,
//! `SessionStore`, `AccountStore`, `TransferStore`, `HoldStore`, `IdempotentStore` — each implemented by
//! `Store` next to its SQL, and each mocked by mockall (`automock`) for the service's unit tests
//! (paths a real database cannot easily produce: it being down, a broken invariant). An
//! operation is written twice, its signature in the trait and its body in the impl, never
//! forwarded a third time.
//!
//! `async_trait` rather than native async methods: its futures are `Send` and the traits are
//! dyn-compatible, so the service holds `Arc<dyn ...>` handles. A boxed future per call is
//! nothing next to a database round trip.

use std::sync::Arc;

use crate::store::{
    AccountStore, HoldStore, IdempotentStore, ReversalStore, SessionStore, Store, TransferStore,
    UserStore, WebhookStore,
};

/// One handle per concern; in production all of them are the same `Store`.
#[derive(Clone)]
pub struct StorePorts {
    pub users: Arc<dyn UserStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub accounts: Arc<dyn AccountStore>,
    pub transfers: Arc<dyn TransferStore>,
    pub holds: Arc<dyn HoldStore>,
    pub reversals: Arc<dyn ReversalStore>,
    pub keyed: Arc<dyn IdempotentStore>,
    pub webhooks: Arc<dyn WebhookStore>,
}

impl From<Store> for StorePorts {
    fn from(store: Store) -> Self {
        let store = Arc::new(store);
        Self {
            users: store.clone(),
            sessions: store.clone(),
            accounts: store.clone(),
            transfers: store.clone(),
            holds: store.clone(),
            reversals: store.clone(),
            webhooks: store.clone(),
            keyed: store,
        }
    }
}
