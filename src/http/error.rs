//! Every HTTP failure in SPEC §4's shape:
//! `{"error": {"code": "...", "message": "...", "details": [{"field": "...", "description": "..."}]}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::ValidationError;
use crate::service::{ErrorCode, ServiceError};

/// What handlers return: their answer, or an error in the table's shape.
pub type ApiResult<T> = Result<T, ApiError>;

/// The HTTP status of each error code. Exhaustive, no `_` arm: a new code cannot be forgotten.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::AlreadyExists | ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::InsufficientFunds
        | ErrorCode::CurrencyMismatch
        | ErrorCode::AccountFrozen
        | ErrorCode::AccountClosed
        | ErrorCode::HoldNotPending
        | ErrorCode::AlreadyReversed
        | ErrorCode::FailedPrecondition
        | ErrorCode::IdempotencyMismatch => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Every error response: SPEC §4's shape.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// One of the codes of the error table, e.g. `insufficient_funds`.
    #[schema(example = "insufficient_funds")]
    pub code: &'static str,
    pub message: String,
    pub details: Vec<FieldViolation>,
}

#[derive(Serialize, ToSchema)]
pub struct FieldViolation {
    pub field: &'static str,
    pub description: String,
}

/// A failure on its way to the client. Usually a `ServiceError`; transport-level refusals (a body
/// too large, a wrong content type, an unknown route) keep the code of the table and carry the
/// HTTP status that names the problem precisely.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: ServiceError,
}

impl ApiError {
    pub fn with_status(status: StatusCode, error: ServiceError) -> Self {
        Self { status, error }
    }

    pub fn invalid(field: &'static str, description: impl Into<String>) -> Self {
        ServiceError::invalid(field, description).into()
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        Self {
            status: status_of(error.code()),
            error,
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(error: ValidationError) -> Self {
        ServiceError::from(error).into()
    }
}

impl From<Vec<ValidationError>> for ApiError {
    fn from(errors: Vec<ValidationError>) -> Self {
        ServiceError::InvalidArgument(errors).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.error.code();
        if matches!(code, ErrorCode::Internal | ErrorCode::Unavailable) {
            // The cause chain goes to the log, once, here; the client gets the generic message.
            let cause = std::error::Error::source(&self.error)
                .map(|c| format!("{c:#}"))
                .unwrap_or_default();
            tracing::error!(code = code.as_str(), cause, "request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.as_str(),
                message: self.error.message(),
                details: self
                    .error
                    .details()
                    .iter()
                    .map(|v| FieldViolation {
                        field: v.field,
                        description: v.description.clone(),
                    })
                    .collect(),
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.error.retry_after_secs() {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

/// Unknown routes answer in the same shape.
pub async fn route_not_found() -> ApiError {
    ServiceError::NotFound("no such route".to_owned()).into()
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::with_status(
        StatusCode::METHOD_NOT_ALLOWED,
        ServiceError::invalid("method", "this route does not accept that method"),
    )
}
