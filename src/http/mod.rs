//! The HTTP JSON API (axum): routes of SPEC §3 over `BankService`, errors in SPEC §4's shape, and
//! the OpenAPI document generated from the same handler annotations (Swagger UI at `/swagger-ui`).

mod compat;
mod dto;
mod error;
mod events;
mod extract;
mod guard;
mod handlers;
mod holds;
mod request_log;
pub mod serve;

pub use guard::MAX_HEADER_BYTES;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::{Router, middleware};
use tower_http::cors::{AllowOrigin, CorsLayer};
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

/// What every handler can reach, behind one `Arc`.
///
/// axum clones the state for every request, often more than once (each route's boxed service,
/// each `State` extractor). The parts hold a dozen `Arc`s between them, so cloning them by value
/// cost an atomic increment and decrement apiece on every request: 2.2% of the server's CPU at
/// 16 clients in a `perf` profile of `make bench`'s C row. One `Arc` makes each clone one.
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

/// The parts of [`AppState`].
pub struct AppParts {
    pub service: BankService,
    /// For `/readyz` and the pool gauges of `/metrics`; operations go through the service.
    pub store: Store,
    pub metrics: Arc<Metrics>,
}

impl AppState {
    pub fn new(parts: AppParts) -> Self {
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
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
        (name = "holds", description = "Holds: funds the payer authorises and the payee captures (in all or in part) or releases"),
        (name = "webhooks", description = "Signed deliveries of events to bankers' endpoints (Standard Webhooks)"),
        (name = "health", description = "Liveness, readiness and metrics"),
        (name = "simple_bank compatibility", description = "simple_bank's own routes and JSON shapes, served only with SIMPLE_BANK_COMPAT=true; see doc/simple_bank-compat.md for every difference"),
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
        .routes(routes!(set_account_status))
        .routes(routes!(set_overdraft_limit))
        .routes(routes!(list_entries))
        .routes(routes!(get_balance))
        .routes(routes!(list_transfers))
        .routes(routes!(deposit))
        .routes(routes!(withdraw))
        .routes(routes!(create_transfer))
        .routes(routes!(get_transfer))
        .routes(routes!(reverse_transfer))
        .routes(routes!(holds::create_hold))
        .routes(routes!(holds::get_hold))
        .routes(routes!(holds::capture_hold))
        .routes(routes!(holds::void_hold))
        .routes(routes!(holds::list_holds))
        .routes(routes!(events::create_webhook, events::list_webhooks))
        .routes(routes!(events::delete_webhook))
        .routes(routes!(events::rotate_webhook_secret))
        .routes(routes!(events::list_webhook_deliveries))
        .routes(routes!(events::redeliver_webhook))
        .routes(routes!(events::watch_account_events))
}

/// How the HTTP side is set up (from `Settings`).
#[derive(Debug, Clone, Default)]
pub struct HttpOptions {
    /// Largest request body in bytes.
    pub body_limit: usize,
    /// CORS origins; none means no CORS headers.
    pub allowed_origins: Vec<HeaderValue>,
    /// Also serve simple_bank's routes and shapes (`SIMPLE_BANK_COMPAT`).
    pub simple_bank_compat: bool,
}

/// The routes of `options` and their OpenAPI document: the compatibility routes appear in the
/// document exactly when they are served.
fn api_with(options: &HttpOptions) -> OpenApiRouter<AppState> {
    let api = api();
    if options.simple_bank_compat {
        api.merge(compat::routes())
    } else {
        api
    }
}

/// The OpenAPI document alone (for tests and tooling).
pub fn openapi(simple_bank_compat: bool) -> utoipa::openapi::OpenApi {
    api_with(&HttpOptions {
        simple_bank_compat,
        ..HttpOptions::default()
    })
    .into_openapi()
    .with_transport_errors()
}

/// Adds to every operation the answers it can give whatever its handler does: the refusals of
/// the guard and of the JSON extractor, the database being down, and login throttling. Done
/// here, once, rather than repeated in every handler's annotation, and checked by fuzzing the
/// API from this document (`make fuzz`).
trait TransportErrors {
    fn with_transport_errors(self) -> Self;
}

impl TransportErrors for utoipa::openapi::OpenApi {
    fn with_transport_errors(mut self) -> Self {
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
        let error = |description: &str| -> RefOr<Response> {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
                .into()
        };
        for (path, item) in self.paths.paths.iter_mut() {
            // Ours, and with SIMPLE_BANK_COMPAT gin's and grpc-gateway's: all throttled alike.
            let login = matches!(
                path.as_str(),
                "/v1/users/login" | "/users/login" | "/v1/login_user"
            );
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.patch,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                let has_body = operation.request_body.is_some();
                let responses = &mut operation.responses.responses;
                let mut add = |status: &str, description: &str| {
                    responses
                        .entry(status.to_owned())
                        .or_insert_with(|| error(description));
                };
                if has_body {
                    add("413", "invalid_argument: the body is over HTTP_BODY_LIMIT");
                    add("415", "invalid_argument: the body is not application/json");
                }
                let authenticated = !operation.security.as_ref().is_none_or(Vec::is_empty);
                if login {
                    add("429", "rate_limited: too many attempts; see Retry-After");
                } else if authenticated {
                    add(
                        "429",
                        "rate_limited: past the caller's fair share of concurrent requests or \
                         requests a second (USER_MAX_CONCURRENT_REQUESTS, \
                         USER_REQUESTS_PER_SECOND); see Retry-After",
                    );
                }
                add("431", "invalid_argument: the headers are too large");
                add("500", "internal");
                add(
                    "503",
                    "unavailable: the database is down, the server is overloaded (see \
                     Retry-After) or the request ran past REQUEST_TIMEOUT",
                );
            }
        }
        self
    }
}

/// Every route, with the request log and metrics around all of them (matched or not), and CORS
/// for `allowed_origins` (none: no CORS headers, so browsers on other origins are refused).
pub fn router(state: AppState, options: HttpOptions) -> Router {
    let metrics = Arc::clone(&state.metrics);
    let (routes, document) = api_with(&options).split_for_parts();
    let document = document.with_transport_errors();
    let mut router = routes
        .merge(SwaggerUi::new("/swagger-ui").url(OPENAPI_PATH, document))
        .route_layer(middleware::from_fn(request_log::tag_route))
        .fallback(error::route_not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(options.body_limit));
    router = guard::security_headers(router.layer(middleware::from_fn_with_state(
        state.service.admission().clone(),
        guard::guard,
    )));
    // Outside the guard: its refusals (503 busy, 413, 431) carry CORS headers too, or a browser
    // would report a CORS failure instead of the answer; preflights take no request slot.
    if !options.allowed_origins.is_empty() {
        router = router.layer(cors(options.allowed_origins));
    }
    router
        .layer(middleware::from_fn_with_state(
            request_log::LogState {
                metrics,
                proxies: state.service.trusted_proxies(),
            },
            request_log::log_request,
        ))
        .layer(crate::telemetry::request_id_layers())
        .with_state(state)
}

/// What a browser app needs: the API's methods and request headers, and the response headers
/// it may read (the request id and the idempotent-replay mark).
fn cors(origins: Vec<HeaderValue>) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::PUT])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            HeaderName::from_static("idempotent-replayed"),
            HeaderName::from_static("x-request-id"),
        ])
        .max_age(std::time::Duration::from_secs(600))
}
