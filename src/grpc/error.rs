//! `ServiceError` → `tonic::Status`: the gRPC column of SPEC §4's table, with rich details — an
//! `ErrorInfo` carrying the table's code string, and `BadRequest` field violations for
//! `invalid_argument` — so a gRPC client learns exactly what an HTTP client learns.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::ValidationError;
use crate::service::{ErrorCode, ServiceError};

/// The gRPC code of each error code. Exhaustive, no `_` arm.
pub fn code_of(code: ErrorCode) -> Code {
    match code {
        ErrorCode::InvalidArgument => Code::InvalidArgument,
        ErrorCode::Unauthenticated => Code::Unauthenticated,
        ErrorCode::PermissionDenied => Code::PermissionDenied,
        ErrorCode::NotFound => Code::NotFound,
        ErrorCode::AlreadyExists => Code::AlreadyExists,
        ErrorCode::Conflict => Code::Aborted,
        ErrorCode::InsufficientFunds
        | ErrorCode::CurrencyMismatch
        | ErrorCode::AccountFrozen
        | ErrorCode::AccountClosed
        | ErrorCode::HoldNotPending
        | ErrorCode::AlreadyReversed
        | ErrorCode::FailedPrecondition
        | ErrorCode::IdempotencyMismatch => Code::FailedPrecondition,
        ErrorCode::RateLimited => Code::ResourceExhausted,
        ErrorCode::Unavailable => Code::Unavailable,
        ErrorCode::Internal => Code::Internal,
    }
}

/// The `ErrorInfo.domain` of every error.
pub const ERROR_DOMAIN: &str = "simplebank";

/// So that a handler can use `?` on the service's results.
impl From<ServiceError> for Status {
    fn from(error: ServiceError) -> Self {
        to_status(error)
    }
}

pub fn to_status(error: ServiceError) -> Status {
    let code = error.code();
    if matches!(code, ErrorCode::Internal | ErrorCode::Unavailable) {
        let cause = std::error::Error::source(&error)
            .map(|c| format!("{c:#}"))
            .unwrap_or_default();
        tracing::error!(code = code.as_str(), cause, "rpc failed");
    }
    let mut details = ErrorDetails::with_error_info(
        code.as_str().to_ascii_uppercase(),
        ERROR_DOMAIN,
        HashMap::from([("code".to_owned(), code.as_str().to_owned())]),
    );
    // A bad field is a BadRequest violation; a field the resource's state refuses is a
    // PreconditionFailure one (`STATE`, the field), as google.rpc's error model has them.
    for violation in error.details() {
        if code == ErrorCode::FailedPrecondition {
            details.add_precondition_failure_violation(
                "STATE",
                violation.field,
                violation.description.clone(),
            );
        } else {
            details.add_bad_request_violation(violation.field, violation.description.clone());
        }
    }
    let retry_after = error.retry_after_secs();
    if let Some(secs) = retry_after {
        details.set_retry_info(Some(std::time::Duration::from_secs(secs)));
    }
    let mut status = Status::with_error_details(code_of(code), error.message(), details);
    if let Some(secs) = retry_after {
        // Also as plain metadata, like HTTP's header, for clients that do not decode details.
        status
            .metadata_mut()
            .insert("retry-after", secs.to_string().parse().expect("digits"));
    }
    status
}

/// A parse failure at the edge, as a status.
pub fn invalid(violations: Vec<ValidationError>) -> Status {
    to_status(ServiceError::InvalidArgument(violations))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_carry_the_table_code_and_field_violations() {
        let status = invalid(vec![
            ValidationError::new("amount", "must be positive"),
            ValidationError::new("currency", "unknown"),
        ]);
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let info = details.error_info().unwrap();
        assert_eq!(info.reason, "INVALID_ARGUMENT");
        assert_eq!(info.metadata["code"], "invalid_argument");
        let fields: Vec<_> = details
            .bad_request()
            .unwrap()
            .field_violations
            .iter()
            .map(|v| v.field.clone())
            .collect();
        assert_eq!(fields, ["amount", "currency"]);
    }

    #[test]
    fn internal_errors_say_nothing_about_their_cause() {
        let status = to_status(ServiceError::Internal("relation accounts missing".into()));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("relation"));
    }

    #[test]
    fn money_refusals_are_failed_preconditions() {
        let status = to_status(ServiceError::InsufficientFunds("short".into()));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            status.get_error_details().error_info().unwrap().metadata["code"],
            "insufficient_funds"
        );
    }
}
