//! Accepted requests of the asynchronous face: written when the request is
//! accepted (before its 202), claimed by a worker on any node with a
//! lease, then finished with their outcome, or retried.

use chrono::NaiveDateTime;
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::Bool;

use super::schema::one_requests;
use super::{DbConnection, prepared};

pub const ACCEPTED: &str = "accepted";
pub const PROCESSING: &str = "processing";
pub const SUCCEEDED: &str = "succeeded";
pub const FAILED: &str = "failed";

/// The statuses of a request not finished yet.
const UNFINISHED: [&str; 2] = [ACCEPTED, PROCESSING];

#[derive(Debug, Clone, Queryable, Insertable)]
#[diesel(table_name = one_requests)]
#[diesel(treat_none_as_default_value = false)]
pub struct RequestRow {
    pub id: String,
    pub operation: String,
    pub session_id: String,
    /// The request's place among its session's requests ([`next_sequence`]).
    pub sequence: i64,
    pub status: String,
    /// The parsed body, JSON, without secrets.
    pub command: String,
    /// validate-login's password, sealed with the row id as associated data.
    pub sealed_secret: Option<Vec<u8>>,
    pub caller: String,
    pub idempotency_key: Option<String>,
    pub body_digest: Vec<u8>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub attempts: i32,
    pub next_attempt_at: NaiveDateTime,
    pub lease_owner: Option<String>,
    pub lease_until: Option<NaiveDateTime>,
    pub last_error: Option<String>,
    pub result: Option<String>,
    pub error: Option<String>,
    pub token_issued_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub finished_at: Option<NaiveDateTime>,
}

impl RequestRow {
    pub fn is_finished(&self) -> bool {
        !UNFINISHED.contains(&self.status.as_str())
    }
}

#[derive(diesel::QueryableByName)]
struct Numbered {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    last_sequence: i64,
}

/// The next number of the session's requests, in one upsert that locks the
/// session's counter row until the caller's transaction ends: a request of
/// the same session accepted beside this one waits, takes the next number
/// and commits after it. (Numbering by time could not order them: a
/// request stamped first may commit last, and be claimed after a later one.)
pub fn next_sequence(conn: &mut DbConnection, session_id: &str) -> QueryResult<i64> {
    const UPSERT: &str = "INSERT INTO one_request_sessions (session_id, last_sequence) VALUES ({1}, 1) \
         ON CONFLICT (session_id) DO UPDATE SET last_sequence = one_request_sessions.last_sequence + 1 \
         RETURNING last_sequence";
    let numbered: Numbered = match conn {
        DbConnection::Postgresql(pg) => diesel::sql_query(UPSERT.replace("{1}", "$1"))
            .bind::<diesel::sql_types::Text, _>(session_id)
            .get_result(pg)?,
        DbConnection::Sqlite(sqlite) => diesel::sql_query(UPSERT.replace("{1}", "?"))
            .bind::<diesel::sql_types::Text, _>(session_id)
            .get_result(sqlite)?,
    };
    Ok(numbered.last_sequence)
}

pub fn insert(conn: &mut DbConnection, row: &RequestRow) -> QueryResult<()> {
    diesel::insert_into(one_requests::table)
        .values(row)
        .execute(conn)
        .map(drop)
}

/// Inserts the request unless a concurrent one took its Idempotency-Key
/// first (false then). Under a savepoint: on PostgreSQL the unique
/// violation would abort the caller's whole transaction, which still has
/// to read the winner.
pub fn insert_unless_key_taken(conn: &mut DbConnection, row: &RequestRow) -> QueryResult<bool> {
    use diesel::Connection;
    match conn.transaction(|conn| insert(conn, row)) {
        Ok(()) => Ok(true),
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        )) if row.idempotency_key.is_some() => Ok(false),
        Err(err) => Err(err),
    }
}

pub fn find(conn: &mut DbConnection, id: &str) -> QueryResult<Option<RequestRow>> {
    one_requests::table.find(id).get_result(conn).optional()
}

/// The request `caller` made with `Idempotency-Key: key` for `operation`.
pub fn find_by_idempotency_key(
    conn: &mut DbConnection,
    caller: &str,
    operation: &str,
    key: &str,
) -> QueryResult<Option<RequestRow>> {
    one_requests::table
        .filter(one_requests::caller.eq(caller))
        .filter(one_requests::operation.eq(operation))
        .filter(one_requests::idempotency_key.eq(key))
        .first(conn)
        .optional()
}

/// The latest request of `operation` for the session, for reading a
/// session that exists only as a request so far.
pub fn latest_for_session(
    conn: &mut DbConnection,
    session_id: &str,
    operation: &str,
) -> QueryResult<Option<RequestRow>> {
    one_requests::table
        .filter(one_requests::session_id.eq(session_id))
        .filter(one_requests::operation.eq(operation))
        .order(one_requests::sequence.desc())
        .first(conn)
        .optional()
}

diesel::alias!(one_requests as earlier: EarlierRequests);

/// Leases up to `limit` due requests to `owner` until `lease_until`, marks
/// them processing and returns them, oldest first. A request is due when
/// its time has come, no live lease holds it, and no earlier request of the
/// same session (by [`next_sequence`]) is unfinished: one session's
/// requests run one at a time, in the order they were accepted.
/// On PostgreSQL the candidates are locked `FOR UPDATE SKIP LOCKED`, so
/// workers on other nodes claim other rows; on SQLite the caller's write
/// transaction serialises claimers.
pub fn claim_due(
    conn: &mut DbConnection,
    now: NaiveDateTime,
    owner: &str,
    lease_until: NaiveDateTime,
    limit: i64,
) -> QueryResult<Vec<RequestRow>> {
    // A session's first waiting request, by a correlated subquery: the
    // planner runs it per candidate with the session id bound, an index
    // probe each. As NOT EXISTS it became an anti-join that, with
    // statistics taken while every request was finished, was planned as a
    // nested loop without that bound: 2.7 s per claim at 10 000 waiting
    // requests (patches processed at 57/s), 25–61 ms now. The status list is
    // written out so that the partial index one_requests_waiting applies.
    let first_waiting = earlier
        .select(earlier.field(one_requests::sequence))
        .filter(
            earlier
                .field(one_requests::session_id)
                .eq(one_requests::session_id),
        )
        .filter(sql::<Bool>(
            "\"earlier\".\"status\" IN ('accepted', 'processing')",
        ))
        .order(earlier.field(one_requests::sequence).asc())
        .limit(1)
        .single_value();
    let candidates = one_requests::table
        .select(one_requests::id)
        .filter(one_requests::status.eq_any(UNFINISHED))
        .filter(one_requests::next_attempt_at.le(now))
        .filter(
            one_requests::lease_until
                .is_null()
                .or(one_requests::lease_until.lt(now)),
        )
        .filter(one_requests::sequence.nullable().eq(first_waiting))
        .order((one_requests::created_at.asc(), one_requests::id.asc()))
        .limit(limit);
    let ids: Vec<String> = match conn {
        DbConnection::Postgresql(pg) => candidates.for_update().skip_locked().load(pg)?,
        DbConnection::Sqlite(_) => candidates.load(conn)?,
    };
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    prepared::update(one_requests::table.filter(one_requests::id.eq_any(&ids)))
        .set((
            one_requests::status.eq(PROCESSING),
            one_requests::lease_owner.eq(owner),
            one_requests::lease_until.eq(lease_until),
            one_requests::updated_at.eq(now),
        ))
        .execute(conn)?;
    one_requests::table
        .filter(one_requests::id.eq_any(&ids))
        .order((one_requests::created_at.asc(), one_requests::id.asc()))
        .load(conn)
}

/// Records a leased request's outcome and erases its sealed secret.
/// Returns false when the lease was lost (another worker took the request
/// after the lease ran out), leaving the row alone.
pub fn finish(
    conn: &mut DbConnection,
    id: &str,
    owner: &str,
    status: &str,
    result: Option<&str>,
    error: Option<&str>,
    now: NaiveDateTime,
) -> QueryResult<bool> {
    let changed = prepared::update(
        one_requests::table
            .filter(one_requests::id.eq(id))
            .filter(one_requests::lease_owner.eq(owner)),
    )
    .set((
        one_requests::status.eq(status),
        one_requests::result.eq(result),
        one_requests::error.eq(error),
        one_requests::sealed_secret.eq(None::<Vec<u8>>),
        one_requests::attempts.eq(one_requests::attempts + 1),
        one_requests::lease_owner.eq(None::<String>),
        one_requests::lease_until.eq(None::<NaiveDateTime>),
        one_requests::updated_at.eq(now),
        one_requests::finished_at.eq(now),
    ))
    .execute(conn)?;
    Ok(changed == 1)
}

/// Puts a leased request back for another attempt at `next`.
pub fn retry(
    conn: &mut DbConnection,
    id: &str,
    owner: &str,
    reason: &str,
    next: NaiveDateTime,
    now: NaiveDateTime,
) -> QueryResult<bool> {
    let changed = prepared::update(
        one_requests::table
            .filter(one_requests::id.eq(id))
            .filter(one_requests::lease_owner.eq(owner)),
    )
    .set((
        one_requests::status.eq(ACCEPTED),
        one_requests::attempts.eq(one_requests::attempts + 1),
        one_requests::last_error.eq(reason),
        one_requests::next_attempt_at.eq(next),
        one_requests::lease_owner.eq(None::<String>),
        one_requests::lease_until.eq(None::<NaiveDateTime>),
        one_requests::updated_at.eq(now),
    ))
    .execute(conn)?;
    Ok(changed == 1)
}

/// Marks the request's session token as handed out; true only for the one
/// call that does so (a conditional update: single use under concurrency).
pub fn take_token(conn: &mut DbConnection, id: &str, now: NaiveDateTime) -> QueryResult<bool> {
    let changed = prepared::update(
        one_requests::table
            .filter(one_requests::id.eq(id))
            .filter(one_requests::status.eq(SUCCEEDED))
            .filter(one_requests::token_issued_at.is_null()),
    )
    .set(one_requests::token_issued_at.eq(now))
    .execute(conn)?;
    Ok(changed == 1)
}

/// Deletes requests finished before `before`, and the counters of
/// sessions left without requests; returns how many requests.
pub fn prune(conn: &mut DbConnection, before: NaiveDateTime) -> QueryResult<usize> {
    use super::schema::one_request_sessions;
    let pruned = diesel::delete(one_requests::table.filter(one_requests::finished_at.lt(before)))
        .execute(conn)?;
    if pruned > 0 {
        let remaining = one_requests::table.select(one_requests::session_id);
        diesel::delete(
            one_request_sessions::table.filter(one_request_sessions::session_id.ne_all(remaining)),
        )
        .execute(conn)?;
    }
    Ok(pruned)
}

/// How many requests wait (accepted or processing), and the oldest one's
/// acceptance time.
pub fn queue(conn: &mut DbConnection) -> QueryResult<(i64, Option<NaiveDateTime>)> {
    let waiting = || one_requests::table.filter(one_requests::status.eq_any(UNFINISHED));
    let depth = waiting().count().get_result(conn)?;
    let oldest = waiting()
        .select(diesel::dsl::min(one_requests::created_at))
        .get_result(conn)?;
    Ok((depth, oldest))
}
