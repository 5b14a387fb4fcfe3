//! Keys kept apart from the data they protect: the database holds the
//! signing keys and the OTP secret only sealed under the master key, which
//! lives outside it; a server with another master key refuses to start; the
//! data dir and its files are private to the server's user.

use std::process::{Command, Output};

use diesel::prelude::*;

use crate::helpers::{TestDatabase, spawn_app};

fn latchkey(db: &TestDatabase, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(args)
        .envs(db.env())
        .envs(extra_env.iter().copied())
        .output()
        .expect("run latchkey")
}

fn connect(db: &TestDatabase) -> latchkey::db::DbConnection {
    let backend = if db.url.starts_with("postgres") {
        latchkey::config::Backend::Postgres
    } else {
        latchkey::config::Backend::Sqlite
    };
    latchkey::db::ConnectionManager::new(backend, db.url.clone())
        .open()
        .unwrap()
}

#[tokio::test]
async fn the_database_holds_keys_only_sealed() {
    let app = spawn_app().await;
    use latchkey::db::schema::{server_secrets, signing_keys};
    let mut conn = app.core.db.connection().unwrap();
    let private_keys: Vec<Vec<u8>> = signing_keys::table
        .select(signing_keys::private_key)
        .load(&mut conn)
        .unwrap();
    assert!(!private_keys.is_empty());
    for key in &private_keys {
        // nonce (12) + seed (32) + tag (16): never the bare 32-byte seed.
        assert_eq!(key.len(), 60);
    }
    let otp_secret: Vec<u8> = server_secrets::table
        .find("otp_hmac")
        .select(server_secrets::value)
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(otp_secret.len(), 60);
}

#[test]
fn another_master_key_cannot_use_the_database() {
    let db = TestDatabase::new();
    let first = latchkey(&db, &["admin-token"], &[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // The master key file was made, private, beside the data.
    let key_file = latchkey::master_key::key_file(db.dir.path());
    assert!(key_file.is_file());
    // A copy of the database without that key: the server refuses to start.
    let other = "ab".repeat(32);
    let output = latchkey(&db, &["admin-token"], &[("LATCHKEY_MASTER_KEY", &other)]);
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains("sealed with another master key"),
        "{message}"
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).is_empty(),
        "no token"
    );
    // A bad key setting stops start-up naming it.
    let output = latchkey(&db, &["serve"], &[("LATCHKEY_MASTER_KEY", "not hex")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).starts_with("latchkey: LATCHKEY_MASTER_KEY:"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn keys_stored_in_the_clear_are_sealed_at_start() {
    use latchkey::db::schema::signing_keys;
    let db = TestDatabase::new();
    assert!(latchkey(&db, &["migrate"], &[]).status.success());
    // A key as an earlier version stored it: the bare seed.
    {
        let mut conn = connect(&db);
        diesel::insert_into(signing_keys::table)
            .values((
                signing_keys::kid.eq("legacy"),
                signing_keys::algorithm.eq("EdDSA"),
                signing_keys::private_key.eq(vec![7u8; 32]),
                signing_keys::public_key.eq(vec![0u8; 32]),
                signing_keys::created_at.eq(chrono::Utc::now().naive_utc()),
            ))
            .execute(&mut conn)
            .unwrap();
    }
    let output = latchkey(&db, &["admin-token"], &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut conn = connect(&db);
    let stored: Vec<u8> = signing_keys::table
        .find("legacy")
        .select(signing_keys::private_key)
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(stored.len(), 60, "sealed now");
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_dir_and_its_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_app().await;
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let dir = app.db.dir.path();
    assert_eq!(mode(dir), 0o700);
    assert_eq!(mode(&latchkey::master_key::key_file(dir)), 0o600);
    if !app.db.url.starts_with("postgres") {
        assert_eq!(mode(std::path::Path::new(&app.db.url)), 0o600);
    }
}
