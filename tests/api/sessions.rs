use chrono::Duration;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    Login, TestApp, TestUser, assert_error, json, pointers, spawn_app, spawn_app_with_env,
};
use crate::totp::verified_login;

async fn put_session(
    app: &TestApp,
    login: &Login,
    user: &TestUser,
    passed: bool,
) -> reqwest::Response {
    app.with_token(
        Method::PUT,
        &format!("/sessions/{}", login.session_id),
        &login.token,
    )
    .json(&json!({"userId": user.id, "passedLoginOTP": passed}))
    .send()
    .await
    .unwrap()
}

async fn verify(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.with_token(Method::POST, "/user/otp/verify", token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn get_session(app: &TestApp, token: &str, session_id: &str) -> reqwest::Response {
    app.with_token(Method::GET, &format!("/sessions/{session_id}"), token)
        .send()
        .await
        .unwrap()
}

/// The stored code rows (any purpose) of a session.
fn codes_of_session(app: &TestApp, session_id: &str) -> i64 {
    use diesel::prelude::*;
    use latchkey::db::schema::otp_challenges as c;
    let mut conn = app.core.db.connection().unwrap();
    c::table
        .filter(c::session_id.eq(session_id))
        .count()
        .get_result(&mut conn)
        .unwrap()
}

pub async fn audit_kinds(app: &TestApp, user_id: &str) -> Vec<String> {
    let events = json(
        app.get(&format!("/admin/audit?userId={user_id}&limit=200"))
            .await,
    )
    .await;
    // Events of one instant have no order among themselves: compare sorted.
    let mut kinds: Vec<String> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    kinds.sort();
    kinds
}

#[tokio::test]
async fn the_whole_login_flow_with_the_emailed_code() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let login = app.login(&user).await;

    let session = json(get_session(&app, &login.token, &login.session_id).await).await;
    assert_eq!(session["status"], "pending");
    assert_eq!(session["passedLoginOTP"], false);
    assert!(session["factors"]["password"]["verifiedAt"].is_string());
    assert!(session["factors"]["otpEmail"].is_null());
    let first_sequence = session["sequence"].as_i64().unwrap();

    // Ask for the code: a user token gets the expiry, not the code.
    let response = put_session(&app, &login, &user, false).await;
    assert_eq!(response.status(), 200);
    let sent = json(response).await;
    assert!(sent.get("otp").is_none(), "{sent}");
    assert!(sent["expiresAt"].is_string());

    let mail = app.smtp.wait_for(1).await.remove(0);
    assert_eq!(mail.recipients, ["ann@example.com"]);
    let code = mail.code();
    assert_eq!(code.len(), 6);

    // Not yet verified.
    assert_error(
        put_session(&app, &login, &user, true).await,
        403,
        "otp-not-verified",
    )
    .await;

    let response = verify(&app, &login.token, json!({"otp": code})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        json(response).await,
        json!({"valid": true, "type": "login", "sessionId": login.session_id})
    );
    // A proven second factor verifies the session on every face ...
    let session = json(get_session(&app, &login.token, &login.session_id).await).await;
    assert_eq!(session["status"], "verified");
    assert_eq!(session["passedLoginOTP"], true);

    // ... and recording the outcome with PACE confirms it, once.
    assert_eq!(put_session(&app, &login, &user, true).await.status(), 204);
    assert_eq!(put_session(&app, &login, &user, true).await.status(), 204);
    let session = json(get_session(&app, &login.token, &login.session_id).await).await;
    assert_eq!(session["status"], "verified");
    assert_eq!(session["passedLoginOTP"], true);
    assert!(session["verifiedAt"].is_string());
    assert!(session["factors"]["otpEmail"]["verifiedAt"].is_string());
    assert!(
        session["sequence"].as_i64().unwrap() == first_sequence + 2,
        "{session}"
    );
    assert_eq!(session["userId"], user.id.as_str());

    assert_eq!(
        audit_kinds(&app, &user.id).await,
        [
            "login_succeeded",
            "otp_sent",
            "otp_verified",
            "session_verified"
        ]
    );
}

#[tokio::test]
async fn the_code_is_stored_only_as_an_hmac() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let login = app.login(&user).await;
    put_session(&app, &login, &user, false).await;
    let code = app.smtp.wait_for(1).await.remove(0).code();
    let stored: Vec<(Vec<u8>, i32)> = {
        use diesel::prelude::*;
        use latchkey::db::schema::otp_challenges as c;
        let mut conn = app.core.db.connection().unwrap();
        c::table
            .select((c::code_hmac, c::max_attempts))
            .load(&mut conn)
            .unwrap()
    };
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].0.len(), 32);
    assert!(
        !stored[0]
            .0
            .windows(code.len())
            .any(|w| w == code.as_bytes())
    );
    assert_eq!(stored[0].1, 5);
}

#[tokio::test]
async fn login_refuses_wrong_and_unknown_users_alike() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let wrong = app
        .login_response(&json!({"loginName": user.login_name, "password": "wrong password"}))
        .await;
    assert!(wrong.headers().contains_key("www-authenticate"));
    let wrong = assert_error(wrong, 401, "invalid-credentials").await;
    let unknown = assert_error(
        app.login_response(
            &json!({"loginName": "nobody@example.com", "password": "wrong password"}),
        )
        .await,
        401,
        "invalid-credentials",
    )
    .await;
    assert_eq!(wrong[0]["detail"], unknown[0]["detail"]);

    // By entity and employee number, and case-insensitively by login name.
    let response = app
        .login_response(
            &json!({"entityNumber": "1000", "employeeNumber": "10000", "password": user.password}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let response = app
        .login_response(&json!({"loginName": "ANN@example.com", "password": user.password}))
        .await;
    assert_eq!(response.status(), 201);
    let body = json(response).await;
    assert_eq!(body["status"], "pending");
    assert!(body["expiresAt"].is_string());
}

#[tokio::test]
async fn login_validation_and_conflicts() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let errors = assert_error(
        app.login_response(&json!({"loginName": user.login_name}))
            .await,
        422,
        "validation-failed",
    )
    .await;
    assert_eq!(pointers(&errors), ["/password"]);
    let errors = assert_error(
        app.login_response(&json!({"entityNumber": "1000", "password": "x", "sessionId": "nope"}))
            .await,
        422,
        "validation-failed",
    )
    .await;
    assert_eq!(pointers(&errors), ["/employeeNumber", "/sessionId"]);

    let session_id = uuid::Uuid::new_v4().to_string();
    let body =
        json!({"loginName": user.login_name, "password": user.password, "sessionId": session_id});
    let response = app.login_response(&body).await;
    assert_eq!(response.status(), 201);
    assert_eq!(json(response).await["sessionId"], session_id.as_str());
    assert_error(app.login_response(&body).await, 409, "conflict").await;

    let errors = assert_error(
        app.login_response(&json!({"loginName": user.login_name, "password": user.password, "applicationName": "Nope"}))
            .await,
        422,
        "validation-failed",
    )
    .await;
    assert_eq!(pointers(&errors), ["/applicationName"]);
}

#[tokio::test]
async fn the_application_is_named_in_the_session_and_the_mail() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let entity_id = json(app.get("/admin/entities").await).await["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let application = json(
        app.post(
            &format!("/admin/entities/{entity_id}/applications"),
            &json!({"applicationName": "Fuel App", "applicationType": "mobile", "applicationNumber": "A1"}),
        )
        .await,
    )
    .await;
    let response = app
        .login_response(&json!({"loginName": user.login_name, "password": user.password, "applicationName": "Fuel App"}))
        .await;
    let body = json(response).await;
    let login = Login {
        session_id: body["sessionId"].as_str().unwrap().to_owned(),
        token: body["sessionToken"].as_str().unwrap().to_owned(),
    };
    let session = json(get_session(&app, &login.token, &login.session_id).await).await;
    assert_eq!(session["applicationId"], application["id"]);
    put_session(&app, &login, &user, false).await;
    assert_eq!(
        app.smtp.wait_for(1).await[0].subject(),
        "Your login code for Fuel App"
    );
}

#[tokio::test]
async fn a_trusted_backend_creates_sessions_and_gets_the_code() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let session_id = uuid::Uuid::new_v4().to_string();
    let path = format!("/sessions/{session_id}");
    let response = app
        .put(&path, &json!({"userId": user.id, "passedLoginOTP": false}))
        .await;
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    let code = body["otp"].as_str().unwrap().to_owned();
    assert_eq!(
        app.smtp.wait_for(1).await[0].code(),
        code,
        "the mailed code is the returned one"
    );
    let session = json(app.get(&path).await).await;
    assert_eq!(session["status"], "pending");
    assert!(session["factors"]["password"].is_null());
    // Created with its code in one command: one change. A new code is one
    // more (its row is written once per command).
    assert_eq!(session["sequence"], 1);
    app.clock.advance(Duration::seconds(31));
    let resent = app
        .put(&path, &json!({"userId": user.id, "passedLoginOTP": false}))
        .await;
    assert_eq!(resent.status(), 200);
    assert_eq!(json(app.get(&path).await).await["sequence"], 2);
    assert_eq!(
        codes_of_session(&app, &session_id),
        1,
        "the new code replaced the first"
    );

    // The backend vouches for the user: verified without a code check.
    assert_eq!(
        app.put(&path, &json!({"userId": user.id, "passedLoginOTP": true}))
            .await
            .status(),
        204
    );
    assert_eq!(json(app.get(&path).await).await["status"], "verified");

    // Another user's id on an existing session reads as no such session.
    let other = app.seed_user("1000", "10001", "bob@example.com").await;
    assert_error(
        app.put(&path, &json!({"userId": other.id, "passedLoginOTP": false}))
            .await,
        404,
        "not-found",
    )
    .await;

    let fresh = format!("/sessions/{}", uuid::Uuid::new_v4());
    let missing = uuid::Uuid::new_v4().to_string();
    assert_error(
        app.put(&fresh, &json!({"userId": missing, "passedLoginOTP": false}))
            .await,
        404,
        "user-not-found",
    )
    .await;
    let entity_id = json(app.get("/admin/entities").await).await["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let no_email = json(
        app.post(
            "/admin/users",
            &json!({"entityId": entity_id, "employeeNumber": "10002", "displayName": "C", "loginName": "carl"}),
        )
        .await,
    )
    .await;
    assert_error(
        app.put(
            &fresh,
            &json!({"userId": no_email["id"], "passedLoginOTP": false}),
        )
        .await,
        422,
        "missing-email",
    )
    .await;
    assert_error(app.get(&fresh).await, 404, "not-found").await;

    let errors = assert_error(
        app.put(&fresh, &json!({"userId": "x", "passedLoginOTP": "yes"}))
            .await,
        422,
        "validation-failed",
    )
    .await;
    assert_eq!(pointers(&errors), ["/passedLoginOTP", "/userId"]);
}

#[tokio::test]
async fn a_resend_waits_for_the_cooldown_and_replaces_the_code() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let login = app.login(&user).await;
    assert_eq!(put_session(&app, &login, &user, false).await.status(), 200);
    let first = app.smtp.wait_for(1).await[0].code();

    let response = put_session(&app, &login, &user, false).await;
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    assert_error(response, 429, "otp-resend-too-soon").await;

    app.clock.advance(Duration::seconds(31));
    assert_eq!(put_session(&app, &login, &user, false).await.status(), 200);
    let mails = app.smtp.wait_for(2).await;
    let second = mails[1].code();

    if first != second {
        assert_error(
            verify(&app, &login.token, json!({"otp": first})).await,
            404,
            "otp-invalid",
        )
        .await;
    }
    assert_eq!(
        verify(&app, &login.token, json!({"otp": second}))
            .await
            .status(),
        200
    );
}

/// With the cooldown off, a new code is always made, even for a request
/// whose clock reading is older than the code made just before it (it
/// waited for the session's lock behind that request).
#[tokio::test]
async fn without_a_cooldown_every_resend_gets_a_code() {
    let app = spawn_app_with_env(&[("LATCHKEY_OTP_RESEND_COOLDOWN_SECS", "0")]).await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let login = app.login(&user).await;
    assert_eq!(put_session(&app, &login, &user, false).await.status(), 200);
    app.clock.advance(Duration::milliseconds(-5));
    assert_eq!(put_session(&app, &login, &user, false).await.status(), 200);
    assert_eq!(app.smtp.wait_for(2).await.len(), 2);
}

#[tokio::test]
async fn an_expired_code_is_gone() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let login = app.login(&user).await;
    put_session(&app, &login, &user, false).await;
    let code = app.smtp.wait_for(1).await[0].code();
    app.clock.advance(Duration::seconds(301));
    assert_error(
        verify(&app, &login.token, json!({"otp": code})).await,
        410,
        "otp-expired",
    )
    .await;
}

#[tokio::test]
async fn five_wrong_codes_burn_the_challenge() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let login = app.login(&user).await;
    put_session(&app, &login, &user, false).await;
    let code = app.smtp.wait_for(1).await[0].code();
    let wrong = if code == "000000" { "000001" } else { "000000" };
    for attempt in 1..=5 {
        let errors = assert_error(
            verify(&app, &login.token, json!({"otp": wrong})).await,
            404,
            "otp-invalid",
        )
        .await;
        assert_eq!(errors[0]["source"]["pointer"], "/otp", "attempt {attempt}");
    }
    // The sixth try, even with the right code, is refused.
    assert_error(
        verify(&app, &login.token, json!({"otp": code})).await,
        429,
        "otp-attempts-exceeded",
    )
    .await;
    let stored: (i32, bool) = {
        use diesel::prelude::*;
        use latchkey::db::schema::otp_challenges as c;
        let mut conn = app.core.db.connection().unwrap();
        let (attempts, burned) = c::table
            .select((c::attempts, c::burned_at))
            .first::<(i32, Option<chrono::NaiveDateTime>)>(&mut conn)
            .unwrap();
        (attempts, burned.is_some())
    };
    assert_eq!(
        stored,
        (5, true),
        "the counter was written by the failed requests"
    );
    let kinds = audit_kinds(&app, &user.id).await;
    assert_eq!(kinds.iter().filter(|k| *k == "otp_failed").count(), 4);
    assert_eq!(kinds.iter().filter(|k| *k == "otp_burned").count(), 1);

    // A new code works again.
    app.clock.advance(Duration::seconds(31));
    assert_eq!(put_session(&app, &login, &user, false).await.status(), 200);
    let fresh = app.smtp.wait_for(2).await[1].code();
    assert_eq!(
        verify(&app, &login.token, json!({"otp": fresh}))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn a_code_works_once() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let login = app.login(&user).await;
    put_session(&app, &login, &user, false).await;
    let code = app.smtp.wait_for(1).await[0].code();
    assert_eq!(
        verify(&app, &login.token, json!({"otp": code}))
            .await
            .status(),
        200
    );
    assert_error(
        verify(&app, &login.token, json!({"otp": code})).await,
        404,
        "otp-invalid",
    )
    .await;
    // No code at all was asked for on another session.
    let other = app.login(&user).await;
    assert_error(
        verify(&app, &other.token, json!({"otp": code})).await,
        404,
        "otp-invalid",
    )
    .await;
}

#[tokio::test]
async fn users_cannot_touch_each_others_sessions() {
    let app = spawn_app().await;
    let ann = app.seed_user("1000", "10000", "ann@example.com").await;
    let bob = app.seed_user("1000", "10001", "bob@example.com").await;
    let ann_login = app.login(&ann).await;
    // Verified: listing sessions needs a verified one.
    let bob_login = verified_login(&app, &bob).await;
    let ann_path = format!("/sessions/{}", ann_login.session_id);

    let response = app
        .with_token(Method::PUT, &ann_path, &bob_login.token)
        .json(&json!({"userId": ann.id, "passedLoginOTP": false}))
        .send()
        .await
        .unwrap();
    assert_error(response, 403, "forbidden").await;
    // Bob's own session, but Ann's user id.
    let response = put_session(&app, &bob_login, &ann, false).await;
    assert_error(response, 403, "forbidden").await;
    assert_error(
        get_session(&app, &bob_login.token, &ann_login.session_id).await,
        404,
        "not-found",
    )
    .await;
    assert_error(
        app.with_token(Method::DELETE, &ann_path, &bob_login.token)
            .send()
            .await
            .unwrap(),
        404,
        "not-found",
    )
    .await;
    assert_error(
        verify(
            &app,
            &bob_login.token,
            json!({"otp": "123456", "sessionId": ann_login.session_id}),
        )
        .await,
        404,
        "not-found",
    )
    .await;
    let listed = json(
        app.with_token(Method::GET, "/sessions", &bob_login.token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(listed["meta"]["total"], 1);
    assert_eq!(listed["data"][0]["id"], bob_login.session_id.as_str());
    assert_error(
        app.with_token(
            Method::GET,
            &format!("/sessions?userId={}", ann.id),
            &bob_login.token,
        )
        .send()
        .await
        .unwrap(),
        403,
        "forbidden",
    )
    .await;
    // Session tokens are not admin tokens.
    assert_error(
        app.with_token(Method::GET, "/admin/users", &bob_login.token)
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
    // Ann's session is untouched.
    assert_eq!(
        json(get_session(&app, &ann_login.token, &ann_login.session_id).await).await["sequence"],
        1
    );
    let all = json(app.get(&format!("/sessions?userId={}", ann.id)).await).await;
    assert_eq!(all["meta"]["total"], 1);
}

#[tokio::test]
async fn revoking_a_session_kills_its_token_at_once() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let login = app.login(&user).await;
    let path = format!("/sessions/{}", login.session_id);
    assert_eq!(
        app.with_token(Method::DELETE, &path, &login.token)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_error(
        get_session(&app, &login.token, &login.session_id).await,
        401,
        "unauthorized",
    )
    .await;
    let session = json(app.get(&path).await).await;
    assert_eq!(session["status"], "revoked");
    assert_error(
        app.put(&path, &json!({"userId": user.id, "passedLoginOTP": false}))
            .await,
        409,
        "session-closed",
    )
    .await;
    assert!(
        audit_kinds(&app, &user.id)
            .await
            .contains(&"session_revoked".to_owned())
    );
}

#[tokio::test]
async fn sessions_expire_with_their_lifetime() {
    let mut app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let login = app.login(&user).await;
    app.clock
        .advance(Duration::hours(12) + Duration::seconds(2));
    assert_error(
        get_session(&app, &login.token, &login.session_id).await,
        401,
        "unauthorized",
    )
    .await;
    app.admin_token = app
        .core
        .tokens
        .issue("test-admin", "admin", Duration::hours(1), None)
        .unwrap()
        .0;
    let path = format!("/sessions/{}", login.session_id);
    assert_eq!(json(app.get(&path).await).await["status"], "expired");
    assert_error(
        app.put(&path, &json!({"userId": user.id, "passedLoginOTP": false}))
            .await,
        409,
        "session-closed",
    )
    .await;
}

#[tokio::test]
async fn fifty_concurrent_code_requests_leave_one_live_challenge() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let login = app.login(&user).await;
    let requests = (0..50).map(|_| put_session(&app, &login, &user, false));
    let statuses: Vec<u16> = futures_util::future::join_all(requests)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        49,
        "{statuses:?}"
    );
    assert_eq!(codes_of_session(&app, &login.session_id), 1);
    let code = app.smtp.wait_for(1).await[0].code();
    assert_eq!(
        verify(&app, &login.token, json!({"otp": code}))
            .await
            .status(),
        200
    );
    assert_eq!(app.smtp.received().len(), 1);
}

#[tokio::test]
async fn ten_failed_logins_lock_the_user() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let wrong = json!({"loginName": user.login_name, "password": "not the password"});
    for _ in 0..10 {
        assert_error(app.login_response(&wrong).await, 401, "invalid-credentials").await;
    }
    let right = json!({"loginName": user.login_name, "password": user.password});
    let response = app.login_response(&right).await;
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after > 800 && retry_after <= 900, "{retry_after}");
    assert_error(response, 429, "user-locked").await;

    let kinds = audit_kinds(&app, &user.id).await;
    assert_eq!(kinds.iter().filter(|k| *k == "login_failed").count(), 10);
    assert_eq!(kinds.iter().filter(|k| *k == "user_locked").count(), 1);

    app.clock
        .advance(Duration::minutes(15) + Duration::seconds(1));
    assert_eq!(app.login_response(&right).await.status(), 201);
}

#[tokio::test]
async fn failures_outside_the_window_do_not_add_up() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let wrong = json!({"loginName": user.login_name, "password": "not the password"});
    for _ in 0..9 {
        app.login_response(&wrong).await;
    }
    app.clock.advance(Duration::minutes(16));
    for _ in 0..9 {
        app.login_response(&wrong).await;
    }
    let right = json!({"loginName": user.login_name, "password": user.password});
    assert_eq!(app.login_response(&right).await.status(), 201);
}

#[tokio::test]
async fn login_and_otp_calls_are_rate_limited_per_address() {
    let app = spawn_app_with_env(&[("LATCHKEY_RATE_LIMIT_PER_MINUTE", "3")]).await;
    let body = json!({"loginName": "nobody@example.com", "password": "whatever"});
    for _ in 0..3 {
        assert_error(app.login_response(&body).await, 401, "invalid-credentials").await;
    }
    let response = app.login_response(&body).await;
    assert!(response.headers().contains_key("retry-after"));
    assert_error(response, 429, "rate-limited").await;
    app.clock.advance(Duration::seconds(61));
    assert_error(app.login_response(&body).await, 401, "invalid-credentials").await;
}

async fn login_from(app: &TestApp, forwarded_for: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/sessions"))
        .header("X-Forwarded-For", forwarded_for)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    let app = spawn_app_with_env(&[
        ("LATCHKEY_RATE_LIMIT_PER_MINUTE", "3"),
        ("LATCHKEY_TRUSTED_PROXIES", "127.0.0.1/32"),
    ])
    .await;
    let wrong = json!({"loginName": "nobody@example.com", "password": "whatever"});
    for _ in 0..3 {
        let response = login_from(&app, "198.51.100.7", &wrong).await;
        assert_error(response, 401, "invalid-credentials").await;
    }
    let response = login_from(&app, "198.51.100.7", &wrong).await;
    assert_error(response, 429, "rate-limited").await;

    // Another client behind the same proxy still logs in, and the address
    // it is known by is the forwarded one.
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let right = json!({"loginName": user.login_name, "password": user.password});
    let response = login_from(&app, "198.51.100.8", &right).await;
    assert_eq!(response.status(), 201);
    let login = json(response).await;
    let session_id = login["sessionId"].as_str().unwrap();
    let token = login["sessionToken"].as_str().unwrap();
    let session = json(get_session(&app, token, session_id).await).await;
    assert_eq!(session["userAgent"]["ip"], "198.51.100.8");
    let events = json(
        app.get(&format!(
            "/admin/audit?userId={}&kind=login_succeeded",
            user.id
        ))
        .await,
    )
    .await;
    assert_eq!(events["data"][0]["ip"], "198.51.100.8", "{events}");
}

#[tokio::test]
async fn without_trusted_proxies_forwarded_headers_are_ignored() {
    let app = spawn_app_with_env(&[("LATCHKEY_RATE_LIMIT_PER_MINUTE", "3")]).await;
    let wrong = json!({"loginName": "nobody@example.com", "password": "whatever"});
    // Every request comes from 127.0.0.1, whatever the header claims.
    for client in ["198.51.100.7", "198.51.100.8", "198.51.100.9"] {
        let response = login_from(&app, client, &wrong).await;
        assert_error(response, 401, "invalid-credentials").await;
    }
    let response = login_from(&app, "198.51.100.10", &wrong).await;
    assert_error(response, 429, "rate-limited").await;
}

#[tokio::test]
async fn account_codes_and_the_pin() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let pending = app.login(&user).await;
    // A pending session gets no account code.
    assert_error(
        app.with_token(Method::POST, "/user/otp", &pending.token)
            .json(&json!({"password": user.password}))
            .send()
            .await
            .unwrap(),
        403,
        "session-not-verified",
    )
    .await;
    let login = verified_login(&app, &user).await;
    let create = |body: Value| {
        app.with_token(Method::POST, "/user/otp", &login.token)
            .json(&body)
            .send()
    };

    let errors = assert_error(
        create(json!({"password": "wrong one"})).await.unwrap(),
        403,
        "invalid-credentials",
    )
    .await;
    assert_eq!(errors[0]["source"]["pointer"], "/password");
    assert_error(create(json!({})).await.unwrap(), 422, "validation-failed").await;

    let response = create(json!({"password": user.password})).await.unwrap();
    assert_eq!(response.status(), 201);
    let code = json(response).await["otp"].as_str().unwrap().to_owned();

    let set_pin = |body: Value| {
        app.with_token(Method::PUT, "/user/pin", &login.token)
            .json(&body)
            .send()
    };
    assert_error(
        set_pin(json!({"pin": "1234", "otp": code})).await.unwrap(),
        406,
        "weak-pin",
    )
    .await;
    assert_error(
        set_pin(json!({"pin": "1111", "otp": code})).await.unwrap(),
        406,
        "weak-pin",
    )
    .await;
    assert_error(
        set_pin(json!({"pin": "12a4", "otp": code})).await.unwrap(),
        422,
        "validation-failed",
    )
    .await;
    assert_eq!(
        set_pin(json!({"pin": "1357", "otp": code}))
            .await
            .unwrap()
            .status(),
        204
    );
    // The account code was spent.
    assert_error(
        set_pin(json!({"pin": "2468", "otp": code})).await.unwrap(),
        404,
        "otp-invalid",
    )
    .await;
    assert_eq!(
        json(app.get(&format!("/admin/users/{}", user.id)).await).await["hasPin"],
        true
    );

    assert_error(
        create(json!({"pin": "2468"})).await.unwrap(),
        403,
        "invalid-credentials",
    )
    .await;
    let response = create(json!({"pin": "1357"})).await.unwrap();
    assert_eq!(response.status(), 201);
    let account_code = json(response).await["otp"].as_str().unwrap().to_owned();
    let verified = json(
        verify(
            &app,
            &login.token,
            json!({"otp": account_code, "types": ["account"]}),
        )
        .await,
    )
    .await;
    assert_eq!(verified["type"], "account");

    let kinds = audit_kinds(&app, &user.id).await;
    assert!(
        kinds.contains(&"pin_set".to_owned()) && kinds.contains(&"otp_created".to_owned()),
        "{kinds:?}"
    );
    let errors = assert_error(
        verify(&app, &login.token, json!({"otp": "1", "types": ["sms"]})).await,
        422,
        "validation-failed",
    )
    .await;
    assert_eq!(pointers(&errors), ["/types/0"]);
}

#[tokio::test]
async fn the_code_can_be_exposed_for_development() {
    let app = spawn_app_with_env(&[("LATCHKEY_EXPOSE_OTP", "true")]).await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let login = app.login(&user).await;
    let body = json(put_session(&app, &login, &user, false).await).await;
    assert_eq!(
        body["otp"].as_str().unwrap(),
        app.smtp.wait_for(1).await[0].code()
    );
}

#[tokio::test]
async fn the_audit_log_is_filtered_by_kind() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    app.login(&user).await;
    app.login_response(&json!({"loginName": user.login_name, "password": "nope nope"}))
        .await;
    let failed = json(app.get("/admin/audit?kind=login_failed").await).await;
    assert_eq!(failed["meta"]["total"], 1);
    let event = &failed["data"][0];
    assert_eq!(event["userId"], user.id.as_str());
    assert_eq!(event["outcome"], "failure");
    assert_eq!(event["ip"], "127.0.0.1");
    assert_error(
        app.get("/admin/audit?kind=nope").await,
        422,
        "validation-failed",
    )
    .await;
}

/// An empty `types` would check the code against nothing: it is refused
/// at `/types`, and the waiting code is not charged a try.
#[tokio::test]
async fn verify_otp_refuses_an_empty_types_list() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let login = app.login(&user).await;
    assert_eq!(put_session(&app, &login, &user, false).await.status(), 200);
    let code = app.smtp.wait_for(1).await[0].code();

    let errors = assert_error(
        verify(&app, &login.token, json!({"otp": code, "types": []})).await,
        422,
        "validation-failed",
    )
    .await;
    assert_eq!(pointers(&errors), ["/types"]);
    let verified = json(verify(&app, &login.token, json!({"otp": code})).await).await;
    assert_eq!(verified["type"], "login", "{verified}");
}
