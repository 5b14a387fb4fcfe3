//! A trusted backend's session commands (the asynchronous face, seeds
//! 000–002): recording a session for a user, changing one, and a login
//! that mails its code at once. Each obeys the rules every face obeys: a
//! session is pending until its second factor is proven, whatever the
//! backend says; its lifetime is bounded by the configured one; a login
//! goes through the lockout rules of [`super::login`].

use chrono::{Duration, NaiveDateTime};

use super::challenges::{self, CodeFor};
use super::lifecycle::{self, Binding, NewSession};
use super::login::{self, LoginInput, LoginResult};
use super::{FAILED, VERIFIED};
use crate::db::DbConnection;
use crate::db::applications::{self, ApplicationRow};
use crate::db::entities::{self, EntityRow};
use crate::db::sessions::{self as rows, SessionChanges, SessionRow};
use crate::db::users::{self, UserRow};
use crate::error::{ApiError, ErrorCode};
use crate::services::Core;
use crate::services::audit::{self, AuditKind, ClientInfo};

/// The fields of the user's entity or application a session may be bound
/// to (`session_entity_field`), each checked against the stored record.
pub const ENTITY_FIELDS: &[&str] = &[
    "entity_id",
    "entity_number",
    "application_id",
    "application_number",
    "mobile_application_id",
    "desktop_application_id",
];

fn mismatch(pointer: &str, detail: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::RecordMismatch, detail).at_pointer(pointer)
}

fn no_application(pointer: &str, detail: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::ApplicationNotFound, detail).at_pointer(pointer)
}

/// The entity's application `id`, of `kind` when given.
fn application_of(
    conn: &mut DbConnection,
    entity: &EntityRow,
    id: &str,
    kind: Option<&str>,
    pointer: &str,
) -> Result<ApplicationRow, ApiError> {
    match applications::find(conn, id)? {
        Some(app)
            if app.entity_id == entity.id && kind.is_none_or(|k| k == app.application_type) =>
        {
            Ok(app)
        }
        _ => Err(no_application(
            pointer,
            format!(
                "{id} is no {}application of entity {}.",
                kind.map(|k| format!("{k} ")).unwrap_or_default(),
                entity.entity_number
            ),
        )),
    }
}

/// Checks a binding's field and value against the user's entity and its
/// applications: a session is bound only to what exists.
fn check_binding(
    conn: &mut DbConnection,
    entity: &EntityRow,
    field: &str,
    value: &str,
) -> Result<(), ApiError> {
    const POINTER: &str = "/session_entity_field_value";
    let matches = match field {
        "entity_id" => value.eq_ignore_ascii_case(&entity.id),
        "entity_number" => value == entity.entity_number,
        "application_id" => application_of(conn, entity, value, None, POINTER).is_ok(),
        "mobile_application_id" => {
            application_of(conn, entity, value, Some("mobile"), POINTER).is_ok()
        }
        "desktop_application_id" => {
            application_of(conn, entity, value, Some("desktop"), POINTER).is_ok()
        }
        "application_number" => applications::find_by_number(conn, &entity.id, value)?.is_some(),
        other => {
            return Err(mismatch(
                "/session_entity_field",
                format!(
                    "{other} is not a field a session can be bound to (one of {}).",
                    ENTITY_FIELDS.join(", ")
                ),
            ));
        }
    };
    if matches {
        Ok(())
    } else {
        Err(mismatch(
            POINTER,
            format!("{value} is not the {field} of the user's entity or its applications."),
        ))
    }
}

/// The user's entity; `entity_id`, when given, must be it.
fn entity_of(
    conn: &mut DbConnection,
    user: &UserRow,
    entity_id: Option<&str>,
) -> Result<EntityRow, ApiError> {
    if entity_id.is_some_and(|id| !id.eq_ignore_ascii_case(&user.entity_id)) {
        return Err(mismatch(
            "/entity_id",
            "The user belongs to another entity.",
        ));
    }
    entities::find(conn, &user.entity_id)?
        .ok_or_else(|| ApiError::internal("a user's entity is missing"))
}

/// A session as a trusted backend records it (seed 001).
#[derive(Debug, Clone)]
pub struct RecordSession {
    pub session_id: String,
    pub user_id: String,
    pub entity_id: String,
    pub entity_number: String,
    pub employee_number: String,
    pub application_number: String,
    /// mobile, desktop or web: the type of the application numbered
    /// `application_number`.
    pub application_type: String,
    pub binding: Binding,
    /// When the backend wants the session to end.
    pub expires_at: NaiveDateTime,
}

/// What recording did.
#[derive(Debug)]
pub struct Recorded {
    pub session: SessionRow,
    /// `expires_at` was beyond the configured session lifetime and was
    /// brought back to it.
    pub expires_at_capped: bool,
}

/// Records a pending session for a user (seed 001) and mails its login
/// code, as `PUT /sessions/{id}` does for a new session. Every id and
/// number the backend sends is checked against the stored records; an id in
/// use is a `conflict`. `expires_at` must be in the future; beyond the
/// configured session lifetime it is capped to it.
pub async fn record_session(
    core: &Core,
    creator: String,
    command: RecordSession,
    client: ClientInfo,
) -> Result<Recorded, ApiError> {
    let now = core.now();
    let rules = core.rules();
    let recorded = core
        .db
        .write(move |conn| {
            let user = users::find(conn, &command.user_id)?.ok_or_else(|| {
                ApiError::new(
                    ErrorCode::UserNotFound,
                    format!("There is no user with id {:?}.", command.user_id),
                )
                .at_pointer("/user_id")
            })?;
            let entity = entity_of(conn, &user, Some(&command.entity_id))?;
            if command.entity_number != entity.entity_number {
                return Err(mismatch(
                    "/entity_number",
                    "entity_number is not the number of the user's entity.",
                ));
            }
            if command.employee_number != user.employee_number {
                return Err(mismatch(
                    "/employee_number",
                    "employee_number is not the user's employee number.",
                ));
            }
            let application =
                applications::find_by_number(conn, &entity.id, &command.application_number)?
                    .filter(|app| app.application_type == command.application_type)
                    .ok_or_else(|| {
                        no_application(
                            "/application_number",
                            format!(
                                "Entity {} has no {} application numbered {}.",
                                entity.entity_number,
                                command.application_type,
                                command.application_number
                            ),
                        )
                    })?;
            check_applications(conn, &entity, &command.binding)?;
            if let (Some(field), Some(value)) = (
                &command.binding.entity_field,
                &command.binding.entity_field_value,
            ) {
                check_binding(conn, &entity, field, value)?;
            }
            if command.expires_at <= now {
                return Err(ApiError::invalid_field(
                    "/expires_at",
                    "expires_at is not in the future.",
                ));
            }
            let limit = now + Duration::seconds(rules.settings.session_lifetime_secs);
            let expires_at = command.expires_at.min(limit);
            challenges::require_email(&user)?;
            let session = lifecycle::insert_session(
                conn,
                NewSession {
                    binding: Some(&command.binding),
                    id: &command.session_id,
                    user: &user,
                    application_id: Some(application.id),
                    client: &client,
                    expires_at,
                    password_verified: false,
                    token_id: None,
                    user_agent: None,
                    creator,
                },
                now,
            )
            .map_err(|err| match err.code() {
                ErrorCode::Conflict => {
                    ApiError::conflict("A session with this session_id already exists.")
                        .at_pointer("/session_id")
                }
                _ => err,
            })?;
            audit::record(
                conn,
                AuditKind::SessionCreated,
                Some(&user.id),
                Some(&session.id),
                &client,
                None,
                now,
            )?;
            let target = CodeFor {
                user: &user,
                session: &session,
                new_session: true,
            };
            rules.mail_login_code(conn, target, &client, now)?;
            Ok(Recorded {
                expires_at_capped: expires_at < command.expires_at,
                session,
            })
        })
        .await?;
    core.mailer.wake();
    Ok(recorded)
}

/// The binding's applications must be the entity's, of their types.
fn check_applications(
    conn: &mut DbConnection,
    entity: &EntityRow,
    binding: &Binding,
) -> Result<(), ApiError> {
    if let Some(id) = &binding.mobile_application_id {
        application_of(conn, entity, id, Some("mobile"), "/mobile_application_id")?;
    }
    if let Some(id) = &binding.desktop_application_id {
        application_of(conn, entity, id, Some("desktop"), "/desktop_application_id")?;
    }
    Ok(())
}

/// A trusted backend's change to a session (seed 000). `None` leaves a
/// field alone.
#[derive(Debug, Clone, Default)]
pub struct ChangeSession {
    pub session_id: String,
    /// When given, must be the session's user.
    pub user_id: Option<String>,
    /// When given, must be the user's entity.
    pub entity_id: Option<String>,
    pub entity_field: Option<(String, String)>,
    pub mobile_application_id: Option<String>,
    pub desktop_application_id: Option<String>,
    /// `false` ends the session (failed); `true` asks that it be valid,
    /// which only a proven second factor makes it.
    pub is_valid: Option<bool>,
    pub failure_reason: Option<String>,
    pub expires_at: Option<NaiveDateTime>,
}

/// Applies a backend's change (seed 000) in one transaction on the locked
/// session: `is_valid: false` ends it (`failed`, its token dead, audited);
/// `is_valid: true` is refused with `session-not-verified` unless its
/// second factor is proven; `expires_at` may shorten it or lengthen it up
/// to the configured session lifetime from now (`lifetime-too-long`
/// beyond). Returns the session as it is now.
pub async fn change_session(
    core: &Core,
    command: ChangeSession,
    client: ClientInfo,
) -> Result<SessionRow, ApiError> {
    let now = core.now();
    let rules = core.rules();
    core.db
        .write(move |conn| {
            let session = lifecycle::lock_live_session(conn, &command.session_id, now)?;
            if command
                .user_id
                .as_ref()
                .is_some_and(|id| !id.eq_ignore_ascii_case(&session.user_id))
            {
                return Err(mismatch("/user_id", "user_id is not the session's user."));
            }
            let user = users::find(conn, &session.user_id)?
                .ok_or_else(|| ApiError::not_found("The session's user was deleted."))?;
            let entity = entity_of(conn, &user, command.entity_id.as_deref())?;
            let binding = Binding {
                mobile_application_id: command.mobile_application_id.clone(),
                desktop_application_id: command.desktop_application_id.clone(),
                ..Binding::default()
            };
            check_applications(conn, &entity, &binding)?;
            let mut changes = SessionChanges::default();
            if let Some((field, value)) = &command.entity_field {
                check_binding(conn, &entity, field, value)?;
                changes.entity_field = Some(Some(field.clone()));
                changes.entity_field_value = Some(Some(value.clone()));
            }
            if let Some(id) = binding.mobile_application_id {
                changes.mobile_application_id = Some(Some(id));
            }
            if let Some(id) = binding.desktop_application_id {
                changes.desktop_application_id = Some(Some(id));
            }
            if let Some(expires_at) = command.expires_at {
                if expires_at <= now {
                    return Err(ApiError::invalid_field(
                        "/expires_at",
                        "expires_at is not in the future; end a session with is_valid: false.",
                    ));
                }
                let lifetime = rules.settings.session_lifetime_secs;
                if expires_at > now + Duration::seconds(lifetime) {
                    return Err(ApiError::new(
                        ErrorCode::LifetimeTooLong,
                        format!(
                            "expires_at may be at most {lifetime} s from now (the configured session lifetime)."
                        ),
                    )
                    .at_pointer("/expires_at"));
                }
                changes.expires_at = Some(expires_at);
            }
            match command.is_valid {
                Some(true) if session.status != VERIFIED => {
                    return Err(ApiError::new(
                        ErrorCode::SessionNotVerified,
                        "The session's second factor is not proven: it cannot be made valid.",
                    )
                    .at_pointer("/is_valid"));
                }
                Some(false) => {
                    changes.status = Some(FAILED.to_owned());
                    changes.token_id = Some(None);
                    changes.failure_code = Some(Some("invalidated".to_owned()));
                    changes.failure_reason = Some(Some(
                        command
                            .failure_reason
                            .clone()
                            .unwrap_or_else(|| "Ended by the backend.".to_owned()),
                    ));
                }
                _ => {}
            }
            rows::update(conn, &session.id, &changes, now)?;
            if command.is_valid == Some(false) {
                audit::record(
                    conn,
                    AuditKind::SessionFailed,
                    Some(&session.user_id),
                    Some(&session.id),
                    &client,
                    command.failure_reason.as_deref(),
                    now,
                )?;
            }
            rows::find(conn, &session.id)?
                .ok_or_else(|| ApiError::not_found("The session was deleted."))
        })
        .await
}

/// What a valid login tells its starter (seed 002's response fields).
#[derive(Debug)]
pub struct ValidLogin {
    pub session: SessionRow,
    pub user: UserRow,
    pub entity: EntityRow,
    pub application: Option<ApplicationRow>,
}

/// A login whose second factor is mailed at once (seed 002): the password
/// is checked under every login rule ([`login::open_session`]; the rate
/// limit is the caller's, counted when the request was accepted), the
/// application is resolved by name within the user's entity, and the new
/// pending session's login code is mailed. The session's token is not
/// handed out here (see [`lifecycle::reissue_token`]).
pub async fn validate_login(
    core: &Core,
    input: LoginInput,
    client: ClientInfo,
) -> Result<ValidLogin, ApiError> {
    let LoginResult { session_id, .. } = login::open_session(core, input, client.clone()).await?;
    let now = core.now();
    let rules = core.rules();
    let valid = core
        .db
        .write(move |conn| {
            let session = lifecycle::lock_live_session(conn, &session_id, now)?;
            let user = users::find(conn, &session.user_id)?
                .ok_or_else(|| ApiError::not_found("The session's user was deleted."))?;
            let target = CodeFor {
                user: &user,
                session: &session,
                new_session: false,
            };
            rules.mail_login_code(conn, target, &client, now)?;
            rows::update(conn, &session.id, &SessionChanges::default(), now)?;
            let entity = entity_of(conn, &user, None)?;
            let application = match &session.application_id {
                Some(id) => applications::find(conn, id)?,
                None => None,
            };
            Ok::<_, ApiError>(ValidLogin {
                session,
                user,
                entity,
                application,
            })
        })
        .await?;
    core.mailer.wake();
    Ok(valid)
}
