//! What every call of the bank's RPCs goes through, around tonic's own decoding: the service's
//! `Admission` (database up, a slot shared with HTTP, `REQUEST_TIMEOUT`) and SPEC §4's table for
//! the requests tonic refuses by itself.
//!
//! Only `simplebank.v1.SimpleBank` is wrapped. Health and reflection are not: like `/healthz`,
//! they must answer while the bank is saturated or its database is down.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::server::NamedService;
use tower_service::Service;

use super::error::to_status;
use crate::service::{Admission, ServiceError};

/// `inner` behind `admission`; `message_limit` is the largest request message `inner` accepts.
#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    admission: Admission,
    message_limit: usize,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, admission: Admission, message_limit: usize) -> Self {
        Self {
            inner,
            admission,
            message_limit,
        }
    }
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Guarded<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The service polled ready is the one to call; its clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let admission = self.admission.clone();
        let message_limit = self.message_limit;
        Box::pin(async move {
            // Every RPC of the bank needs the database.
            let _slot = match admission.admit() {
                Ok(slot) => slot,
                // The error table adds `retry-after` metadata, as HTTP's header.
                Err(refused) => return Ok(to_status(refused).into_http()),
            };
            match admission.within_deadline(inner.call(request)).await {
                Ok(Ok(response)) => Ok(in_error_table(response, message_limit)),
                Ok(Err(never)) => match never {},
                Err(late) => Ok(to_status(late).into_http()),
            }
        })
    }
}

/// tonic refuses a request it cannot decode before any handler runs, with its own code and
/// text: INTERNAL for bytes that are not the method's message (as gRPC's status-code guide
/// says for a request that fails to parse) and OUT_OF_RANGE for a message over the size limit.
/// Both are the caller's mistakes, and INTERNAL would tell the caller (and our alerts) that the
/// server is at fault; so they become `invalid_argument` on the field `request`, like malformed
/// JSON on HTTP. Our own statuses always carry `grpc-status-details-bin` (`to_status`), so a
/// status without it on this service is tonic's.
fn in_error_table(response: http::Response<Body>, message_limit: usize) -> http::Response<Body> {
    let headers = response.headers();
    if headers.contains_key("grpc-status-details-bin") {
        return response;
    }
    let code = headers
        .get("grpc-status")
        .map(|v| tonic::Code::from_bytes(v.as_bytes()));
    let description = match code {
        Some(tonic::Code::Internal) => {
            "is not this method's request message in protobuf encoding".to_owned()
        }
        Some(tonic::Code::OutOfRange) => format!("must be at most {message_limit} bytes"),
        _ => return response,
    };
    to_status(ServiceError::invalid("request", description)).into_http()
}

#[cfg(test)]
mod tests {
    use tonic::{Code, Status};
    use tonic_types::StatusExt;

    use super::*;

    fn status_of(response: &http::Response<Body>) -> Status {
        Status::from_header_map(response.headers()).expect("a status in the headers")
    }

    #[test]
    fn tonic_decoding_refusals_become_invalid_argument() {
        for (tonic_status, expected) in [
            (
                Status::internal("failed to decode Protobuf message"),
                "protobuf",
            ),
            (
                Status::out_of_range("decoded message length too large"),
                "at most 65536 bytes",
            ),
        ] {
            let status = status_of(&in_error_table(tonic_status.into_http(), 65536));
            assert_eq!(status.code(), Code::InvalidArgument);
            let details = status.get_error_details();
            let violation = &details
                .bad_request()
                .expect("field details")
                .field_violations[0];
            assert_eq!(violation.field, "request");
            assert!(violation.description.contains(expected), "{violation:?}");
        }
    }

    #[test]
    fn our_own_statuses_and_other_codes_pass_unchanged() {
        let ours = to_status(ServiceError::Internal("boom".into()));
        let response = in_error_table(ours.into_http(), 65536);
        assert_eq!(status_of(&response).code(), Code::Internal);
        let unimplemented = in_error_table(Status::unimplemented("no such method").into_http(), 1);
        assert_eq!(status_of(&unimplemented).code(), Code::Unimplemented);
        let ok = in_error_table(http::Response::new(Body::default()), 1);
        assert!(ok.headers().get("grpc-status").is_none());
    }
}
