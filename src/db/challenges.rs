use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::DbConnection;
use super::schema::otp_challenges;

pub const LOGIN: &str = "login";
pub const ACCOUNT: &str = "account";

#[derive(Debug, Clone, Queryable, Insertable)]
#[diesel(table_name = otp_challenges)]
pub struct ChallengeRow {
    pub id: String,
    pub user_id: String,
    pub session_id: Option<String>,
    pub purpose: String,
    pub code_hmac: Vec<u8>,
    pub created_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    pub attempts: i32,
    pub max_attempts: i32,
    pub consumed_at: Option<NaiveDateTime>,
    pub burned_at: Option<NaiveDateTime>,
}

/// The session's challenges of `purposes` (at most one per purpose: a new
/// code replaces the old row), in the order of `purposes`; one query.
pub fn find_all(
    conn: &mut DbConnection,
    session_id: &str,
    purposes: &[&str],
) -> QueryResult<Vec<ChallengeRow>> {
    let mut rows: Vec<ChallengeRow> = otp_challenges::table
        .filter(otp_challenges::session_id.eq(session_id))
        .filter(otp_challenges::purpose.eq_any(purposes))
        .load(conn)?;
    rows.sort_by_key(|row| purposes.iter().position(|p| *p == row.purpose));
    Ok(rows)
}

/// Replaces the session's challenge of the row's purpose: one upsert on
/// the (session_id, purpose) key, the row's id included (a code's digest
/// is bound to its row's id). A row without a session is inserted.
pub fn replace(conn: &mut DbConnection, row: &ChallengeRow) -> QueryResult<()> {
    use diesel::upsert::excluded;
    use otp_challenges::dsl as c;
    let upsert = diesel::insert_into(otp_challenges::table)
        .values(row)
        .on_conflict((c::session_id, c::purpose))
        .do_update()
        .set((
            c::id.eq(excluded(c::id)),
            c::user_id.eq(excluded(c::user_id)),
            c::code_hmac.eq(excluded(c::code_hmac)),
            c::created_at.eq(excluded(c::created_at)),
            c::expires_at.eq(excluded(c::expires_at)),
            c::attempts.eq(excluded(c::attempts)),
            c::max_attempts.eq(excluded(c::max_attempts)),
            c::consumed_at.eq(excluded(c::consumed_at)),
            c::burned_at.eq(excluded(c::burned_at)),
        ));
    // diesel's MultiConnection has no ON CONFLICT: each backend runs it.
    match conn {
        DbConnection::Postgresql(pg) => upsert.execute(pg),
        DbConnection::Sqlite(sqlite) => upsert.execute(sqlite),
    }
    .map(drop)
}

/// Counts one wrong try on a live challenge and burns it when the count
/// reaches its limit. Both are conditional updates on the row as it is in
/// the database, not on a copy read earlier: a slower request cannot write
/// an older count over a newer one, nor un-burn a burned code. Returns
/// whether this try burned the code.
pub fn record_failure(conn: &mut DbConnection, id: &str, now: NaiveDateTime) -> QueryResult<bool> {
    let live = otp_challenges::table
        .find(id)
        .filter(otp_challenges::consumed_at.is_null())
        .filter(otp_challenges::burned_at.is_null());
    diesel::update(live)
        .set(otp_challenges::attempts.eq(otp_challenges::attempts + 1))
        .execute(conn)?;
    diesel::update(live.filter(otp_challenges::attempts.ge(otp_challenges::max_attempts)))
        .set(otp_challenges::burned_at.eq(now))
        .execute(conn)
        .map(|n| n == 1)
}

/// Marks the code used; only a live row changes, so a code works once even
/// when two requests race.
pub fn consume(conn: &mut DbConnection, id: &str, now: NaiveDateTime) -> QueryResult<bool> {
    diesel::update(
        otp_challenges::table
            .find(id)
            .filter(otp_challenges::consumed_at.is_null())
            .filter(otp_challenges::burned_at.is_null()),
    )
    .set(otp_challenges::consumed_at.eq(now))
    .execute(conn)
    .map(|n| n == 1)
}
