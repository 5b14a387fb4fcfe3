use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::DbConnection;
use super::schema::entities;

#[derive(Debug, Clone, Queryable, Insertable)]
#[diesel(table_name = entities)]
#[diesel(treat_none_as_default_value = false)]
pub struct EntityRow {
    pub id: String,
    pub entity_number: String,
    pub name: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = entities)]
pub struct EntityChanges {
    pub entity_number: Option<String>,
    pub name: Option<String>,
    pub updated_at: Option<NaiveDateTime>,
}

pub fn insert(conn: &mut DbConnection, row: &EntityRow) -> QueryResult<()> {
    diesel::insert_into(entities::table)
        .values(row)
        .execute(conn)
        .map(drop)
}

pub fn find(conn: &mut DbConnection, id: &str) -> QueryResult<Option<EntityRow>> {
    entities::table.find(id).get_result(conn).optional()
}

pub fn find_by_number(
    conn: &mut DbConnection,
    entity_number: &str,
) -> QueryResult<Option<EntityRow>> {
    entities::table
        .filter(entities::entity_number.eq(entity_number))
        .get_result(conn)
        .optional()
}

pub fn list(
    conn: &mut DbConnection,
    limit: i64,
    offset: i64,
) -> QueryResult<(Vec<EntityRow>, i64)> {
    let rows = entities::table
        .order((entities::entity_number.asc(), entities::id.asc()))
        .limit(limit)
        .offset(offset)
        .load(conn)?;
    let total = entities::table.count().get_result(conn)?;
    Ok((rows, total))
}

/// Returns the number of rows changed (0: no such entity).
pub fn update(conn: &mut DbConnection, id: &str, changes: &EntityChanges) -> QueryResult<usize> {
    diesel::update(entities::table.find(id))
        .set(changes)
        .execute(conn)
}

pub fn delete(conn: &mut DbConnection, id: &str) -> QueryResult<usize> {
    diesel::delete(entities::table.find(id)).execute(conn)
}
