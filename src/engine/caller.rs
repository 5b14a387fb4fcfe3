//! Who is calling, and the access rules of every face in one place.
//!
//! - An **admin** token (a trusted backend or an operator) reaches every
//!   session and may set any lifetime up to the hard bound.
//! - A **session token** reaches its own user's sessions only, and only
//!   while it is its session's current token. A *pending* session (second
//!   factor not yet proven) may read itself, ask for and verify its login
//!   code, add checks to itself and log out; everything else (account
//!   codes, the PIN, authenticators, recovery codes, other sessions,
//!   metadata and lifetime) needs a *verified* one (OWASP ASVS 2.0 V2.1:
//!   no sensitive action before the authentication is complete).

use super::{VERIFIED, effective_status, is_live};
use crate::db::sessions::{self as rows, SessionRow};
use crate::error::{ApiError, ErrorCode};
use crate::services::Core;
use crate::tokens::Claims;

/// Who is calling, once the bearer token has been checked.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A token with the admin scope: a trusted backend or an operator.
    Admin { subject: String },
    /// A session token: the user, acting through one live session.
    User {
        user_id: String,
        session_id: String,
        /// The token's `jti`: a change that rotates the token compares it
        /// with the session's current one inside its transaction.
        token_id: String,
        /// Whether the session had proven its second factor when the token
        /// was checked.
        verified: bool,
    },
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        matches!(self, Self::Admin { .. })
    }

    /// Who a session created by this caller was created by (ZITADEL's
    /// creator): the admin token's subject, or the user.
    pub fn creator(&self) -> String {
        match self {
            Self::Admin { subject } => subject.clone(),
            Self::User { user_id, .. } => user_id.clone(),
        }
    }

    /// The user and session of a session token; admins are refused (the
    /// call acts for a signed-in user).
    pub fn user(&self) -> Result<(&str, &str), ApiError> {
        match self {
            Self::User {
                user_id,
                session_id,
                ..
            } => Ok((user_id, session_id)),
            Self::Admin { .. } => Err(ApiError::forbidden(
                "This call acts for a signed-in user: use a session token.",
            )),
        }
    }

    /// As [`Caller::user`], for calls that need a verified session.
    pub fn verified_user(&self) -> Result<(&str, &str), ApiError> {
        let (user_id, session_id) = self.user()?;
        self.ensure_verified()?;
        Ok((user_id, session_id))
    }

    /// Refuses a session token whose session has not proven its second
    /// factor; admins pass.
    pub fn ensure_verified(&self) -> Result<(), ApiError> {
        match self {
            Self::User {
                verified: false, ..
            } => Err(not_verified()),
            _ => Ok(()),
        }
    }

    /// A user reaches only their own sessions, an admin every session; a
    /// pending session reaches only itself. Another user's session reads
    /// as no such session.
    pub fn ensure_visible(&self, row: &SessionRow) -> Result<(), ApiError> {
        match self {
            Self::User { user_id, .. } if *user_id != row.user_id => Err(ApiError::not_found(
                format!("There is no session {:?}.", row.id),
            )),
            Self::User { session_id, .. } if *session_id != row.id => self.ensure_verified(),
            _ => Ok(()),
        }
    }

    /// A session token may work on its own session only (v2 changes).
    pub fn ensure_own(&self, session_id: &str) -> Result<(), ApiError> {
        match self {
            Self::User {
                session_id: own, ..
            } if own != session_id => Err(ApiError::forbidden(
                "A session token may only work on its own session.",
            )),
            _ => Ok(()),
        }
    }

    /// Inside a transaction that changes `session` and rotates its token:
    /// the caller's token must still be the session's current one, so of
    /// several changes sent with one token exactly one wins.
    pub fn ensure_current_token(&self, session: &SessionRow) -> Result<(), ApiError> {
        match self {
            Self::User { token_id, .. } if session.token_id.as_deref() != Some(token_id) => {
                Err(session_ended())
            }
            _ => Ok(()),
        }
    }
}

pub fn not_verified() -> ApiError {
    ApiError::new(
        ErrorCode::SessionNotVerified,
        "This needs a verified session: verify the login code (or an authenticator code) first.",
    )
}

pub fn session_ended() -> ApiError {
    ApiError::token_invalid("The session of this token has ended (revoked, expired or replaced).")
}

/// Turns verified token claims into a caller: admin tokens as they are,
/// session tokens only while their session is live and the token is the
/// session's current one (revoking a session kills its token at once).
/// Returns the caller's own session row as read, to spare a second read.
pub async fn authenticate(
    core: &Core,
    claims: Claims,
) -> Result<(Caller, Option<SessionRow>), ApiError> {
    if claims.is_admin() {
        return Ok((
            Caller::Admin {
                subject: claims.sub,
            },
            None,
        ));
    }
    let Some(session_id) = claims.sid.clone() else {
        return Err(ApiError::token_invalid(
            "This route needs a session token or an admin token.",
        ));
    };
    let now = core.now();
    let session = core
        .db
        .lookup(move |conn| Ok::<_, ApiError>(rows::find(conn, &session_id)?))
        .await?;
    match session {
        Some(row)
            if is_live(&row, now)
                && row.user_id == claims.sub
                && row.token_id.as_deref() == Some(&claims.jti) =>
        {
            let caller = Caller::User {
                user_id: row.user_id.clone(),
                session_id: row.id.clone(),
                token_id: claims.jti,
                verified: effective_status(&row, now) == VERIFIED,
            };
            Ok((caller, Some(row)))
        }
        _ => Err(session_ended()),
    }
}

/// A caller from a token given in the request rather than in the
/// Authorization header (ZITADEL's `sessionToken` of GetSession and
/// DeleteSession): it must be the current token of `session_id`.
pub async fn by_session_token(
    core: &Core,
    token: &str,
    session_id: &str,
) -> Result<Caller, ApiError> {
    let claims = core.tokens.verify(token).await?;
    if claims.sid.as_deref() != Some(session_id) {
        return Err(ApiError::forbidden(
            "sessionToken is not the token of this session.",
        ));
    }
    let (caller, _) = authenticate(core, claims).await?;
    Ok(caller)
}
