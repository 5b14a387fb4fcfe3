//! The admin view of the mail outbox.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Core, Page, Paged, parse_id, to_utc};
use crate::db::outbox::{self as rows, OutboxRow};
use crate::error::ApiError;

/// An outbox row without its bodies.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboxEntry {
    pub id: String,
    pub kind: String,
    pub recipient: String,
    pub subject: String,
    pub message_id: String,
    /// pending, sent or dead.
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

impl From<OutboxRow> for OutboxEntry {
    fn from(row: OutboxRow) -> Self {
        Self {
            id: row.id,
            kind: row.kind,
            recipient: row.recipient,
            subject: row.subject,
            message_id: row.message_id,
            status: row.status,
            attempts: row.attempts,
            next_attempt_at: to_utc(row.next_attempt_at),
            last_error: row.last_error,
            created_at: to_utc(row.created_at),
            sent_at: row.sent_at.map(to_utc),
        }
    }
}

pub async fn list(
    core: &Core,
    status: Option<String>,
    page: Page,
) -> Result<Paged<OutboxEntry>, ApiError> {
    core.db
        .run(move |conn| {
            let (items, total) = rows::list(conn, status.as_deref(), page.limit, page.offset)?;
            Ok(Paged {
                items: items.into_iter().map(OutboxEntry::from).collect(),
                total,
                page,
            })
        })
        .await
}

/// Puts a dead mail back in the queue, due now.
pub async fn retry(core: &Core, raw_id: &str) -> Result<OutboxEntry, ApiError> {
    let id = parse_id(raw_id, "outbox entry")?;
    let row = core
        .db
        .run({
            let id = id.clone();
            move |conn| {
                rows::find(conn, &id)?.ok_or_else(|| {
                    ApiError::not_found(format!("There is no outbox entry with id {id:?}."))
                })
            }
        })
        .await?;
    if row.status != rows::DEAD {
        return Err(ApiError::conflict(format!(
            "Only a dead mail can be retried; this one is {}.",
            row.status
        )));
    }
    core.mailer.check_retry(&row)?;
    let now = core.now();
    let entry = core
        .db
        .write(move |conn| {
            if !rows::requeue(conn, &id, now)? {
                return Err(ApiError::conflict(
                    "The mail changed meanwhile; read it again.",
                ));
            }
            rows::find(conn, &id)?
                .map(OutboxEntry::from)
                .ok_or_else(|| ApiError::not_found("The mail was deleted."))
        })
        .await?;
    core.mailer.wake();
    Ok(entry)
}
