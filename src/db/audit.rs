use chrono::NaiveDateTime;
use diesel::backend::Backend;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{HasSqlType, Nullable, Text, Timestamp};

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

/// Inserts `rows` in one statement when there are two (a command's pair of
/// events; the statement is prepared once), one by one otherwise. diesel's
/// multi-row insert is not available on a `MultiConnection`.
pub fn insert_all(conn: &mut DbConnection, rows: &[AuditRow]) -> QueryResult<()> {
    match rows {
        [first, second] => TwoRows([first, second]).execute(conn).map(drop),
        _ => rows.iter().try_for_each(|row| insert(conn, row)),
    }
}

/// `INSERT INTO audit_events (…) VALUES (…), (…)`.
struct TwoRows<'a>([&'a AuditRow; 2]);

impl QueryId for TwoRows<'_> {
    type QueryId = ();
    // Cached by its SQL text, which never varies.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<DB> QueryFragment<DB> for TwoRows<'_>
where
    DB: Backend + HasSqlType<Text> + HasSqlType<Timestamp>,
    String: ToSql<Text, DB>,
    NaiveDateTime: ToSql<Timestamp, DB>,
    Option<String>: ToSql<Nullable<Text>, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("INSERT INTO ");
        out.push_identifier("audit_events")?;
        out.push_sql(" (");
        for (index, column) in [
            "id",
            "occurred_at",
            "kind",
            "outcome",
            "user_id",
            "session_id",
            "ip",
            "detail",
        ]
        .into_iter()
        .enumerate()
        {
            if index > 0 {
                out.push_sql(", ");
            }
            out.push_identifier(column)?;
        }
        out.push_sql(") VALUES ");
        for (index, row) in self.0.iter().enumerate() {
            out.push_sql(if index == 0 { "(" } else { ", (" });
            out.push_bind_param::<Text, _>(&row.id)?;
            out.push_sql(", ");
            out.push_bind_param::<Timestamp, _>(&row.occurred_at)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, _>(&row.kind)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, _>(&row.outcome)?;
            for optional in [&row.user_id, &row.session_id, &row.ip, &row.detail] {
                out.push_sql(", ");
                out.push_bind_param::<Nullable<Text>, _>(optional)?;
            }
            out.push_sql(")");
        }
        Ok(())
    }
}

impl<Conn> RunQueryDsl<Conn> for TwoRows<'_> {}

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
