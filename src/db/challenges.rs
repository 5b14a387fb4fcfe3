use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::otp_challenges;
use super::{DbConnection, prepared};

pub const LOGIN: &str = "login";
pub const ACCOUNT: &str = "account";

#[derive(Debug, Clone, Queryable, Insertable)]
#[diesel(table_name = otp_challenges)]
#[diesel(treat_none_as_default_value = false)]
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
    use otp_challenges::purpose;
    let of_session = otp_challenges::table.filter(otp_challenges::session_id.eq(session_id));
    // `IN (…)` is prepared anew each time on SQLite; `=` is prepared once.
    let mut rows: Vec<ChallengeRow> = match purposes {
        [] => return Ok(Vec::new()),
        [only] => of_session.filter(purpose.eq(only)).load(conn)?,
        [first, second] => of_session
            .filter(purpose.eq(first).or(purpose.eq(second)))
            .load(conn)?,
        _ => of_session.filter(purpose.eq_any(purposes)).load(conn)?,
    };
    rows.sort_by_key(|row| purposes.iter().position(|p| *p == row.purpose));
    Ok(rows)
}

/// Stores a new challenge; with `replace`, first deletes the session's
/// challenge of the same purpose (a caller that read, under the session's
/// lock, that there is none passes `false` and saves a statement). Both
/// statements are prepared once per connection; an upsert would be
/// prepared anew every time (diesel does not cache `ON CONFLICT`).
pub fn store(conn: &mut DbConnection, row: &ChallengeRow, replace: bool) -> QueryResult<()> {
    if let (true, Some(session_id)) = (replace, &row.session_id) {
        diesel::delete(
            otp_challenges::table
                .filter(otp_challenges::session_id.eq(session_id))
                .filter(otp_challenges::purpose.eq(&row.purpose)),
        )
        .execute(conn)?;
    }
    diesel::insert_into(otp_challenges::table)
        .values(row)
        .execute(conn)
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
    prepared::update(live)
        .set(otp_challenges::attempts.eq(otp_challenges::attempts + 1))
        .execute(conn)?;
    prepared::update(live.filter(otp_challenges::attempts.ge(otp_challenges::max_attempts)))
        .set(otp_challenges::burned_at.eq(now))
        .execute(conn)
        .map(|n| n == 1)
}

/// Marks the code used; only a live row changes, so a code works once even
/// when two requests race.
pub fn consume(conn: &mut DbConnection, id: &str, now: NaiveDateTime) -> QueryResult<bool> {
    prepared::update(
        otp_challenges::table
            .find(id)
            .filter(otp_challenges::consumed_at.is_null())
            .filter(otp_challenges::burned_at.is_null()),
    )
    .set(otp_challenges::consumed_at.eq(now))
    .execute(conn)
    .map(|n| n == 1)
}
