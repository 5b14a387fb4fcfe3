//! The asynchronous face of the seed documents (000 patch-one, 001
//! post-one, 002 validate-login-and-create-session), in their snake_case.
//! A call is validated against its seed's schema, recorded durably, and
//! answered `202 Accepted` with the request's id (`Location`,
//! `Retry-After`); the worker ([`worker`]) then runs the same engine
//! commands as the other faces, and the reads confirm the outcome:
//! `GET /one-requests/{id}` and `GET /one-sessions-get-one`.
//!
//! Who learns what: an admin token (the trusted backend) reads any request
//! and any session. A validate-login is started without a token; its 202
//! carries a `receipt` that only the starter holds: sent back in the
//! `Request-Receipt` header, it reads the request and, once the login is
//! valid, takes the session's token (once). Anyone else, knowing a request
//! or session id, learns nothing (404).

pub mod bodies;
pub mod queue;
pub mod worker;

use std::time::Duration as StdDuration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::NaiveDateTime;
use serde_json::{Value, json};

use super::body::RequestBody;
use super::extract::{Admin, Fields, JsonObject, OptionalCaller, QueryParams};
use crate::db::one_requests::RequestRow;
use crate::db::sessions::SessionRow;
use crate::engine::{self, lifecycle, login};
use crate::error::{ApiError, ErrorCode};
use crate::services::audit::ClientInfo;
use crate::services::{Core, rules};
use bodies::{PatchOneBody, PostOneBody, ValidateLoginBody};
use queue::{NewRequest, Operation, optional_time, seed_time};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/one-sessions-post-one").route(web::post().to(post_one)))
        .service(web::resource("/one-sessions-patch-one").route(web::patch().to(patch_one)))
        .service(
            web::resource("/jef-one-validate-login-and-create-session")
                .route(web::post().to(validate_login)),
        )
        .service(web::resource("/one-requests/{requestId}").route(web::get().to(get_request)))
        .service(web::resource("/one-sessions-get-one").route(web::get().to(get_session)));
}

type Handler = Result<HttpResponse, ApiError>;

/// The longest `Prefer: wait` honoured, in seconds.
const MAX_WAIT_SECS: u64 = 10;
/// The header that carries a validate-login's receipt.
pub const RECEIPT_HEADER: &str = "Request-Receipt";
const ACCEPTED_MESSAGE: &str = "Request accepted for asynchronous processing.";

/// A session in this face's fields.
pub fn session_json(row: &SessionRow, now: NaiveDateTime) -> Value {
    let status = engine::effective_status(row, now);
    json!({
        "session_id": row.id,
        "user_id": row.user_id,
        "entity_id": row.entity_id,
        "application_id": row.application_id,
        "session_entity_field": row.entity_field,
        "session_entity_field_value": row.entity_field_value,
        "mobile_application_id": row.mobile_application_id,
        "desktop_application_id": row.desktop_application_id,
        "status": status,
        "is_valid": status == engine::VERIFIED,
        "is_active": engine::is_live(row, now),
        "passed_login_otp": row.passed_login_otp,
        "session_context": row.context.as_deref()
            .and_then(|c| serde_json::from_str::<Value>(c).ok())
            .unwrap_or_else(|| json!({})),
        "expires_at": seed_time(row.expires_at),
        "created_at": seed_time(row.created_at),
        "updated_at": seed_time(row.updated_at),
        "verified_at": optional_time(row.verified_at),
        "failure_code": row.failure_code,
        "failure_reason": row.failure_reason,
    })
}

/// `Idempotency-Key`: 1 to 255 visible ASCII characters.
fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get("Idempotency-Key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if (1..=255).contains(&key.len()) && key.chars().all(|c| c.is_ascii_graphic()) => {
            Ok(Some(key.to_owned()))
        }
        _ => Err(ApiError::new(
            ErrorCode::ValidationFailed,
            "Idempotency-Key must be 1 to 255 visible ASCII characters (a uuid is a good key).",
        )
        .at_header("Idempotency-Key")),
    }
}

/// `Prefer: wait=N` (RFC 7240 §4.3), at most [`MAX_WAIT_SECS`]; other
/// preferences are ignored, as the RFC allows.
fn preferred_wait(req: &HttpRequest) -> Option<u64> {
    req.headers()
        .get_all("Prefer")
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split([',', ';']))
        .filter_map(|preference| {
            let (name, value) = preference.trim().split_once('=')?;
            let value = value.trim().trim_matches('"');
            // Digits too many for a number are a very long wait (capped).
            let secs = match value.parse::<u64>() {
                Ok(secs) => Some(secs),
                Err(_) if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                    Some(u64::MAX)
                }
                Err(_) => None,
            };
            name.trim()
                .eq_ignore_ascii_case("wait")
                .then_some(secs)
                .flatten()
        })
        .next()
        .map(|secs| secs.min(MAX_WAIT_SECS))
}

fn read_body<T: RequestBody>(object: &JsonObject) -> Result<T, ApiError> {
    let mut fields = Fields::new(object);
    let body = T::read(&mut fields);
    fields.finish()?;
    Ok(body)
}

/// Records the request and answers 202 (or 200 with the outcome when
/// `Prefer: wait` and the outcome came in time).
async fn accept(
    core: &Core,
    req: &HttpRequest,
    client: &ClientInfo,
    operation: Operation,
    session_id: String,
    object: JsonObject,
    caller: String,
) -> Handler {
    let request = NewRequest {
        operation,
        session_id,
        body: object.0,
        caller,
        idempotency_key: idempotency_key(req)?,
    };
    let starter_learns_token = operation == Operation::ValidateLogin;
    let row = queue::accept(core, request, client).await?;
    if let Some(wait) = preferred_wait(req)
        && let Some(done) =
            queue::wait_for_outcome(core, &row.id, StdDuration::from_secs(wait)).await?
    {
        let view = queue::view(core, done, starter_learns_token).await?;
        return Ok(HttpResponse::Ok()
            .insert_header(("Preference-Applied", format!("wait={wait}")))
            .json(view));
    }
    Ok(accepted(core, &row, starter_learns_token))
}

fn accepted(core: &Core, row: &RequestRow, with_receipt: bool) -> HttpResponse {
    let mut body = json!({
        "is_accepted": true,
        "message": ACCEPTED_MESSAGE,
        "request_id": row.id,
    });
    if with_receipt {
        body["receipt"] = json!(queue::receipt(core, &row.id));
    }
    HttpResponse::Accepted()
        .insert_header((header::LOCATION, format!("/one-requests/{}", row.id)))
        .insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")))
        .json(body)
}

/// The 202 of every call of this face.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct AcceptedResponse {
    /// Always true.
    pub is_accepted: bool,
    /// "Request accepted for asynchronous processing."
    pub message: String,
    /// The request's id: `GET /one-requests/{request_id}` reads its outcome.
    pub request_id: String,
    /// validate-login only: the starter's secret for reading the outcome
    /// and taking the session token (`Request-Receipt` header). Keep it
    /// like a password; it is shown once.
    pub receipt: Option<String>,
}

#[utoipa::path(post, path = "/one-sessions-post-one", tag = "async",
    summary = "Record a session for a user (seed 001); processed asynchronously",
    description = "Admin scope. The session is pending until its second factor is proven, whatever `status`, `is_valid` or `verified_at` say; its login code is mailed. `result.ignored_fields` lists what was not applied. Headers: `Idempotency-Key`, `Prefer: wait=N` (N ≤ 10).",
    security(("bearer" = [])), request_body = PostOneBody,
    responses((status = 202, body = AcceptedResponse), (status = 200, description = "Prefer: wait was applied: the finished request, as GET /one-requests/{id}"),
        super::responses::AuthErrors, super::responses::BodyErrors))]
pub(super) async fn post_one(
    Admin(claims): Admin,
    core: web::Data<Core>,
    req: HttpRequest,
    client: ClientInfo,
    object: JsonObject,
) -> Handler {
    let session_id = read_body::<PostOneBody>(&object)?.command.session_id;
    let operation = Operation::PostOne;
    accept(
        &core, &req, &client, operation, session_id, object, claims.sub,
    )
    .await
}

#[utoipa::path(patch, path = "/one-sessions-patch-one", tag = "async",
    summary = "Change a session (seed 000); processed asynchronously",
    description = "Admin scope. `is_valid: false` ends the session (failed, token dead); `is_valid: true` takes effect only once its second factor is proven (else `session-not-verified`); `expires_at` may shorten it or lengthen it up to the configured session lifetime from now (else `lifetime-too-long`).",
    security(("bearer" = [])), request_body = PatchOneBody,
    responses((status = 202, body = AcceptedResponse), (status = 200, description = "Prefer: wait was applied"),
        super::responses::AuthErrors, super::responses::BodyErrors))]
pub(super) async fn patch_one(
    Admin(claims): Admin,
    core: web::Data<Core>,
    req: HttpRequest,
    client: ClientInfo,
    object: JsonObject,
) -> Handler {
    let session_id = read_body::<PatchOneBody>(&object)?.command.session_id;
    let operation = Operation::PatchOne;
    accept(
        &core, &req, &client, operation, session_id, object, claims.sub,
    )
    .await
}

#[utoipa::path(post, path = "/jef-one-validate-login-and-create-session", tag = "async",
    summary = "Log in with a frontend-chosen session id (seed 002); processed asynchronously",
    description = "No token: this is a login. The rate limit counts the request when it is accepted; the worker checks the password under the lockout rules, resolves the application by name within the entity, and leaves the session pending with its login code mailed, or reports `failed` with `failure_code`. The 202's `receipt` (header `Request-Receipt`) reads the outcome and takes the session token once.",
    request_body = ValidateLoginBody,
    responses((status = 202, body = AcceptedResponse), (status = 200, description = "Prefer: wait was applied"),
        super::responses::BodyErrors))]
pub(super) async fn validate_login(
    core: web::Data<Core>,
    req: HttpRequest,
    client: ClientInfo,
    object: JsonObject,
) -> Handler {
    core.check_rate_limit(client.ip).await?;
    let ValidateLoginBody(input) = read_body(&object)?;
    let session_id = input.session_id.unwrap_or_default();
    let caller = format!("anonymous:{}", login::lockout_source(client.ip));
    let operation = Operation::ValidateLogin;
    accept(&core, &req, &client, operation, session_id, object, caller).await
}

fn no_request(raw: &str) -> ApiError {
    ApiError::not_found(format!("There is no request {raw:?} you may read."))
}

#[utoipa::path(get, path = "/one-requests/{requestId}", tag = "async",
    summary = "Read an accepted request and its outcome",
    description = "An admin token reads any request. The starter of a validate-login reads its own with the `Request-Receipt` header and, once the login is valid, receives `session_token` (once). Anyone else gets 404.",
    params(("requestId" = String, Path), ("Request-Receipt" = Option<String>, Header, description = "the receipt of a validate-login's 202")),
    responses((status = 200, description = "`{request_id, operation, status: accepted|processing|succeeded|failed, created_at, updated_at, result?, error?, session_token?}`"),
        super::responses::AuthErrors, super::responses::NotFoundError))]
pub(super) async fn get_request(
    OptionalCaller(caller): OptionalCaller,
    core: web::Data<Core>,
    req: HttpRequest,
    request_id: web::Path<String>,
) -> Handler {
    let raw = request_id.into_inner();
    let id = uuid::Uuid::parse_str(&raw)
        .map(|id| id.hyphenated().to_string())
        .map_err(|_| no_request(&raw))?;
    let receipt = req
        .headers()
        .get(RECEIPT_HEADER)
        .and_then(|value| value.to_str().ok());
    let is_starter = receipt.is_some_and(|receipt| queue::receipt_matches(&core, &id, receipt));
    let is_admin = caller.as_ref().is_some_and(|c| c.is_admin());
    if !is_admin && !is_starter {
        return Err(no_request(&raw));
    }
    let row = queue::find(&core, &id)
        .await?
        .ok_or_else(|| no_request(&raw))?;
    Ok(HttpResponse::Ok().json(queue::view(&core, row, is_starter).await?))
}

#[utoipa::path(get, path = "/one-sessions-get-one", tag = "async",
    summary = "Read a session in this face's fields",
    description = "An admin token reads any session (one still being logged in reads as `processing`, a refused login as `failed`); a session token reads its own.",
    security(("bearer" = [])), params(("session_id" = String, Query)),
    responses((status = 200, description = "The session, snake_case"), super::responses::AuthErrors, super::responses::QueryErrors, super::responses::NotFoundError))]
pub(super) async fn get_session(
    OptionalCaller(caller): OptionalCaller,
    core: web::Data<Core>,
    query: QueryParams,
) -> Handler {
    let Some(caller) = caller else {
        return Err(ApiError::token_missing(
            "This route needs a bearer token in the Authorization header.",
        ));
    };
    let session_id = query
        .optional("session_id", rules::UUID)?
        .ok_or_else(|| {
            ApiError::new(ErrorCode::ValidationFailed, "session_id is required.")
                .at_parameter("session_id")
        })?
        .to_ascii_lowercase();
    if !caller.is_admin() {
        caller
            .ensure_own(&session_id)
            .map_err(|_| ApiError::not_found(format!("There is no session {session_id:?}.")))?;
    }
    let now = core.now();
    match lifecycle::find_session(&core, &session_id).await {
        Ok(row) => Ok(HttpResponse::Ok().json(session_json(&row, now))),
        Err(err) if err.code() == ErrorCode::NotFound && caller.is_admin() => {
            // A login still being processed, or refused: the session as its
            // request shows it.
            let login = queue::latest_login(&core, &session_id).await?.ok_or(err)?;
            Ok(HttpResponse::Ok().json(login_session_json(&login)))
        }
        Err(err) => Err(err),
    }
}

/// A session that exists only as its validate-login request so far.
fn login_session_json(login: &RequestRow) -> Value {
    let result = login
        .result
        .as_deref()
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
        .unwrap_or(Value::Null);
    let status = if login.is_finished() {
        "failed"
    } else {
        "processing"
    };
    json!({
        "session_id": login.session_id,
        "status": status,
        "is_valid": false,
        "is_active": false,
        "request_id": login.id,
        "created_at": seed_time(login.created_at),
        "updated_at": seed_time(login.updated_at),
        "failure_code": result.get("failure_code"),
        "failure_reason": result.get("failure_reason"),
    })
}
