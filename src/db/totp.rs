use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{recovery_codes, totp_devices};
use super::{DbConnection, prepared};

#[derive(Debug, Clone, Queryable, Insertable)]
#[diesel(table_name = totp_devices)]
#[diesel(treat_none_as_default_value = false)]
pub struct TotpDeviceRow {
    pub user_id: String,
    pub secret_nonce: Vec<u8>,
    pub secret_ciphertext: Vec<u8>,
    pub confirmed_at: Option<NaiveDateTime>,
    pub last_used_step: Option<i64>,
    pub created_at: NaiveDateTime,
}

pub fn find(conn: &mut DbConnection, user_id: &str) -> QueryResult<Option<TotpDeviceRow>> {
    totp_devices::table
        .find(user_id)
        .get_result(conn)
        .optional()
}

/// Reads the device and, on PostgreSQL, locks it (replay checks must see
/// the last accepted step of a concurrent request).
pub fn find_for_update(
    conn: &mut DbConnection,
    user_id: &str,
) -> QueryResult<Option<TotpDeviceRow>> {
    find_for_update!(conn, totp_devices::table, user_id)
}

/// Replaces the user's device (an unconfirmed enrolment starts over).
pub fn replace(conn: &mut DbConnection, row: &TotpDeviceRow) -> QueryResult<()> {
    delete(conn, &row.user_id)?;
    diesel::insert_into(totp_devices::table)
        .values(row)
        .execute(conn)
        .map(drop)
}

pub fn delete(conn: &mut DbConnection, user_id: &str) -> QueryResult<usize> {
    diesel::delete(totp_devices::table.find(user_id)).execute(conn)
}

pub fn confirm(
    conn: &mut DbConnection,
    user_id: &str,
    step: i64,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    prepared::update(totp_devices::table.find(user_id))
        .set((
            totp_devices::confirmed_at.eq(now),
            totp_devices::last_used_step.eq(step),
        ))
        .execute(conn)
}

/// Records an accepted step; only a newer step than the stored one wins.
pub fn accept_step(conn: &mut DbConnection, user_id: &str, step: i64) -> QueryResult<bool> {
    prepared::update(
        totp_devices::table.find(user_id).filter(
            totp_devices::last_used_step
                .is_null()
                .or(totp_devices::last_used_step.lt(step)),
        ),
    )
    .set(totp_devices::last_used_step.eq(step))
    .execute(conn)
    .map(|n| n == 1)
}

#[derive(Debug, Clone, Queryable, Insertable)]
#[diesel(table_name = recovery_codes)]
#[diesel(treat_none_as_default_value = false)]
pub struct RecoveryCodeRow {
    pub id: String,
    pub user_id: String,
    pub code_hmac: Vec<u8>,
    pub used_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
}

/// A new set of codes replaces the old one.
pub fn replace_recovery_codes(
    conn: &mut DbConnection,
    user_id: &str,
    rows: &[RecoveryCodeRow],
) -> QueryResult<()> {
    diesel::delete(recovery_codes::table.filter(recovery_codes::user_id.eq(user_id)))
        .execute(conn)?;
    for row in rows {
        diesel::insert_into(recovery_codes::table)
            .values(row)
            .execute(conn)?;
    }
    Ok(())
}

pub fn unused_recovery_codes(
    conn: &mut DbConnection,
    user_id: &str,
) -> QueryResult<Vec<RecoveryCodeRow>> {
    recovery_codes::table
        .filter(recovery_codes::user_id.eq(user_id))
        .filter(recovery_codes::used_at.is_null())
        .load(conn)
}

/// Spends a code; false if it was spent meanwhile.
pub fn use_recovery_code(
    conn: &mut DbConnection,
    id: &str,
    now: NaiveDateTime,
) -> QueryResult<bool> {
    prepared::update(
        recovery_codes::table
            .find(id)
            .filter(recovery_codes::used_at.is_null()),
    )
    .set(recovery_codes::used_at.eq(now))
    .execute(conn)
    .map(|n| n == 1)
}
