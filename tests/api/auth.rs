use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Duration;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, json, spawn_app};

async fn call_with(app: &TestApp, authorization: Option<&str>) -> reqwest::Response {
    let mut request = app.client.request(Method::GET, app.url("/admin/entities"));
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    request.send().await.unwrap()
}

pub const NO_TOKEN: &str = "Bearer realm=\"latchkey\"";
pub const INVALID_TOKEN: &str = "Bearer realm=\"latchkey\", error=\"invalid_token\"";
pub const ADMIN_SCOPE_MISSING: &str =
    "Bearer realm=\"latchkey\", error=\"insufficient_scope\", scope=\"admin\"";

pub fn challenge(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
}

/// A 401 whose challenge follows RFC 6750 §3: no error code without a
/// bearer token, `invalid_token` for a bearer token that is refused.
async fn assert_unauthorized(app: &TestApp, authorization: Option<&str>) {
    let response = call_with(app, authorization).await;
    let sent_bearer = authorization.is_some_and(|a| a.to_ascii_lowercase().starts_with("bearer"));
    let expected = if sent_bearer { INVALID_TOKEN } else { NO_TOKEN };
    assert_eq!(
        challenge(&response).as_deref(),
        Some(expected),
        "{authorization:?}"
    );
    assert_error(response, 401, "unauthorized").await;
}

fn claims(app: &TestApp, scope: &str) -> Value {
    let now = app.clock_now();
    json!({"iss": "http://127.0.0.1:8080", "sub": "mallory", "iat": now, "exp": now + 600, "jti": "x", "scope": scope})
}

async fn current_kid(app: &TestApp) -> String {
    let jwks = json(
        app.client
            .get(app.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    jwks["keys"][0]["kid"].as_str().unwrap().to_owned()
}

impl TestApp {
    fn clock_now(&self) -> i64 {
        use latchkey::clock::Clock;
        self.clock.now().timestamp()
    }
}

#[tokio::test]
async fn missing_and_malformed_tokens_are_unauthorized() {
    let app = spawn_app().await;
    assert_unauthorized(&app, None).await;
    assert_unauthorized(&app, Some("Bearer")).await;
    assert_unauthorized(&app, Some("Bearer garbage")).await;
    assert_unauthorized(&app, Some("Bearer a.b.c")).await;
    assert_unauthorized(&app, Some(&format!("Basic {}", app.admin_token))).await;
    // The valid token itself works, with any capitalisation of the scheme.
    assert_eq!(
        call_with(&app, Some(&format!("bearer {}", app.admin_token)))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn expired_tokens_are_refused_with_one_second_of_leeway() {
    let app = spawn_app().await;
    let (token, _) = app
        .core
        .tokens
        .issue("ops", "admin", Duration::seconds(60), None)
        .unwrap();
    let bearer = format!("Bearer {token}");
    app.clock.advance(Duration::seconds(61));
    assert_eq!(
        call_with(&app, Some(&bearer)).await.status(),
        200,
        "within the leeway"
    );
    app.clock.advance(Duration::seconds(1));
    assert_unauthorized(&app, Some(&bearer)).await;
}

#[tokio::test]
async fn tokens_signed_by_another_key_are_refused() {
    let app = spawn_app().await;
    let kid = current_kid(&app).await;
    let foreign = SigningKey::from_bytes(&[7u8; 32]);
    let der = foreign.to_pkcs8_der().unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid);
    let token = jsonwebtoken::encode(
        &header,
        &claims(&app, "admin"),
        &EncodingKey::from_ed_der(der.as_bytes()),
    )
    .unwrap();
    assert_unauthorized(&app, Some(&format!("Bearer {token}"))).await;

    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("unknown-kid".into());
    let token = jsonwebtoken::encode(
        &header,
        &claims(&app, "admin"),
        &EncodingKey::from_ed_der(der.as_bytes()),
    )
    .unwrap();
    assert_unauthorized(&app, Some(&format!("Bearer {token}"))).await;
}

#[tokio::test]
async fn algorithm_swaps_are_refused() {
    let app = spawn_app().await;
    let jwks = json(
        app.client
            .get(app.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let kid = jwks["keys"][0]["kid"].as_str().unwrap().to_owned();
    let public_x = jwks["keys"][0]["x"].as_str().unwrap().to_owned();
    let public_raw = URL_SAFE_NO_PAD.decode(&public_x).unwrap();

    // alg: none, no signature.
    let header =
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": kid}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims(&app, "admin").to_string());
    assert_unauthorized(&app, Some(&format!("Bearer {header}.{payload}."))).await;

    // HS256 keyed with the public key, raw and as published.
    for secret in [public_raw.as_slice(), public_x.as_bytes()] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.clone());
        let token = jsonwebtoken::encode(
            &header,
            &claims(&app, "admin"),
            &EncodingKey::from_secret(secret),
        )
        .unwrap();
        assert_unauthorized(&app, Some(&format!("Bearer {token}"))).await;
    }

    // A valid token whose payload was changed after signing.
    let parts: Vec<&str> = app.admin_token.split('.').collect();
    let forged_payload = URL_SAFE_NO_PAD.encode(claims(&app, "admin").to_string());
    assert_unauthorized(
        &app,
        Some(&format!(
            "Bearer {}.{}.{}",
            parts[0], forged_payload, parts[2]
        )),
    )
    .await;
}

#[tokio::test]
async fn tokens_without_admin_scope_are_forbidden_on_admin_routes() {
    let app = spawn_app().await;
    let (token, _) = app
        .core
        .tokens
        .issue("someone", "user", Duration::minutes(5), None)
        .unwrap();
    for (method, path) in [
        (Method::GET, "/admin/entities"),
        (Method::POST, "/admin/users"),
        (
            Method::GET,
            "/admin/users/00000000-0000-4000-8000-000000000000",
        ),
        (
            Method::DELETE,
            "/admin/applications/00000000-0000-4000-8000-000000000000",
        ),
    ] {
        let response = app
            .client
            .request(method, app.url(path))
            .bearer_auth(&token)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(challenge(&response).as_deref(), Some(ADMIN_SCOPE_MISSING));
        assert_error(response, 403, "forbidden").await;
    }
    // Authentication is checked before the body is read.
    let response = app
        .client
        .post(app.url("/admin/entities"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "unauthorized").await;
}

#[tokio::test]
async fn issued_tokens_carry_the_documented_claims() {
    let app = spawn_app().await;
    let (token, claims) = app
        .core
        .tokens
        .issue("ops", "admin", Duration::minutes(5), Some("sid-1"))
        .unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(
        header.kid.as_deref(),
        Some(current_kid(&app).await.as_str())
    );
    assert_eq!(claims.iss, "http://127.0.0.1:8080");
    assert_eq!(claims.exp - claims.iat, 300);
    assert!(uuid::Uuid::parse_str(&claims.jti).is_ok());
    assert_eq!(app.core.tokens.verify(&token).await.unwrap(), claims);
}

/// A session token stops at once when its session ends, and says why in
/// its challenge; where only an admin token will do, a session token is
/// told which scope it lacks.
#[tokio::test]
async fn ended_sessions_and_missing_scopes_are_challenged() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let (session_id, token) = crate::zitadel::v2_verified_login(&app, &user).await;

    let others = app
        .with_token(
            Method::GET,
            &format!("/sessions?userId={}", uuid::Uuid::new_v4()),
            &token,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(challenge(&others).as_deref(), Some(ADMIN_SCOPE_MISSING));
    assert_error(others, 403, "forbidden").await;
    let returned = crate::zitadel::patch(
        &app,
        &token,
        &session_id,
        json!({"challenges": {"otpEmail": {"returnCode": {}}}}),
    )
    .await;
    assert_eq!(challenge(&returned).as_deref(), Some(ADMIN_SCOPE_MISSING));
    assert_error(returned, 403, "forbidden").await;
    // Creating a session without a password check needs an admin token.
    let checks = json!({"checks": {"user": {"userId": user.id}}});
    let response = crate::zitadel::create(&app, Some(&token), checks.clone()).await;
    assert_eq!(challenge(&response).as_deref(), Some(ADMIN_SCOPE_MISSING));
    assert_error(response, 403, "forbidden").await;
    let response = crate::zitadel::create(&app, None, checks).await;
    assert_eq!(challenge(&response).as_deref(), Some(NO_TOKEN));
    assert_error(response, 401, "unauthorized").await;

    let revoked = app
        .with_token(Method::DELETE, &format!("/sessions/{session_id}"), &token)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    let response = app
        .with_token(Method::GET, &format!("/sessions/{session_id}"), &token)
        .send()
        .await
        .unwrap();
    assert_eq!(challenge(&response).as_deref(), Some(INVALID_TOKEN));
    assert_error(response, 401, "unauthorized").await;
}

/// A signing key taken out of the ring stops its tokens at once, even
/// tokens whose verification is remembered; tokens of the keys that stay
/// keep working.
#[tokio::test]
async fn a_removed_signing_key_stops_its_tokens_at_once() {
    use diesel::prelude::*;
    use latchkey::db::schema::signing_keys;

    let app = spawn_app().await;
    let old_kid = current_kid(&app).await;
    let old_token = format!("Bearer {}", app.admin_token);
    // Verified once, so remembered.
    assert_eq!(call_with(&app, Some(&old_token)).await.status(), 200);

    let clock = app.clock.clone();
    let master = latchkey::master_key::MasterKey::load(None, app.db.dir.path()).unwrap();
    let sealer = latchkey::tokens::signing_key_sealer(&master);
    app.core
        .db
        .write(move |conn| {
            latchkey::tokens::rotate_signing_key(conn, &clock, &sealer)
                .map_err(latchkey::error::ApiError::internal)?;
            diesel::delete(signing_keys::table.filter(signing_keys::kid.eq(old_kid)))
                .execute(conn)?;
            Ok::<_, latchkey::error::ApiError>(())
        })
        .await
        .unwrap();
    app.core.tokens.reload().await.unwrap();

    assert_unauthorized(&app, Some(&old_token)).await;
    let (new_token, _) = app
        .core
        .tokens
        .issue("ops", "admin", Duration::minutes(5), None)
        .unwrap();
    assert_eq!(
        call_with(&app, Some(&format!("Bearer {new_token}")))
            .await
            .status(),
        200
    );
}
