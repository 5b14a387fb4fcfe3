use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{sessions, users};
use super::users::UserRow;
use super::{DbConnection, prepared};

#[derive(Debug, Clone, Queryable, Insertable)]
#[diesel(table_name = sessions)]
#[diesel(treat_none_as_default_value = false)]
pub struct SessionRow {
    pub id: String,
    pub user_id: String,
    pub entity_id: String,
    pub application_id: Option<String>,
    pub status: String,
    pub passed_login_otp: bool,
    pub password_verified_at: Option<NaiveDateTime>,
    pub otp_email_verified_at: Option<NaiveDateTime>,
    pub totp_verified_at: Option<NaiveDateTime>,
    pub metadata: String,
    pub user_agent_ip: Option<String>,
    pub user_agent_description: Option<String>,
    pub token_id: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    pub verified_at: Option<NaiveDateTime>,
    pub failure_code: Option<String>,
    pub failure_reason: Option<String>,
    pub sequence: i64,
    pub user_agent_fingerprint_id: Option<String>,
    /// JSON object: header name -> list of values.
    pub user_agent_header: Option<String>,
    /// Who created the session: an admin token's subject, or the user.
    pub creator: Option<String>,
    /// The field of the user's entity or application a trusted backend
    /// bound the session to (seed 001 `session_entity_field`), and its value.
    pub entity_field: Option<String>,
    pub entity_field_value: Option<String>,
    pub mobile_application_id: Option<String>,
    pub desktop_application_id: Option<String>,
    /// A JSON object a trusted backend keeps with the session.
    pub context: Option<String>,
}

/// Every change bumps `sequence` by one; `None` leaves a column alone.
#[derive(Debug, Default, Clone, AsChangeset)]
#[diesel(table_name = sessions)]
pub struct SessionChanges {
    pub status: Option<String>,
    pub passed_login_otp: Option<bool>,
    pub password_verified_at: Option<Option<NaiveDateTime>>,
    pub otp_email_verified_at: Option<Option<NaiveDateTime>>,
    pub totp_verified_at: Option<Option<NaiveDateTime>>,
    pub metadata: Option<String>,
    pub token_id: Option<Option<String>>,
    pub expires_at: Option<NaiveDateTime>,
    pub verified_at: Option<Option<NaiveDateTime>>,
    pub failure_code: Option<Option<String>>,
    pub failure_reason: Option<Option<String>>,
    pub entity_field: Option<Option<String>>,
    pub entity_field_value: Option<Option<String>>,
    pub mobile_application_id: Option<Option<String>>,
    pub desktop_application_id: Option<Option<String>>,
}

pub fn insert(conn: &mut DbConnection, row: &SessionRow) -> QueryResult<()> {
    diesel::insert_into(sessions::table)
        .values(row)
        .execute(conn)
        .map(drop)
}

pub fn find(conn: &mut DbConnection, id: &str) -> QueryResult<Option<SessionRow>> {
    sessions::table.find(id).get_result(conn).optional()
}

/// Reads the session and, on PostgreSQL, locks its row (concurrent changes
/// to one session run one after the other).
pub fn find_for_update(conn: &mut DbConnection, id: &str) -> QueryResult<Option<SessionRow>> {
    find_for_update!(conn, sessions::table, id)
}

/// The session and its user in one statement, both rows locked on
/// PostgreSQL, session first, then user (the order every command that
/// locks both takes; see [`lock_live_of_user`]). A check of a code needs
/// both; this saves a round trip.
pub fn find_with_user_for_update(
    conn: &mut DbConnection,
    id: &str,
) -> QueryResult<Option<(SessionRow, UserRow)>> {
    let joined = sessions::table
        .inner_join(users::table)
        .filter(sessions::id.eq(id));
    match conn {
        DbConnection::Postgresql(pg) => joined.for_update().get_result(pg).optional(),
        DbConnection::Sqlite(_) => joined.get_result(conn).optional(),
    }
}

/// The user's live (pending or verified) sessions.
#[diesel::dsl::auto_type(no_type_alias)]
fn live_of_user<'a>(user_id: &'a str) -> _ {
    let live: [&'static str; 2] = ["pending", "verified"];
    sessions::table
        .filter(sessions::user_id.eq(user_id))
        .filter(sessions::status.eq_any(live))
}

/// Locks the user's live sessions on PostgreSQL (in id order), before a
/// command that locks the user and then ends them: a code check locks its
/// session and then the user, so taking the user first could deadlock
/// with it. Account changes of one user first queue on a transaction-level
/// advisory lock of the user: otherwise a session created by a login while
/// one change waits for the user row could be locked by a second change
/// and updated by the first, a deadlock again. SQLite's single writer needs
/// no lock.
pub fn lock_live_of_user(conn: &mut DbConnection, user_id: &str) -> QueryResult<()> {
    if let DbConnection::Postgresql(pg) = conn {
        diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext('account change ' || $1))")
            .bind::<diesel::sql_types::Text, _>(user_id)
            .execute(pg)?;
        live_of_user(user_id)
            .select(sessions::id)
            .order(sessions::id)
            .for_update()
            .load::<String>(pg)?;
    }
    Ok(())
}

/// Ends every live (pending or verified) session of the user: their tokens
/// stop working at once. Returns the ids of the sessions ended.
pub fn revoke_all_of_user(
    conn: &mut DbConnection,
    user_id: &str,
    now: NaiveDateTime,
) -> QueryResult<Vec<String>> {
    let ids: Vec<String> = live_of_user(user_id).select(sessions::id).load(conn)?;
    diesel::update(sessions::table.filter(sessions::id.eq_any(&ids)))
        .set((
            sessions::status.eq("revoked"),
            sessions::token_id.eq(None::<String>),
            sessions::sequence.eq(sessions::sequence + 1),
            sessions::updated_at.eq(now),
        ))
        .execute(conn)?;
    Ok(ids)
}

/// Deletes a session (one whose creation failed a check); its challenges go
/// with it.
pub fn delete(conn: &mut DbConnection, id: &str) -> QueryResult<usize> {
    diesel::delete(sessions::table.find(id)).execute(conn)
}

/// Applies `changes`, bumps the sequence and stamps `updated_at`.
pub fn update(
    conn: &mut DbConnection,
    id: &str,
    changes: &SessionChanges,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    prepared::update(sessions::table.find(id))
        .set((
            changes,
            sessions::sequence.eq(sessions::sequence + 1),
            sessions::updated_at.eq(now),
        ))
        .execute(conn)
}

/// Applies `changes` (as [`update`]) only while the session's status is
/// not `status`; whether it did.
pub fn update_unless_status(
    conn: &mut DbConnection,
    id: &str,
    changes: &SessionChanges,
    status: &str,
    now: NaiveDateTime,
) -> QueryResult<bool> {
    prepared::update(sessions::table.find(id).filter(sessions::status.ne(status)))
        .set((
            changes,
            sessions::sequence.eq(sessions::sequence + 1),
            sessions::updated_at.eq(now),
        ))
        .execute(conn)
        .map(|n| n == 1)
}

pub fn list(
    conn: &mut DbConnection,
    user_id: Option<&str>,
    limit: i64,
    offset: i64,
) -> QueryResult<(Vec<SessionRow>, i64)> {
    let mut rows = sessions::table.into_boxed();
    let mut count = sessions::table.into_boxed();
    if let Some(user_id) = user_id {
        rows = rows.filter(sessions::user_id.eq(user_id.to_owned()));
        count = count.filter(sessions::user_id.eq(user_id.to_owned()));
    }
    let rows = rows
        .order((sessions::created_at.desc(), sessions::id.asc()))
        .limit(limit)
        .offset(offset)
        .load(conn)?;
    let total = count.count().get_result(conn)?;
    Ok((rows, total))
}

/// Filters of a session search; every given one must hold.
#[derive(Debug, Default, Clone)]
pub struct SessionSearch {
    /// `Some(empty)` matches no session.
    pub ids: Option<Vec<String>>,
    pub user_id: Option<String>,
    pub created_after: Option<NaiveDateTime>,
    pub created_before: Option<NaiveDateTime>,
    pub created_at: Option<NaiveDateTime>,
    pub expires_after: Option<NaiveDateTime>,
    pub expires_before: Option<NaiveDateTime>,
    pub expires_at: Option<NaiveDateTime>,
    pub creator: Option<String>,
    /// The creator is the caller (resolved by the engine into `creator`).
    pub creator_is_caller: bool,
    pub user_agent_fingerprint_id: Option<String>,
    /// The fingerprint is the caller's session's (resolved by the engine).
    pub fingerprint_of_caller: bool,
    pub ascending: bool,
}

pub fn search(
    conn: &mut DbConnection,
    filter: &SessionSearch,
    limit: i64,
    offset: i64,
) -> QueryResult<(Vec<SessionRow>, i64)> {
    // An id filter that names no id matches nothing (said here, not left to
    // how each backend renders an empty `IN`).
    if filter.ids.as_ref().is_some_and(Vec::is_empty) {
        return Ok((Vec::new(), 0));
    }
    // The same filters for the page and for the count.
    let filtered = || {
        let mut query = sessions::table.into_boxed();
        if let Some(ids) = &filter.ids {
            query = query.filter(sessions::id.eq_any(ids.clone()));
        }
        if let Some(user_id) = &filter.user_id {
            query = query.filter(sessions::user_id.eq(user_id.clone()));
        }
        if let Some(after) = filter.created_after {
            query = query.filter(sessions::created_at.gt(after));
        }
        if let Some(before) = filter.created_before {
            query = query.filter(sessions::created_at.lt(before));
        }
        if let Some(at) = filter.created_at {
            query = query.filter(sessions::created_at.eq(at));
        }
        if let Some(after) = filter.expires_after {
            query = query.filter(sessions::expires_at.gt(after));
        }
        if let Some(before) = filter.expires_before {
            query = query.filter(sessions::expires_at.lt(before));
        }
        if let Some(at) = filter.expires_at {
            query = query.filter(sessions::expires_at.eq(at));
        }
        if let Some(creator) = &filter.creator {
            query = query.filter(sessions::creator.eq(creator.clone()));
        }
        if let Some(fingerprint) = &filter.user_agent_fingerprint_id {
            query = query.filter(sessions::user_agent_fingerprint_id.eq(fingerprint.clone()));
        }
        query
    };
    let page = if filter.ascending {
        filtered().order((sessions::created_at.asc(), sessions::id.asc()))
    } else {
        filtered().order((sessions::created_at.desc(), sessions::id.desc()))
    };
    let rows = page.limit(limit).offset(offset).load(conn)?;
    let total = filtered().count().get_result(conn)?;
    Ok((rows, total))
}
