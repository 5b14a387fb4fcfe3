//! UPDATE statements prepared once per connection.
//!
//! diesel keeps a prepared statement only when the query can show that its
//! SQL text cannot vary, and its UPDATE never does (a changeset of optional
//! fields changes the text): every execution was parsed and planned again,
//! a Parse and a plan on PostgreSQL (50–60 µs of its CPU for a
//! one-row update here, more than executing it) and a `sqlite3_prepare` in
//! SQLite's single writer. [`update`] builds the same statement as
//! [`diesel::update`], checked the same way against the table, and lets the
//! statement cache key it by its SQL text and bind types, which is how
//! diesel already caches every query without a static type id: two
//! statements with the same text are the same statement. A changeset with
//! optional fields is cached once per set of fields it writes.

use diesel::QueryResult;
use diesel::backend::Backend;
use diesel::query_builder::{AsChangeset, AstPass, IntoUpdateTarget, QueryFragment, QueryId};
use diesel::query_dsl::RunQueryDsl;
use diesel::query_source::QuerySource;
use diesel::result::{EmptyChangeset, Error};

/// `UPDATE target SET …`, as [`diesel::update`], for a statement prepared
/// once per connection: `target` is a table, or a table filtered by `find`
/// and `filter`.
pub fn update<Target: IntoUpdateTarget>(
    target: Target,
) -> UpdateTarget<<Target::Table as QuerySource>::FromClause, Target::WhereClause> {
    let target = target.into_update_target();
    UpdateTarget {
        from_clause: target.table.from_clause(),
        where_clause: target.where_clause,
    }
}

/// The rows an [`update`] changes; [`UpdateTarget::set`] says how.
#[derive(Debug)]
pub struct UpdateTarget<F, W> {
    from_clause: F,
    where_clause: W,
}

impl<F, W> UpdateTarget<F, W> {
    /// The columns to set, as in diesel's `set`; the changeset must be of
    /// the target's table.
    pub fn set<Table, V>(self, values: V) -> Update<F, W, V::Changeset>
    where
        Table: diesel::Table<FromClause = F>,
        V: AsChangeset<Target = Table>,
    {
        Update {
            from_clause: self.from_clause,
            where_clause: self.where_clause,
            values: values.as_changeset(),
        }
    }
}

/// An UPDATE statement that the statement cache keeps (see the module).
#[derive(Debug)]
pub struct Update<F, W, V> {
    from_clause: F,
    where_clause: W,
    values: V,
}

impl<F, W, V> QueryId for Update<F, W, V> {
    type QueryId = ();
    // No static id: the cache key is the SQL text.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<F, W, V, DB> QueryFragment<DB> for Update<F, W, V>
where
    DB: Backend,
    F: QueryFragment<DB>,
    W: QueryFragment<DB>,
    V: QueryFragment<DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        if self.values.is_noop(out.backend())? {
            return Err(Error::QueryBuilderError(Box::new(EmptyChangeset)));
        }
        // diesel's own UPDATE writes the same text, and then marks itself
        // unsafe to cache; nothing in it varies but the changeset's fields.
        out.push_sql("UPDATE ");
        self.from_clause.walk_ast(out.reborrow())?;
        out.push_sql(" SET ");
        self.values.walk_ast(out.reborrow())?;
        self.where_clause.walk_ast(out.reborrow())
    }
}

impl<F, W, V, Conn> RunQueryDsl<Conn> for Update<F, W, V> {}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use diesel::connection::{Instrumentation, InstrumentationEvent};
    use diesel::prelude::*;
    use diesel::{SqliteConnection, sql_query};

    diesel::table! {
        counters (id) {
            id -> Integer,
            hits -> Integer,
        }
    }

    /// Statements the connection prepared for its cache.
    #[derive(Clone, Default)]
    struct Cached(Arc<Mutex<Vec<String>>>);

    impl Instrumentation for Cached {
        fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
            if let InstrumentationEvent::CacheQuery { sql, .. } = event {
                self.0.lock().unwrap().push(sql.to_owned());
            }
        }
    }

    fn connection() -> (SqliteConnection, Cached) {
        let mut conn = SqliteConnection::establish(":memory:").unwrap();
        sql_query("CREATE TABLE counters (id INTEGER PRIMARY KEY, hits INTEGER NOT NULL)")
            .execute(&mut conn)
            .unwrap();
        sql_query("INSERT INTO counters VALUES (1, 0)")
            .execute(&mut conn)
            .unwrap();
        let cached = Cached::default();
        conn.set_instrumentation(cached.clone());
        (conn, cached)
    }

    macro_rules! bump {
        ($id:expr, $update:path) => {
            $update(counters::table.find($id)).set(counters::hits.eq(counters::hits + 1))
        };
    }

    #[test]
    fn an_update_is_prepared_once_and_reused() {
        let (mut conn, cached) = connection();
        for _ in 0..3 {
            assert_eq!(bump!(1, super::update).execute(&mut conn).unwrap(), 1);
        }
        assert_eq!(bump!(2, super::update).execute(&mut conn).unwrap(), 0);
        // One statement for four executions with different binds, with
        // the text diesel's own UPDATE has.
        let diesel_text =
            diesel::debug_query::<diesel::sqlite::Sqlite, _>(&bump!(1, diesel::update)).to_string();
        let cached = cached.0.lock().unwrap().clone();
        assert_eq!(cached.len(), 1, "{cached:?}");
        assert!(
            diesel_text.starts_with(&format!("{} -- binds", cached[0])),
            "{diesel_text}"
        );
        let hits: i32 = counters::table
            .find(1)
            .select(counters::hits)
            .get_result(&mut conn)
            .unwrap();
        assert_eq!(hits, 3);
    }

    #[test]
    fn without_it_diesel_prepares_an_update_every_time() {
        let (mut conn, cached) = connection();
        for _ in 0..3 {
            bump!(1, diesel::update).execute(&mut conn).unwrap();
        }
        assert!(cached.0.lock().unwrap().is_empty());
    }
}
