//! The PACE-style face: login, `PUT /sessions/{sessionId}` (send and confirm
//! the email OTP), VerifyOTP, account codes and the PIN, reading and
//! revoking sessions.

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::body::{Body, RequestBody, request_bodies};
use super::extract::{Fields, QueryParams, SessionCaller};
use super::{created, ok, paged};
use crate::engine::factors::{self, OtpType};
use crate::engine::lifecycle::{self, UpdateOutcome};
use crate::engine::login::{self, LoginInput, Secret, UserRef};
use crate::engine::{authenticators, challenges};
use crate::error::ApiError;
use crate::services::audit::ClientInfo;
use crate::services::{Core, rules};
use crate::tokens::ADMIN_SCOPE;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/sessions")
            .route(web::post().to(login))
            .route(web::get().to(list_sessions)),
    )
    .service(
        web::resource("/sessions/{sessionId}")
            .route(web::get().to(get_session))
            .route(web::put().to(update_session))
            .route(web::delete().to(delete_session)),
    )
    .service(web::resource("/user/otp/verify").route(web::post().to(verify_otp)))
    .service(web::resource("/user/otp").route(web::post().to(create_otp)))
    .service(web::resource("/user/pin").route(web::put().to(set_pin)))
    .service(
        web::resource("/user/devices/totp")
            .route(web::post().to(enroll_totp))
            .route(web::delete().to(remove_totp)),
    )
    .service(web::resource("/user/devices/totp/confirm").route(web::post().to(confirm_totp)))
    .service(web::resource("/user/recovery-codes").route(web::post().to(create_recovery_codes)));
}

type Handler = Result<HttpResponse, ApiError>;

/// Name the user by `loginName`, or by `entityNumber` with `employeeNumber`;
/// `sessionId` is a uuid chosen by the client (generated when absent).
pub struct LoginBody(LoginInput);

impl RequestBody for LoginBody {
    fn read(fields: &mut Fields<'_>) -> Self {
        let login_name = fields.optional_str("loginName", rules::LOGIN_NAME);
        let entity_number = fields.optional_str("entityNumber", rules::ENTITY_NUMBER);
        let employee_number = fields.optional_str("employeeNumber", rules::EMPLOYEE_NUMBER);
        let password = fields.required_str("password", rules::LOGIN_PASSWORD);
        let application_name = fields.optional_str("applicationName", rules::APPLICATION_NAME);
        let session_id = fields.optional_str("sessionId", rules::UUID);
        let user = match (login_name, entity_number, employee_number) {
            (Some(name), None, None) => UserRef::LoginName(name),
            (None, Some(entity_number), Some(employee_number)) => UserRef::Employee {
                entity_number,
                employee_number,
            },
            (Some(_), _, _) => {
                fields.reject(
                    "loginName",
                    "Give loginName, or entityNumber with employeeNumber, not both.",
                );
                UserRef::LoginName(String::new())
            }
            (None, entity, employee) => {
                if !fields.has_problems_at(&["loginName", "entityNumber", "employeeNumber"]) {
                    match (entity, employee) {
                        (Some(_), None) => fields.reject(
                            "employeeNumber",
                            "employeeNumber is required with entityNumber.",
                        ),
                        (None, Some(_)) => fields.reject(
                            "entityNumber",
                            "entityNumber is required with employeeNumber.",
                        ),
                        _ => fields.reject(
                            "loginName",
                            "loginName, or entityNumber with employeeNumber, is required.",
                        ),
                    }
                }
                UserRef::LoginName(String::new())
            }
        };
        Self(LoginInput {
            user,
            password,
            application_name,
            session_id,
        })
    }
}

#[utoipa::path(post, path = "/sessions", tag = "sessions", summary = "Log in with a password: opens a pending session",
    request_body = LoginBody,
    responses((status = 201, body = crate::engine::login::LoginResult), super::responses::LoginErrors, super::responses::BodyErrors, super::responses::ConflictError))]
pub(super) async fn login(
    core: web::Data<Core>,
    client: ClientInfo,
    Body(LoginBody(input)): Body<LoginBody>,
) -> Handler {
    let result = login::login(&core, input, client).await?;
    Ok(created(format!("/sessions/{}", result.session_id), &result))
}

/// `userId` owns the session; `passedLoginOTP` false sends a (new) login
/// code, true records that the code was verified.
pub struct UpdateSessionBody {
    user_id: String,
    passed_login_otp: bool,
}

impl RequestBody for UpdateSessionBody {
    fn read(fields: &mut Fields<'_>) -> Self {
        Self {
            user_id: fields.required_str("userId", rules::UUID),
            passed_login_otp: fields.required_bool("passedLoginOTP"),
        }
    }
}

#[utoipa::path(put, path = "/sessions/{sessionId}", tag = "sessions",
    summary = "Send a login code (passedLoginOTP false), or confirm the session once its code was verified (true)",
    description = "A session token may change only its own session. With an admin token (a trusted backend) the session is created if it does not exist, the code is returned in `otp`, and `passedLoginOTP: true` is accepted without a verified code.",
    security(("bearer" = [])), params(("sessionId" = String, Path)), request_body = UpdateSessionBody,
    responses((status = 200, description = "A code was sent", body = super::responses::OtpSent), (status = 204, description = "The session is verified"),
        super::responses::AuthErrors, super::responses::BodyErrors, super::responses::NotFoundError, super::responses::OtpSendErrors))]
pub(super) async fn update_session(
    SessionCaller(caller, _): SessionCaller,
    core: web::Data<Core>,
    client: ClientInfo,
    session_id: web::Path<String>,
    Body(body): Body<UpdateSessionBody>,
) -> Handler {
    let passed = body.passed_login_otp;
    match lifecycle::update(&core, &caller, &session_id, body.user_id, passed, client).await? {
        UpdateOutcome::Verified => Ok(HttpResponse::NoContent().finish()),
        UpdateOutcome::CodeSent { code, expires_at } => {
            // The code itself goes only to trusted backends (or everyone in development).
            if caller.is_admin() || core.settings.auth.expose_otp {
                Ok(ok(&json!({ "otp": code, "expiresAt": expires_at })))
            } else {
                Ok(ok(&json!({ "expiresAt": expires_at })))
            }
        }
    }
}

#[utoipa::path(get, path = "/sessions/{sessionId}", tag = "sessions", summary = "Read a session",
    security(("bearer" = [])), params(("sessionId" = String, Path)),
    responses((status = 200, body = crate::engine::SessionView), super::responses::AuthErrors, super::responses::NotFoundError))]
pub(super) async fn get_session(
    SessionCaller(caller, own_session): SessionCaller,
    core: web::Data<Core>,
    session_id: web::Path<String>,
) -> Handler {
    Ok(ok(&lifecycle::get(
        &core,
        &caller,
        &session_id,
        own_session,
    )
    .await?))
}

#[utoipa::path(delete, path = "/sessions/{sessionId}", tag = "sessions", summary = "Revoke a session: its token stops working at once",
    security(("bearer" = [])), params(("sessionId" = String, Path)),
    responses((status = 204, description = "Revoked"), super::responses::AuthErrors, super::responses::NotFoundError))]
pub(super) async fn delete_session(
    SessionCaller(caller, _): SessionCaller,
    core: web::Data<Core>,
    client: ClientInfo,
    session_id: web::Path<String>,
) -> Handler {
    lifecycle::revoke(&core, &caller, &session_id, client).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/sessions", tag = "sessions", summary = "List the caller's sessions (admin: every session, or ?userId=)",
    security(("bearer" = [])),
    params(("userId" = Option<String>, Query, description = "admin only"), ("limit" = Option<i64>, Query), ("offset" = Option<i64>, Query)),
    responses((status = 200, body = super::responses::SessionList), super::responses::AuthErrors, super::responses::QueryErrors))]
pub(super) async fn list_sessions(
    SessionCaller(caller, _): SessionCaller,
    core: web::Data<Core>,
    query: QueryParams,
) -> Handler {
    let user_id = query
        .optional("userId", rules::UUID)?
        .map(|id| id.to_ascii_lowercase());
    if user_id.is_some() && !caller.is_admin() {
        return Err(ApiError::insufficient_scope(
            ADMIN_SCOPE,
            "Only an admin token may list another user's sessions.",
        )
        .at_parameter("userId"));
    }
    Ok(paged(
        lifecycle::list(&core, &caller, user_id, query.page()?).await?,
    ))
}

/// `types` among login, account, totp, recovery (default: every kind; an
/// empty list is refused, it would check nothing);
/// `sessionId` defaults to the session of the token.
pub struct VerifyOtpBody {
    otp: String,
    types: Option<Vec<OtpType>>,
    session_id: Option<String>,
}

impl RequestBody for VerifyOtpBody {
    fn read(fields: &mut Fields<'_>) -> Self {
        let otp = fields.required_str("otp", rules::OTP_CODE);
        let types = fields.optional_str_list("types", rules::OTP_TYPE, 1);
        let session_id = fields.optional_str("sessionId", rules::UUID);
        Self {
            otp,
            types: types.map(|names| names.iter().filter_map(|n| OtpType::parse(n)).collect()),
            session_id,
        }
    }
}

#[utoipa::path(post, path = "/user/otp/verify", tag = "otp", summary = "Verify a one-time code",
    description = "Checks the code against the session's login code and the account code (or the `types` given). A wrong code counts toward the code's attempt limit; the try that reaches it burns the code.",
    security(("bearer" = [])), request_body = VerifyOtpBody,
    responses((status = 200, body = crate::engine::factors::VerifyResult), super::responses::AuthErrors, super::responses::BodyErrors, super::responses::OtpCheckErrors))]
pub(super) async fn verify_otp(
    SessionCaller(caller, _): SessionCaller,
    core: web::Data<Core>,
    client: ClientInfo,
    Body(body): Body<VerifyOtpBody>,
) -> Handler {
    let verified = factors::verify(
        &core,
        &caller,
        body.otp,
        body.types,
        body.session_id,
        client,
    )
    .await?;
    Ok(ok(&verified))
}

/// `password` or `pin`, proven again for an account code.
pub struct CreateOtpBody {
    secret: Secret,
    given: String,
}

impl RequestBody for CreateOtpBody {
    fn read(fields: &mut Fields<'_>) -> Self {
        let password = fields.optional_str("password", rules::LOGIN_PASSWORD);
        let pin = fields.optional_str("pin", rules::LOGIN_PASSWORD);
        let (secret, given) = match (password, pin) {
            (Some(password), None) => (Secret::Password, password),
            (None, Some(pin)) => (Secret::Pin, pin),
            (Some(_), Some(_)) => {
                fields.reject("pin", "Give password or pin, not both.");
                (Secret::Pin, String::new())
            }
            (None, None) => {
                if !fields.has_problems_at(&["password", "pin"]) {
                    fields.reject("password", "password or pin is required.");
                }
                (Secret::Password, String::new())
            }
        };
        Self { secret, given }
    }
}

#[utoipa::path(post, path = "/user/otp", tag = "otp", summary = "Get an account code for a sensitive action by proving the password or PIN",
    security(("bearer" = [])), request_body = CreateOtpBody,
    responses((status = 201, body = crate::engine::challenges::AccountOtp), super::responses::AuthErrors, super::responses::BodyErrors, super::responses::CredentialErrors))]
pub(super) async fn create_otp(
    SessionCaller(caller, _): SessionCaller,
    core: web::Data<Core>,
    client: ClientInfo,
    Body(body): Body<CreateOtpBody>,
) -> Handler {
    let issued =
        challenges::create_account_otp(&core, &caller, body.secret, body.given, client).await?;
    Ok(HttpResponse::Created().json(issued))
}

/// `pin`: 4 digits, at least three different, not a run like 1234;
/// `otp`: an account code from `POST /user/otp`.
pub struct SetPinBody {
    pin: String,
    otp: String,
}

impl RequestBody for SetPinBody {
    fn read(fields: &mut Fields<'_>) -> Self {
        Self {
            pin: fields.required_str("pin", rules::PIN),
            otp: fields.required_str("otp", rules::OTP_CODE),
        }
    }
}

#[utoipa::path(put, path = "/user/pin", tag = "otp", summary = "Set the 4-digit PIN, spending an account code",
    security(("bearer" = [])), request_body = SetPinBody,
    responses((status = 204, description = "PIN set"), super::responses::AuthErrors, super::responses::BodyErrors, super::responses::PinErrors, super::responses::OtpCheckErrors))]
pub(super) async fn set_pin(
    SessionCaller(caller, _): SessionCaller,
    core: web::Data<Core>,
    client: ClientInfo,
    Body(body): Body<SetPinBody>,
) -> Handler {
    challenges::set_pin(&core, &caller, body.pin, body.otp, client).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(post, path = "/user/devices/totp", tag = "totp", summary = "Enrol an authenticator app (needs a verified session)",
    description = "Returns the secret once. The app stays unconfirmed until `POST /user/devices/totp/confirm` with a current code.",
    security(("bearer" = [])),
    responses((status = 201, body = crate::engine::authenticators::TotpEnrollment), super::responses::AuthErrors, super::responses::ConflictError))]
pub(super) async fn enroll_totp(
    SessionCaller(caller, _): SessionCaller,
    core: web::Data<Core>,
    client: ClientInfo,
) -> Handler {
    Ok(HttpResponse::Created().json(authenticators::enroll(&core, &caller, client).await?))
}

/// `otp`: a current code of the authenticator.
pub struct OtpBody {
    otp: String,
}

impl RequestBody for OtpBody {
    fn read(fields: &mut Fields<'_>) -> Self {
        Self {
            otp: fields.required_str("otp", rules::OTP_CODE),
        }
    }
}

request_bodies!(
    LoginBody,
    UpdateSessionBody,
    VerifyOtpBody,
    CreateOtpBody,
    SetPinBody,
    OtpBody
);

#[utoipa::path(post, path = "/user/devices/totp/confirm", tag = "totp", summary = "Confirm the enrolled authenticator with a current code",
    security(("bearer" = [])), request_body = OtpBody,
    responses((status = 204, description = "Confirmed; a security notice is mailed"), super::responses::AuthErrors, super::responses::BodyErrors, super::responses::NotFoundError, super::responses::ConflictError, super::responses::OtpCheckErrors))]
pub(super) async fn confirm_totp(
    SessionCaller(caller, _): SessionCaller,
    core: web::Data<Core>,
    client: ClientInfo,
    Body(body): Body<OtpBody>,
) -> Handler {
    authenticators::confirm(&core, &caller, body.otp, client).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(delete, path = "/user/devices/totp", tag = "totp", summary = "Remove the authenticator (needs a verified session)",
    security(("bearer" = [])),
    responses((status = 204, description = "Removed; a security notice is mailed"), super::responses::AuthErrors, super::responses::NotFoundError))]
pub(super) async fn remove_totp(
    SessionCaller(caller, _): SessionCaller,
    core: web::Data<Core>,
    client: ClientInfo,
) -> Handler {
    authenticators::remove(&core, &caller, None, client).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(post, path = "/user/recovery-codes", tag = "totp", summary = "Make 10 single-use recovery codes (needs a verified session); the old set stops working",
    security(("bearer" = [])),
    responses((status = 201, body = crate::engine::authenticators::RecoveryCodes), super::responses::AuthErrors))]
pub(super) async fn create_recovery_codes(
    SessionCaller(caller, _): SessionCaller,
    core: web::Data<Core>,
    client: ClientInfo,
) -> Handler {
    Ok(HttpResponse::Created()
        .json(authenticators::generate_recovery_codes(&core, &caller, client).await?))
}
