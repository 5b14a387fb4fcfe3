//! Authenticator apps and recovery codes, checked against an independent
//! RFC 6238 implementation (below, on hmac + sha1/sha2, not totp-rs).

use base64::Engine;
use chrono::Duration;
use hmac::{Hmac, Mac};
use latchkey::clock::Clock;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Login, TestApp, TestUser, assert_error, json, spawn_app};

/// HOTP (RFC 4226) with the hash chosen by the caller.
fn hotp<M: Mac + hmac::digest::KeyInit>(secret: &[u8], counter: u64, digits: u32) -> String {
    let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(secret).unwrap();
    mac.update(&counter.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    let offset = (hash[hash.len() - 1] & 0x0f) as usize;
    let binary = (u32::from(hash[offset]) & 0x7f) << 24
        | u32::from(hash[offset + 1]) << 16
        | u32::from(hash[offset + 2]) << 8
        | u32::from(hash[offset + 3]);
    format!(
        "{:0width$}",
        binary % 10u32.pow(digits),
        width = digits as usize
    )
}

pub fn totp_sha1(secret: &[u8], unix_time: i64, digits: u32) -> String {
    hotp::<Hmac<sha1::Sha1>>(secret, (unix_time / 30) as u64, digits)
}

pub fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut buffer, mut bits, mut out) = (0u32, 0, Vec::new());
    for c in text.trim_end_matches('=').chars() {
        buffer = (buffer << 5) | ALPHABET.find(c).unwrap() as u32;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

#[test]
fn the_independent_generator_matches_the_rfc_6238_vectors() {
    let sha1_key = b"12345678901234567890";
    let sha256_key = b"12345678901234567890123456789012";
    let sha512_key = b"1234567890123456789012345678901234567890123456789012345678901234";
    let vectors: [(i64, &str, &str, &str); 6] = [
        (59, "94287082", "46119246", "90693936"),
        (1111111109, "07081804", "68084774", "25091201"),
        (1111111111, "14050471", "67062674", "99943326"),
        (1234567890, "89005924", "91819424", "93441116"),
        (2000000000, "69279037", "90698825", "38618901"),
        (20000000000, "65353130", "77737706", "47863826"),
    ];
    for (time, sha1, sha256, sha512) in vectors {
        let step = (time / 30) as u64;
        assert_eq!(
            hotp::<Hmac<sha1::Sha1>>(sha1_key, step, 8),
            sha1,
            "SHA1 at {time}"
        );
        assert_eq!(
            hotp::<Hmac<sha2::Sha256>>(sha256_key, step, 8),
            sha256,
            "SHA256 at {time}"
        );
        assert_eq!(
            hotp::<Hmac<sha2::Sha512>>(sha512_key, step, 8),
            sha512,
            "SHA512 at {time}"
        );
    }
}

#[test]
fn latchkey_totp_agrees_with_the_independent_generator() {
    let secret = b"12345678901234567890";
    let generator = latchkey::otp::totp::build(secret, "Latchkey", "ann", 0).unwrap();
    for time in [59_i64, 1111111109, 1234567890, 2000000000] {
        let code = totp_sha1(secret, time, 6);
        assert_eq!(
            latchkey::otp::totp::matching_step(&generator, &code, time as u64),
            Some((time / 30) as u64)
        );
    }
}

fn now(app: &TestApp) -> i64 {
    app.clock.now().timestamp()
}

/// Logs in and verifies the session with the emailed code.
pub async fn verified_login(app: &TestApp, user: &TestUser) -> Login {
    let login = app.login(user).await;
    let path = format!("/sessions/{}", login.session_id);
    let before = app.smtp.received().len();
    let put = |passed: bool| {
        app.with_token(Method::PUT, &path, &login.token)
            .json(&json!({"userId": user.id, "passedLoginOTP": passed}))
            .send()
    };
    assert_eq!(put(false).await.unwrap().status(), 200);
    let code = app.smtp.wait_for(before + 1).await[before].code();
    let response = app
        .with_token(Method::POST, "/user/otp/verify", &login.token)
        .json(&json!({"otp": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(put(true).await.unwrap().status(), 204);
    login
}

pub async fn enroll(app: &TestApp, login: &Login) -> Value {
    let response = app
        .with_token(Method::POST, "/user/devices/totp", &login.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    json(response).await
}

pub async fn confirm(app: &TestApp, login: &Login, code: &str) -> reqwest::Response {
    app.with_token(Method::POST, "/user/devices/totp/confirm", &login.token)
        .json(&json!({"otp": code}))
        .send()
        .await
        .unwrap()
}

/// Enrols an authenticator and confirms it with the current code; returns
/// its secret.
pub async fn enrolled(app: &TestApp, login: &Login) -> Vec<u8> {
    let secret = base32_decode(enroll(app, login).await["secret"].as_str().unwrap());
    assert_eq!(
        confirm(app, login, &totp_sha1(&secret, now(app), 6))
            .await
            .status(),
        204
    );
    secret
}

async fn verify(app: &TestApp, login: &Login, body: Value) -> reqwest::Response {
    app.with_token(Method::POST, "/user/otp/verify", &login.token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn enrolment_needs_a_verified_session_and_gives_a_key_uri() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let pending = app.login(&user).await;
    let response = app
        .with_token(Method::POST, "/user/devices/totp", &pending.token)
        .send()
        .await
        .unwrap();
    assert_error(response, 403, "session-not-verified").await;

    let login = verified_login(&app, &user).await;
    let enrollment = enroll(&app, &login).await;
    assert_eq!(enrollment["period"], 30);
    assert_eq!(enrollment["digits"], 6);
    assert_eq!(enrollment["algorithm"], "SHA1");
    let secret = enrollment["secret"].as_str().unwrap();
    assert_eq!(base32_decode(secret).len(), 20);

    // Key Uri Format: otpauth://totp/ISSUER:ACCOUNT?secret=…&issuer=ISSUER
    let uri = enrollment["otpauthUri"].as_str().unwrap();
    let rest = uri
        .strip_prefix("otpauth://totp/")
        .expect("otpauth://totp/ URI");
    let (label, query) = rest.split_once('?').unwrap();
    assert_eq!(label, "Latchkey:ann%40example.com");
    let params: std::collections::HashMap<&str, &str> = query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap())
        .collect();
    assert_eq!(params["secret"], secret);
    assert_eq!(params["issuer"], "Latchkey");
    assert!(!params.contains_key("digits") || params["digits"] == "6");

    let png = base64::engine::general_purpose::STANDARD
        .decode(enrollment["qrPng"].as_str().unwrap())
        .unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    // The secret is sealed at rest.
    let stored: Vec<u8> = {
        use diesel::prelude::*;
        use latchkey::db::schema::totp_devices as t;
        let mut conn = app.core.db.connection().unwrap();
        t::table
            .select(t::secret_ciphertext)
            .first(&mut conn)
            .unwrap()
    };
    let raw = base32_decode(secret);
    assert!(!stored.windows(raw.len()).any(|w| w == raw.as_slice()));
    assert!(!String::from_utf8_lossy(&stored).contains(secret));
}

#[tokio::test]
async fn confirmation_checking_skew_and_no_replay() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let login = verified_login(&app, &user).await;
    let secret = base32_decode(enroll(&app, &login).await["secret"].as_str().unwrap());
    let mails_before = app.smtp.received().len();

    let t = now(&app);
    let wrong = if totp_sha1(&secret, t, 6) == "000000" {
        "000001"
    } else {
        "000000"
    };
    assert_error(confirm(&app, &login, wrong).await, 404, "otp-invalid").await;
    assert_eq!(
        confirm(&app, &login, &totp_sha1(&secret, t, 6))
            .await
            .status(),
        204
    );
    let notice = app.smtp.wait_for(mails_before + 1).await.pop().unwrap();
    assert_eq!(
        notice.subject(),
        "Security notice: an authenticator app was added"
    );
    assert_error(
        confirm(&app, &login, &totp_sha1(&secret, t, 6)).await,
        409,
        "conflict",
    )
    .await;

    // A new login, its second factor from the app.
    app.clock.advance(Duration::seconds(60));
    let second = app.login(&user).await;
    let t = now(&app);
    // One step behind is within the skew; the code confirmed earlier is a replay.
    let response = verify(
        &app,
        &second,
        json!({"otp": totp_sha1(&secret, t - 30, 6), "types": ["totp"]}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(json(response).await["type"], "totp");
    assert_error(
        verify(&app, &second, json!({"otp": totp_sha1(&secret, t - 30, 6)})).await,
        404,
        "otp-invalid",
    )
    .await;
    assert_error(
        verify(&app, &second, json!({"otp": totp_sha1(&secret, t - 60, 6)})).await,
        404,
        "otp-invalid",
    )
    .await;
    // Two steps ahead is outside the skew.
    assert_error(
        verify(&app, &second, json!({"otp": totp_sha1(&secret, t + 60, 6)})).await,
        404,
        "otp-invalid",
    )
    .await;
    // The current step is newer than the last accepted one.
    assert_eq!(
        verify(&app, &second, json!({"otp": totp_sha1(&secret, t, 6)}))
            .await
            .status(),
        200
    );

    let session = json(app.read_own_session(&second).await).await;
    assert!(session["factors"]["totp"]["verifiedAt"].is_string());
    let put = app
        .with_token(
            Method::PUT,
            &format!("/sessions/{}", second.session_id),
            &second.token,
        )
        .json(&json!({"userId": user.id, "passedLoginOTP": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        put.status(),
        204,
        "the authenticator stands for the login code"
    );
}

#[tokio::test]
async fn recovery_codes_work_once_and_a_new_set_replaces_the_old() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let login = verified_login(&app, &user).await;
    let mails_before = app.smtp.received().len();
    let response = app
        .with_token(Method::POST, "/user/recovery-codes", &login.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let codes: Vec<String> = json(response).await["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 10);
    assert_eq!(
        codes.iter().collect::<std::collections::HashSet<_>>().len(),
        10
    );
    let notice = app.smtp.wait_for(mails_before + 1).await.pop().unwrap();
    assert_eq!(notice.subject(), "Security notice: new recovery codes");

    let other = app.login(&user).await;
    let response = verify(&app, &other, json!({"otp": codes[0].to_uppercase()})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(json(response).await["type"], "recovery");
    assert_error(
        verify(&app, &other, json!({"otp": codes[0]})).await,
        404,
        "otp-invalid",
    )
    .await;

    let response = app
        .with_token(Method::POST, "/user/recovery-codes", &login.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_error(
        verify(&app, &other, json!({"otp": codes[1]})).await,
        404,
        "otp-invalid",
    )
    .await;
}

#[tokio::test]
async fn removing_the_authenticator_mails_a_notice() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let login = verified_login(&app, &user).await;
    enrolled(&app, &login).await;
    let before = app.smtp.wait_for(2).await.len();

    assert_eq!(
        app.with_token(Method::DELETE, "/user/devices/totp", &login.token)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let notice = app.smtp.wait_for(before + 1).await.pop().unwrap();
    assert_eq!(
        notice.subject(),
        "Security notice: your authenticator app was removed"
    );
    assert_error(
        app.with_token(Method::DELETE, "/user/devices/totp", &login.token)
            .send()
            .await
            .unwrap(),
        404,
        "not-found",
    )
    .await;

    // An admin removes a re-enrolled one.
    let secret = base32_decode(enroll(&app, &login).await["secret"].as_str().unwrap());
    app.clock.advance(Duration::seconds(30));
    assert_eq!(
        confirm(&app, &login, &totp_sha1(&secret, now(&app), 6))
            .await
            .status(),
        204
    );
    assert_eq!(
        app.delete(&format!("/admin/users/{}/totp", user.id))
            .await
            .status(),
        204
    );
    assert_error(
        app.delete(&format!("/admin/users/{}/totp", user.id)).await,
        404,
        "not-found",
    )
    .await;
}

#[tokio::test]
async fn a_locked_user_cannot_pass_with_the_authenticator() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let login = verified_login(&app, &user).await;
    let secret = enrolled(&app, &login).await;
    // Wrong passwords lock their source out of password checks only: the
    // owner's session still proves the authenticator.
    let wrong = json!({"loginName": user.login_name, "password": "not the password"});
    for _ in 0..10 {
        assert_error(app.login_response(&wrong).await, 401, "invalid-credentials").await;
    }
    app.clock.advance(Duration::seconds(30));
    let code = totp_sha1(&secret, now(&app), 6);
    let response = verify(&app, &login, json!({"otp": code, "types": ["totp"]})).await;
    assert_eq!(response.status(), 200);
    // Ten wrong authenticator codes lock the user for everyone ...
    let wrong_code = if code == "000000" { "000001" } else { "000000" };
    for _ in 0..10 {
        assert_error(
            verify(&app, &login, json!({"otp": wrong_code, "types": ["totp"]})).await,
            404,
            "otp-invalid",
        )
        .await;
    }
    app.clock.advance(Duration::seconds(30));
    let code = totp_sha1(&secret, now(&app), 6);
    assert_error(
        verify(&app, &login, json!({"otp": code, "types": ["totp"]})).await,
        429,
        "user-locked",
    )
    .await;
    // ... until the lock ends.
    app.clock.advance(Duration::minutes(15));
    let code = totp_sha1(&secret, now(&app), 6);
    let response = verify(&app, &login, json!({"otp": code, "types": ["totp"]})).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_colon_in_a_login_name_breaks_nothing() {
    let app = spawn_app().await;
    let entity = app.create_entity("1000").await;
    let response = app
        .post(
            "/admin/users",
            &json!({
                "entityId": entity["id"],
                "employeeNumber": "10000",
                "displayName": "Ann",
                "email": "ann@example.com",
                "loginName": "ann:admin",
                "password": "correct horse battery",
            }),
        )
        .await;
    assert_eq!(response.status(), 201);
    let user = TestUser {
        id: json(response).await["id"].as_str().unwrap().to_owned(),
        login_name: "ann:admin".to_owned(),
        password: "correct horse battery".to_owned(),
    };
    let login = verified_login(&app, &user).await;
    let enrollment = enroll(&app, &login).await;
    let uri = enrollment["otpauthUri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/Latchkey:ann%3Aadmin?"),
        "{uri}"
    );
    let secret = base32_decode(enrollment["secret"].as_str().unwrap());
    assert_eq!(
        confirm(&app, &login, &totp_sha1(&secret, now(&app), 6))
            .await
            .status(),
        204
    );
    // Wrong email codes are still counted (no 5xx rolls them back).
    let login = app.login(&user).await;
    app.send_login_code(&user, &login).await;
    for _ in 0..5 {
        assert_error(
            verify(&app, &login, json!({"otp": "00000a", "types": ["login"]})).await,
            404,
            "otp-invalid",
        )
        .await;
    }
    assert_error(
        verify(&app, &login, json!({"otp": "000000", "types": ["login"]})).await,
        429,
        "otp-attempts-exceeded",
    )
    .await;
}
