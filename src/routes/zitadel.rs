//! The ZITADEL v2 Session API face, over the same sessions, codes and
//! factors as every other face: `/v2/sessions` with checks, challenges,
//! metadata, lifetime and a session token that changes with every update.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value, json};

use super::body::{Body, OptionalBody, RequestBody, request_bodies};
use super::extract::{Fields, OptionalCaller, QueryParams, SessionCaller};
use crate::db::sessions::{SessionRow, SessionSearch};
use crate::db::users::UserRow;
use crate::engine::challenges::CodeDelivery;
use crate::engine::checks::{self, SessionChecks, SessionOutcome, SessionRequest, Unsupported};
use crate::engine::lifecycle::UserAgent;
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
        "creationDate": to_utc(session.created_at),
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
        "userAgent": user_agent_json(session),
        "expirationDate": to_utc(session.expires_at),
    })
}

/// ZITADEL's `UserAgent`: unset fields are left out, as protobuf's JSON
/// does; each header's values sit in `{"values": [...]}`.
fn user_agent_json(session: &SessionRow) -> Value {
    let mut agent = Map::new();
    for (name, value) in [
        ("fingerprintId", &session.user_agent_fingerprint_id),
        ("ip", &session.user_agent_ip),
        ("description", &session.user_agent_description),
    ] {
        if let Some(value) = value {
            agent.insert(name.into(), json!(value));
        }
    }
    let header: Option<BTreeMap<String, Vec<String>>> = session
        .user_agent_header
        .as_deref()
        .and_then(|h| serde_json::from_str(h).ok());
    if let Some(header) = header {
        let header: Map<String, Value> = header
            .into_iter()
            .map(|(name, values)| (name, json!({ "values": values })))
            .collect();
        agent.insert("header".into(), Value::Object(header));
    }
    Value::Object(agent)
}

/// Free text a client reports about itself, stored as sent.
const TEXT_200: rules::Rule = rules::Rule::new(text_200, None, "at most 200 characters");
const TEXT_2000: rules::Rule = rules::Rule::new(text_2000, None, "at most 2000 characters");
/// Ids in ZITADEL's shapes are any string of 1 to 200 characters; one that
/// is not a Latchkey id (a uuid) names nothing.
const ANY_ID: rules::Rule = rules::Rule::new(any_id, None, "an id (1 to 200 characters)");
/// A session token (a JWT) given in the body or the query string.
const SESSION_TOKEN: rules::Rule = rules::Rule::new(
    session_token,
    None,
    "a session token (1 to 8000 characters)",
);

fn text_200(value: &str) -> Result<(), String> {
    at_most(value, 0, 200)
}

fn text_2000(value: &str) -> Result<(), String> {
    at_most(value, 0, 2000)
}

fn any_id(value: &str) -> Result<(), String> {
    at_most(value, 1, 200)
}

fn session_token(value: &str) -> Result<(), String> {
    at_most(value, 1, 8000)
}

fn at_most(value: &str, min: usize, max: usize) -> Result<(), String> {
    if (min..=max).contains(&value.chars().count()) {
        Ok(())
    } else {
        Err(format!("must have {min} to {max} characters"))
    }
}

/// ZITADEL's CreateSessionRequest: `checks`, `metadata` (base64 values),
/// `challenges`, `userAgent{fingerprintId, ip, description, header}`,
/// `lifetime` (e.g. `"18000s"`; absent: LATCHKEY_SESSION_LIFETIME_SECS).
pub struct V2CreateBody(SessionRequest);

impl RequestBody for V2CreateBody {
    fn read(fields: &mut Fields<'_>) -> Self {
        let mut request = read_request(fields);
        if let Some(mut agent) = fields.object("userAgent") {
            request.user_agent = Some(UserAgent {
                fingerprint_id: agent.optional_str("fingerprintId", TEXT_200),
                ip: agent.optional_str("ip", TEXT_200),
                description: agent.optional_str("description", TEXT_2000),
                header: agent.string_lists("header", TEXT_2000),
            });
            fields.absorb(agent);
        }
        Self(request)
    }
}

/// ZITADEL's SetSessionRequest: `checks`, `metadata`, `challenges`,
/// `lifetime`; `sessionToken` is deprecated there and ignored (the
/// Authorization header carries the token).
pub struct V2SetBody(SessionRequest);

impl RequestBody for V2SetBody {
    fn read(fields: &mut Fields<'_>) -> Self {
        let request = read_request(fields);
        // Deprecated in ZITADEL: read (so it is accepted) and ignored.
        let _ = fields.optional_str("sessionToken", TEXT_2000);
        Self(request)
    }
}

/// ZITADEL's DeleteSessionRequest body: `sessionToken`, the session's
/// current token, which authorizes the deletion by itself.
pub struct V2DeleteBody {
    session_token: Option<String>,
}

impl RequestBody for V2DeleteBody {
    fn read(fields: &mut Fields<'_>) -> Self {
        Self {
            session_token: fields.optional_str("sessionToken", SESSION_TOKEN),
        }
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
        // ZITADEL's checks that Latchkey lacks: refused by the engine.
        for (name, pointer, what) in [
            (
                "webAuthN",
                "/checks/webAuthN",
                "Not supported (check-not-supported): passkeys. ZITADEL: {credentialAssertionData}.",
            ),
            (
                "idpIntent",
                "/checks/idpIntent",
                "Not supported (check-not-supported): identity providers. ZITADEL: {idpIntentId, idpIntentToken}.",
            ),
            (
                "otpSms",
                "/checks/otpSms",
                "Not supported (check-not-supported): SMS codes. ZITADEL: {code}.",
            ),
        ] {
            if checks.present(name, what) {
                request.unsupported.push(Unsupported::Check(pointer));
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
        for (name, pointer, what) in [
            (
                "webAuthN",
                "/challenges/webAuthN",
                "Not supported (challenge-not-supported): passkeys. ZITADEL: {domain, userVerificationRequirement}.",
            ),
            (
                "otpSms",
                "/challenges/otpSms",
                "Not supported (challenge-not-supported): SMS codes. ZITADEL: {returnCode}.",
            ),
        ] {
            if challenges.present(name, what) {
                request.unsupported.push(Unsupported::Challenge(pointer));
            }
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
    description = "Needs no token when the checks include the user and the password (a login); otherwise an admin token. `challenges.otpEmail.returnCode` is for admin tokens only. Without `lifetime` the session lives LATCHKEY_SESSION_LIFETIME_SECS.",
    request_body = V2CreateBody,
    responses((status = 201, description = "`{details, sessionId, sessionToken, challenges?}`"), super::responses::LoginErrors, super::responses::BodyErrors, super::responses::OtpCheckErrors))]
pub(super) async fn create_session(
    OptionalCaller(caller): OptionalCaller,
    core: web::Data<Core>,
    client: ClientInfo,
    Body(V2CreateBody(request)): Body<V2CreateBody>,
) -> Handler {
    let outcome = checks::create(&core, caller.as_ref(), request, client).await?;
    Ok(HttpResponse::Created().json(outcome_json(&outcome, true)))
}

#[utoipa::path(patch, path = "/v2/sessions/{sessionId}", tag = "v2", summary = "Add checks, challenges, metadata or lifetime; returns a new session token (the previous one stops working)",
    security(("bearer" = [])), params(("sessionId" = String, Path)), request_body = V2SetBody,
    responses((status = 200, description = "`{details, sessionToken, challenges?}`"), super::responses::AuthErrors, super::responses::BodyErrors, super::responses::NotFoundError, super::responses::OtpCheckErrors))]
pub(super) async fn set_session(
    SessionCaller(caller, _): SessionCaller,
    core: web::Data<Core>,
    client: ClientInfo,
    session_id: web::Path<String>,
    Body(V2SetBody(request)): Body<V2SetBody>,
) -> Handler {
    let outcome = checks::change(&core, &caller, &session_id, request, client).await?;
    Ok(HttpResponse::Ok().json(outcome_json(&outcome, false)))
}

#[utoipa::path(get, path = "/v2/sessions/{sessionId}", tag = "v2", summary = "Read a session (ZITADEL v2 shape)",
    description = "Authorized by the bearer token, or by the session's own token in `sessionToken` (then any valid bearer, or none).",
    security(("bearer" = [])), params(("sessionId" = String, Path), ("sessionToken" = Option<String>, Query, description = "the session's current token")),
    responses((status = 200, description = "`{session: {id, creationDate, changeDate, sequence, factors, metadata, userAgent, expirationDate}}`"), super::responses::AuthErrors, super::responses::NotFoundError))]
pub(super) async fn get_session(
    OptionalCaller(caller): OptionalCaller,
    core: web::Data<Core>,
    session_id: web::Path<String>,
    query: QueryParams,
) -> Handler {
    let token = query.optional("sessionToken", SESSION_TOKEN)?;
    let (session, user) =
        checks::get(&core, caller.as_ref(), token.as_deref(), &session_id).await?;
    Ok(HttpResponse::Ok().json(json!({ "session": session_json(&session, user.as_ref()) })))
}

#[utoipa::path(delete, path = "/v2/sessions/{sessionId}", tag = "v2", summary = "Terminate a session: its token stops working",
    description = "Authorized by the bearer token, or by the session's own token in the body's `sessionToken` (then any valid bearer, or none). The body is optional.",
    security(("bearer" = [])), params(("sessionId" = String, Path)), request_body(content = Option<V2DeleteBody>),
    responses((status = 200, description = "`{details}`"), super::responses::AuthErrors, super::responses::NotFoundError))]
pub(super) async fn delete_session(
    OptionalCaller(caller): OptionalCaller,
    core: web::Data<Core>,
    client: ClientInfo,
    session_id: web::Path<String>,
    OptionalBody(body): OptionalBody<V2DeleteBody>,
) -> Handler {
    let token = body.and_then(|b| b.session_token);
    let session = checks::terminate(
        &core,
        caller.as_ref(),
        token.as_deref(),
        &session_id,
        client,
    )
    .await?;
    Ok(HttpResponse::Ok().json(json!({ "details": details(&session) })))
}

const TIMESTAMP: rules::Rule = rules::Rule::new(timestamp, None, "an RFC 3339 time");

fn timestamp(value: &str) -> Result<(), String> {
    DateTime::parse_from_rfc3339(value)
        .map(drop)
        .map_err(|_| "must be an RFC 3339 time".into())
}

const TIMESTAMP_METHOD: rules::Rule = rules::Rule::new(
    timestamp_method,
    Some("^TIMESTAMP_QUERY_METHOD_(EQUALS|GREATER|GREATER_OR_EQUALS|LESS|LESS_OR_EQUALS)$"),
    "how the time compares",
);

fn timestamp_method(value: &str) -> Result<(), String> {
    match value {
        "TIMESTAMP_QUERY_METHOD_EQUALS"
        | "TIMESTAMP_QUERY_METHOD_GREATER"
        | "TIMESTAMP_QUERY_METHOD_GREATER_OR_EQUALS"
        | "TIMESTAMP_QUERY_METHOD_LESS"
        | "TIMESTAMP_QUERY_METHOD_LESS_OR_EQUALS" => Ok(()),
        _ => Err("must be a TIMESTAMP_QUERY_METHOD_… value".into()),
    }
}

const SORTING_COLUMN: rules::Rule = rules::Rule::new(
    sorting_column,
    Some("^SESSION_FIELD_NAME_(UNSPECIFIED|CREATION_DATE)$"),
    "the column to sort by (both sort by creation date, as ZITADEL does)",
);

fn sorting_column(value: &str) -> Result<(), String> {
    match value {
        "SESSION_FIELD_NAME_UNSPECIFIED" | "SESSION_FIELD_NAME_CREATION_DATE" => Ok(()),
        _ => {
            Err("must be SESSION_FIELD_NAME_UNSPECIFIED or SESSION_FIELD_NAME_CREATION_DATE".into())
        }
    }
}

/// Bounds on a time column: (after, before, at), each exclusive.
type TimeBounds = (
    Option<NaiveDateTime>,
    Option<NaiveDateTime>,
    Option<NaiveDateTime>,
);

/// A `{<field>, method}` time query as ZITADEL's TimestampQueryMethod
/// reads it (EQUALS when absent).
fn time_query(query: &mut Fields<'_>, field: &'static str, bounds: &mut TimeBounds) {
    let at = query.required_str(field, TIMESTAMP);
    let method = query
        .optional_str("method", TIMESTAMP_METHOD)
        .unwrap_or_else(|| "TIMESTAMP_QUERY_METHOD_EQUALS".into());
    let Ok(at) = DateTime::parse_from_rfc3339(&at) else {
        return;
    };
    let at = at.with_timezone(&Utc).naive_utc();
    let micro = chrono::Duration::microseconds(1);
    match method.as_str() {
        "TIMESTAMP_QUERY_METHOD_GREATER" => bounds.0 = Some(at),
        "TIMESTAMP_QUERY_METHOD_GREATER_OR_EQUALS" => bounds.0 = Some(at - micro),
        "TIMESTAMP_QUERY_METHOD_LESS" => bounds.1 = Some(at),
        "TIMESTAMP_QUERY_METHOD_LESS_OR_EQUALS" => bounds.1 = Some(at + micro),
        _ => bounds.2 = Some(at),
    }
}

/// ZITADEL's ListSessionsRequest: `queries` (`idsQuery{ids}`,
/// `userIdQuery{id}`, `creationDateQuery{creationDate, method}`,
/// `creatorQuery{id?}`, `userAgentQuery{fingerprintId?}`,
/// `expirationDateQuery{expirationDate, method}`, all ANDed),
/// `query{offset, limit, asc}`, `sortingColumn`.
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
            // ZITADEL reads a limit of 0 (protobuf's default) as "the default".
            limit = match query.optional_count("limit", 0, 1000) {
                None | Some(0) => 100,
                Some(n) => n,
            };
            filter.ascending = query.optional_bool("asc").unwrap_or(false);
            fields.absorb(query);
        }
        // Both of ZITADEL's columns sort by creation date.
        let _ = fields.optional_str("sortingColumn", SORTING_COLUMN);
        let mut created: TimeBounds = (None, None, None);
        let mut expires: TimeBounds = (None, None, None);
        if let Some(queries) = fields.object_list("queries") {
            for mut query in queries {
                if let Some(mut ids) = query.object("idsQuery") {
                    let wanted: Vec<String> = ids
                        .optional_str_list("ids", ANY_ID, 0)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|i| i.to_ascii_lowercase())
                        .collect();
                    // No ids (`[]`, or absent: protobuf's JSON writes an
                    // empty repeated field so) match no session; several
                    // idsQuery are ANDed: only ids in all of them.
                    filter.ids = Some(match filter.ids.take() {
                        Some(had) => had.into_iter().filter(|i| wanted.contains(i)).collect(),
                        None => wanted,
                    });
                    query.absorb(ids);
                }
                if let Some(mut user) = query.object("userIdQuery") {
                    filter.user_id = Some(user.required_str("id", ANY_ID).to_ascii_lowercase());
                    query.absorb(user);
                }
                if let Some(mut at) = query.object("creationDateQuery") {
                    time_query(&mut at, "creationDate", &mut created);
                    query.absorb(at);
                }
                if let Some(mut at) = query.object("expirationDateQuery") {
                    time_query(&mut at, "expirationDate", &mut expires);
                    query.absorb(at);
                }
                if let Some(mut creator) = query.object("creatorQuery") {
                    // Empty or absent: the caller (as in ZITADEL).
                    match creator
                        .optional_str("id", TEXT_200)
                        .filter(|id| !id.is_empty())
                    {
                        Some(id) => filter.creator = Some(id),
                        None => filter.creator_is_caller = true,
                    }
                    query.absorb(creator);
                }
                if let Some(mut agent) = query.object("userAgentQuery") {
                    // Empty or absent: the caller's own user agent.
                    match agent
                        .optional_str("fingerprintId", TEXT_200)
                        .filter(|id| !id.is_empty())
                    {
                        Some(id) => filter.user_agent_fingerprint_id = Some(id),
                        None => filter.fingerprint_of_caller = true,
                    }
                    query.absorb(agent);
                }
                fields.absorb(query);
            }
        }
        (
            filter.created_after,
            filter.created_before,
            filter.created_at,
        ) = created;
        (
            filter.expires_after,
            filter.expires_before,
            filter.expires_at,
        ) = expires;
        Self {
            filter,
            limit,
            offset,
        }
    }
}

request_bodies!(V2CreateBody, V2SetBody, V2DeleteBody, V2SearchBody);

#[utoipa::path(post, path = "/v2/sessions/search", tag = "v2", summary = "Search sessions: an admin sees all, a session token its user's",
    security(("bearer" = [])), request_body = V2SearchBody,
    responses((status = 200, description = "`{details: {totalResult, timestamp}, sessions: [...]}`"), super::responses::AuthErrors, super::responses::BodyErrors))]
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
