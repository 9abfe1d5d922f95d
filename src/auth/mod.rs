//! Who is calling: access and refresh tokens (PASETO v4.local), password hashing, and the
//! `Principal` that transports hand to the service once a token has been verified.
//!
//! Authentication happens at the edge (HTTP extractor, gRPC interceptor) through the one
//! [`TokenMaker::verify`]; authorization happens in the service, from the `Principal`.

mod password;
mod token;

pub use password::{HashLimits, HashPlace, PasswordError, Passwords};
pub use token::{Claims, IssuedToken, TokenError, TokenMaker, TokenType};

use crate::domain::{Role, Username};

/// An authenticated caller, as read from a verified access token.
#[derive(Debug, Clone)]
pub struct Principal {
    pub username: Username,
    pub role: Role,
    /// The login session the access token belongs to.
    pub session_id: uuid::Uuid,
    /// When the access token expires: a stream it opened ends then.
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// The caller's place in their fair share of the server (`service::fair_share`), held
    /// while this request runs; `None` where no share is kept (tests, the command line).
    pub share: Option<std::sync::Arc<tokio::sync::OwnedSemaphorePermit>>,
}

/// The same caller, whatever place they hold.
impl PartialEq for Principal {
    fn eq(&self, other: &Self) -> bool {
        (&self.username, self.role, self.session_id)
            == (&other.username, other.role, other.session_id)
    }
}

impl Eq for Principal {}

impl Principal {
    pub fn is_banker(&self) -> bool {
        self.role == Role::Banker
    }

    /// Whether the caller may act for `owner`: it is the caller, or the caller is a banker.
    pub fn may_act_for(&self, owner: &Username) -> bool {
        self.is_banker() || &self.username == owner
    }
}

impl From<Claims> for Principal {
    fn from(claims: Claims) -> Self {
        Principal {
            username: claims.username,
            role: claims.role,
            session_id: claims.session_id,
            expires_at: claims.expires_at,
            share: None,
        }
    }
}
