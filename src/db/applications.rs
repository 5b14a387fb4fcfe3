use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::DbConnection;
use super::schema::applications;

#[derive(Debug, Clone, Queryable, Insertable)]
#[diesel(table_name = applications)]
#[diesel(treat_none_as_default_value = false)]
pub struct ApplicationRow {
    pub id: String,
    pub entity_id: String,
    pub application_name: String,
    pub application_type: String,
    pub application_number: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = applications)]
pub struct ApplicationChanges {
    pub application_name: Option<String>,
    pub application_type: Option<String>,
    pub application_number: Option<String>,
    pub updated_at: Option<NaiveDateTime>,
}

pub fn insert(conn: &mut DbConnection, row: &ApplicationRow) -> QueryResult<()> {
    diesel::insert_into(applications::table)
        .values(row)
        .execute(conn)
        .map(drop)
}

pub fn find(conn: &mut DbConnection, id: &str) -> QueryResult<Option<ApplicationRow>> {
    applications::table.find(id).get_result(conn).optional()
}

pub fn list_for_entity(
    conn: &mut DbConnection,
    entity_id: &str,
    limit: i64,
    offset: i64,
) -> QueryResult<(Vec<ApplicationRow>, i64)> {
    let rows = applications::table
        .filter(applications::entity_id.eq(entity_id))
        .order((applications::application_name.asc(), applications::id.asc()))
        .limit(limit)
        .offset(offset)
        .load(conn)?;
    let total = applications::table
        .filter(applications::entity_id.eq(entity_id))
        .count()
        .get_result(conn)?;
    Ok((rows, total))
}

pub fn update(
    conn: &mut DbConnection,
    id: &str,
    changes: &ApplicationChanges,
) -> QueryResult<usize> {
    diesel::update(applications::table.find(id))
        .set(changes)
        .execute(conn)
}

pub fn delete(conn: &mut DbConnection, id: &str) -> QueryResult<usize> {
    diesel::delete(applications::table.find(id)).execute(conn)
}

pub fn find_by_name(
    conn: &mut DbConnection,
    entity_id: &str,
    name: &str,
) -> QueryResult<Option<ApplicationRow>> {
    applications::table
        .filter(applications::entity_id.eq(entity_id))
        .filter(applications::application_name.eq(name))
        .get_result(conn)
        .optional()
}

/// The entity's application numbered `number`.
pub fn find_by_number(
    conn: &mut DbConnection,
    entity_id: &str,
    number: &str,
) -> QueryResult<Option<ApplicationRow>> {
    applications::table
        .filter(applications::entity_id.eq(entity_id))
        .filter(applications::application_number.eq(number))
        .order(applications::created_at.asc())
        .first(conn)
        .optional()
}
