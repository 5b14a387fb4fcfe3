//! Accepted requests: recorded durably before the 202 (with their
//! Idempotency-Key and a keyed digest of the body), read back with their
//! outcome, and the starter's receipt that alone learns a login's token.

use std::time::Duration as StdDuration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::NaiveDateTime;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::db::one_requests::{self as rows, ACCEPTED, RequestRow};
use crate::engine::lifecycle;
use crate::error::{ApiError, ErrorCode};
use crate::otp::sealed::SecretBox;
use crate::services::Core;
use crate::services::audit::ClientInfo;

/// The operations of the face, as stored and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    PostOne,
    PatchOne,
    ValidateLogin,
}

impl Operation {
    pub const ALL: [Operation; 3] = [Self::PostOne, Self::PatchOne, Self::ValidateLogin];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PostOne => "post-one",
            Self::PatchOne => "patch-one",
            Self::ValidateLogin => "validate-login",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.as_str() == name)
    }
}

/// The field of a validate-login body kept sealed, never in `command`.
pub const SECRET_FIELD: &str = "password";

const BODY_DIGEST: &str = "one-request body v1";
const RECEIPT: &str = "one-request receipt v1";

fn secret_box(core: &Core) -> SecretBox {
    SecretBox::new(core.rules.key.derive("one-request secret v1"))
}

/// A request to record.
pub struct NewRequest {
    pub operation: Operation,
    pub session_id: String,
    /// The body as sent (validated).
    pub body: Map<String, Value>,
    /// Who asks, the scope of its Idempotency-Key: an admin token's
    /// subject, or `anonymous:` and the client's network (its IPv4 address
    /// or IPv6 /64), so that nobody elsewhere can probe another client's
    /// key (with a login's body, a key's "another body" answer would tell
    /// a wrong password from the right one without counting it).
    pub caller: String,
    pub idempotency_key: Option<String>,
}

/// Records an accepted request (or finds the one an earlier call with the
/// same Idempotency-Key and body recorded) and wakes this node's worker.
/// The same key with another body is refused (`idempotency-key-reused`).
pub async fn accept(
    core: &Core,
    request: NewRequest,
    client: &ClientInfo,
) -> Result<RequestRow, ApiError> {
    let NewRequest {
        operation,
        session_id,
        mut body,
        caller,
        idempotency_key,
    } = request;
    // Keyed: the body may hold a password, which a plain hash would let
    // anyone with the table guess offline.
    let digest_input = format!(
        "{caller}\n{}\n{}",
        operation.as_str(),
        Value::Object(body.clone())
    );
    let body_digest = core.rules.key.digest(BODY_DIGEST, &digest_input);
    let id = Uuid::now_v7().to_string();
    let sealed_secret = match body.remove(SECRET_FIELD) {
        Some(Value::String(secret)) => Some(
            secret_box(core)
                .seal_joined(&id, secret.as_bytes())
                .map_err(ApiError::internal)?,
        ),
        _ => None,
    };
    let now = core.now();
    let mut row = RequestRow {
        id,
        operation: operation.as_str().to_owned(),
        session_id,
        sequence: 0,
        status: ACCEPTED.to_owned(),
        command: Value::Object(body).to_string(),
        sealed_secret,
        caller,
        idempotency_key,
        body_digest,
        client_ip: client.ip.map(|ip| ip.to_string()),
        user_agent: client.user_agent.clone(),
        attempts: 0,
        next_attempt_at: now,
        lease_owner: None,
        lease_until: None,
        last_error: None,
        result: None,
        error: None,
        token_issued_at: None,
        created_at: now,
        updated_at: now,
        finished_at: None,
    };
    let (row, new) = core
        .db
        .write(move |conn| {
            if let Some(key) = &row.idempotency_key
                && let Some(earlier) =
                    rows::find_by_idempotency_key(conn, &row.caller, &row.operation, key)?
            {
                return replay(earlier, &row);
            }
            row.sequence = rows::next_sequence(conn, &row.session_id)?;
            if rows::insert_unless_key_taken(conn, &row)? {
                return Ok((row, true));
            }
            // A concurrent first use of the same key won: its request.
            let key = row.idempotency_key.as_deref().unwrap_or_default();
            match rows::find_by_idempotency_key(conn, &row.caller, &row.operation, key)? {
                Some(earlier) => replay(earlier, &row),
                None => Err(key_reused()),
            }
        })
        .await?;
    if new {
        metrics::counter!("latchkey_async_requests_accepted_total", "operation" => operation.as_str())
            .increment(1);
        core.requests.accepted.notify_one();
    }
    Ok(row)
}

/// The request an earlier call with the same key recorded, if it had the
/// same body.
fn replay(earlier: RequestRow, new: &RequestRow) -> Result<(RequestRow, bool), ApiError> {
    if earlier.body_digest == new.body_digest {
        Ok((earlier, false))
    } else {
        Err(key_reused())
    }
}

fn key_reused() -> ApiError {
    ApiError::new(
        ErrorCode::IdempotencyKeyReused,
        "This Idempotency-Key was used before with another body; use a new key for a new request.",
    )
    .at_header("Idempotency-Key")
}

/// The password a validate-login request keeps sealed.
pub fn open_secret(core: &Core, row: &RequestRow) -> Result<Option<String>, ApiError> {
    let Some(sealed) = &row.sealed_secret else {
        return Ok(None);
    };
    let secret = secret_box(core)
        .open_joined(&row.id, sealed)
        .map_err(ApiError::internal)?;
    String::from_utf8(secret)
        .map(Some)
        .map_err(ApiError::internal)
}

/// The starter's receipt of a request: an HMAC of its id under the server
/// secret, returned once in the 202 (and again for a replay with the same
/// Idempotency-Key and body, which only the starter can send). Nothing is
/// stored: the database alone cannot make one.
pub fn receipt(core: &Core, request_id: &str) -> String {
    URL_SAFE_NO_PAD.encode(core.rules.key.digest(RECEIPT, request_id))
}

/// Whether `given` is the receipt of `request_id` (constant time).
pub fn receipt_matches(core: &Core, request_id: &str, given: &str) -> bool {
    URL_SAFE_NO_PAD
        .decode(given.trim())
        .is_ok_and(|digest| core.rules.key.matches(RECEIPT, request_id, &digest))
}

pub async fn find(core: &Core, request_id: &str) -> Result<Option<RequestRow>, ApiError> {
    let id = request_id.to_owned();
    core.db
        .run(move |conn| Ok::<_, ApiError>(rows::find(conn, &id)?))
        .await
}

/// The latest validate-login request for a session that has no row yet.
pub async fn latest_login(core: &Core, session_id: &str) -> Result<Option<RequestRow>, ApiError> {
    let id = session_id.to_owned();
    core.db
        .run(move |conn| {
            Ok::<_, ApiError>(rows::latest_for_session(
                conn,
                &id,
                Operation::ValidateLogin.as_str(),
            )?)
        })
        .await
}

/// Waits up to `wait` (real time) for the request to finish: woken when
/// this node finishes one, and looking every 100 ms for another node's.
pub async fn wait_for_outcome(
    core: &Core,
    request_id: &str,
    wait: StdDuration,
) -> Result<Option<RequestRow>, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let finished = core.requests.finished.notified();
        if let Some(row) = find(core, request_id).await?
            && row.is_finished()
        {
            return Ok(Some(row));
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        let pause = (deadline - now).min(StdDuration::from_millis(100));
        tokio::select! {
            _ = finished => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// A time as the seeds write it: `2026-05-17T15:49:56Z`, with up to six
/// fraction digits when there is a fraction.
pub fn seed_time(t: NaiveDateTime) -> String {
    if t.and_utc().timestamp_subsec_nanos() == 0 {
        t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    }
}

/// [`seed_time`] of an optional time, for views.
pub fn optional_time(t: Option<NaiveDateTime>) -> Value {
    t.map_or(Value::Null, |t| json!(seed_time(t)))
}

/// `GET /one-requests/{id}`: the request and its outcome. For the starter
/// of a valid login (`with_token`), the session's token, handed out once:
/// the first such read takes it (a conditional update), later reads show
/// when it was taken.
pub async fn view(core: &Core, row: RequestRow, with_token: bool) -> Result<Value, ApiError> {
    let mut view = json!({
        "request_id": row.id,
        "operation": row.operation,
        "status": row.status,
        "created_at": seed_time(row.created_at),
        "updated_at": seed_time(row.updated_at),
    });
    let result = row
        .result
        .as_deref()
        .and_then(|text| serde_json::from_str::<Value>(text).ok());
    let is_valid = result
        .as_ref()
        .is_some_and(|r| r["is_valid"] == Value::Bool(true));
    if let Some(result) = result {
        view["result"] = result;
    }
    if let Some(error) = row
        .error
        .as_deref()
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
    {
        view["error"] = error;
    }
    let login_succeeded = row.operation == Operation::ValidateLogin.as_str()
        && row.status == rows::SUCCEEDED
        && is_valid;
    if with_token && login_succeeded {
        let (id, now) = (row.id.clone(), core.now());
        let user_id = view["result"]["employee_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let handed_out = lifecycle::reissue_token(core, &row.session_id, &user_id, move |conn| {
            Ok(rows::take_token(conn, &id, now)?)
        })
        .await?;
        if let Some((token, expires_at)) = handed_out {
            view["session_token"] = json!(token);
            view["session_token_expires_at"] = json!(seed_time(expires_at));
            view["session_token_issued_at"] = json!(seed_time(now));
            return Ok(view);
        }
    }
    let issued_at = match row.token_issued_at {
        Some(at) => Some(at),
        // Taken by a read beside this one.
        None if login_succeeded && with_token => find(core, &row.id)
            .await?
            .and_then(|row| row.token_issued_at),
        None => None,
    };
    if let Some(at) = issued_at {
        view["session_token_issued_at"] = json!(seed_time(at));
    }
    Ok(view)
}
