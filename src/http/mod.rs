//! The HTTP JSON API (axum): routes of SPEC §3 over `BankService`, errors in SPEC §4's shape, and
//! the OpenAPI document generated from the same handler annotations (Swagger UI at `/swagger-ui`).

mod dto;
mod error;
mod extract;
mod handlers;
mod request_log;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::{Router, middleware};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

pub use error::status_of;

use crate::metrics::Metrics;
use crate::service::BankService;
use crate::store::Store;

/// Where the generated OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/api-docs/openapi.json";

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub service: BankService,
    /// For `/readyz` and the pool gauges of `/metrics`; operations go through the service.
    pub store: Store,
    pub metrics: Arc<Metrics>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "simplebank",
        description = "A banking server: double-entry transfers on PostgreSQL. Amounts are integers \
                       in minor units (cents). Errors always have the shape of `ErrorBody`."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "users", description = "Sign up, log in, sessions, profiles and roles"),
        (name = "accounts", description = "Accounts and statements"),
        (name = "transfers", description = "Transfers, deposits and withdrawals"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
struct ApiDoc;

/// The `bearer` scheme the guarded routes name: `Authorization: Bearer <PASETO access token>`.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Routes and their OpenAPI document, built from the same annotations so they cannot diverge.
fn api() -> OpenApiRouter<AppState> {
    use handlers::*;
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(create_user))
        .routes(routes!(login_user))
        .routes(routes!(logout_user))
        .routes(routes!(renew_access_token))
        .routes(routes!(get_user, update_user))
        .routes(routes!(verify_email))
        .routes(routes!(set_user_role))
        .routes(routes!(create_account, list_accounts))
        .routes(routes!(get_account))
        .routes(routes!(list_entries))
        .routes(routes!(deposit))
        .routes(routes!(withdraw))
        .routes(routes!(create_transfer))
        .routes(routes!(get_transfer))
}

/// The OpenAPI document alone (for tests and tooling).
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().into_openapi()
}

/// Every route, with the request log and metrics around all of them (matched or not).
pub fn router(state: AppState, body_limit: usize) -> Router {
    let metrics = Arc::clone(&state.metrics);
    let (routes, document) = api().split_for_parts();
    routes
        .merge(SwaggerUi::new("/swagger-ui").url(OPENAPI_PATH, document))
        .route_layer(middleware::from_fn(request_log::tag_route))
        .fallback(error::route_not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            metrics,
            request_log::log_request,
        ))
        .with_state(state)
}
