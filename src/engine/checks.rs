//! Sessions advanced by checks and challenges (the model of ZITADEL's v2
//! Session API): one command carries checks (user, password, TOTP, email
//! code, recovery code), a challenge (make a login code), metadata and a
//! lifetime, and is applied in one transaction on the locked session and
//! user rows.
//!
//! A failed check fails the whole command and leaves the session as it
//! was: the command runs in a savepoint that is rolled back; the failed
//! check is then run once more outside it, where its miss is counted and
//! committed (the rows it sees are the ones the savepoint saw, so it fails
//! the same way). No error after that can undo the count.

use std::collections::BTreeMap;

use chrono::{Duration, NaiveDateTime};
use diesel::Connection;
use uuid::Uuid;

use super::caller::Caller;
use super::challenges::{self, CodeDelivery, CodeFor};
use super::factors::{Attempt, CodeCheck, OtpType};
use super::lifecycle::{self, NewSession, UserAgent};
use super::login::{self, Secret, UserRef, find_user, lock_user, settle_success};
use super::{VERIFIED, caller};
use crate::db::DbConnection;
use crate::db::sessions::{self as rows, SessionChanges, SessionRow, SessionSearch};
use crate::db::users::{self, UserRow};
use crate::error::{ApiError, ErrorCode};
use crate::services::audit::{self, AuditKind, ClientInfo};
use crate::services::{Core, Rules, parse_id};
use crate::tokens::ADMIN_SCOPE;

#[derive(Debug, Default, Clone)]
pub struct SessionChecks {
    pub user: Option<UserRef>,
    pub password: Option<String>,
    pub totp: Option<String>,
    pub otp_email: Option<String>,
    pub recovery_code: Option<String>,
}

impl SessionChecks {
    /// The code checks, each with its kind and where it sits in a v2 body.
    fn codes(&self) -> Vec<(OtpType, &str, &'static str)> {
        [
            (OtpType::Totp, &self.totp, "/checks/totp"),
            (
                OtpType::Recovery,
                &self.recovery_code,
                "/checks/recoveryCode",
            ),
            (OtpType::Login, &self.otp_email, "/checks/otpEmail"),
        ]
        .into_iter()
        .filter_map(|(kind, code, pointer)| code.as_deref().map(|code| (kind, code, pointer)))
        .collect()
    }

    fn any(&self) -> bool {
        self.password.is_some() || !self.codes().is_empty()
    }
}

#[derive(Debug, Default, Clone)]
pub struct SessionRequest {
    pub checks: SessionChecks,
    /// A login code to make: mailed (with an optional link) or returned.
    pub otp_email: Option<CodeDelivery>,
    /// Keys to set (an empty value removes the key).
    pub metadata: Option<BTreeMap<String, String>>,
    pub lifetime: Option<Duration>,
    /// The user agent the client reports (creation only).
    pub user_agent: Option<UserAgent>,
    /// Checks and challenges of ZITADEL's shape that Latchkey does not
    /// offer, by their JSON pointer: the command is refused with a code
    /// that says so (a client can tell it from a typo).
    pub unsupported: Vec<Unsupported>,
}

#[derive(Debug, Clone)]
pub enum Unsupported {
    Check(&'static str),
    Challenge(&'static str),
}

impl Unsupported {
    fn error(&self) -> ApiError {
        match self {
            Self::Check(pointer) => ApiError::new(
                ErrorCode::CheckNotSupported,
                format!("Latchkey does not offer the check {pointer}."),
            )
            .at_pointer(pointer),
            Self::Challenge(pointer) => ApiError::new(
                ErrorCode::ChallengeNotSupported,
                format!("Latchkey does not offer the challenge {pointer}."),
            )
            .at_pointer(pointer),
        }
    }
}

/// A session after a change, with its user and its new token.
pub struct SessionOutcome {
    pub session: SessionRow,
    pub user: UserRow,
    pub session_token: String,
    /// The login code, when it was asked to be returned.
    pub otp_email_code: Option<String>,
}

fn invalid_credentials() -> ApiError {
    login::invalid_credentials().at_pointer("/checks/password")
}

fn merged_metadata(current: &str, changes: &BTreeMap<String, String>) -> String {
    let mut map: BTreeMap<String, String> = serde_json::from_str(current).unwrap_or_default();
    for (key, value) in changes {
        if value.is_empty() {
            map.remove(key);
        } else {
            map.insert(key.clone(), value.clone());
        }
    }
    serde_json::to_string(&map).unwrap_or_else(|_| "{}".to_owned())
}

/// Why the savepoint of a command was rolled back.
enum Rollback {
    /// A code check failed: the check (its position in
    /// [`SessionChecks::codes`]) is run again outside to count it.
    Check(usize),
    Error(ApiError),
}

impl From<diesel::result::Error> for Rollback {
    fn from(err: diesel::result::Error) -> Self {
        Self::Error(err.into())
    }
}

impl From<ApiError> for Rollback {
    fn from(err: ApiError) -> Self {
        Self::Error(err)
    }
}

/// Who a command is applied for, inside its transaction.
struct Applying<'a> {
    rules: &'a Rules,
    request: &'a SessionRequest,
    user: &'a UserRow,
    /// A caller without a verified session (a pending session's token, or
    /// a login without a token): it may not set metadata, nor (changing a
    /// session) a lifetime, unless this command verifies the session.
    pending_token: bool,
    /// Whether the command creates the session (its lifetime is then the
    /// initial one, capped like any other).
    creating: bool,
    token_id: &'a str,
    client: &'a ClientInfo,
    now: NaiveDateTime,
}

impl Applying<'_> {
    fn attempt<'s>(&'s self, session: &'s SessionRow) -> Attempt<'s> {
        Attempt {
            session,
            user: self.user,
            client: self.client,
            now: self.now,
        }
    }

    /// Applies the command to the locked `session`; returns the returned
    /// login code (if asked for) and the session as it is now. Failures are
    /// committed, and returned inside `Ok`.
    fn apply(
        &self,
        conn: &mut DbConnection,
        session: &SessionRow,
    ) -> Result<Result<(Option<String>, SessionRow), ApiError>, ApiError> {
        let codes = self.request.checks.codes();
        match conn.transaction(|conn| self.apply_in_savepoint(conn, session, &codes)) {
            Ok(done) => Ok(Ok(done)),
            Err(Rollback::Error(error)) => Err(error),
            Err(Rollback::Check(index)) => {
                let (kind, code, pointer) = codes[index];
                let check = self
                    .rules
                    .verify_code(conn, &self.attempt(session), code, &[kind])?;
                Ok(Err(match check {
                    CodeCheck::Refused(error) => error.at_pointer(pointer),
                    // Cannot happen: the same rows refused it a moment ago.
                    CodeCheck::Matched(_) => ApiError::internal("a refused check passed on rerun"),
                }))
            }
        }
    }

    fn apply_in_savepoint(
        &self,
        conn: &mut DbConnection,
        session: &SessionRow,
        codes: &[(OtpType, &str, &'static str)],
    ) -> Result<(Option<String>, SessionRow), Rollback> {
        let (request, now) = (self.request, self.now);
        for (index, (kind, code, _)) in codes.iter().enumerate() {
            let check = self
                .rules
                .verify_code(conn, &self.attempt(session), code, &[*kind])?;
            if let CodeCheck::Refused(_) = check {
                return Err(Rollback::Check(index));
            }
        }
        let mut changes = SessionChanges {
            token_id: Some(Some(self.token_id.to_owned())),
            ..SessionChanges::default()
        };
        if request.checks.password.is_some() {
            changes.password_verified_at = Some(Some(now));
        }
        if request.metadata.is_some() || (request.lifetime.is_some() && !self.creating) {
            let verified_now = rows::find(conn, &session.id)?.is_some_and(|s| s.status == VERIFIED);
            if self.pending_token && !verified_now {
                return Err(caller::not_verified().into());
            }
        }
        if let Some(metadata) = &request.metadata {
            changes.metadata = Some(merged_metadata(&session.metadata, metadata));
        }
        if let Some(lifetime) = request.lifetime {
            changes.expires_at = Some(now + lifetime);
        }
        let mut returned_code = None;
        if let Some(delivery) = &request.otp_email {
            let target = CodeFor {
                user: self.user,
                session,
                new_session: self.creating,
            };
            let (code, _) = self
                .rules
                .send_login_code(conn, target, delivery, self.client, now)?;
            // Only a trusted caller that asked for it gets the code back.
            if matches!(delivery, CodeDelivery::Return) {
                returned_code = Some(code);
            }
        }
        rows::update(conn, &session.id, &changes, now)?;
        let session = rows::find(conn, &session.id)?
            .ok_or_else(|| ApiError::not_found("The session was deleted meanwhile."))?;
        Ok((returned_code, session))
    }
}

/// Refusals that need only the request and the caller.
fn check_request(
    core: &Core,
    caller: Option<&Caller>,
    request: &SessionRequest,
) -> Result<(), ApiError> {
    if let Some(unsupported) = request.unsupported.first() {
        return Err(unsupported.error());
    }
    if matches!(request.otp_email, Some(CodeDelivery::Return)) {
        let detail = "Only an admin token may have the code returned.";
        let refusal = match caller {
            Some(Caller::Admin { .. }) => None,
            Some(Caller::User { .. }) => Some(ApiError::insufficient_scope(ADMIN_SCOPE, detail)),
            None => Some(ApiError::forbidden(detail)),
        };
        if let Some(refusal) = refusal {
            return Err(refusal.at_pointer("/challenges/otpEmail/returnCode"));
        }
    }
    if let Some(lifetime) = request.lifetime {
        lifecycle::check_lifetime(&core.settings.auth, caller, lifetime)?;
    }
    if let Some(CodeDelivery::Mail {
        link_template: Some(template),
    }) = &request.otp_email
    {
        let is_admin = caller.is_some_and(Caller::is_admin);
        challenges::ensure_link_allowed(&core.settings.auth, is_admin, template)?;
    }
    Ok(())
}

/// `POST /v2/sessions`. Without a token the checks must include the user
/// and the password (a login); otherwise an admin token is needed.
pub async fn create(
    core: &Core,
    caller: Option<&Caller>,
    request: SessionRequest,
    client: ClientInfo,
) -> Result<SessionOutcome, ApiError> {
    let Some(user_ref) = request.checks.user.clone() else {
        return Err(ApiError::invalid_field(
            "/checks/user",
            "checks.user is required to create a session.",
        ));
    };
    let is_login = request.checks.password.is_some();
    let is_admin = caller.is_some_and(Caller::is_admin);
    match (is_login, caller) {
        (true, _) | (false, Some(Caller::Admin { .. })) => {}
        (false, None) => {
            return Err(ApiError::token_missing(
                "Without a password check, creating a session needs an admin token.",
            ));
        }
        (false, Some(Caller::User { .. })) => {
            return Err(ApiError::insufficient_scope(
                ADMIN_SCOPE,
                "Without a password check, creating a session needs an admin token.",
            ));
        }
    }
    check_request(core, caller, &request)?;
    if is_login {
        core.check_rate_limit(client.ip).await?;
    }
    let user = {
        let user_ref = user_ref.clone();
        core.db.run(move |conn| find_user(conn, &user_ref)).await?
    };
    if let Some(password) = request.checks.password.clone() {
        let matched = login::check_secret(
            core,
            user.as_ref(),
            Secret::Password,
            password,
            &client,
            None,
            None,
        )
        .await?;
        if !matched {
            return Err(invalid_credentials());
        }
    }
    let Some(user) = user else {
        return Err(
            ApiError::new(ErrorCode::UserNotFound, "checks.user names no user.")
                .at_pointer("/checks/user"),
        );
    };

    let now = core.now();
    let session_id = Uuid::new_v4().to_string();
    let lifetime = request
        .lifetime
        .unwrap_or_else(|| Duration::seconds(core.settings.auth.session_lifetime_secs));
    let expires_at = now + lifetime;
    let (token, claims) = lifecycle::issue_session_token(core, &user.id, &session_id, expires_at)?;
    let rules = core.rules();
    let mails = mails_a_code(&request);
    // A login creates its own session; otherwise the admin does.
    let creator = caller.map_or_else(|| user.id.clone(), Caller::creator);
    let outcome = {
        let (user_id, session_id, client) = (user.id.clone(), session_id.clone(), client.clone());
        core.db
            .write(move |conn| {
                let user = if is_login {
                    settle_success(conn, &user_id, &client, now)?
                } else {
                    lock_user(conn, &user_id)?
                };
                let new = NewSession {
                    binding: None,
                    id: &session_id,
                    user: &user,
                    application_id: None,
                    client: &client,
                    expires_at,
                    password_verified: false,
                    token_id: None,
                    user_agent: request.user_agent.as_ref(),
                    creator: creator.clone(),
                };
                let row = lifecycle::insert_session(conn, new, now)?;
                let applying = Applying {
                    rules: &rules,
                    request: &request,
                    user: &user,
                    pending_token: !is_admin,
                    creating: true,
                    token_id: &claims.jti,
                    client: &client,
                    now,
                };
                match applying.apply(conn, &row)? {
                    Ok(done) => {
                        let kind = if is_login {
                            AuditKind::LoginSucceeded
                        } else {
                            AuditKind::SessionCreated
                        };
                        audit::record(
                            conn,
                            kind,
                            Some(&user.id),
                            Some(&session_id),
                            &client,
                            None,
                            now,
                        )?;
                        Ok::<_, ApiError>(Ok((done, user)))
                    }
                    // A failed check leaves no session behind; its count
                    // (made on the user) stays.
                    Err(error) => {
                        rows::delete(conn, &session_id)?;
                        Ok(Err(error))
                    }
                }
            })
            .await?
    };
    if mails {
        core.mailer.wake();
    }
    finish(outcome, token)
}

/// Whether a command queues a mail (so the mailer is woken after it).
fn mails_a_code(request: &SessionRequest) -> bool {
    matches!(request.otp_email, Some(CodeDelivery::Mail { .. }))
}

/// The outcome of a committed command, or its refusal.
fn finish(
    outcome: Result<((Option<String>, SessionRow), UserRow), ApiError>,
    session_token: String,
) -> Result<SessionOutcome, ApiError> {
    let ((otp_email_code, session), user) = outcome?;
    Ok(SessionOutcome {
        session,
        user,
        session_token,
        otp_email_code,
    })
}

/// `PATCH /v2/sessions/{id}`: more checks and challenges; a new token.
/// With a session token, the token must be the session's current one in
/// the changing transaction: of several changes sent with one token, one
/// wins and the others are refused.
pub async fn change(
    core: &Core,
    caller: &Caller,
    raw_session_id: &str,
    request: SessionRequest,
    client: ClientInfo,
) -> Result<SessionOutcome, ApiError> {
    let session_id = parse_id(raw_session_id, "session")?;
    caller.ensure_own(&session_id)?;
    check_request(core, Some(caller), &request)?;
    if request.checks.any() {
        core.check_rate_limit(client.ip).await?;
    }
    let session = lifecycle::find_session(core, &session_id).await?;
    let now = core.now();
    lifecycle::ensure_live(&session, now)?;
    let user = {
        let user_id = session.user_id.clone();
        core.db
            .run(move |conn| Ok::<_, ApiError>(users::find(conn, &user_id)?))
            .await?
            .ok_or_else(|| ApiError::not_found("The session's user no longer exists."))?
    };
    if let Some(user_ref) = &request.checks.user
        && !user_ref.names(&user)
    {
        return Err(
            ApiError::conflict("The user of a session cannot change.").at_pointer("/checks/user")
        );
    }
    let has_password = request.checks.password.is_some();
    if let Some(password) = request.checks.password.clone() {
        let matched = login::check_secret(
            core,
            Some(&user),
            Secret::Password,
            password,
            &client,
            Some(&session_id),
            None,
        )
        .await?;
        if !matched {
            return Err(invalid_credentials());
        }
    }
    let expires_at = request
        .lifetime
        .map_or(session.expires_at, |lifetime| now + lifetime);
    let (token, claims) = lifecycle::issue_session_token(core, &user.id, &session_id, expires_at)?;
    let rules = core.rules();
    let mails = mails_a_code(&request);
    let pending_token = matches!(
        caller,
        Caller::User {
            verified: false,
            ..
        }
    );
    let outcome = {
        let (caller, session_id, client) = (caller.clone(), session_id.clone(), client.clone());
        core.db
            .write(move |conn| {
                let session = lifecycle::lock_live_session(conn, &session_id, now)?;
                caller.ensure_current_token(&session)?;
                let user = if has_password {
                    settle_success(conn, &session.user_id, &client, now)?
                } else {
                    lock_user(conn, &session.user_id)?
                };
                let applying = Applying {
                    rules: &rules,
                    request: &request,
                    user: &user,
                    pending_token,
                    creating: false,
                    token_id: &claims.jti,
                    client: &client,
                    now,
                };
                let applied = applying.apply(conn, &session)?;
                Ok::<_, ApiError>(applied.map(|done| (done, user)))
            })
            .await?
    };
    if mails {
        core.mailer.wake();
    }
    finish(outcome, token)
}

/// `GET /v2/sessions/{id}`: the session and its user.
pub async fn get(
    core: &Core,
    bearer: Option<&Caller>,
    session_token: Option<&str>,
    raw_session_id: &str,
) -> Result<(SessionRow, Option<UserRow>), ApiError> {
    let session_id = parse_id(raw_session_id, "session")?;
    let caller = reader(core, bearer, session_token, &session_id).await?;
    caller.ensure_own(&session_id)?;
    core.db
        .run(move |conn| {
            let session = rows::find(conn, &session_id)?.ok_or_else(|| {
                ApiError::not_found(format!("There is no session {session_id:?}."))
            })?;
            let user = users::find(conn, &session.user_id)?;
            Ok((session, user))
        })
        .await
}

/// `DELETE /v2/sessions/{id}`: revokes the session and its token.
pub async fn terminate(
    core: &Core,
    bearer: Option<&Caller>,
    session_token: Option<&str>,
    raw_session_id: &str,
    client: ClientInfo,
) -> Result<SessionRow, ApiError> {
    let session_id = parse_id(raw_session_id, "session")?;
    let caller = reader(core, bearer, session_token, &session_id).await?;
    caller.ensure_own(&session_id)?;
    lifecycle::revoke(core, &caller, &session_id, client).await
}

/// Who reads or ends a session: with the session's token given in the
/// request (ZITADEL's `sessionToken`), the session itself, whoever sent
/// the Authorization header; otherwise the bearer, who is then required.
async fn reader(
    core: &Core,
    bearer: Option<&Caller>,
    session_token: Option<&str>,
    session_id: &str,
) -> Result<Caller, ApiError> {
    match (session_token, bearer) {
        (Some(token), _) => caller::by_session_token(core, token, session_id).await,
        (None, Some(bearer)) => Ok(bearer.clone()),
        (None, None) => Err(ApiError::token_missing(
            "This route needs a bearer token in the Authorization header, or the session's sessionToken.",
        )),
    }
}

/// `POST /v2/sessions/search`: an admin sees every session, a verified
/// session its user's.
pub async fn search(
    core: &Core,
    caller: &Caller,
    mut filter: SessionSearch,
    limit: i64,
    offset: i64,
) -> Result<(Vec<(SessionRow, Option<UserRow>)>, i64), ApiError> {
    caller.ensure_verified()?;
    if filter.creator_is_caller {
        filter.creator = Some(caller.creator());
    }
    if filter.fingerprint_of_caller {
        // ZITADEL takes the user agent of the caller's token: here, the
        // one stored on the caller's session.
        let Caller::User { session_id, .. } = caller else {
            return Err(ApiError::invalid_field(
                "/queries",
                "userAgentQuery without fingerprintId needs a session token (an admin token has no user agent).",
            ));
        };
        let session_id = session_id.clone();
        let own = core
            .db
            .run(move |conn| Ok::<_, ApiError>(rows::find(conn, &session_id)?))
            .await?;
        match own.and_then(|s| s.user_agent_fingerprint_id) {
            Some(fingerprint) => filter.user_agent_fingerprint_id = Some(fingerprint),
            None => return Ok((Vec::new(), 0)),
        }
    }
    if let Caller::User { user_id, .. } = caller {
        caller.ensure_verified()?;
        if filter
            .user_id
            .as_ref()
            .is_some_and(|wanted| wanted != user_id)
        {
            return Ok((Vec::new(), 0));
        }
        filter.user_id = Some(user_id.clone());
    }
    core.db
        .run(move |conn| {
            let (rows, total) = rows::search(conn, &filter, limit, offset)?;
            let mut with_users = Vec::with_capacity(rows.len());
            for row in rows {
                let user = users::find(conn, &row.user_id)?;
                with_users.push((row, user));
            }
            Ok((with_users, total))
        })
        .await
}
