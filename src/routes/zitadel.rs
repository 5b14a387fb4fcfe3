//! The ZITADEL v2 Session API face, over the same sessions, codes and
//! factors as every other face: `/v2/sessions` with checks, challenges,
//! metadata, lifetime and a session token that changes with every update.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::body::{Body, RequestBody, request_bodies};
use super::extract::{Fields, OptionalCaller, SessionCaller};
use crate::db::sessions::{SessionRow, SessionSearch};
use crate::db::users::UserRow;
use crate::engine::challenges::CodeDelivery;
use crate::engine::checks::{self, SessionChecks, SessionOutcome, SessionRequest};
use crate::engine::login::UserRef;
use crate::error::ApiError;
use crate::services::audit::ClientInfo;
use crate::services::{Core, rules, to_utc};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v2/sessions")
            .service(web::resource("").route(web::post().to(create_session)))
            .service(web::resource("/search").route(web::post().to(search_sessions)))
            .service(
                web::resource("/{sessionId}")
                    .route(web::get().to(get_session))
                    .route(web::patch().to(set_session))
                    .route(web::delete().to(delete_session)),
            ),
    );
}

type Handler = Result<HttpResponse, ApiError>;

/// `details`, as ZITADEL writes them (uint64 as a string).
fn details(session: &SessionRow) -> Value {
    json!({
        "sequence": session.sequence.to_string(),
        "changeDate": to_utc(session.updated_at),
        "resourceOwner": session.entity_id,
    })
}

fn session_json(session: &SessionRow, user: Option<&UserRow>) -> Value {
    let mut factors = Map::new();
    if let Some(user) = user {
        factors.insert(
            "user".into(),
            json!({
                "verifiedAt": to_utc(session.created_at),
                "id": user.id,
                "loginName": user.login_name,
                "displayName": user.display_name,
                "organizationId": user.entity_id,
            }),
        );
    }
    for (name, at) in [
        ("password", session.password_verified_at),
        ("totp", session.totp_verified_at),
        ("otpEmail", session.otp_email_verified_at),
    ] {
        if let Some(at) = at {
            factors.insert(name.into(), json!({ "verifiedAt": to_utc(at) }));
        }
    }
    let metadata: Value = serde_json::from_str(&session.metadata).unwrap_or_else(|_| json!({}));
    json!({
        "id": session.id,
        "creationDate": to_utc(session.created_at),
        "changeDate": to_utc(session.updated_at),
        "sequence": session.sequence.to_string(),
        "factors": factors,
        "metadata": metadata,
        "expirationDate": to_utc(session.expires_at),
    })
}

/// `checks` (`user{loginName|userId}`, `password{password}`, `totp{code}`,
/// `otpEmail{code}`, `recoveryCode{code}`), `challenges`
/// (`otpEmail{sendCode{urlTemplate?}}` or `otpEmail{returnCode{}}`),
/// `metadata` (base64 values), `lifetime` (e.g. `"18000s"`).
pub struct V2SessionBody(SessionRequest);

impl RequestBody for V2SessionBody {
    fn read(fields: &mut Fields<'_>) -> Self {
        Self(read_request(fields))
    }
}

fn read_request(fields: &mut Fields<'_>) -> SessionRequest {
    let mut request = SessionRequest::default();
    if let Some(mut checks) = fields.object("checks") {
        let mut read = SessionChecks::default();
        if let Some(mut user) = checks.object("user") {
            let login_name = user.optional_str("loginName", rules::LOGIN_NAME);
            let user_id = user.optional_str("userId", rules::UUID);
            read.user = match (login_name, user_id) {
                (Some(name), None) => Some(UserRef::LoginName(name)),
                (None, Some(id)) => Some(UserRef::UserId(id)),
                _ => {
                    user.reject("loginName", "Give loginName or userId (one of them).");
                    None
                }
            };
            checks.absorb(user);
        }
        if let Some(mut password) = checks.object("password") {
            read.password = Some(password.required_str("password", rules::LOGIN_PASSWORD));
            checks.absorb(password);
        }
        for (name, slot) in [
            ("totp", &mut read.totp),
            ("otpEmail", &mut read.otp_email),
            ("recoveryCode", &mut read.recovery_code),
        ] {
            if let Some(mut check) = checks.object(name) {
                *slot = Some(check.required_str("code", rules::OTP_CODE));
                checks.absorb(check);
            }
        }
        fields.absorb(checks);
        request.checks = read;
    }
    if let Some(mut challenges) = fields.object("challenges") {
        if let Some(mut otp_email) = challenges.object("otpEmail") {
            let send = otp_email.object("sendCode");
            let returned = otp_email.object("returnCode");
            let both = send.is_some() && returned.is_some();
            request.otp_email = match (send, returned) {
                (Some(mut send), returned) => {
                    let link_template = send.optional_str("urlTemplate", rules::URL_TEMPLATE);
                    otp_email.absorb(send);
                    if let Some(returned) = returned {
                        otp_email.absorb(returned);
                    }
                    Some(CodeDelivery::Mail { link_template })
                }
                (None, Some(returned)) => {
                    otp_email.absorb(returned);
                    Some(CodeDelivery::Return)
                }
                (None, None) => Some(CodeDelivery::Mail {
                    link_template: None,
                }),
            };
            if both {
                otp_email.reject("returnCode", "Give sendCode or returnCode, not both.");
            }
            challenges.absorb(otp_email);
        }
        fields.absorb(challenges);
    }
    request.metadata = fields.string_map("metadata", rules::BASE64);
    request.lifetime = fields
        .optional_str("lifetime", rules::DURATION)
        .and_then(|l| rules::parse_duration(&l));
    request
}

fn outcome_json(outcome: &SessionOutcome, with_id: bool) -> Value {
    let mut body = json!({
        "details": details(&outcome.session),
        "sessionToken": outcome.session_token,
    });
    if with_id {
        body["sessionId"] = json!(outcome.session.id);
    }
    if let Some(code) = &outcome.otp_email_code {
        body["challenges"] = json!({ "otpEmail": code });
    }
    body
}

#[utoipa::path(post, path = "/v2/sessions", tag = "v2", summary = "Create a session with checks and challenges (ZITADEL v2)",
    description = "Needs no token when the checks include the user and the password (a login); otherwise an admin token. `challenges.otpEmail.returnCode` is for admin tokens only.",
    request_body = V2SessionBody,
    responses((status = 201, description = "`{details, sessionId, sessionToken, challenges?}`"), super::openapi::LoginErrors, super::openapi::BodyErrors, super::openapi::OtpCheckErrors))]
pub(super) async fn create_session(
    OptionalCaller(caller): OptionalCaller,
    core: web::Data<Core>,
    client: ClientInfo,
    Body(V2SessionBody(request)): Body<V2SessionBody>,
) -> Handler {
    let outcome = checks::create(&core, caller.as_ref(), request, client).await?;
    Ok(HttpResponse::Created().json(outcome_json(&outcome, true)))
}

#[utoipa::path(patch, path = "/v2/sessions/{sessionId}", tag = "v2", summary = "Add checks, challenges, metadata or lifetime; returns a new session token (the previous one stops working)",
    security(("bearer" = [])), params(("sessionId" = String, Path)), request_body = V2SessionBody,
    responses((status = 200, description = "`{details, sessionToken, challenges?}`"), super::openapi::AuthErrors, super::openapi::BodyErrors, super::openapi::NotFoundError, super::openapi::OtpCheckErrors))]
pub(super) async fn set_session(
    SessionCaller(caller, _): SessionCaller,
    core: web::Data<Core>,
    client: ClientInfo,
    session_id: web::Path<String>,
    Body(V2SessionBody(request)): Body<V2SessionBody>,
) -> Handler {
    let outcome = checks::change(&core, &caller, &session_id, request, client).await?;
    Ok(HttpResponse::Ok().json(outcome_json(&outcome, false)))
}

#[utoipa::path(get, path = "/v2/sessions/{sessionId}", tag = "v2", summary = "Read a session (ZITADEL v2 shape)",
    security(("bearer" = [])), params(("sessionId" = String, Path)),
    responses((status = 200, description = "`{session: {id, creationDate, changeDate, sequence, factors, metadata, expirationDate}}`"), super::openapi::AuthErrors, super::openapi::NotFoundError))]
pub(super) async fn get_session(
    SessionCaller(caller, _): SessionCaller,
    core: web::Data<Core>,
    session_id: web::Path<String>,
) -> Handler {
    let (session, user) = checks::get(&core, &caller, &session_id).await?;
    Ok(HttpResponse::Ok().json(json!({ "session": session_json(&session, user.as_ref()) })))
}

#[utoipa::path(delete, path = "/v2/sessions/{sessionId}", tag = "v2", summary = "Terminate a session: its token stops working",
    security(("bearer" = [])), params(("sessionId" = String, Path)),
    responses((status = 200, description = "`{details}`"), super::openapi::AuthErrors, super::openapi::NotFoundError))]
pub(super) async fn delete_session(
    SessionCaller(caller, _): SessionCaller,
    core: web::Data<Core>,
    client: ClientInfo,
    session_id: web::Path<String>,
) -> Handler {
    let session = checks::terminate(&core, &caller, &session_id, client).await?;
    Ok(HttpResponse::Ok().json(json!({ "details": details(&session) })))
}

const TIMESTAMP: rules::Rule = rules::Rule::new(timestamp, None, "an RFC 3339 time");

fn timestamp(value: &str) -> Result<(), String> {
    DateTime::parse_from_rfc3339(value)
        .map(drop)
        .map_err(|_| "must be an RFC 3339 time".into())
}

const CREATION_METHOD: rules::Rule = rules::Rule::new(
    creation_method,
    Some("^TIMESTAMP_QUERY_METHOD_(EQUALS|GREATER|GREATER_OR_EQUALS|LESS|LESS_OR_EQUALS)$"),
    "how creationDate compares",
);

fn creation_method(value: &str) -> Result<(), String> {
    match value {
        "TIMESTAMP_QUERY_METHOD_EQUALS"
        | "TIMESTAMP_QUERY_METHOD_GREATER"
        | "TIMESTAMP_QUERY_METHOD_GREATER_OR_EQUALS"
        | "TIMESTAMP_QUERY_METHOD_LESS"
        | "TIMESTAMP_QUERY_METHOD_LESS_OR_EQUALS" => Ok(()),
        _ => Err("must be a TIMESTAMP_QUERY_METHOD_… value".into()),
    }
}

/// `queries` (`idsQuery{ids}`, `userIdQuery{id}`,
/// `creationDateQuery{creationDate, method}`), `query{offset, limit, asc}`.
pub struct V2SearchBody {
    filter: SessionSearch,
    limit: i64,
    offset: i64,
}

impl RequestBody for V2SearchBody {
    fn read(fields: &mut Fields<'_>) -> Self {
        let mut filter = SessionSearch::default();
        let (mut limit, mut offset) = (100, 0);
        if let Some(mut query) = fields.object("query") {
            offset = query
                .optional_count("offset", 0, 1_000_000_000)
                .unwrap_or(0);
            limit = query.optional_count("limit", 1, 1000).unwrap_or(100);
            filter.ascending = query.optional_bool("asc").unwrap_or(false);
            fields.absorb(query);
        }
        if let Some(queries) = fields.object_list("queries") {
            for mut query in queries {
                if let Some(mut ids) = query.object("idsQuery") {
                    // No ids (`[]`, or absent: protobuf's JSON writes an
                    // empty repeated field so) match no session.
                    filter.ids = Some(
                        ids.optional_str_list("ids", rules::UUID, 0)
                            .unwrap_or_default()
                            .into_iter()
                            .map(|i| i.to_ascii_lowercase())
                            .collect(),
                    );
                    query.absorb(ids);
                }
                if let Some(mut user) = query.object("userIdQuery") {
                    filter.user_id =
                        Some(user.required_str("id", rules::UUID).to_ascii_lowercase());
                    query.absorb(user);
                }
                if let Some(mut created) = query.object("creationDateQuery") {
                    let at = created.required_str("creationDate", TIMESTAMP);
                    let method = created
                        .optional_str("method", CREATION_METHOD)
                        .unwrap_or_else(|| "TIMESTAMP_QUERY_METHOD_EQUALS".into());
                    if let Ok(at) = DateTime::parse_from_rfc3339(&at) {
                        let at = at.with_timezone(&Utc).naive_utc();
                        let micro = chrono::Duration::microseconds(1);
                        match method.as_str() {
                            "TIMESTAMP_QUERY_METHOD_GREATER" => filter.created_after = Some(at),
                            "TIMESTAMP_QUERY_METHOD_GREATER_OR_EQUALS" => {
                                filter.created_after = Some(at - micro)
                            }
                            "TIMESTAMP_QUERY_METHOD_LESS" => filter.created_before = Some(at),
                            "TIMESTAMP_QUERY_METHOD_LESS_OR_EQUALS" => {
                                filter.created_before = Some(at + micro)
                            }
                            _ => filter.created_at = Some(at),
                        }
                    }
                    query.absorb(created);
                }
                fields.absorb(query);
            }
        }
        Self {
            filter,
            limit,
            offset,
        }
    }
}

request_bodies!(V2SessionBody, V2SearchBody);

#[utoipa::path(post, path = "/v2/sessions/search", tag = "v2", summary = "Search sessions: an admin sees all, a session token its user's",
    security(("bearer" = [])), request_body = V2SearchBody,
    responses((status = 200, description = "`{details: {totalResult, timestamp}, sessions: [...]}`"), super::openapi::AuthErrors, super::openapi::BodyErrors))]
pub(super) async fn search_sessions(
    SessionCaller(caller, _): SessionCaller,
    core: web::Data<Core>,
    Body(search): Body<V2SearchBody>,
) -> Handler {
    let V2SearchBody {
        filter,
        limit,
        offset,
    } = search;
    let (sessions, total) = checks::search(&core, &caller, filter, limit, offset).await?;
    let list: Vec<Value> = sessions
        .iter()
        .map(|(s, u)| session_json(s, u.as_ref()))
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "details": { "totalResult": total.to_string(), "timestamp": core.clock.now() },
        "sessions": list,
    })))
}
