use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::DbConnection;
use super::schema::audit_events;

#[derive(Debug, Clone, Queryable, Insertable)]
#[diesel(table_name = audit_events)]
#[diesel(treat_none_as_default_value = false)]
pub struct AuditRow {
    pub id: String,
    pub occurred_at: NaiveDateTime,
    pub kind: String,
    pub outcome: String,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub ip: Option<String>,
    pub detail: Option<String>,
}

pub fn insert(conn: &mut DbConnection, row: &AuditRow) -> QueryResult<()> {
    diesel::insert_into(audit_events::table)
        .values(row)
        .execute(conn)
        .map(drop)
}

pub fn list(
    conn: &mut DbConnection,
    user_id: Option<&str>,
    kind: Option<&str>,
    limit: i64,
    offset: i64,
) -> QueryResult<(Vec<AuditRow>, i64)> {
    let mut rows = audit_events::table.into_boxed();
    let mut count = audit_events::table.into_boxed();
    if let Some(user_id) = user_id {
        rows = rows.filter(audit_events::user_id.eq(user_id.to_owned()));
        count = count.filter(audit_events::user_id.eq(user_id.to_owned()));
    }
    if let Some(kind) = kind {
        rows = rows.filter(audit_events::kind.eq(kind.to_owned()));
        count = count.filter(audit_events::kind.eq(kind.to_owned()));
    }
    let rows = rows
        .order((audit_events::occurred_at.desc(), audit_events::id.asc()))
        .limit(limit)
        .offset(offset)
        .load(conn)?;
    let total = count.count().get_result(conn)?;
    Ok((rows, total))
}
