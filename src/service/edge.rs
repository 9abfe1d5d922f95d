//! What both adapters read from a request, read one way: HTTP headers and gRPC metadata carry
//! the same names, so the bearer token, the idempotency key and the user agent are parsed here
//! from raw header bytes, and each adapter only says where the bytes are.

use std::net::IpAddr;

use crate::domain::{IdempotencyKey, ValidationError};

use super::{ClientAddress, ClientInfo, ServiceError};

/// `Authorization: Bearer <token>` (gRPC: `authorization` metadata).
pub const AUTHORIZATION: &str = "authorization";
/// The request header (gRPC: metadata) naming an idempotent money movement.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The response header (gRPC: metadata) that marks a replayed answer.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
pub const USER_AGENT: &str = "user-agent";

/// The longest user agent kept with a session.
const USER_AGENT_CHARS: usize = 256;

/// The token of `Bearer <token>` (the scheme in any letter case), or `unauthenticated`.
pub fn bearer_token(value: Option<&[u8]>) -> Result<&str, ServiceError> {
    let value = value.ok_or(ServiceError::Unauthenticated(
        "missing authorization (Bearer <access token>)",
    ))?;
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .ok_or(ServiceError::Unauthenticated(
            "authorization must be: Bearer <access token>",
        ))
}

/// The optional idempotency key, parsed; a malformed one is `invalid_argument` on `field` (the
/// name the client wrote: `Idempotency-Key` or `idempotency-key`), before anything runs.
pub fn idempotency_key(
    value: Option<&[u8]>,
    field: &'static str,
) -> Result<Option<IdempotencyKey>, ServiceError> {
    let Some(value) = value else {
        return Ok(None);
    };
    std::str::from_utf8(value)
        .map_err(|_| ValidationError::new("idempotency_key", "must be printable ASCII"))
        .and_then(IdempotencyKey::parse)
        .map(Some)
        .map_err(|e| ServiceError::from(e.for_field(field)))
}

/// The client's user agent as recorded with its sessions: at most 256 characters, lossy.
pub fn user_agent(value: Option<&[u8]>) -> String {
    value
        .map(String::from_utf8_lossy)
        .unwrap_or_default()
        .chars()
        .take(USER_AGENT_CHARS)
        .collect()
}

/// Who opens a session: its user agent, and its address — the one the request log found
/// (`ClientAddress`, after `TRUSTED_PROXIES`), else the TCP peer (a bare router or server in a
/// test, without the log layer).
pub fn client_info(
    user_agent_value: Option<&[u8]>,
    found: Option<ClientAddress>,
    peer: Option<IpAddr>,
) -> ClientInfo {
    ClientInfo {
        user_agent: user_agent(user_agent_value),
        client_ip: found
            .map(|ClientAddress(ip)| ip)
            .or(peer)
            .map(|ip| ip.to_string())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bearer_token_is_read_in_any_letter_case_and_anything_else_is_unauthenticated() {
        assert_eq!(bearer_token(Some(b"Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer_token(Some(b"bearer  abc ")).unwrap(), "abc");
        for bad in [
            None,
            Some(&b"Basic abc"[..]),
            Some(b"Bearer"),
            Some(b"\xff\xfe"),
        ] {
            let err = bearer_token(bad).unwrap_err();
            assert_eq!(err.code(), super::super::ErrorCode::Unauthenticated);
        }
    }

    #[test]
    fn an_idempotency_key_is_optional_and_a_bad_one_names_the_field() {
        assert!(idempotency_key(None, "Idempotency-Key").unwrap().is_none());
        assert!(
            idempotency_key(Some(b"rent-2026-11"), "Idempotency-Key")
                .unwrap()
                .is_some()
        );
        let err = idempotency_key(Some(b"\xff"), "idempotency-key").unwrap_err();
        assert_eq!(err.details()[0].field, "idempotency-key");
    }

    #[test]
    fn user_agents_are_kept_short() {
        assert_eq!(user_agent(None), "");
        assert_eq!(user_agent(Some(&[b'x'; 300])).len(), 256);
    }
}
