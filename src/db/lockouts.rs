use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::login_lockouts;
use super::{DbConnection, prepared};

/// Password failures of one user from one source. Every access runs under
/// the user's row lock, which serialises them.
#[derive(Debug, Clone, Queryable, Insertable)]
#[diesel(table_name = login_lockouts)]
#[diesel(treat_none_as_default_value = false)]
pub struct LockoutRow {
    pub user_id: String,
    pub source: String,
    pub failed: i32,
    pub failed_since: Option<NaiveDateTime>,
    pub locked_until: Option<NaiveDateTime>,
}

pub fn find(
    conn: &mut DbConnection,
    user_id: &str,
    source: &str,
) -> QueryResult<Option<LockoutRow>> {
    login_lockouts::table
        .find((user_id, source))
        .get_result(conn)
        .optional()
}

/// Stores the row (insert or update).
pub fn save(conn: &mut DbConnection, row: &LockoutRow) -> QueryResult<()> {
    let updated = prepared::update(login_lockouts::table.find((&row.user_id, &row.source)))
        .set((
            login_lockouts::failed.eq(row.failed),
            login_lockouts::failed_since.eq(row.failed_since),
            login_lockouts::locked_until.eq(row.locked_until),
        ))
        .execute(conn)?;
    if updated == 0 {
        diesel::insert_into(login_lockouts::table)
            .values(row)
            .execute(conn)?;
    }
    Ok(())
}

/// Forgets every source's failures and locks of the user.
pub fn clear_user(conn: &mut DbConnection, user_id: &str) -> QueryResult<usize> {
    diesel::delete(login_lockouts::table.filter(login_lockouts::user_id.eq(user_id))).execute(conn)
}
