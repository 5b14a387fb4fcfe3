//! The shared per-client rate limit: one row per client, its current
//! one-minute window and the requests counted in it.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Text};

use super::DbConnection;

#[derive(QueryableByName)]
struct Counted {
    #[diesel(sql_type = Integer)]
    count: i32,
}

/// Counts one request of `client` in `minute` (a new minute starts the
/// count again) and returns the count, in one statement: concurrent
/// requests of one client, on any node, queue on the row's lock.
pub fn count(conn: &mut DbConnection, client: &str, minute: i64) -> QueryResult<i32> {
    const UPSERT: &str = "INSERT INTO rate_limit_windows (client, window_minute, count) \
         VALUES ({1}, {2}, 1) \
         ON CONFLICT (client) DO UPDATE SET \
           count = CASE WHEN rate_limit_windows.window_minute = excluded.window_minute \
                        THEN rate_limit_windows.count + 1 ELSE 1 END, \
           window_minute = excluded.window_minute \
         RETURNING count";
    let counted: Counted = match conn {
        DbConnection::Postgresql(pg) => {
            diesel::sql_query(UPSERT.replace("{1}", "$1").replace("{2}", "$2"))
                .bind::<Text, _>(client)
                .bind::<BigInt, _>(minute)
                .get_result(pg)?
        }
        DbConnection::Sqlite(sqlite) => {
            diesel::sql_query(UPSERT.replace("{1}", "?").replace("{2}", "?"))
                .bind::<Text, _>(client)
                .bind::<BigInt, _>(minute)
                .get_result(sqlite)?
        }
    };
    Ok(counted.count)
}

/// Forgets the windows that ended before `minute`; returns how many.
pub fn prune(conn: &mut DbConnection, minute: i64) -> QueryResult<usize> {
    use super::schema::rate_limit_windows;
    diesel::delete(rate_limit_windows::table.filter(rate_limit_windows::window_minute.lt(minute)))
        .execute(conn)
}
