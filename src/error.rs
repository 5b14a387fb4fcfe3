//! One error type for the whole API, and the one place it becomes a JSON:API
//! error document. Handlers and services pick a stable [`ErrorCode`]; the HTTP
//! status follows from the code, here and nowhere else.

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde_json::{Map, Value, json};
use uuid::Uuid;

pub const JSON_API: &str = "application/vnd.api+json";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidJson,
    ValidationFailed,
    UnsupportedMediaType,
    PayloadTooLarge,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    ServiceUnavailable,
    Internal,
    /// Wrong login name or password (the two are not told apart).
    InvalidCredentials,
    /// A wrong password or PIN for an action of a signed-in user.
    CredentialsRefused,
    UserNotFound,
    MissingEmail,
    SessionClosed,
    OtpResendTooSoon,
    OtpNotVerified,
    OtpInvalid,
    OtpExpired,
    OtpAttemptsExceeded,
    UserLocked,
    RateLimited,
    WeakPin,
    /// A pending session asked for something that needs a verified one.
    SessionNotVerified,
    /// A session token asked for a lifetime beyond the configured maximum.
    LifetimeTooLong,
    /// A v2 check Latchkey does not offer (passkeys, IdP intents, SMS codes).
    CheckNotSupported,
    /// A v2 challenge Latchkey does not offer (passkeys, SMS codes).
    ChallengeNotSupported,
    /// What a request says of a user, entity or application disagrees with what is stored.
    RecordMismatch,
    /// An application id or number names no application of the entity (of that type).
    ApplicationNotFound,
    /// The same Idempotency-Key was sent before with another body.
    IdempotencyKeyReused,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid-json",
            Self::ValidationFailed => "validation-failed",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::PayloadTooLarge => "payload-too-large",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::Conflict => "conflict",
            Self::ServiceUnavailable => "service-unavailable",
            Self::Internal => "internal-error",
            Self::InvalidCredentials | Self::CredentialsRefused => "invalid-credentials",
            Self::UserNotFound => "user-not-found",
            Self::MissingEmail => "missing-email",
            Self::SessionClosed => "session-closed",
            Self::OtpResendTooSoon => "otp-resend-too-soon",
            Self::OtpNotVerified => "otp-not-verified",
            Self::OtpInvalid => "otp-invalid",
            Self::OtpExpired => "otp-expired",
            Self::OtpAttemptsExceeded => "otp-attempts-exceeded",
            Self::UserLocked => "user-locked",
            Self::RateLimited => "rate-limited",
            Self::WeakPin => "weak-pin",
            Self::SessionNotVerified => "session-not-verified",
            Self::LifetimeTooLong => "lifetime-too-long",
            Self::CheckNotSupported => "check-not-supported",
            Self::ChallengeNotSupported => "challenge-not-supported",
            Self::RecordMismatch => "record-mismatch",
            Self::ApplicationNotFound => "application-not-found",
            Self::IdempotencyKeyReused => "idempotency-key-reused",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::InvalidJson => StatusCode::BAD_REQUEST,
            Self::ValidationFailed => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict => StatusCode::CONFLICT,
            Self::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Self::CredentialsRefused | Self::OtpNotVerified => StatusCode::FORBIDDEN,
            Self::UserNotFound | Self::OtpInvalid => StatusCode::NOT_FOUND,
            Self::MissingEmail => StatusCode::UNPROCESSABLE_ENTITY,
            Self::SessionClosed => StatusCode::CONFLICT,
            Self::OtpExpired => StatusCode::GONE,
            Self::OtpResendTooSoon
            | Self::OtpAttemptsExceeded
            | Self::UserLocked
            | Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::WeakPin => StatusCode::NOT_ACCEPTABLE,
            Self::SessionNotVerified => StatusCode::FORBIDDEN,
            Self::LifetimeTooLong
            | Self::CheckNotSupported
            | Self::ChallengeNotSupported
            | Self::RecordMismatch
            | Self::ApplicationNotFound
            | Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    /// A short summary that does not change between occurrences.
    pub fn title(self) -> &'static str {
        match self {
            Self::InvalidJson => "The request body is not a JSON object",
            Self::ValidationFailed => "A field is missing or invalid",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::PayloadTooLarge => "Request body too large",
            Self::Unauthorized => "Authentication required",
            Self::Forbidden => "Not allowed",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::Conflict => "Conflict",
            Self::ServiceUnavailable => "Service unavailable",
            Self::Internal => "Internal server error",
            Self::InvalidCredentials | Self::CredentialsRefused => "Invalid credentials",
            Self::UserNotFound => "User not found",
            Self::MissingEmail => "The user has no email address",
            Self::SessionClosed => "The session is closed",
            Self::OtpResendTooSoon => "A new code was asked for too soon",
            Self::OtpNotVerified => "The login code has not been verified",
            Self::OtpInvalid => "The code is not valid",
            Self::OtpExpired => "The code has expired",
            Self::OtpAttemptsExceeded => "Too many wrong codes",
            Self::UserLocked => "The user is locked",
            Self::RateLimited => "Too many requests",
            Self::WeakPin => "The PIN is too easy to guess",
            Self::SessionNotVerified => "The session is not verified yet",
            Self::LifetimeTooLong => "The lifetime is too long",
            Self::CheckNotSupported => "This check is not supported",
            Self::ChallengeNotSupported => "This challenge is not supported",
            Self::RecordMismatch => "The request disagrees with the stored records",
            Self::ApplicationNotFound => "No such application",
            Self::IdempotencyKeyReused => "The Idempotency-Key was used with another body",
        }
    }

    /// The code a framework-produced status maps to, for responses that
    /// did not come from an [`ApiError`].
    pub fn from_status(status: StatusCode) -> Self {
        match status.as_u16() {
            400 => Self::InvalidJson,
            401 => Self::Unauthorized,
            403 => Self::Forbidden,
            404 => Self::NotFound,
            405 => Self::MethodNotAllowed,
            409 => Self::Conflict,
            413 => Self::PayloadTooLarge,
            415 => Self::UnsupportedMediaType,
            422 => Self::ValidationFailed,
            429 => Self::RateLimited,
            503 => Self::ServiceUnavailable,
            _ => Self::Internal,
        }
    }
}

/// One reference token of a JSON pointer (RFC 6901 §3): `~` is written
/// `~0` and `/` is written `~1`, so a client's key that holds either still
/// names one member. Every pointer built from a name the client chose (an
/// unknown field, a map key) goes through here.
pub fn pointer_token(token: &str) -> std::borrow::Cow<'_, str> {
    if token.contains(['~', '/']) {
        std::borrow::Cow::Owned(token.replace('~', "~0").replace('/', "~1"))
    } else {
        std::borrow::Cow::Borrowed(token)
    }
}

/// Where in the request a problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A JSON pointer into the body, e.g. `/employeeNumber`.
    Pointer(String),
    /// A query parameter name.
    Parameter(String),
    /// A request header name (JSON:API 1.1 `source.header`).
    Header(String),
}

#[derive(Debug, Clone)]
pub struct Problem {
    pub detail: String,
    pub source: Option<Source>,
}

/// What a 401 or 403 says about the bearer token in `WWW-Authenticate`
/// (RFC 6750 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerChallenge {
    /// The request carried no bearer token: no error code (RFC 6750 §3.1).
    Missing,
    /// A token was sent and refused: malformed, expired, wrongly signed,
    /// or its session has ended.
    InvalidToken,
    /// The token is valid but lacks this scope.
    InsufficientScope(&'static str),
}

/// The realm of every bearer challenge.
const REALM: &str = "latchkey";

impl BearerChallenge {
    fn header_value(self) -> String {
        match self {
            Self::Missing => format!("Bearer realm=\"{REALM}\""),
            Self::InvalidToken => format!("Bearer realm=\"{REALM}\", error=\"invalid_token\""),
            Self::InsufficientScope(scope) => {
                format!("Bearer realm=\"{REALM}\", error=\"insufficient_scope\", scope=\"{scope}\"")
            }
        }
    }
}

#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    problems: Vec<Problem>,
    retry_after_secs: Option<u64>,
    /// The `WWW-Authenticate` challenge; every 401 has one (`Missing`
    /// unless said otherwise).
    challenge: Option<BearerChallenge>,
    /// Logged with the error id, never sent to the client.
    internal: Option<String>,
}

/// The ids of the error objects in a response, for the request log line.
#[derive(Debug, Clone)]
pub struct ErrorIds(pub Vec<String>);

impl ApiError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            problems: vec![Problem {
                detail: detail.into(),
                source: None,
            }],
            retry_after_secs: None,
            challenge: None,
            internal: None,
        }
    }

    /// 422 with one error object per problem.
    pub fn validation(problems: Vec<Problem>) -> Self {
        Self {
            code: ErrorCode::ValidationFailed,
            problems,
            retry_after_secs: None,
            challenge: None,
            internal: None,
        }
    }

    /// A single-field 422.
    pub fn invalid_field(pointer: &str, detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationFailed, detail).at_pointer(pointer)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, detail)
    }

    /// 401: the request carries no bearer token (or another scheme).
    pub fn token_missing(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, detail).with_challenge(BearerChallenge::Missing)
    }

    /// 401 with `error="invalid_token"`: a token was sent and is refused.
    pub fn token_invalid(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, detail).with_challenge(BearerChallenge::InvalidToken)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, detail)
    }

    /// 403 with `error="insufficient_scope"`: the token is valid but lacks
    /// `scope`.
    pub fn insufficient_scope(scope: &'static str, detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, detail)
            .with_challenge(BearerChallenge::InsufficientScope(scope))
    }

    fn with_challenge(mut self, challenge: BearerChallenge) -> Self {
        self.challenge = Some(challenge);
        self
    }

    /// A failure that is ours, not the client's: the cause goes to the log
    /// only, the client sees a generic detail and the error id.
    pub fn internal(cause: impl fmt::Display) -> Self {
        Self {
            code: ErrorCode::Internal,
            problems: vec![Problem {
                detail: "The server failed to process the request; the error id identifies it in the server log."
                    .to_owned(),
                source: None,
            }],
            retry_after_secs: None,
            challenge: None,
            internal: Some(cause.to_string()),
        }
    }

    pub fn unavailable(cause: impl fmt::Display) -> Self {
        let mut err = Self::new(
            ErrorCode::ServiceUnavailable,
            "The server cannot handle the request right now; try again shortly.",
        );
        err.internal = Some(cause.to_string());
        err.retry_after_secs = Some(1);
        err
    }

    pub fn at_pointer(mut self, pointer: &str) -> Self {
        for problem in &mut self.problems {
            problem.source = Some(Source::Pointer(pointer.to_owned()));
        }
        self
    }

    pub fn at_parameter(mut self, parameter: &str) -> Self {
        for problem in &mut self.problems {
            problem.source = Some(Source::Parameter(parameter.to_owned()));
        }
        self
    }

    pub fn at_header(mut self, header: &str) -> Self {
        for problem in &mut self.problems {
            problem.source = Some(Source::Header(header.to_owned()));
        }
        self
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_secs = Some(seconds);
        self
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// A failure worth another try later (the database busy, a lost
    /// connection, a serialization failure: 503), not the request's own
    /// fault. An internal error (500) would fail the same way again.
    pub fn is_transient(&self) -> bool {
        self.code == ErrorCode::ServiceUnavailable
    }

    /// The cause kept for the log (never sent to a client).
    pub fn internal_cause(&self) -> Option<&str> {
        self.internal.as_deref()
    }

    /// Renames the body pointers of this error: the engine names fields as
    /// the PACE face does; another face maps them to its own names.
    pub fn map_pointers(mut self, rename: impl Fn(&str) -> Option<String>) -> Self {
        for problem in &mut self.problems {
            if let Some(Source::Pointer(pointer)) = &problem.source
                && let Some(renamed) = rename(pointer)
            {
                problem.source = Some(Source::Pointer(renamed));
            }
        }
        self
    }

    /// The JSON:API error objects of this error, and their ids.
    pub fn error_objects(&self) -> (Vec<Value>, Vec<String>) {
        let status = self.code.status();
        let mut ids = Vec::with_capacity(self.problems.len());
        let errors: Vec<Value> = self
            .problems
            .iter()
            .map(|problem| {
                let id = Uuid::new_v4().to_string();
                ids.push(id.clone());
                let mut object = Map::new();
                object.insert("id".into(), json!(id));
                object.insert("status".into(), json!(status.as_u16().to_string()));
                object.insert("code".into(), json!(self.code.as_str()));
                object.insert("title".into(), json!(self.code.title()));
                object.insert("detail".into(), json!(problem.detail));
                match &problem.source {
                    Some(Source::Pointer(p)) => {
                        object.insert("source".into(), json!({ "pointer": p }));
                    }
                    Some(Source::Parameter(p)) => {
                        object.insert("source".into(), json!({ "parameter": p }));
                    }
                    Some(Source::Header(h)) => {
                        object.insert("source".into(), json!({ "header": h }));
                    }
                    None => {}
                }
                if let Some(seconds) = self.retry_after_secs {
                    object.insert("meta".into(), json!({ "retryAfterSeconds": seconds }));
                }
                Value::Object(object)
            })
            .collect();
        (errors, ids)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code.as_str())?;
        if let Some(first) = self.problems.first() {
            write!(f, ": {}", first.detail)?;
        }
        Ok(())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.code.status();
        let (errors, ids) = self.error_objects();

        if status.is_server_error() {
            tracing::error!(
                error_id = %ids.join(","),
                code = self.code.as_str(),
                cause = self.internal.as_deref().unwrap_or("-"),
                "request failed"
            );
        }

        let mut response = HttpResponse::build(status);
        response.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(JSON_API)));
        if let Some(seconds) = self.retry_after_secs {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        // Every 401 carries a challenge (RFC 9110 §15.5.2).
        let challenge = match self.challenge {
            Some(challenge) => Some(challenge),
            None if status == StatusCode::UNAUTHORIZED => Some(BearerChallenge::Missing),
            None => None,
        };
        if let Some(challenge) = challenge {
            response.insert_header((header::WWW_AUTHENTICATE, challenge.header_value()));
        }
        let mut response = response.body(json!({ "errors": errors }).to_string());
        response.extensions_mut().insert(ErrorIds(ids));
        response
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(err: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match err {
            Error::NotFound => Self::not_found("The resource does not exist."),
            Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                Self::conflict("A resource with the same unique values already exists.")
            }
            Error::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _) => {
                Self::conflict("The resource is still referenced by other resources.")
            }
            Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _)
            | Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
            | Error::DatabaseError(DatabaseErrorKind::UnableToSendCommand, _) => {
                Self::unavailable(err)
            }
            Error::DatabaseError(_, ref info) if is_busy(info.message()) => Self::unavailable(err),
            other => Self::internal(format!("database: {other}")),
        }
    }
}

/// SQLite's "database is locked" after the busy timeout is load, not a bug.
fn is_busy(message: &str) -> bool {
    message.contains("database is locked") || message.contains("database is busy")
}

impl From<diesel::r2d2::PoolError> for ApiError {
    fn from(err: diesel::r2d2::PoolError) -> Self {
        Self::unavailable(format!("database pool: {err}"))
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(err: tokio::task::JoinError) -> Self {
        Self::internal(format!("blocking task: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::to_bytes;

    #[actix_web::test]
    async fn renders_a_json_api_document_with_every_problem() {
        let err = ApiError::validation(vec![
            Problem {
                detail: "missing".into(),
                source: Some(Source::Pointer("/a".into())),
            },
            Problem {
                detail: "bad".into(),
                source: Some(Source::Pointer("/b".into())),
            },
        ]);
        let response = err.error_response();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE).unwrap(),
            JSON_API
        );
        let body: Value =
            serde_json::from_slice(&to_bytes(response.into_body()).await.unwrap()).unwrap();
        let errors = body["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0]["status"], "422");
        assert_eq!(errors[0]["code"], "validation-failed");
        assert_eq!(errors[1]["source"]["pointer"], "/b");
        assert_ne!(errors[0]["id"], errors[1]["id"]);
    }

    #[test]
    fn pointer_tokens_escape_tilde_before_slash() {
        assert_eq!(pointer_token("plain"), "plain");
        assert_eq!(pointer_token("a/b~c"), "a~1b~0c");
        // `~1` in a key is a tilde and a one, not an escaped slash.
        assert_eq!(pointer_token("~1"), "~01");
    }

    #[test]
    fn bearer_challenges_follow_rfc_6750() {
        let challenge = |err: ApiError| {
            let response = err.error_response();
            response
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(
            challenge(ApiError::token_missing("x")).as_deref(),
            Some("Bearer realm=\"latchkey\"")
        );
        assert_eq!(
            challenge(ApiError::token_invalid("x")).as_deref(),
            Some("Bearer realm=\"latchkey\", error=\"invalid_token\"")
        );
        assert_eq!(
            challenge(ApiError::insufficient_scope("admin", "x")).as_deref(),
            Some("Bearer realm=\"latchkey\", error=\"insufficient_scope\", scope=\"admin\"")
        );
        // Any other 401 still challenges; other statuses do not.
        assert_eq!(
            challenge(ApiError::new(ErrorCode::InvalidCredentials, "x")).as_deref(),
            Some("Bearer realm=\"latchkey\"")
        );
        assert_eq!(challenge(ApiError::forbidden("x")), None);
    }

    #[actix_web::test]
    async fn internal_errors_hide_their_cause() {
        let response = ApiError::internal("SELECT secret FROM users").error_response();
        let body = to_bytes(response.into_body()).await.unwrap();
        assert!(!String::from_utf8_lossy(&body).contains("SELECT"));
    }
}
