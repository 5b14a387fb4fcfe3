//! The worker of the asynchronous face, in every node: claims due requests
//! with a lease, reads each stored body with the reader that accepted it,
//! runs the engine command, and records the outcome. A transient failure
//! (the database busy or gone) is retried with backoff; anything else is
//! the request's outcome. Finished requests are pruned after
//! `LATCHKEY_ASYNC_RETENTION_SECS`.

use std::net::IpAddr;
use std::time::{Duration as StdDuration, Instant};

use actix_web::web;
use chrono::{Duration, NaiveDateTime};
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use tokio::sync::watch;
use uuid::Uuid;

use super::bodies::{PatchOneBody, PostOneBody, ValidateLoginBody};
use super::queue::{self, Operation, SECRET_FIELD};
use super::session_json;
use crate::db::one_requests::{self as rows, FAILED, RequestRow, SUCCEEDED};
use crate::engine::backend;
use crate::error::ApiError;
use crate::mailer::outbox::backoff;
use crate::routes::body::RequestBody;
use crate::routes::extract::Fields;
use crate::services::Core;
use crate::services::audit::ClientInfo;

/// Requests claimed per pass.
const BATCH: i64 = 64;
/// Requests processed at once. A claimed batch holds at most one request
/// per session, so this never reorders a session's requests; each waits
/// mostly for its writes' commits (and a login for argon2 on the CPU
/// pool): at 4 the worker finished 542 patches/s while 4 500/s arrived.
const CONCURRENCY: usize = 16;
/// How long a claim holds; a node that dies mid-request loses it after
/// this, and another node processes the request.
pub const LEASE: Duration = Duration::seconds(120);
/// How often finished requests are pruned.
const PRUNE_EVERY: StdDuration = StdDuration::from_secs(60);

/// Camel-case pointers of the engine's errors in this face's snake_case.
fn snake_pointer(pointer: &str) -> Option<String> {
    let mut out = String::with_capacity(pointer.len() + 4);
    for c in pointer.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    (out != pointer).then_some(out)
}

fn read_body<T: RequestBody>(object: &Map<String, Value>) -> Result<T, ApiError> {
    let mut fields = Fields::over(object);
    let body = T::read(&mut fields);
    fields.finish()?;
    Ok(body)
}

/// What a processed request reports (seed 002's response fields).
struct Outcome {
    status: &'static str,
    result: Value,
    error: Option<Value>,
}

fn failure(row: &RequestRow, err: &ApiError) -> Outcome {
    let (objects, _) = err.error_objects();
    let first = objects.into_iter().next().unwrap_or(Value::Null);
    let reason = err
        .problems()
        .first()
        .map(|p| p.detail.clone())
        .unwrap_or_default();
    let mut result = json!({
        "is_accepted": true,
        "is_valid": false,
        "session_saved": false,
        "operation": row.operation,
        "status_code": err.code().status().as_u16(),
        "message": reason,
        "session_id": row.session_id,
        "failure_code": err.code().as_str(),
        "failure_reason": reason,
    });
    if row.operation == Operation::ValidateLogin.as_str() {
        result["status"] = json!("failed");
    }
    Outcome {
        status: FAILED,
        result,
        error: Some(first),
    }
}

async fn process(core: &Core, row: &RequestRow) -> Result<Value, ApiError> {
    let operation = Operation::parse(&row.operation)
        .ok_or_else(|| ApiError::internal(format!("unknown operation {}", row.operation)))?;
    let mut object: Map<String, Value> =
        serde_json::from_str(&row.command).map_err(ApiError::internal)?;
    let client = ClientInfo {
        ip: row
            .client_ip
            .as_deref()
            .and_then(|ip| ip.parse::<IpAddr>().ok()),
        user_agent: row.user_agent.clone(),
    };
    let snake = |err: ApiError| err.map_pointers(snake_pointer);
    match operation {
        Operation::PostOne => {
            let body: PostOneBody = read_body(&object)?;
            let recorded = backend::record_session(core, row.caller.clone(), body.command, client)
                .await
                .map_err(snake)?;
            let mut result = session_json(&recorded.session, core.now());
            let extra = json!({
                "is_accepted": true,
                "session_saved": true,
                "operation": operation.as_str(),
                "status_code": 201,
                "message": "Session recorded; it is pending until its login code (mailed now) is verified.",
                "ignored_fields": body.ignored,
                "expires_at_capped": recorded.expires_at_capped,
            });
            merge(&mut result, extra);
            Ok(result)
        }
        Operation::PatchOne => {
            let body: PatchOneBody = read_body(&object)?;
            let session = backend::change_session(core, body.command, client)
                .await
                .map_err(snake)?;
            let mut result = session_json(&session, core.now());
            merge(
                &mut result,
                json!({
                    "is_accepted": true,
                    "session_saved": true,
                    "operation": operation.as_str(),
                    "status_code": 200,
                    "message": "Session changed.",
                    "ignored_fields": body.ignored,
                }),
            );
            Ok(result)
        }
        Operation::ValidateLogin => {
            if let Some(password) = queue::open_secret(core, row)? {
                object.insert(SECRET_FIELD.to_owned(), Value::String(password));
            }
            let ValidateLoginBody(input) = read_body(&object)?;
            let valid = backend::validate_login(core, input, client)
                .await
                .map_err(snake)?;
            let mut result = session_json(&valid.session, core.now());
            merge(
                &mut result,
                json!({
                    "is_accepted": true,
                    "is_valid": true,
                    "session_saved": true,
                    "operation": operation.as_str(),
                    "status_code": 200,
                    "message": "Login valid; the login code was mailed. Verify it to finish the second factor.",
                    "entity_number": valid.entity.entity_number,
                    "employee_number": valid.user.employee_number,
                    "employee_id": valid.user.id,
                    "display_name": valid.user.display_name,
                    "application_name": valid.application.as_ref().map(|a| a.application_name.clone()),
                }),
            );
            Ok(result)
        }
    }
}

fn merge(into: &mut Value, extra: Value) {
    if let (Value::Object(into), Value::Object(extra)) = (into, extra) {
        into.extend(extra);
    }
}

/// Processes one claimed request and records its outcome. Returns whether
/// it finished (not put back for a retry).
async fn handle(core: &Core, row: RequestRow, owner: &str) -> bool {
    let started = Instant::now();
    let processed = process(core, &row).await;
    let now = core.now();
    let attempt = row.attempts + 1;
    let max_attempts = core.settings.asynchronous.max_attempts;
    let outcome = match processed {
        Ok(result) => Outcome {
            status: SUCCEEDED,
            result,
            error: None,
        },
        Err(err) if err.is_transient() && attempt < max_attempts => {
            let reason = err
                .internal_cause()
                .unwrap_or("transient failure")
                .to_owned();
            tracing::warn!(request_id = %row.id, attempt, error = %reason, "asynchronous request failed; will retry");
            let next = now + backoff(1, attempt);
            let (id, owner) = (row.id.clone(), owner.to_owned());
            if let Err(err) = core
                .db
                .write(move |conn| {
                    Ok::<_, ApiError>(rows::retry(conn, &id, &owner, &reason, next, now)?)
                })
                .await
            {
                tracing::warn!(error = %err, "recording a retry failed; the lease will run out");
            }
            return false;
        }
        Err(err) => {
            if err.is_transient() {
                tracing::error!(request_id = %row.id, attempt, error = %err, "asynchronous request failed for good");
            }
            failure(&row, &err)
        }
    };
    let (id, owner, status) = (row.id.clone(), owner.to_owned(), outcome.status);
    let result = outcome.result.to_string();
    let error = outcome.error.map(|e| e.to_string());
    let recorded = core
        .db
        .write(move |conn| {
            Ok::<_, ApiError>(rows::finish(
                conn,
                &id,
                &owner,
                status,
                Some(&result),
                error.as_deref(),
                now,
            )?)
        })
        .await;
    match recorded {
        Ok(true) => {
            let waited = (now - row.created_at).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::counter!("latchkey_async_requests_finished_total", "operation" => row.operation.clone(), "outcome" => status)
                .increment(1);
            metrics::histogram!("latchkey_async_request_seconds", "operation" => row.operation.clone())
                .record(waited);
            tracing::debug!(request_id = %row.id, operation = %row.operation, status, took_ms = started.elapsed().as_millis() as u64, "asynchronous request finished");
            core.requests.finished.notify_waiters();
            true
        }
        Ok(false) => {
            tracing::warn!(request_id = %row.id, "lease lost before the outcome was recorded");
            false
        }
        Err(err) => {
            tracing::warn!(request_id = %row.id, error = %err, "recording an outcome failed; the lease will run out");
            false
        }
    }
}

/// One pass: claims due requests and processes them. Returns how many
/// were claimed.
pub async fn process_due(core: &Core) -> Result<usize, ApiError> {
    let owner = Uuid::new_v4().to_string();
    let now = core.now();
    let claim_owner = owner.clone();
    let claimed: Vec<RequestRow> = core
        .db
        .write(move |conn| {
            Ok::<_, ApiError>(rows::claim_due(
                conn,
                now,
                &claim_owner,
                now + LEASE,
                BATCH,
            )?)
        })
        .await?;
    let count = claimed.len();
    futures_util::stream::iter(claimed)
        .map(|row| handle(core, row, &owner))
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<bool>>()
        .await;
    Ok(count)
}

/// Deletes finished requests older than the retention, and publishes the
/// queue's depth and its oldest waiting request's age.
async fn housekeeping(core: &Core) -> Result<(), ApiError> {
    let now = core.now();
    let before: NaiveDateTime = now - Duration::seconds(core.settings.asynchronous.retention_secs);
    let (pruned, (depth, oldest)) = core
        .db
        .write(move |conn| Ok::<_, ApiError>((rows::prune(conn, before)?, rows::queue(conn)?)))
        .await?;
    if pruned > 0 {
        tracing::debug!(pruned, "finished asynchronous requests pruned");
    }
    publish_queue(depth, oldest, now);
    Ok(())
}

fn publish_queue(depth: i64, oldest: Option<NaiveDateTime>, now: NaiveDateTime) {
    metrics::gauge!("latchkey_async_queue_depth").set(depth as f64);
    let age = oldest.map_or(0.0, |at| {
        (now - at).num_milliseconds().max(0) as f64 / 1000.0
    });
    metrics::gauge!("latchkey_async_oldest_waiting_seconds").set(age);
}

/// Runs passes until `stop` turns true: at once when a request is accepted
/// on this node, else every `LATCHKEY_ASYNC_POLL_MS` (requests accepted by
/// other nodes, retries, and leases of dead nodes run out).
pub fn spawn_worker(core: web::Data<Core>, mut stop: watch::Receiver<bool>) {
    let poll = StdDuration::from_millis(core.settings.asynchronous.poll_interval_ms);
    tokio::spawn(async move {
        let mut last_housekeeping: Option<Instant> = None;
        loop {
            if *stop.borrow() {
                break;
            }
            let accepted = core.requests.accepted.notified();
            // A pass that found work looks again at once: finishing a
            // request may have made its session's next one due.
            let worked = match process_due(&core).await {
                Ok(claimed) => claimed > 0,
                Err(err) => {
                    tracing::warn!(error = %err, "asynchronous request pass failed");
                    false
                }
            };
            if last_housekeeping.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                if let Err(err) = housekeeping(&core).await {
                    tracing::warn!(error = %err, "pruning asynchronous requests failed");
                }
                last_housekeeping = Some(Instant::now());
            }
            if worked {
                continue;
            }
            tokio::select! {
                _ = accepted => {}
                _ = tokio::time::sleep(poll) => {}
                _ = stop.changed() => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::snake_pointer;

    #[test]
    fn engine_pointers_in_snake_case() {
        assert_eq!(
            snake_pointer("/applicationName").as_deref(),
            Some("/application_name")
        );
        assert_eq!(snake_pointer("/sessionId").as_deref(), Some("/session_id"));
        assert_eq!(snake_pointer("/expires_at"), None);
    }
}
