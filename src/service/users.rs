//! Users and sessions: sign up, log in, renew, log out, read, update, set role.

use chrono::Utc;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{BankService, ServiceError, require_banker};
use crate::auth::{IssuedToken, PasswordError, Principal, TokenType};
use crate::domain::{
    Email, FullName, NewUser, NewVerification, Password, Role, User, UserUpdate, Username,
    ValidationError, VerificationCode, VerifyOutcome, Violations,
};
use crate::store::{NewSession, StoreError};

/// A sign-up, parsed.
#[derive(Debug, Clone)]
pub struct NewUserRequest {
    pub username: Username,
    pub full_name: FullName,
    pub email: Email,
    pub password: Password,
}

impl NewUserRequest {
    /// Parses a sign-up from raw fields, reporting every bad one (both transports call this).
    pub fn parse(
        username: &str,
        full_name: &str,
        email: &str,
        password: &str,
    ) -> Result<Self, Vec<ValidationError>> {
        let mut v = Violations::default();
        let username = v.check(Username::parse(username));
        let full_name = v.check(FullName::parse(full_name));
        let email = v.check(Email::parse(email));
        let password = v.check(Password::parse(password));
        v.finish(|| {
            Some(NewUserRequest {
                username: username?,
                full_name: full_name?,
                email: email?,
                password: password?,
            })
        })
    }
}

/// Parses login credentials, reporting every bad field.
/// Parses the two halves of a verification link.
pub fn parse_verification(
    email_id: i64,
    secret_code: &str,
) -> Result<(i64, VerificationCode), Vec<ValidationError>> {
    let mut v = Violations::default();
    let id = v.check(if email_id > 0 {
        Ok(email_id)
    } else {
        Err(ValidationError::new(
            "email_id",
            "must be a positive integer",
        ))
    });
    let code = v.check(VerificationCode::parse(secret_code));
    v.finish(|| Some((id?, code?)))
}

pub fn parse_credentials(
    username: &str,
    password: &str,
) -> Result<(Username, Password), Vec<ValidationError>> {
    let mut v = Violations::default();
    let username = v.check(Username::parse(username));
    let password = v.check(Password::parse(password));
    v.finish(|| Some((username?, password?)))
}

/// A partial update, parsed; at least one field must be set.
#[derive(Debug, Clone, Default)]
pub struct UpdateUserRequest {
    pub full_name: Option<FullName>,
    pub email: Option<Email>,
    pub password: Option<Password>,
    /// The caller's own password, required with `email` or `password`.
    pub current_password: Option<Password>,
}

impl UpdateUserRequest {
    /// Parses the fields that are present, reporting every bad one.
    pub fn parse(
        full_name: Option<&str>,
        email: Option<&str>,
        password: Option<&str>,
        current_password: Option<&str>,
    ) -> Result<Self, Vec<ValidationError>> {
        let mut v = Violations::default();
        let full_name = full_name.map(|s| v.check(FullName::parse(s)));
        let email = email.map(|s| v.check(Email::parse(s)));
        let password = password.map(|s| v.check(Password::parse(s)));
        // Any non-empty text: a wrong one is `unauthenticated`, not a field error, and a
        // password set under older rules must still be accepted here.
        let current_password = current_password.map(|s| {
            v.check(Password::parse(s).map_err(|_| {
                ValidationError::new("current_password", "is not a password this server accepts")
            }))
        });
        v.finish(|| {
            Some(UpdateUserRequest {
                full_name: full_name.flatten(),
                email: email.flatten(),
                password: password.flatten(),
                current_password: current_password.flatten(),
            })
        })
    }
}

/// Where a login comes from, recorded with its session.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub user_agent: String,
    pub client_ip: String,
}

#[derive(Debug, Clone)]
pub struct LoginResult {
    pub session_id: Uuid,
    pub access_token: IssuedToken,
    pub refresh_token: IssuedToken,
    pub user: User,
}

const BAD_CREDENTIALS: &str = "invalid username or password";

const BAD_REFRESH: &str = "the refresh token is invalid, expired or revoked";

/// Hashing at capacity is `unavailable` (503 + `Retry-After`): the client should come back in a
/// moment. Anything else went wrong inside.
fn password_error(err: PasswordError) -> ServiceError {
    match err {
        PasswordError::Busy => ServiceError::Unavailable(Box::new(err)),
        PasswordError::Hashing | PasswordError::Task => ServiceError::internal(err),
    }
}

/// Sessions store this, never the refresh token itself: a leaked sessions table cannot be replayed.
pub(super) fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Compares two hashes without stopping at the first difference.
fn same_hash(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl BankService {
    /// Anyone, within their address's share of the anonymous routes.
    pub async fn create_user(
        &self,
        request: NewUserRequest,
        client: &ClientInfo,
    ) -> Result<User, ServiceError> {
        let _place = self.anonymous.admit_key(&client.client_ip)?;
        let hashed_password = self
            .passwords
            .hash(request.password)
            .await
            .map_err(password_error)?;
        let user = self
            .store
            .users
            .create_user(
                &NewUser {
                    username: request.username,
                    hashed_password,
                    full_name: request.full_name,
                    email: request.email,
                    role: Role::Depositor,
                },
                &self.new_verification(),
            )
            .await?;
        self.mail_queued.notify_one();
        Ok(user)
    }

    /// The same `unauthenticated` for an unknown user and a wrong password, after the same amount
    /// of hashing work, so neither the answer nor its timing tells which usernames exist.
    pub async fn login(
        &self,
        username: Username,
        password: Password,
        client: ClientInfo,
    ) -> Result<LoginResult, ServiceError> {
        // Before any work: a refused attempt costs neither a query nor a hash; an attempt on a
        // username under attack waits first (bounded), before it takes a hashing place.
        let wait = self
            .login_limiter
            .admit(&client.client_ip, username.as_str())
            .map_err(|retry_after| ServiceError::RateLimited { retry_after })?;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        // A hashing place before the look-up: under a flood the refusal costs no query.
        let place = self.passwords.place().map_err(password_error)?;
        let user = match self.store.users.get_user(&username).await {
            Ok(user) => Some(user),
            Err(StoreError::NotFound(_)) => None,
            Err(err) => return Err(err.into()),
        };
        let hash = user.as_ref().map(|u| u.hashed_password.clone());
        let matches = place.verify(password, hash).await.map_err(password_error)?;
        let Some(user) = user.filter(|_| matches) else {
            self.login_limiter
                .failed(username.as_str(), &client.client_ip);
            return Err(ServiceError::Unauthenticated(BAD_CREDENTIALS));
        };

        let now = Utc::now();
        let session_id = Uuid::new_v4();
        let issue = |token_type, lifetime| {
            self.tokens
                .issue(
                    session_id,
                    &user.username,
                    user.role,
                    token_type,
                    lifetime,
                    now,
                )
                .map_err(ServiceError::internal)
        };
        let refresh_token = issue(TokenType::Refresh, self.lifetimes.refresh)?;
        let access_token = issue(TokenType::Access, self.lifetimes.access)?;
        self.store
            .sessions
            .create_session(&NewSession {
                id: session_id,
                username: user.username.clone(),
                refresh_token_hash: token_hash(refresh_token.token.expose_secret()),
                user_agent: client.user_agent,
                client_ip: client.client_ip,
                expires_at: refresh_token.claims.expires_at,
            })
            .await?;
        Ok(LoginResult {
            session_id,
            access_token,
            refresh_token,
            user,
        })
    }

    /// A new access token for a live session. The role is read again from the user, so a role
    /// change reaches the caller at the latest when its current access token expires.
    pub async fn renew_access_token(
        &self,
        refresh_token: &str,
    ) -> Result<IssuedToken, ServiceError> {
        let now = Utc::now();
        let claims = self
            .tokens
            .verify(refresh_token, TokenType::Refresh, now)
            .map_err(|_| ServiceError::Unauthenticated(BAD_REFRESH))?;
        let session = self
            .store
            .sessions
            .get_session(claims.session_id)
            .await?
            .ok_or(ServiceError::Unauthenticated(BAD_REFRESH))?;
        let live = !session.is_blocked
            && session.username == claims.username
            && session.expires_at > now
            && same_hash(&session.refresh_token_hash, &token_hash(refresh_token));
        if !live {
            return Err(ServiceError::Unauthenticated(BAD_REFRESH));
        }
        let user = match self.store.users.get_user(&claims.username).await {
            Ok(user) => user,
            Err(StoreError::NotFound(_)) => return Err(ServiceError::Unauthenticated(BAD_REFRESH)),
            Err(err) => return Err(err.into()),
        };
        self.tokens
            .issue(
                session.id,
                &user.username,
                user.role,
                TokenType::Access,
                self.lifetimes.access,
                now,
            )
            .map_err(ServiceError::internal)
    }

    /// Revokes the session of `refresh_token`: it can never renew again. Repeating it is harmless.
    pub async fn logout(&self, refresh_token: &str) -> Result<(), ServiceError> {
        let claims = self
            .tokens
            .verify(refresh_token, TokenType::Refresh, Utc::now())
            .map_err(|_| ServiceError::Unauthenticated(BAD_REFRESH))?;
        self.store
            .sessions
            .block_session(claims.session_id, &claims.username)
            .await?;
        Ok(())
    }

    /// Self or a banker.
    pub async fn get_user(
        &self,
        principal: &Principal,
        username: &Username,
    ) -> Result<User, ServiceError> {
        if !principal.may_act_for(username) {
            return Err(ServiceError::PermissionDenied(
                "you may only read your own user".to_owned(),
            ));
        }
        Ok(self.store.users.get_user(username).await?)
    }

    /// Self or a banker. Changing the password or the email needs the caller's own
    /// `current_password` (a stolen access token alone must not be enough to take an account
    /// over for good); a wrong one is `unauthenticated` and counts as a failed login of the
    /// caller. A new password revokes the user's other sessions (all of them when a banker
    /// changes someone else's), in the same statement as the change.
    pub async fn update_user(
        &self,
        principal: &Principal,
        username: &Username,
        mut request: UpdateUserRequest,
    ) -> Result<User, ServiceError> {
        if !principal.may_act_for(username) {
            return Err(ServiceError::PermissionDenied(
                "you may only update your own user".to_owned(),
            ));
        }
        if request.full_name.is_none() && request.email.is_none() && request.password.is_none() {
            return Err(ServiceError::invalid(
                "full_name",
                "give at least one of full_name, email or password",
            ));
        }
        if request.password.is_some() || request.email.is_some() {
            let Some(current) = request.current_password.take() else {
                return Err(ServiceError::invalid(
                    "current_password",
                    "is required to change the password or the email: your own current password",
                ));
            };
            self.reauthenticate(principal, current).await?;
        }
        let hashed_password = match request.password {
            Some(password) => Some(
                self.passwords
                    .hash(password)
                    .await
                    .map_err(password_error)?,
            ),
            None => None,
        };
        let queues_email = request.email.is_some();
        let keep_session = (&principal.username == username).then_some(principal.session_id);
        let user = self
            .store
            .users
            .update_user(
                username,
                &UserUpdate {
                    full_name: request.full_name,
                    email: request.email,
                    hashed_password,
                    keep_session,
                },
                &self.new_verification(),
            )
            .await?;
        if queues_email {
            self.mail_queued.notify_one();
        }
        Ok(user)
    }

    /// The caller proves it knows its own password, throttled like logins: a refused or wrong
    /// attempt costs the caller's username a token of `LOGIN_FAILURES_PER_USERNAME`.
    async fn reauthenticate(
        &self,
        principal: &Principal,
        current: Password,
    ) -> Result<(), ServiceError> {
        let name = principal.username.as_str();
        let session = principal.session_id.to_string();
        let wait = self
            .login_limiter
            .admit_reauth(name, &session)
            .map_err(|retry_after| ServiceError::RateLimited { retry_after })?;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let place = self.passwords.place().map_err(password_error)?;
        let caller = self.store.users.get_user(&principal.username).await?;
        let matches = place
            .verify(current, Some(caller.hashed_password))
            .await
            .map_err(password_error)?;
        if matches {
            Ok(())
        } else {
            self.login_limiter.failed_reauth(name, &session);
            Err(ServiceError::Unauthenticated(
                "current_password is not your password",
            ))
        }
    }

    /// Anyone holding the link: marks the address of verification `email_id` verified if `code`
    /// is its code, unused and unexpired. Every other outcome is the client's problem, never an
    /// internal error.
    pub async fn verify_email(
        &self,
        email_id: i64,
        code: VerificationCode,
        client: &ClientInfo,
    ) -> Result<(), ServiceError> {
        let _place = self.anonymous.admit_key(&client.client_ip)?;
        match self.store.users.verify_email(email_id, &code).await? {
            VerifyOutcome::Verified => Ok(()),
            VerifyOutcome::NotFound => Err(ServiceError::NotFound(format!(
                "email verification {email_id} not found"
            ))),
            VerifyOutcome::WrongCode => Err(ServiceError::invalid(
                "secret_code",
                "does not match this verification",
            )),
            VerifyOutcome::Used => Err(ServiceError::invalid(
                "secret_code",
                "has been used already",
            )),
            VerifyOutcome::Expired => Err(ServiceError::invalid(
                "secret_code",
                "has expired; change your email to get a new one",
            )),
            VerifyOutcome::Superseded => Err(ServiceError::invalid(
                "email_id",
                "belongs to an address the user no longer has",
            )),
        }
    }

    /// A fresh verification for a new or changed address.
    fn new_verification(&self) -> NewVerification {
        NewVerification {
            code: VerificationCode::generate(),
            valid_for: self.verification_ttl,
        }
    }

    /// Bankers only (the `user set-role` command makes the first one).
    pub async fn set_user_role(
        &self,
        principal: &Principal,
        username: &Username,
        role: Role,
    ) -> Result<User, ServiceError> {
        require_banker(principal, "change roles")?;
        Ok(self.store.users.set_user_role(username, role).await?)
    }
}
