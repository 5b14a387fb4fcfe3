//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! attributes and the schemas below, served at `/openapi.json` with
//! Swagger UI (vendored assets, no CDN) at `/docs/`.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};
use utoipa_swagger_ui::SwaggerUi;

use crate::services::applications::Application;
use crate::services::entities::Entity;
use crate::services::users::User;

/// A JSON:API error document (`application/vnd.api+json`).
#[derive(ToSchema)]
pub struct ErrorDocument {
    pub errors: Vec<ErrorObject>,
}

#[derive(ToSchema)]
pub struct ErrorObject {
    /// A fresh uuid, also written to the server log line of the request.
    pub id: String,
    /// The HTTP status as a string, e.g. "422".
    pub status: String,
    /// A stable, machine-readable code, e.g. `validation-failed`.
    pub code: String,
    pub title: String,
    pub detail: String,
    pub source: Option<ErrorSource>,
    /// E.g. `{"retryAfterSeconds": 30}`.
    pub meta: Option<serde_json::Value>,
}

#[derive(ToSchema)]
pub struct ErrorSource {
    /// JSON pointer to the body field, e.g. `/employeeNumber`.
    pub pointer: Option<String>,
    /// The query parameter, e.g. `limit`.
    pub parameter: Option<String>,
}

#[derive(IntoResponses)]
pub enum AuthErrors {
    /// Missing, malformed, expired or wrongly signed bearer token.
    #[response(status = 401, content_type = "application/vnd.api+json")]
    Unauthorized(ErrorDocument),
    /// The token lacks the admin scope.
    #[response(status = 403, content_type = "application/vnd.api+json")]
    Forbidden(ErrorDocument),
}

#[derive(IntoResponses)]
pub enum BodyErrors {
    /// `invalid-json`: the body is not a JSON object.
    #[response(status = 400, content_type = "application/vnd.api+json")]
    InvalidJson(ErrorDocument),
    /// `payload-too-large`: over the body limit (64 KiB by default).
    #[response(status = 413, content_type = "application/vnd.api+json")]
    TooLarge(ErrorDocument),
    /// `unsupported-media-type`: not `application/json`.
    #[response(status = 415, content_type = "application/vnd.api+json")]
    MediaType(ErrorDocument),
    /// `validation-failed`: one error object per bad field, with `source.pointer`.
    #[response(status = 422, content_type = "application/vnd.api+json")]
    Validation(ErrorDocument),
}

#[derive(IntoResponses)]
pub enum NotFoundError {
    /// `not-found`: no such resource.
    #[response(status = 404, content_type = "application/vnd.api+json")]
    NotFound(ErrorDocument),
}

#[derive(IntoResponses)]
pub enum ConflictError {
    /// `conflict`: a unique value is taken, or the resource is still referenced.
    #[response(status = 409, content_type = "application/vnd.api+json")]
    Conflict(ErrorDocument),
}

#[derive(IntoResponses)]
pub enum QueryErrors {
    /// `validation-failed`: a bad query parameter, with `source.parameter`.
    #[response(status = 422, content_type = "application/vnd.api+json")]
    Validation(ErrorDocument),
}

#[derive(ToSchema)]
#[allow(non_snake_case)]
pub struct NewEntityBody {
    /// `^[0-9]{4}$`
    #[schema(pattern = "^[0-9]{4}$", example = "1000")]
    pub entityNumber: String,
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
}

#[derive(ToSchema)]
#[allow(non_snake_case)]
pub struct EntityPatchBody {
    #[schema(pattern = "^[0-9]{4}$")]
    pub entityNumber: Option<String>,
    pub name: Option<String>,
}

#[derive(ToSchema)]
#[allow(non_snake_case)]
pub struct NewApplicationBody {
    #[schema(pattern = "^[A-Za-z0-9 .,'_-]{1,120}$", example = "value_00")]
    pub applicationName: String,
    #[schema(pattern = "^(mobile|desktop|web)$")]
    pub applicationType: String,
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")]
    pub applicationNumber: String,
}

#[derive(ToSchema)]
#[allow(non_snake_case)]
pub struct ApplicationPatchBody {
    #[schema(pattern = "^[A-Za-z0-9 .,'_-]{1,120}$")]
    pub applicationName: Option<String>,
    #[schema(pattern = "^(mobile|desktop|web)$")]
    pub applicationType: Option<String>,
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")]
    pub applicationNumber: Option<String>,
}

/// Give `entityId` or `entityNumber`; `loginName` defaults to the email and
/// is required when there is no email.
#[derive(ToSchema)]
#[allow(non_snake_case)]
pub struct NewUserBody {
    pub entityId: Option<String>,
    #[schema(pattern = "^[0-9]{4}$")]
    pub entityNumber: Option<String>,
    #[schema(pattern = "^[0-9]{5}$", example = "10000")]
    pub employeeNumber: String,
    pub displayName: String,
    pub email: Option<String>,
    pub loginName: Option<String>,
    #[schema(pattern = "^(en|de)$")]
    pub preferredLanguage: Option<String>,
    #[schema(min_length = 8, max_length = 128)]
    pub password: Option<String>,
}

/// `email: null` removes the email.
#[derive(ToSchema)]
#[allow(non_snake_case)]
pub struct UserPatchBody {
    #[schema(pattern = "^[0-9]{5}$")]
    pub employeeNumber: Option<String>,
    pub loginName: Option<String>,
    pub email: Option<String>,
    pub displayName: Option<String>,
    #[schema(pattern = "^(en|de)$")]
    pub preferredLanguage: Option<String>,
}

#[derive(ToSchema)]
pub struct PasswordBody {
    #[schema(min_length = 8, max_length = 128)]
    pub password: String,
}

#[derive(ToSchema)]
pub struct ListMeta {
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

#[derive(ToSchema)]
pub struct EntityList {
    pub data: Vec<Entity>,
    pub meta: ListMeta,
}

#[derive(ToSchema)]
pub struct ApplicationList {
    pub data: Vec<Application>,
    pub meta: ListMeta,
}

#[derive(ToSchema)]
pub struct UserList {
    pub data: Vec<User>,
    pub meta: ListMeta,
}

#[derive(ToSchema)]
pub struct OutboxList {
    pub data: Vec<crate::services::outbox::OutboxEntry>,
    pub meta: ListMeta,
}

#[derive(ToSchema)]
pub struct AuditList {
    pub data: Vec<crate::services::audit::AuditEvent>,
    pub meta: ListMeta,
}

#[derive(ToSchema)]
pub struct SessionList {
    pub data: Vec<crate::engine::SessionView>,
    pub meta: ListMeta,
}

/// Name the user by `loginName`, or by `entityNumber` with `employeeNumber`.
#[derive(ToSchema)]
#[allow(non_snake_case)]
pub struct LoginBody {
    pub loginName: Option<String>,
    #[schema(pattern = "^[0-9]{4}$")]
    pub entityNumber: Option<String>,
    #[schema(pattern = "^[0-9]{5}$")]
    pub employeeNumber: Option<String>,
    pub password: String,
    #[schema(pattern = "^[A-Za-z0-9 .,'_-]{1,120}$")]
    pub applicationName: Option<String>,
    /// A uuid chosen by the client; generated when absent.
    pub sessionId: Option<String>,
}

#[derive(ToSchema)]
#[allow(non_snake_case)]
pub struct UpdateSessionBody {
    /// The user that owns the session.
    pub userId: String,
    /// false: send a (new) login code; true: the login code was verified.
    pub passedLoginOTP: bool,
}

#[derive(ToSchema)]
#[allow(non_snake_case)]
pub struct OtpSent {
    /// Only for admin tokens (trusted backends), or with LATCHKEY_EXPOSE_OTP.
    pub otp: Option<String>,
    pub expiresAt: String,
}

#[derive(ToSchema)]
#[allow(non_snake_case)]
pub struct VerifyOtpBody {
    pub otp: String,
    /// Among login, account, totp, recovery; default: all the user has.
    pub types: Option<Vec<String>>,
    /// Default: the session of the token.
    pub sessionId: Option<String>,
}

/// `password` or `pin`.
#[derive(ToSchema)]
pub struct CreateOtpBody {
    pub password: Option<String>,
    pub pin: Option<String>,
}

#[derive(ToSchema)]
pub struct SetPinBody {
    /// 4 digits, at least three different, not a run like 1234.
    #[schema(pattern = "^[0-9]{4}$")]
    pub pin: String,
    /// An account code from `POST /user/otp`.
    pub otp: String,
}

/// `checks` (`user{loginName|userId}`, `password{password}`, `totp{code}`,
/// `otpEmail{code}`, `recoveryCode{code}`), `challenges`
/// (`otpEmail{sendCode{urlTemplate?}}` or `otpEmail{returnCode{}}`),
/// `metadata` (base64 values), `lifetime` (e.g. `"18000s"`).
#[derive(ToSchema)]
pub struct V2SessionBody {
    #[schema(value_type = Object)]
    pub checks: Option<serde_json::Value>,
    #[schema(value_type = Object)]
    pub challenges: Option<serde_json::Value>,
    #[schema(value_type = Object)]
    pub metadata: Option<serde_json::Value>,
    pub lifetime: Option<String>,
}

/// `queries` (`idsQuery{ids}`, `userIdQuery{id}`,
/// `creationDateQuery{creationDate, method}`), `query{offset, limit, asc}`.
#[derive(ToSchema)]
pub struct V2SearchBody {
    #[schema(value_type = Object)]
    pub query: Option<serde_json::Value>,
    #[schema(value_type = Vec<Object>)]
    pub queries: Option<Vec<serde_json::Value>>,
}

#[derive(ToSchema)]
pub struct OtpBody {
    pub otp: String,
}

#[derive(IntoResponses)]
pub enum LoginErrors {
    /// `invalid-credentials`: wrong login name or password (not told apart).
    #[response(status = 401, content_type = "application/vnd.api+json")]
    InvalidCredentials(ErrorDocument),
    /// `user-locked` (too many failures) or `rate-limited`; see `Retry-After`.
    #[response(status = 429, content_type = "application/vnd.api+json")]
    TooMany(ErrorDocument),
}

#[derive(IntoResponses)]
pub enum OtpSendErrors {
    /// `otp-not-verified`: passedLoginOTP true before the code was verified.
    #[response(status = 403, content_type = "application/vnd.api+json")]
    NotVerified(ErrorDocument),
    /// `session-closed`: the session is revoked or expired.
    #[response(status = 409, content_type = "application/vnd.api+json")]
    Closed(ErrorDocument),
    /// `otp-resend-too-soon` or `rate-limited`; see `Retry-After`.
    #[response(status = 429, content_type = "application/vnd.api+json")]
    TooSoon(ErrorDocument),
}

#[derive(IntoResponses)]
pub enum OtpCheckErrors {
    /// `otp-invalid`: wrong code, or none waiting.
    #[response(status = 404, content_type = "application/vnd.api+json")]
    Invalid(ErrorDocument),
    /// `session-closed`.
    #[response(status = 409, content_type = "application/vnd.api+json")]
    Closed(ErrorDocument),
    /// `otp-expired`.
    #[response(status = 410, content_type = "application/vnd.api+json")]
    Expired(ErrorDocument),
    /// `otp-attempts-exceeded` (until a new code is asked for) or `rate-limited`.
    #[response(status = 429, content_type = "application/vnd.api+json")]
    TooMany(ErrorDocument),
}

#[derive(IntoResponses)]
pub enum CredentialErrors {
    /// `invalid-credentials`: the password or PIN is wrong (counts toward lockout).
    #[response(status = 403, content_type = "application/vnd.api+json")]
    Refused(ErrorDocument),
    /// `user-locked` or `rate-limited`.
    #[response(status = 429, content_type = "application/vnd.api+json")]
    TooMany(ErrorDocument),
}

#[derive(IntoResponses)]
pub enum PinErrors {
    /// `weak-pin`: fewer than three different digits, or a run like 1234.
    #[response(status = 406, content_type = "application/vnd.api+json")]
    Weak(ErrorDocument),
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Latchkey", description = "OTP-driven session authentication server. Every error is a JSON:API error document."),
    modifiers(&BearerAuth),
    paths(
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics,
        super::ops::jwks,
        super::admin::create_entity,
        super::admin::list_entities,
        super::admin::get_entity,
        super::admin::update_entity,
        super::admin::delete_entity,
        super::admin::create_application,
        super::admin::list_applications,
        super::admin::get_application,
        super::admin::update_application,
        super::admin::delete_application,
        super::admin::create_user,
        super::admin::list_users,
        super::admin::get_user,
        super::admin::update_user,
        super::admin::delete_user,
        super::admin::set_user_password,
        super::admin::list_outbox,
        super::admin::retry_outbox,
        super::admin::list_audit,
        super::pace::login,
        super::pace::list_sessions,
        super::pace::get_session,
        super::pace::update_session,
        super::pace::delete_session,
        super::pace::verify_otp,
        super::pace::create_otp,
        super::pace::set_pin,
        super::pace::enroll_totp,
        super::pace::confirm_totp,
        super::pace::remove_totp,
        super::pace::create_recovery_codes,
        super::admin::remove_user_totp,
        super::zitadel::create_session,
        super::zitadel::set_session,
        super::zitadel::get_session,
        super::zitadel::delete_session,
        super::zitadel::search_sessions,
    ),
    tags(
        (name = "ops", description = "Health, readiness, metrics and signing keys"),
        (name = "admin", description = "Entities, applications and users (admin scope)"),
        (name = "sessions", description = "Login sessions (PACE-style)"),
        (name = "otp", description = "One-time codes and the PIN"),
        (name = "totp", description = "Authenticator apps and recovery codes"),
        (name = "v2", description = "ZITADEL v2 Session API shape"),
    )
)]
pub struct ApiDoc;

/// `/openapi.json` and Swagger UI at `/docs/`.
pub fn service() -> SwaggerUi {
    SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", ApiDoc::openapi())
}
