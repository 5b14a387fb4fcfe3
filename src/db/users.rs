use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::users;
use super::{DbConnection, prepared};

#[derive(Debug, Clone, Queryable, Insertable)]
#[diesel(table_name = users)]
#[diesel(treat_none_as_default_value = false)]
pub struct UserRow {
    pub id: String,
    pub entity_id: String,
    pub employee_number: String,
    pub login_name: String,
    pub email: Option<String>,
    pub display_name: String,
    pub preferred_language: String,
    pub password_hash: Option<String>,
    pub pin_hash: Option<String>,
    pub failed_logins: i32,
    pub failed_logins_since: Option<NaiveDateTime>,
    pub locked_until: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// Wrong second factors in the current window (their own counter: a
    /// correct password does not reset it).
    pub failed_second_factors: i32,
    pub failed_second_factors_since: Option<NaiveDateTime>,
}

/// `None` leaves a column alone; `Some(None)` clears a nullable one.
#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = users)]
pub struct UserChanges {
    pub employee_number: Option<String>,
    pub login_name: Option<String>,
    pub email: Option<Option<String>>,
    pub display_name: Option<String>,
    pub preferred_language: Option<String>,
    pub password_hash: Option<Option<String>>,
    pub updated_at: Option<NaiveDateTime>,
}

pub fn insert(conn: &mut DbConnection, row: &UserRow) -> QueryResult<()> {
    diesel::insert_into(users::table)
        .values(row)
        .execute(conn)
        .map(drop)
}

pub fn find(conn: &mut DbConnection, id: &str) -> QueryResult<Option<UserRow>> {
    users::table.find(id).get_result(conn).optional()
}

pub fn list(
    conn: &mut DbConnection,
    entity_id: Option<&str>,
    limit: i64,
    offset: i64,
) -> QueryResult<(Vec<UserRow>, i64)> {
    let mut rows = users::table.into_boxed();
    let mut count = users::table.into_boxed();
    if let Some(entity_id) = entity_id {
        rows = rows.filter(users::entity_id.eq(entity_id.to_owned()));
        count = count.filter(users::entity_id.eq(entity_id.to_owned()));
    }
    let rows = rows
        .order((users::login_name.asc(), users::id.asc()))
        .limit(limit)
        .offset(offset)
        .load(conn)?;
    let total = count.count().get_result(conn)?;
    Ok((rows, total))
}

pub fn update(conn: &mut DbConnection, id: &str, changes: &UserChanges) -> QueryResult<usize> {
    prepared::update(users::table.find(id))
        .set(changes)
        .execute(conn)
}

pub fn delete(conn: &mut DbConnection, id: &str) -> QueryResult<usize> {
    diesel::delete(users::table.find(id)).execute(conn)
}

pub fn find_by_login_name(
    conn: &mut DbConnection,
    login_name: &str,
) -> QueryResult<Option<UserRow>> {
    users::table
        .filter(users::login_name.eq(login_name))
        .get_result(conn)
        .optional()
}

pub fn find_by_entity_and_employee(
    conn: &mut DbConnection,
    entity_number: &str,
    employee_number: &str,
) -> QueryResult<Option<UserRow>> {
    use super::schema::entities;
    users::table
        .inner_join(entities::table)
        .filter(entities::entity_number.eq(entity_number))
        .filter(users::employee_number.eq(employee_number))
        .select(users::all_columns)
        .get_result(conn)
        .optional()
}

/// Stores the password/PIN failure count of the current window and the
/// lock, if any.
pub fn set_login_failures(
    conn: &mut DbConnection,
    id: &str,
    failed_logins: i32,
    since: Option<NaiveDateTime>,
    locked_until: Option<NaiveDateTime>,
) -> QueryResult<usize> {
    prepared::update(users::table.find(id))
        .set((
            users::failed_logins.eq(failed_logins),
            users::failed_logins_since.eq(since),
            users::locked_until.eq(locked_until),
        ))
        .execute(conn)
}

/// Stores the second-factor failure count of the current window and the
/// lock, if any.
pub fn set_second_factor_failures(
    conn: &mut DbConnection,
    id: &str,
    failed: i32,
    since: Option<NaiveDateTime>,
    locked_until: Option<NaiveDateTime>,
) -> QueryResult<usize> {
    prepared::update(users::table.find(id))
        .set((
            users::failed_second_factors.eq(failed),
            users::failed_second_factors_since.eq(since),
            users::locked_until.eq(locked_until),
        ))
        .execute(conn)
}

pub fn set_pin_hash(
    conn: &mut DbConnection,
    id: &str,
    pin_hash: &str,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    prepared::update(users::table.find(id))
        .set((users::pin_hash.eq(pin_hash), users::updated_at.eq(now)))
        .execute(conn)
}

/// Reads the user and, on PostgreSQL, locks the row until the transaction
/// ends (failure counting must not lose concurrent failures).
pub fn find_for_update(conn: &mut DbConnection, id: &str) -> QueryResult<Option<UserRow>> {
    find_for_update!(conn, users::table, id)
}
