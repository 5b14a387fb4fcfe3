use std::process::{Command, Output};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use latchkey::tokens::Claims;

use crate::helpers::{TestDatabase, json, spawn_app};

fn latchkey(db: &TestDatabase, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(args)
        .envs(db.env())
        .envs(extra_env.iter().copied())
        .output()
        .expect("run latchkey")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A short command must exit cleanly every time: libpq's OpenSSL once
/// crashed ~2 % of admin-token runs at exit while a pool thread connected.
#[tokio::test]
async fn short_commands_exit_cleanly_every_time() {
    let db = TestDatabase::new();
    assert!(latchkey(&db, &["migrate"], &[]).status.success());
    for run in 0..60 {
        let output = latchkey(&db, &["admin-token"], &[]);
        assert!(
            output.status.success(),
            "run {run}: {} {}",
            output.status,
            stderr(&output)
        );
    }
}

#[tokio::test]
async fn admin_token_prints_a_token_the_jwks_verifies() {
    let app = spawn_app().await;
    let output = latchkey(&app.db, &["admin-token", "--ttl", "120"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = stdout(&output);
    assert_eq!(
        printed.lines().count(),
        1,
        "only the token on stdout: {printed:?}"
    );
    let token = printed.trim();

    let jwks: JwkSet = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    let jwk = jwks.find(&kid).expect("the token's key is published");
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&["http://127.0.0.1:8080"]);
    let claims =
        jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
            .unwrap()
            .claims;
    assert!(claims.is_admin());
    assert_eq!(claims.exp - claims.iat, 120);

    let response = app
        .client
        .get(app.url("/admin/entities"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn rotated_keys_sign_new_tokens_and_old_tokens_stay_valid() {
    let app = spawn_app().await;
    let old_token = app.admin_token.clone();
    let output = latchkey(&app.db, &["rotate-key"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).is_empty());

    // A token from the CLI is signed with the new key; the running server
    // learns that key on first sight of its kid.
    let output = latchkey(&app.db, &["admin-token"], &[]);
    let new_token = stdout(&output).trim().to_owned();
    let old_kid = jsonwebtoken::decode_header(&old_token)
        .unwrap()
        .kid
        .unwrap();
    let new_kid = jsonwebtoken::decode_header(&new_token)
        .unwrap()
        .kid
        .unwrap();
    assert_ne!(old_kid, new_kid);
    for token in [&new_token, &old_token] {
        let response = app
            .client
            .get(app.url("/admin/entities"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    let jwks = json(
        app.client
            .get(app.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(
        kids,
        [new_kid.as_str(), old_kid.as_str()],
        "newest first, old key still published"
    );

    // The server now signs with the new key.
    let (token, _) = app
        .core
        .tokens
        .issue("x", "admin", chrono::Duration::minutes(1), None)
        .unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().kid.unwrap(),
        new_kid
    );
}

#[test]
fn a_bad_setting_stops_start_up_with_one_line() {
    let db = TestDatabase::new();
    let output = latchkey(&db, &["serve"], &[("LATCHKEY_DB_POOL_SIZE", "lots")]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.starts_with("latchkey: LATCHKEY_DB_POOL_SIZE:"),
        "{message}"
    );

    // Settings that would break a feature later stop start-up instead.
    for (key, value) in [
        ("LATCHKEY_TOTP_ISSUER", "Acme:Corp"),
        ("LATCHKEY_LINK_ORIGINS", "not a url"),
        ("LATCHKEY_LINK_ORIGINS", "ftp://files.example.com"),
    ] {
        let output = latchkey(&db, &["serve"], &[(key, value)]);
        assert_eq!(output.status.code(), Some(2), "{key}={value}");
        let message = stderr(&output);
        assert!(
            message.starts_with(&format!("latchkey: {key}:")),
            "{message}"
        );
    }

    let output = latchkey(
        &db,
        &["migrate"],
        &[(
            "LATCHKEY_DATABASE_URL",
            "postgres://nobody@127.0.0.1:1/none",
        )],
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("cannot open the database"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_bad_trusted_proxy_list_stops_start_up() {
    let db = TestDatabase::new();
    for value in ["10.0.0.0/33", "10.0.0.1/8", "proxy.example"] {
        let output = latchkey(&db, &["serve"], &[("LATCHKEY_TRUSTED_PROXIES", value)]);
        assert_eq!(output.status.code(), Some(2), "{value}");
        let message = stderr(&output);
        assert_eq!(message.lines().count(), 1, "{message}");
        assert!(
            message.starts_with("latchkey: LATCHKEY_TRUSTED_PROXIES:"),
            "{message}"
        );
    }
}

#[test]
fn migrate_is_idempotent() {
    let db = TestDatabase::new();
    let first = latchkey(&db, &["migrate"], &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    // Every migration of the tree, counted from its folder (both backends
    // have the same list).
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
        .unwrap()
        .filter(|entry| entry.as_ref().is_ok_and(|e| e.path().is_dir()))
        .count();
    assert!(
        stderr(&first).contains(&format!("{migrations} migration(s) applied")),
        "{}",
        stderr(&first)
    );
    let second = latchkey(&db, &["migrate"], &[]);
    assert!(
        stderr(&second).contains("0 migration(s) applied"),
        "{}",
        stderr(&second)
    );
}

#[test]
fn help_documents_every_command() {
    let db = TestDatabase::new();
    let help = stdout(&latchkey(&db, &["--help"], &[]));
    for word in ["serve", "migrate", "admin-token", "rotate-key", "--config"] {
        assert!(help.contains(word), "{word} in {help}");
    }
    let help = stdout(&latchkey(&db, &["admin-token", "--help"], &[]));
    assert!(help.contains("--ttl"), "{help}");
}
