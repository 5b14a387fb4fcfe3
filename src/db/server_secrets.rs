use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::DbConnection;
use super::schema::server_secrets;

/// The secret called `name`, created from `make` on first use. Concurrent
/// first starts agree: the loser of the insert reads the winner's value.
pub fn get_or_create(
    conn: &mut DbConnection,
    name: &str,
    make: impl FnOnce() -> Vec<u8>,
    now: NaiveDateTime,
) -> QueryResult<Vec<u8>> {
    let existing = server_secrets::table
        .find(name)
        .select(server_secrets::value)
        .get_result::<Vec<u8>>(conn)
        .optional()?;
    if let Some(value) = existing {
        return Ok(value);
    }
    let inserted = diesel::insert_into(server_secrets::table)
        .values((
            server_secrets::name.eq(name),
            server_secrets::value.eq(make()),
            server_secrets::created_at.eq(now),
        ))
        .execute(conn);
    match inserted {
        Ok(_)
        | Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        )) => server_secrets::table
            .find(name)
            .select(server_secrets::value)
            .get_result(conn),
        Err(e) => Err(e),
    }
}

/// Replaces a secret's stored value (sealing one stored in the clear).
pub fn set(conn: &mut DbConnection, name: &str, value: &[u8]) -> QueryResult<usize> {
    diesel::update(server_secrets::table.find(name))
        .set(server_secrets::value.eq(value))
        .execute(conn)
}
