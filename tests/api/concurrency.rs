//! The engine's limits under real parallel HTTP requests (on the backend the
//! suite runs on: SQLite, or PostgreSQL with LATCHKEY_TEST_POSTGRES_URL),
//! the pending-session rules, the lifetime cap, and one scenario driven
//! through the PACE and the v2 faces that must leave the same traces.

use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, assert_error, json, spawn_app_with_env};
use crate::sessions::audit_kinds;
use crate::totp::{enrolled, totp_sha1, verified_login};
use crate::zitadel::{create, login_checks, patch, v2_verified_login};

/// The lockout threshold and code attempt limit of the defaults.
const THRESHOLD: usize = 10;
const CODE_ATTEMPTS: usize = 5;

/// A server with several HTTP workers and connections, so that requests
/// really run side by side.
async fn parallel_app() -> TestApp {
    spawn_app_with_env(&[("LATCHKEY_WORKERS", "4"), ("LATCHKEY_DB_POOL_SIZE", "8")]).await
}

fn count(kinds: &[String], kind: &str) -> usize {
    kinds.iter().filter(|k| *k == kind).count()
}

/// The user's stored counters: (failed_logins, failed_second_factors, locked).
fn counters(app: &TestApp, user_id: &str) -> (i32, i32, bool) {
    use diesel::prelude::*;
    use latchkey::db::schema::users as u;
    let mut conn = app.core.db.connection().unwrap();
    let (failed, second, locked): (i32, i32, Option<chrono::NaiveDateTime>) = u::table
        .find(user_id)
        .select((u::failed_logins, u::failed_second_factors, u::locked_until))
        .get_result(&mut conn)
        .unwrap();
    let now = latchkey::clock::Clock::now(&app.clock).naive_utc();
    (failed, second, locked.is_some_and(|until| until > now))
}

/// The attempts counted on the session's login code, and whether it is burned.
fn login_code_attempts(app: &TestApp, session_id: &str) -> (i32, bool) {
    use diesel::prelude::*;
    use latchkey::db::schema::otp_challenges as c;
    let mut conn = app.core.db.connection().unwrap();
    let (attempts, burned): (i32, Option<chrono::NaiveDateTime>) = c::table
        .filter(c::session_id.eq(session_id))
        .filter(c::purpose.eq("login"))
        .select((c::attempts, c::burned_at))
        .get_result(&mut conn)
        .unwrap();
    (attempts, burned.is_some())
}

fn statuses(responses: &[reqwest::Response]) -> Vec<u16> {
    let mut statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort_unstable();
    statuses
}

async fn login_request(app: &TestApp, user: &TestUser, password: &str) -> reqwest::Response {
    app.login_response(&json!({"loginName": user.login_name, "password": password}))
        .await
}

/// The `login_failed` events of the user: (counted, refused while locked).
async fn login_failures(app: &TestApp, user_id: &str) -> (usize, usize) {
    let events = json(
        app.get(&format!(
            "/admin/audit?userId={user_id}&kind=login_failed&limit=200"
        ))
        .await,
    )
    .await;
    let events = events["data"].as_array().unwrap();
    let locked = events.iter().filter(|e| e["detail"] == "locked").count();
    (events.len() - locked, locked)
}

#[tokio::test]
async fn parallel_wrong_passwords_count_at_most_the_threshold() {
    let app = parallel_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let responses = join_all((0..30).map(|_| login_request(&app, &user, "not the password"))).await;
    // Every wrong password answers alike, locked or not ...
    assert_eq!(statuses(&responses), [401; 30]);
    // ... but only a threshold of them were counted before the lock fell.
    assert_eq!(
        login_failures(&app, &user.id).await,
        (THRESHOLD, 30 - THRESHOLD)
    );
    let kinds = audit_kinds(&app, &user.id).await;
    assert_eq!(count(&kinds, "user_locked"), 1, "{kinds:?}");
    // The right password afterwards is refused while the lock lasts.
    assert_error(
        login_request(&app, &user, &user.password).await,
        429,
        "user-locked",
    )
    .await;
}

#[tokio::test]
async fn the_right_password_among_parallel_guesses_does_not_lift_the_lock() {
    let app = parallel_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let wrong = (0..30).map(|_| login_request(&app, &user, "not the password"));
    let right = login_request(&app, &user, &user.password);
    let (responses, right) = tokio::join!(join_all(wrong), right);
    assert_eq!(statuses(&responses), [401; 30]);
    // A right password counted before the lock may log in (and forget the
    // failures counted before it); one counted after it is refused.
    let (counted, _) = login_failures(&app, &user.id).await;
    match right.status().as_u16() {
        201 => assert!(counted <= 2 * THRESHOLD, "{counted}"),
        429 => assert!(counted <= THRESHOLD, "{counted}"),
        other => panic!("the right password answered {other}"),
    }
    // 30 guesses lock this source out of the account whatever the order.
    assert_error(
        login_request(&app, &user, &user.password).await,
        429,
        "user-locked",
    )
    .await;
}

#[tokio::test]
async fn parallel_wrong_codes_count_exactly_the_attempt_limit() {
    let app = parallel_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let login = app.login(&user).await;
    app.send_login_code(&user, &login).await;
    let code = app.smtp.wait_for(1).await[0].code();
    let wrong = if code == "000000" { "000001" } else { "000000" };
    let verify = |otp: &str| {
        app.with_token(Method::POST, "/user/otp/verify", &login.token)
            .json(&json!({"otp": otp, "types": ["login"]}))
            .send()
    };
    let responses: Vec<reqwest::Response> = join_all((0..24).map(|_| verify(wrong)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let statuses = statuses(&responses);
    assert_eq!(
        statuses.iter().filter(|s| **s == 404).count(),
        CODE_ATTEMPTS,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        24 - CODE_ATTEMPTS,
        "{statuses:?}"
    );
    assert_eq!(
        login_code_attempts(&app, &login.session_id),
        (CODE_ATTEMPTS as i32, true)
    );
    let kinds = audit_kinds(&app, &user.id).await;
    assert_eq!(count(&kinds, "otp_failed"), CODE_ATTEMPTS - 1, "{kinds:?}");
    assert_eq!(count(&kinds, "otp_burned"), 1, "{kinds:?}");
    // Each wrong code also counts against the user's second-factor budget.
    assert_eq!(counters(&app, &user.id), (0, CODE_ATTEMPTS as i32, false));
    // The right code afterwards is refused: the code is burned.
    assert_error(verify(&code).await.unwrap(), 429, "otp-attempts-exceeded").await;
}

#[tokio::test]
async fn parallel_wrong_v2_code_checks_count_exactly_the_attempt_limit() {
    let app = parallel_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let mut body = login_checks(&user);
    body["challenges"] = json!({"otpEmail": {"sendCode": {}}});
    let created = json(create(&app, None, body).await).await;
    let session_id = created["sessionId"].as_str().unwrap().to_owned();
    let token = created["sessionToken"].as_str().unwrap().to_owned();
    let code = app.smtp.wait_for(1).await[0].code();
    let wrong = if code == "000000" { "000001" } else { "000000" };
    let check = |otp: &str| {
        patch(
            &app,
            &token,
            &session_id,
            json!({"checks": {"otpEmail": {"code": otp}}}),
        )
    };
    let responses = join_all((0..24).map(|_| check(wrong))).await;
    let statuses = statuses(&responses);
    assert_eq!(
        statuses.iter().filter(|s| **s == 404).count(),
        CODE_ATTEMPTS,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        24 - CODE_ATTEMPTS,
        "{statuses:?}"
    );
    assert_eq!(
        login_code_attempts(&app, &session_id),
        (CODE_ATTEMPTS as i32, true)
    );
    assert_eq!(counters(&app, &user.id), (0, CODE_ATTEMPTS as i32, false));
    assert_error(check(&code).await, 429, "otp-attempts-exceeded").await;
}

#[tokio::test]
async fn parallel_v2_changes_with_one_token_one_wins() {
    let app = parallel_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let (session_id, token) = v2_verified_login(&app, &user).await;
    let responses = join_all((0..8).map(|i| {
        patch(
            &app,
            &token,
            &session_id,
            json!({"metadata": {format!("key{i}"): "dmFsdWU="}}),
        )
    }))
    .await;
    let statuses = statuses(&responses);
    assert_eq!(statuses, [200, 401, 401, 401, 401, 401, 401, 401]);
    let session = json(app.get(&format!("/sessions/{session_id}")).await).await;
    let metadata = session["metadata"].as_object().unwrap();
    assert_eq!(metadata.len(), 1, "only the winner's change is stored");
    // The old token is dead; the winner's token works.
    assert_error(
        patch(&app, &token, &session_id, json!({})).await,
        401,
        "unauthorized",
    )
    .await;
}

#[tokio::test]
async fn a_password_login_does_not_reset_second_factor_failures() {
    let app = parallel_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let secret = enrolled(&app, &verified_login(&app, &user).await).await;
    let now = latchkey::clock::Clock::now(&app.clock).timestamp();
    let current = totp_sha1(&secret, now, 6);
    let wrong = if current == "000000" {
        "000001"
    } else {
        "000000"
    };
    let wrong_totp = |token: String| {
        let app = &app;
        async move {
            app.with_token(Method::POST, "/user/otp/verify", &token)
                .json(&json!({"otp": wrong, "types": ["totp"]}))
                .send()
                .await
                .unwrap()
        }
    };
    // Rounds of wrong authenticator codes, each from a fresh password login.
    for _ in 0..3 {
        let login = app.login(&user).await;
        for _ in 0..3 {
            assert_error(wrong_totp(login.token.clone()).await, 404, "otp-invalid").await;
        }
    }
    assert_eq!(counters(&app, &user.id), (0, 9, false));
    let login = app.login(&user).await;
    assert_error(wrong_totp(login.token.clone()).await, 404, "otp-invalid").await;
    assert!(counters(&app, &user.id).2, "the tenth wrong code locks");
    assert_error(wrong_totp(login.token.clone()).await, 429, "user-locked").await;
    assert_error(
        login_request(&app, &user, &user.password).await,
        429,
        "user-locked",
    )
    .await;
}

#[tokio::test]
async fn a_pending_session_may_only_read_itself_verify_and_log_out() {
    let app = parallel_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let other = app.login(&user).await;
    let pending = app.login(&user).await;
    let refused: Vec<(Method, String, Value)> = vec![
        (
            Method::POST,
            "/user/otp".into(),
            json!({"password": user.password}),
        ),
        (
            Method::PUT,
            "/user/pin".into(),
            json!({"pin": "2580", "otp": "123456"}),
        ),
        (Method::POST, "/user/devices/totp".into(), json!({})),
        (
            Method::POST,
            "/user/devices/totp/confirm".into(),
            json!({"otp": "123456"}),
        ),
        (Method::DELETE, "/user/devices/totp".into(), json!({})),
        (Method::POST, "/user/recovery-codes".into(), json!({})),
        (Method::GET, "/sessions".into(), json!({})),
        (
            Method::GET,
            format!("/sessions/{}", other.session_id),
            json!({}),
        ),
        (
            Method::DELETE,
            format!("/sessions/{}", other.session_id),
            json!({}),
        ),
        (Method::POST, "/v2/sessions/search".into(), json!({})),
        (
            Method::PATCH,
            format!("/v2/sessions/{}", pending.session_id),
            json!({"lifetime": "60s"}),
        ),
    ];
    for (method, path, body) in refused {
        let mut request = app.with_token(method.clone(), &path, &pending.token);
        if method != Method::GET && method != Method::DELETE {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 403, "{method} {path}");
        assert_error(response, 403, "session-not-verified").await;
    }
    // What a pending session may do.
    let own = format!("/sessions/{}", pending.session_id);
    let read = app
        .with_token(Method::GET, &own, &pending.token)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    app.send_login_code(&user, &pending).await;
    let code = app.smtp.wait_for(1).await[0].code();
    let verified = app
        .with_token(Method::POST, "/user/otp/verify", &pending.token)
        .json(&json!({"otp": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), 200);
    // Now verified: the same token lists the user's sessions.
    let listed = app
        .with_token(Method::GET, "/sessions", &pending.token)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let logout = app
        .with_token(Method::DELETE, &own, &pending.token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
}

#[tokio::test]
async fn a_session_token_cannot_outlive_the_configured_lifetime() {
    let app = parallel_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let (session_id, token) = v2_verified_login(&app, &user).await;
    let year = json!({"lifetime": "31536000s"});
    let errors = assert_error(
        patch(&app, &token, &session_id, year.clone()).await,
        422,
        "lifetime-too-long",
    )
    .await;
    assert_eq!(errors[0]["source"]["pointer"], "/lifetime");
    // Without a token (a login) the same cap holds.
    let mut body = login_checks(&user);
    body["lifetime"] = json!("31536000s");
    assert_error(create(&app, None, body).await, 422, "lifetime-too-long").await;
    // Within the cap it applies; an admin may set more.
    assert_eq!(
        patch(&app, &token, &session_id, json!({"lifetime": "3600s"}))
            .await
            .status(),
        200
    );
    assert_eq!(
        patch(&app, &app.admin_token, &session_id, year)
            .await
            .status(),
        200
    );
}

/// Wrong passwords, the right one, wrong codes, the right code: what the
/// scenario leaves behind, as the test can see it.
#[derive(Debug, PartialEq)]
struct Traces {
    audit: Vec<String>,
    counters: (i32, i32, bool),
    status: Value,
    passed_login_otp: Value,
    mails: usize,
}

async fn traces(app: &TestApp, user: &TestUser, session_id: &str) -> Traces {
    let session = json(app.get(&format!("/sessions/{session_id}")).await).await;
    Traces {
        audit: audit_kinds(app, &user.id).await,
        counters: counters(app, &user.id),
        status: session["status"].clone(),
        passed_login_otp: session["passedLoginOTP"].clone(),
        mails: app.smtp.received().len(),
    }
}

#[tokio::test]
async fn the_same_scenario_leaves_the_same_traces_on_both_faces() {
    // PACE.
    let pace = parallel_app().await;
    let user = pace.seed_user("1000", "10000", "ann@example.com").await;
    for _ in 0..2 {
        assert_error(
            login_request(&pace, &user, "not the password").await,
            401,
            "invalid-credentials",
        )
        .await;
    }
    let login = pace.login(&user).await;
    let path = format!("/sessions/{}", login.session_id);
    let put = |passed: bool| {
        pace.with_token(Method::PUT, &path, &login.token)
            .json(&json!({"userId": user.id, "passedLoginOTP": passed}))
            .send()
    };
    assert_eq!(put(false).await.unwrap().status(), 200);
    let code = pace.smtp.wait_for(1).await[0].code();
    let wrong = if code == "000000" { "000001" } else { "000000" };
    let verify = |otp: &str| {
        pace.with_token(Method::POST, "/user/otp/verify", &login.token)
            .json(&json!({"otp": otp}))
            .send()
    };
    for _ in 0..2 {
        assert_error(verify(wrong).await.unwrap(), 404, "otp-invalid").await;
    }
    assert_eq!(verify(&code).await.unwrap().status(), 200);
    assert_eq!(put(true).await.unwrap().status(), 204);
    let pace_traces = traces(&pace, &user, &login.session_id).await;

    // ZITADEL v2.
    let v2 = parallel_app().await;
    let user = v2.seed_user("1000", "10000", "ann@example.com").await;
    let mut wrong_password = login_checks(&user);
    wrong_password["checks"]["password"]["password"] = json!("not the password");
    for _ in 0..2 {
        assert_error(
            create(&v2, None, wrong_password.clone()).await,
            401,
            "invalid-credentials",
        )
        .await;
    }
    let mut body = login_checks(&user);
    body["challenges"] = json!({"otpEmail": {"sendCode": {}}});
    let created = json(create(&v2, None, body).await).await;
    let session_id = created["sessionId"].as_str().unwrap().to_owned();
    let token = created["sessionToken"].as_str().unwrap().to_owned();
    let code = v2.smtp.wait_for(1).await[0].code();
    let wrong = if code == "000000" { "000001" } else { "000000" };
    let check = |otp: &str| {
        patch(
            &v2,
            &token,
            &session_id,
            json!({"checks": {"otpEmail": {"code": otp}}}),
        )
    };
    for _ in 0..2 {
        assert_error(check(wrong).await, 404, "otp-invalid").await;
    }
    assert_eq!(check(&code).await.status(), 200);
    let v2_traces = traces(&v2, &user, &session_id).await;

    assert_eq!(pace_traces, v2_traces);
    assert_eq!(
        pace_traces.audit,
        [
            "login_failed",
            "login_failed",
            "login_succeeded",
            "otp_failed",
            "otp_failed",
            "otp_sent",
            "otp_verified",
            "session_verified"
        ]
    );
    assert_eq!(pace_traces.counters, (0, 0, false));
    assert_eq!(pace_traces.status, "verified");
}

#[tokio::test]
async fn a_right_password_refused_for_another_reason_is_not_a_failure() {
    let app = parallel_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let body =
        json!({"loginName": user.login_name, "password": user.password, "applicationName": "nope"});
    for _ in 0..THRESHOLD + 2 {
        assert_error(app.login_response(&body).await, 422, "validation-failed").await;
    }
    assert_eq!(counters(&app, &user.id), (0, 0, false));
    assert_eq!(
        login_request(&app, &user, &user.password).await.status(),
        201
    );
}

#[tokio::test]
async fn a_right_authenticator_code_costs_the_email_code_nothing() {
    let app = parallel_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let secret = enrolled(&app, &verified_login(&app, &user).await).await;
    let login = app.login(&user).await;
    app.send_login_code(&user, &login).await;
    // A later step than the one confirmation used (no replay).
    app.clock.advance(chrono::Duration::seconds(30));
    let now = latchkey::clock::Clock::now(&app.clock).timestamp();
    let response = app
        .with_token(Method::POST, "/user/otp/verify", &login.token)
        .json(&json!({"otp": totp_sha1(&secret, now, 6)}))
        .send()
        .await
        .unwrap();
    assert_eq!(json(response).await["type"], "totp");
    assert_eq!(login_code_attempts(&app, &login.session_id), (0, false));
    let kinds = audit_kinds(&app, &user.id).await;
    assert_eq!(count(&kinds, "otp_failed"), 0, "{kinds:?}");
    assert_eq!(count(&kinds, "session_verified"), 2, "{kinds:?}");
}

#[tokio::test]
async fn new_sessions_bring_no_new_code_guesses() {
    let app = parallel_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let mut wrong_codes = 0;
    for round in 0..2 {
        let login = app.login(&user).await;
        app.send_login_code(&user, &login).await;
        let code = app.smtp.wait_for(round + 1).await[round].code();
        let wrong = if code == "000000" { "000001" } else { "000000" };
        for _ in 0..CODE_ATTEMPTS {
            let response = app
                .with_token(Method::POST, "/user/otp/verify", &login.token)
                .json(&json!({"otp": wrong, "types": ["login"]}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 404);
            wrong_codes += 1;
        }
    }
    // Ten wrong codes over two sessions spend the user's second-factor
    // budget: the account is locked, a third session is not opened.
    assert_eq!(wrong_codes, THRESHOLD);
    assert!(counters(&app, &user.id).2, "locked");
    assert_error(
        login_request(&app, &user, &user.password).await,
        429,
        "user-locked",
    )
    .await;
}

/// Parallel requests for a new session's first login code: the first one
/// stores the code (a plain insert: it read under the session's lock that
/// there was none), the others see it and wait out the cooldown. One code
/// row, one mail, no error.
#[tokio::test]
async fn parallel_first_code_requests_store_one_code() {
    let app = parallel_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let login = app.login(&user).await;
    let session_id = login.session_id.clone();
    let path = format!("/sessions/{session_id}");
    let body = json!({"userId": user.id, "passedLoginOTP": false});
    let responses = join_all((0..8).map(|_| {
        app.with_token(Method::PUT, &path, &login.token)
            .json(&body)
            .send()
    }))
    .await
    .into_iter()
    .map(|response| response.unwrap())
    .collect::<Vec<_>>();
    let codes = statuses(&responses);
    assert_eq!(codes.iter().filter(|s| **s == 200).count(), 1, "{codes:?}");
    assert!(codes.iter().all(|s| *s == 200 || *s == 429), "{codes:?}");
    let (attempts, burned) = login_code_attempts(&app, &session_id);
    assert_eq!((attempts, burned), (0, false));
    app.smtp.wait_for(1).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(app.smtp.received().len(), 1);
}

/// Account changes that end the user's sessions (an admin's lock and a
/// password reset), racing wrong codes checked on those sessions and new
/// logins. They all lock sessions and the user; taken in opposite orders,
/// or with a session created between two changes, PostgreSQL would abort
/// one of them as a deadlock (a 500). Every answer must be a decided one.
#[tokio::test]
async fn account_changes_racing_code_checks_and_logins_never_deadlock() {
    let app = parallel_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let lock_path = format!("/admin/users/{}/lock", user.id);
    let unlock_path = format!("/admin/users/{}/unlock", user.id);
    let password_path = format!("/admin/users/{}/password", user.id);
    let mut mails = 0;
    for _round in 0..6 {
        assert_eq!(app.post(&unlock_path, &json!({})).await.status(), 204);
        let mut logins = Vec::new();
        for _ in 0..6 {
            let login = app.login(&user).await;
            app.send_login_code(&user, &login).await;
            logins.push(login);
        }
        mails += logins.len();
        let codes: Vec<String> = app.smtp.wait_for(mails).await[mails - logins.len()..]
            .iter()
            .map(|mail| mail.code())
            .collect();
        let checks = logins.iter().zip(&codes).map(|(login, code)| {
            let wrong = if code == "000000" { "000001" } else { "000000" };
            app.with_token(Method::POST, "/user/otp/verify", &login.token)
                .json(&json!({"otp": wrong, "types": ["login"]}))
                .send()
        });
        let locks = (0..3).map(|_| app.admin(Method::POST, &lock_path).json(&json!({})).send());
        // The same password again, so the next round's logins still work.
        let resets = (0..3).map(|_| {
            app.admin(Method::PUT, &password_path)
                .json(&json!({"password": user.password}))
                .send()
        });
        let new_logins = (0..8).map(|_| login_request(&app, &user, &user.password));
        let (checked, locked, reset, logged_in) = tokio::join!(
            join_all(checks),
            join_all(locks),
            join_all(resets),
            join_all(new_logins)
        );
        for changed in locked.into_iter().chain(reset) {
            assert_eq!(changed.unwrap().status(), 204);
        }
        // A login before the lock opens a session (201); after it, the
        // user is locked (a refusal, never an error).
        let logins = statuses(&logged_in);
        assert!(logins.iter().all(|s| *s < 500), "{logins:?}");
        let statuses = statuses(&checked.into_iter().map(Result::unwrap).collect::<Vec<_>>());
        // A check before the lock finds a wrong code (404); one after it
        // finds its session ended (401 at the token, 409 in the check).
        assert!(
            statuses.iter().all(|s| [401, 404, 409].contains(s)),
            "{statuses:?}"
        );
    }
}
