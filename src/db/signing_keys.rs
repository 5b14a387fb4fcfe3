use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::DbConnection;
use super::schema::signing_keys;

#[derive(Debug, Clone, Queryable, Insertable)]
#[diesel(table_name = signing_keys)]
#[diesel(treat_none_as_default_value = false)]
pub struct SigningKeyRow {
    pub kid: String,
    pub algorithm: String,
    /// The 32-byte Ed25519 seed, sealed under the master key (nonce ‖
    /// ciphertext, bound to the kid).
    pub private_key: Vec<u8>,
    pub public_key: Vec<u8>,
    pub created_at: NaiveDateTime,
}

pub fn insert(conn: &mut DbConnection, row: &SigningKeyRow) -> QueryResult<()> {
    diesel::insert_into(signing_keys::table)
        .values(row)
        .execute(conn)
        .map(drop)
}

/// Every key, newest (the current signing key) first.
pub fn all(conn: &mut DbConnection) -> QueryResult<Vec<SigningKeyRow>> {
    signing_keys::table
        .order((signing_keys::created_at.desc(), signing_keys::kid.desc()))
        .load(conn)
}

/// Replaces a key's stored private part (sealing a key stored in the clear).
pub fn set_private_key(conn: &mut DbConnection, kid: &str, value: &[u8]) -> QueryResult<usize> {
    diesel::update(signing_keys::table.find(kid))
        .set(signing_keys::private_key.eq(value))
        .execute(conn)
}
