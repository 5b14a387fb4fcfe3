use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::DbConnection;
use super::schema::users;

#[derive(Debug, Clone, Queryable, Insertable)]
#[diesel(table_name = users)]
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
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
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
    users::table.find(id).first(conn).optional()
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
    diesel::update(users::table.find(id))
        .set(changes)
        .execute(conn)
}

pub fn delete(conn: &mut DbConnection, id: &str) -> QueryResult<usize> {
    diesel::delete(users::table.find(id)).execute(conn)
}
