//! The HTTP JSON API (axum): routes of SPEC §3 over `BankService`, errors in SPEC §4's shape.

mod dto;
mod error;
mod extract;
mod handlers;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

pub use error::status_of;

use crate::service::BankService;
use crate::store::Store;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub service: BankService,
    /// For `/readyz` only; operations go through the service.
    pub store: Store,
}

pub fn router(state: AppState, body_limit: usize) -> Router {
    use handlers::*;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/users", post(create_user))
        .route("/v1/users/login", post(login_user))
        .route("/v1/users/logout", post(logout_user))
        .route("/v1/tokens/renew_access", post(renew_access_token))
        .route("/v1/users/{username}", get(get_user).patch(update_user))
        .route(
            "/v1/users/{username}/role",
            axum::routing::put(set_user_role),
        )
        .route("/v1/accounts", post(create_account).get(list_accounts))
        .route("/v1/accounts/{id}", get(get_account))
        .route("/v1/accounts/{id}/entries", get(list_entries))
        .route("/v1/accounts/{id}/deposits", post(deposit))
        .route("/v1/accounts/{id}/withdrawals", post(withdraw))
        .route("/v1/transfers", post(create_transfer))
        .route("/v1/transfers/{id}", get(get_transfer))
        .fallback(error::route_not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}
