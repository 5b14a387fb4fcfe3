//! The mail outbox: rows written in the transaction that causes them,
//! claimed by workers with a lease, then marked sent, retried or dead.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::outbox;
use super::{DbConnection, prepared};

pub const PENDING: &str = "pending";
pub const SENT: &str = "sent";
pub const DEAD: &str = "dead";

#[derive(Debug, Clone, Queryable, Insertable)]
#[diesel(table_name = outbox)]
#[diesel(treat_none_as_default_value = false)]
pub struct OutboxRow {
    pub id: String,
    pub kind: String,
    pub language: String,
    pub recipient: String,
    pub subject: String,
    /// The template variables (no secrets).
    pub context: String,
    /// A one-time code the mail carries, sealed; erased once sent or dead.
    pub sealed_code: Option<Vec<u8>>,
    pub message_id: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: NaiveDateTime,
    pub lease_owner: Option<String>,
    pub lease_until: Option<NaiveDateTime>,
    pub last_error: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub sent_at: Option<NaiveDateTime>,
}

pub fn insert(conn: &mut DbConnection, row: &OutboxRow) -> QueryResult<()> {
    diesel::insert_into(outbox::table)
        .values(row)
        .execute(conn)
        .map(drop)
}

pub fn find(conn: &mut DbConnection, id: &str) -> QueryResult<Option<OutboxRow>> {
    outbox::table.find(id).get_result(conn).optional()
}

/// Leases up to `limit` due rows to `owner` until `lease_until` and returns
/// them. On PostgreSQL the candidates are locked with `FOR UPDATE SKIP
/// LOCKED`, so concurrent workers on other instances claim disjoint rows; on
/// SQLite the caller's write transaction already serialises claimers.
pub fn claim_due(
    conn: &mut DbConnection,
    now: NaiveDateTime,
    owner: &str,
    lease_until: NaiveDateTime,
    limit: i64,
) -> QueryResult<Vec<OutboxRow>> {
    let due = outbox::status
        .eq(PENDING)
        .and(outbox::next_attempt_at.le(now))
        .and(
            outbox::lease_until
                .is_null()
                .or(outbox::lease_until.lt(now)),
        );
    let candidates = outbox::table
        .select(outbox::id)
        .filter(due)
        .order(outbox::next_attempt_at.asc())
        .limit(limit);
    let ids: Vec<String> = match conn {
        DbConnection::Postgresql(pg) => candidates.for_update().skip_locked().load(pg)?,
        DbConnection::Sqlite(_) => candidates.load(conn)?,
    };
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // By primary key: the locks taken above are held until the caller
    // commits. (Selecting by lease_owner had no index: a scan of every
    // row ever queued, on each pass.)
    prepared::update(outbox::table.filter(outbox::id.eq_any(&ids)))
        .set((
            outbox::lease_owner.eq(owner),
            outbox::lease_until.eq(lease_until),
        ))
        .execute(conn)?;
    outbox::table
        .filter(outbox::id.eq_any(&ids))
        .order(outbox::next_attempt_at.asc())
        .load(conn)
}

/// Marks leased rows sent and erases their sealed codes, in one statement.
/// Returns how many changed: a row whose lease was lost (another worker
/// took it after it expired) is left alone.
pub fn mark_sent(
    conn: &mut DbConnection,
    ids: &[String],
    owner: &str,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    prepared::update(
        outbox::table
            .filter(outbox::id.eq_any(ids))
            .filter(outbox::lease_owner.eq(owner)),
    )
    .set((
        outbox::status.eq(SENT),
        outbox::sent_at.eq(now),
        outbox::updated_at.eq(now),
        outbox::attempts.eq(outbox::attempts + 1),
        outbox::sealed_code.eq(None::<Vec<u8>>),
        outbox::lease_owner.eq(None::<String>),
        outbox::lease_until.eq(None::<NaiveDateTime>),
        outbox::last_error.eq(None::<String>),
    ))
    .execute(conn)
}

/// Records a failed attempt; the row is due again at `next_attempt_at`.
pub fn mark_retry(
    conn: &mut DbConnection,
    id: &str,
    owner: &str,
    error: &str,
    next_attempt_at: NaiveDateTime,
    now: NaiveDateTime,
) -> QueryResult<bool> {
    prepared::update(outbox::table.find(id).filter(outbox::lease_owner.eq(owner)))
        .set((
            outbox::attempts.eq(outbox::attempts + 1),
            outbox::next_attempt_at.eq(next_attempt_at),
            outbox::last_error.eq(error),
            outbox::updated_at.eq(now),
            outbox::lease_owner.eq(None::<String>),
            outbox::lease_until.eq(None::<NaiveDateTime>),
        ))
        .execute(conn)
        .map(|n| n == 1)
}

/// Gives up on a row: dead, with its last error, its sealed code erased.
pub fn mark_dead(
    conn: &mut DbConnection,
    id: &str,
    owner: &str,
    error: &str,
    now: NaiveDateTime,
) -> QueryResult<bool> {
    prepared::update(outbox::table.find(id).filter(outbox::lease_owner.eq(owner)))
        .set((
            outbox::status.eq(DEAD),
            outbox::attempts.eq(outbox::attempts + 1),
            outbox::last_error.eq(error),
            outbox::updated_at.eq(now),
            outbox::sealed_code.eq(None::<Vec<u8>>),
            outbox::lease_owner.eq(None::<String>),
            outbox::lease_until.eq(None::<NaiveDateTime>),
        ))
        .execute(conn)
        .map(|n| n == 1)
}

/// A dead row back to pending (its bodies are rendered at delivery).
pub fn requeue(conn: &mut DbConnection, id: &str, now: NaiveDateTime) -> QueryResult<bool> {
    prepared::update(outbox::table.find(id).filter(outbox::status.eq(DEAD)))
        .set((
            outbox::status.eq(PENDING),
            outbox::attempts.eq(0),
            outbox::next_attempt_at.eq(now),
            outbox::updated_at.eq(now),
        ))
        .execute(conn)
        .map(|n| n == 1)
}

pub fn list(
    conn: &mut DbConnection,
    status: Option<&str>,
    limit: i64,
    offset: i64,
) -> QueryResult<(Vec<OutboxRow>, i64)> {
    let mut rows = outbox::table.into_boxed();
    let mut count = outbox::table.into_boxed();
    if let Some(status) = status {
        rows = rows.filter(outbox::status.eq(status.to_owned()));
        count = count.filter(outbox::status.eq(status.to_owned()));
    }
    let rows = rows
        .order((outbox::created_at.desc(), outbox::id.asc()))
        .limit(limit)
        .offset(offset)
        .load(conn)?;
    let total = count.count().get_result(conn)?;
    Ok((rows, total))
}

/// Rows per status, for the metrics.
pub fn count_by_status(conn: &mut DbConnection) -> QueryResult<Vec<(String, i64)>> {
    outbox::table
        .group_by(outbox::status)
        .select((outbox::status, diesel::dsl::count_star()))
        .load(conn)
}

/// When the oldest pending row was created.
pub fn oldest_pending(conn: &mut DbConnection) -> QueryResult<Option<NaiveDateTime>> {
    outbox::table
        .filter(outbox::status.eq(PENDING))
        .select(diesel::dsl::min(outbox::created_at))
        .get_result(conn)
}
