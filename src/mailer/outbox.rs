//! The delivery worker: claims due outbox rows with a lease, sends them,
//! marks them sent, or schedules a retry with exponential backoff and
//! jitter until the attempt limit, then marks them dead.

use std::time::Duration as StdDuration;

use actix_web::web;
use chrono::{Duration, NaiveDateTime};
use futures_util::StreamExt;
use tokio::sync::watch;
use uuid::Uuid;

use crate::db::outbox::{self as rows, OutboxRow};
use crate::error::ApiError;
use crate::services::Core;

/// Rows claimed per pass.
const BATCH: i64 = 32;
/// Sends in flight at once per worker.
const CONCURRENCY: usize = 8;
/// How long a claim holds. A worker that dies mid-send loses its lease after
/// this, and the row is sent once more (with the same Message-ID).
const LEASE: Duration = Duration::seconds(60);
/// The longest wait between two attempts.
const MAX_BACKOFF_SECS: i64 = 3600;

/// The wait before attempt `attempt + 1`: base × 2^(attempt-1), capped, ±25%
/// jitter so that mails failed together do not retry together.
pub fn backoff(base_secs: u64, attempt: i32) -> Duration {
    let exponent = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(20);
    let base = i64::try_from(base_secs).unwrap_or(i64::MAX / 4);
    let millis = base
        .saturating_mul(1000)
        .saturating_mul(1_i64 << exponent)
        .min(MAX_BACKOFF_SECS * 1000);
    let jitter: f64 = rand::random_range(0.75..1.25);
    Duration::milliseconds((millis as f64 * jitter) as i64)
}

/// One pass: claims up to a batch of due rows and delivers them. Returns
/// how many rows were claimed.
pub async fn deliver_due(core: &Core) -> Result<usize, ApiError> {
    let owner = Uuid::new_v4().to_string();
    let now = core.now();
    let claim_owner = owner.clone();
    let rows: Vec<OutboxRow> = core
        .db
        .write(move |conn| {
            rows::claim_due(conn, now, &claim_owner, now + LEASE, BATCH).map_err(ApiError::from)
        })
        .await?;
    let claimed = rows.len();
    futures_util::stream::iter(rows)
        .for_each_concurrent(CONCURRENCY, |row| deliver_one(core, row, &owner))
        .await;
    Ok(claimed)
}

async fn deliver_one(core: &Core, row: OutboxRow, owner: &str) {
    let outcome = match core.mailer.message(&row) {
        Ok(message) => core.mailer.transport().send(message).await,
        Err(reason) => Err(super::transport::SendError {
            permanent: true,
            message: reason,
        }),
    };
    let now: NaiveDateTime = core.now();
    let attempt = row.attempts + 1;
    let (id, owner) = (row.id.clone(), owner.to_owned());
    let result = match outcome {
        Ok(()) => {
            metrics::counter!("latchkey_outbox_deliveries_total", "kind" => row.kind.clone())
                .increment(1);
            tracing::debug!(outbox_id = %row.id, kind = %row.kind, attempt, "mail delivered");
            core.db
                .write(move |conn| Ok::<_, ApiError>(rows::mark_sent(conn, &id, &owner, now)?))
                .await
        }
        Err(err) if err.permanent || attempt >= core.settings.outbox.max_attempts => {
            metrics::counter!("latchkey_outbox_failures_total", "outcome" => "dead").increment(1);
            tracing::error!(outbox_id = %row.id, kind = %row.kind, attempt, error = %err.message, "mail is dead: giving up");
            core.db
                .write(move |conn| {
                    Ok::<_, ApiError>(rows::mark_dead(conn, &id, &owner, &err.message, now)?)
                })
                .await
        }
        Err(err) => {
            metrics::counter!("latchkey_outbox_failures_total", "outcome" => "retry").increment(1);
            let next = now + backoff(core.settings.outbox.retry_base_secs, attempt);
            tracing::warn!(outbox_id = %row.id, kind = %row.kind, attempt, retry_at = %next, error = %err.message, "mail delivery failed; will retry");
            core.db
                .write(move |conn| {
                    Ok::<_, ApiError>(rows::mark_retry(
                        conn,
                        &id,
                        &owner,
                        &err.message,
                        next,
                        now,
                    )?)
                })
                .await
        }
    };
    match result {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(outbox_id = %row.id, "lease lost before the outcome was recorded")
        }
        Err(err) => {
            tracing::warn!(outbox_id = %row.id, error = %err, "recording the delivery outcome failed")
        }
    }
}

/// Runs passes until `stop` turns true: at once when woken after an
/// enqueue, else every poll interval (retries, and rows queued by other
/// instances on the same database).
pub fn spawn_worker(core: web::Data<Core>, mut stop: watch::Receiver<bool>) {
    let wake = core.mailer.wake_signal();
    let poll = StdDuration::from_millis(core.settings.outbox.poll_interval_ms);
    tokio::spawn(async move {
        loop {
            if *stop.borrow() {
                break;
            }
            match deliver_due(&core).await {
                Ok(claimed) if claimed as i64 >= BATCH => continue,
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "outbox pass failed"),
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
                _ = stop.changed() => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::backoff;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        for attempt in 1..=7 {
            let expected = 30_000_i64 * (1 << (attempt - 1));
            let got = backoff(30, attempt).num_milliseconds();
            assert!(
                got >= expected * 3 / 4 && got <= expected * 5 / 4,
                "attempt {attempt}: {got}"
            );
        }
        assert!(backoff(30, 30).num_seconds() <= 3600 * 5 / 4);
        // Default: 8 attempts span about an hour (7 waits).
        let total: i64 = (1..=7).map(|a| 30 * (1_i64 << (a - 1))).sum();
        assert_eq!(total, 3810);
    }
}
