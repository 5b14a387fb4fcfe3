//! The documented shapes of responses: the JSON:API error document and the
//! error responses of each kind of call, list pages and small bodies. The
//! faces name them in their `#[utoipa::path]` attributes; the OpenAPI
//! document (`super::openapi`) only assembles the faces' paths, so the faces
//! never import the document that imports them.

use utoipa::{IntoResponses, ToSchema};

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
    /// Missing, malformed, expired or wrongly signed bearer token, or its
    /// session has ended; `WWW-Authenticate: Bearer realm="latchkey"`, with
    /// `error="invalid_token"` when a token was sent.
    #[response(status = 401, content_type = "application/vnd.api+json")]
    Unauthorized(ErrorDocument),
    /// The token lacks the admin scope (`WWW-Authenticate: Bearer …,
    /// error="insufficient_scope", scope="admin"`).
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

#[derive(ToSchema)]
#[allow(non_snake_case)]
pub struct OtpSent {
    /// Only for admin tokens (trusted backends), or with LATCHKEY_EXPOSE_OTP.
    pub otp: Option<String>,
    pub expiresAt: String,
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
