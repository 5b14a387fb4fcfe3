//! The asynchronous face (seeds 000–002): 202, then the reads that confirm.

use std::sync::Arc;

use latchkey::clock::Clock;
use std::time::Duration;

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    TestApp, TestDatabase, TestUser, assert_error, json, pointers, spawn_app, spawn_app_with,
};
use crate::sessions::audit_kinds;
use crate::smtp::SmtpServer;

const PASSWORD: &str = "correct horse battery";

/// A user 10000 of entity 1000, with a mobile application `value_00`
/// numbered APP-1 and a desktop one numbered APP-2.
struct Seeded {
    user: TestUser,
    entity_id: String,
    mobile_app: String,
    desktop_app: String,
}

async fn seed(app: &TestApp) -> Seeded {
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let entity_id = json(app.get(&format!("/admin/users/{}", user.id)).await).await["entityId"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ids = Vec::new();
    for (name, kind, number) in [
        ("value_00", "mobile", "APP-1"),
        ("Desk", "desktop", "APP-2"),
    ] {
        let response = app
            .post(
                &format!("/admin/entities/{entity_id}/applications"),
                &json!({"applicationName": name, "applicationType": kind, "applicationNumber": number}),
            )
            .await;
        assert_eq!(response.status(), 201);
        ids.push(json(response).await["id"].as_str().unwrap().to_owned());
    }
    Seeded {
        user,
        entity_id,
        mobile_app: ids[0].clone(),
        desktop_app: ids[1].clone(),
    }
}

fn login_body(session_id: &str, password: &str) -> Value {
    json!({
        "session_id": session_id,
        "entity_number": "1000",
        "application_name": "value_00",
        "employee_number": "10000",
        "password": password,
    })
}

/// Seed 001's payload example, its ids adapted to the seeded data.
fn post_one_body(seeded: &Seeded, session_id: &str) -> Value {
    json!({
        "session_id": session_id,
        "user_id": seeded.user.id,
        "entity_id": seeded.entity_id,
        "session_entity_field": "mobile_application_id",
        "session_entity_field_value": seeded.mobile_app,
        "mobile_application_id": seeded.mobile_app,
        "desktop_application_id": seeded.desktop_app,
        "entity_number": "1000",
        "employee_number": "10000",
        "application_number": "APP-1",
        "application_type": "mobile",
        "status": "pending",
        "is_valid": "True",
        "is_active": "True",
        "session_context": "{}",
        "expires_at": "2099-05-17T15:49:56Z",
        "created_at": "2026-05-17T15:49:56Z",
        "updated_at": "2026-05-17T15:49:56Z",
        "verified_at": "2026-05-17T15:49:56Z",
        "failure_reason": "Login timeout during sync"
    })
}

async fn send(app: &TestApp, method: Method, path: &str, body: &Value) -> Response {
    app.client
        .request(method, app.url(path))
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn admin_send(app: &TestApp, method: Method, path: &str, body: &Value) -> Response {
    app.admin(method, path).json(body).send().await.unwrap()
}

/// Checks a 202 and returns its body.
async fn accepted(response: Response) -> Value {
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = json(response).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["is_accepted"], true);
    assert_eq!(
        body["message"],
        "Request accepted for asynchronous processing."
    );
    let id = body["request_id"].as_str().unwrap();
    assert_eq!(location.unwrap(), format!("/one-requests/{id}"));
    assert_eq!(retry_after.as_deref(), Some("1"));
    body
}

/// Starts a validate-login with the right password for `session_id` and
/// returns its 202 body.
async fn start_login(app: &TestApp, session_id: &str) -> Value {
    accepted(
        send(
            app,
            Method::POST,
            "/jef-one-validate-login-and-create-session",
            &login_body(session_id, PASSWORD),
        )
        .await,
    )
    .await
}

async fn read_request(app: &TestApp, id: &str, receipt: Option<&str>) -> Response {
    let mut request = app.client.get(app.url(&format!("/one-requests/{id}")));
    match receipt {
        Some(receipt) => request = request.header("Request-Receipt", receipt),
        None => request = request.bearer_auth(&app.admin_token),
    }
    request.send().await.unwrap()
}

/// Reads the request until it is finished (the worker runs beside the test).
async fn finished(app: &TestApp, id: &str, receipt: Option<&str>) -> Value {
    for _ in 0..500 {
        let response = read_request(app, id, receipt).await;
        assert_eq!(response.status(), 200);
        let view = json(response).await;
        if view["status"] == "succeeded" || view["status"] == "failed" {
            return view;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("request {id} did not finish");
}

async fn get_one(app: &TestApp, session_id: &str, token: &str) -> Response {
    app.with_token(
        Method::GET,
        &format!("/one-sessions-get-one?session_id={session_id}"),
        token,
    )
    .send()
    .await
    .unwrap()
}

#[tokio::test]
async fn validate_login_then_read_the_outcome_then_verify_the_mailed_code() {
    let app = spawn_app().await;
    let seeded = seed(&app).await;
    let session_id = Uuid::new_v4().to_string();

    let accepted = start_login(&app, &session_id).await;
    let (request_id, receipt) = (
        accepted["request_id"].as_str().unwrap().to_owned(),
        accepted["receipt"].as_str().unwrap().to_owned(),
    );

    let outcome = finished(&app, &request_id, Some(&receipt)).await;
    assert_eq!(outcome["operation"], "validate-login");
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    let result = &outcome["result"];
    assert_eq!(result["is_accepted"], true);
    assert_eq!(result["is_valid"], true);
    assert_eq!(result["session_saved"], true);
    assert_eq!(result["status_code"], 200);
    assert_eq!(result["status"], "pending");
    assert_eq!(result["session_id"], session_id.as_str());
    assert_eq!(result["employee_id"], seeded.user.id.as_str());
    assert_eq!(result["entity_id"], seeded.entity_id.as_str());
    assert_eq!(result["application_id"], seeded.mobile_app.as_str());
    assert_eq!(result["application_name"], "value_00");
    assert_eq!(result["display_name"], "Employee 10000");
    let token = outcome["session_token"].as_str().unwrap().to_owned();

    // The token is handed out once.
    let again = json(read_request(&app, &request_id, Some(&receipt)).await).await;
    assert!(again.get("session_token").is_none(), "{again}");
    assert!(again["session_token_issued_at"].is_string());
    // The backend reads the request, not the token.
    let by_admin = json(read_request(&app, &request_id, None).await).await;
    assert_eq!(by_admin["status"], "succeeded");
    assert!(by_admin.get("session_token").is_none());

    // The code was mailed; verifying it on the PACE face verifies the session.
    let mail = app.smtp.wait_for(1).await.remove(0);
    assert_eq!(mail.recipients, ["ann@example.com"]);
    let response = app
        .with_token(Method::POST, "/user/otp/verify", &token)
        .json(&json!({"otp": mail.code()}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let session = json(get_one(&app, &session_id, &token).await).await;
    assert_eq!(session["status"], "verified");
    assert_eq!(session["is_valid"], true);
    assert_eq!(session["passed_login_otp"], true);
    assert_eq!(session["user_id"], seeded.user.id.as_str());
    // The same session on the v2 face.
    let v2 = app
        .with_token(
            Method::GET,
            &format!("/v2/sessions/{session_id}"),
            &app.admin_token,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(v2.status(), 200);
    assert_eq!(
        audit_kinds(&app, &seeded.user.id).await,
        [
            "login_succeeded",
            "otp_sent",
            "otp_verified",
            "session_verified"
        ]
    );
}

#[tokio::test]
async fn only_the_starter_learns_the_outcome_and_nobody_else_gets_a_token() {
    let app = spawn_app().await;
    seed(&app).await;
    let session_id = Uuid::new_v4().to_string();
    let accepted = start_login(&app, &session_id).await;
    let request_id = accepted["request_id"].as_str().unwrap();
    let receipt = accepted["receipt"].as_str().unwrap();
    finished(&app, request_id, Some(receipt)).await;

    // Without a receipt, or with another request's, nothing is learnt.
    let bare = app
        .client
        .get(app.url(&format!("/one-requests/{request_id}")))
        .send()
        .await
        .unwrap();
    assert_error(bare, 404, "not-found").await;
    assert_error(
        read_request(
            &app,
            request_id,
            Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        )
        .await,
        404,
        "not-found",
    )
    .await;
    let other = Uuid::now_v7().to_string();
    assert_error(
        read_request(&app, &other, Some(receipt)).await,
        404,
        "not-found",
    )
    .await;
    // The session read needs a token, and a session token reads only its own.
    let response = app
        .client
        .get(app.url(&format!("/one-sessions-get-one?session_id={session_id}")))
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "unauthorized").await;
    let user = app.seed_user("1000", "10001", "bob@example.com").await;
    let login = app.login(&user).await;
    assert_error(
        get_one(&app, &session_id, &login.token).await,
        404,
        "not-found",
    )
    .await;
}

#[tokio::test]
async fn a_wrong_password_fails_the_session_and_counts_toward_the_lockout() {
    let db = Arc::new(TestDatabase::new());
    let app = spawn_app_with(
        db,
        SmtpServer::start(),
        &[("LATCHKEY_LOCKOUT_THRESHOLD", "3")],
    )
    .await;
    let seeded = seed(&app).await;
    let mut last_session = String::new();
    for _ in 0..3 {
        last_session = Uuid::new_v4().to_string();
        let response = app
            .client
            .post(app.url("/jef-one-validate-login-and-create-session"))
            .header("Prefer", "wait=10")
            .json(&login_body(&last_session, "wrong password"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["preference-applied"], "wait=10");
        let outcome = json(response).await;
        assert_eq!(outcome["status"], "failed", "{outcome}");
        assert_eq!(outcome["result"]["is_valid"], false);
        assert_eq!(outcome["result"]["status"], "failed");
        assert_eq!(outcome["result"]["status_code"], 401);
        assert_eq!(outcome["result"]["failure_code"], "invalid-credentials");
        assert_eq!(outcome["error"]["code"], "invalid-credentials");
        assert!(outcome.get("session_token").is_none());
    }
    // The refused login's session reads as failed; it has no row.
    let session = json(get_one(&app, &last_session, &app.admin_token).await).await;
    assert_eq!(session["status"], "failed");
    assert_eq!(session["failure_code"], "invalid-credentials");

    // Locked: the right password is refused here and on the PACE face.
    let outcome = json(
        app.client
            .post(app.url("/jef-one-validate-login-and-create-session"))
            .header("Prefer", "wait=10")
            .json(&login_body(&Uuid::new_v4().to_string(), PASSWORD))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        outcome["result"]["failure_code"], "user-locked",
        "{outcome}"
    );
    assert_error(
        app.login_response(&json!({"loginName": seeded.user.login_name, "password": PASSWORD}))
            .await,
        429,
        "user-locked",
    )
    .await;
    let kinds = audit_kinds(&app, &seeded.user.id).await;
    assert_eq!(kinds.iter().filter(|k| *k == "login_failed").count(), 3);
    assert!(kinds.contains(&"user_locked".to_owned()), "{kinds:?}");
}

#[tokio::test]
async fn every_bad_field_comes_back_in_one_422_and_nothing_is_recorded() {
    let app = spawn_app().await;
    let response = send(
        &app,
        Method::POST,
        "/jef-one-validate-login-and-create-session",
        &json!({
            "session_id": "4dc84733ce2a461b80174e77b3f99a66",
            "entity_number": "100",
            "application_name": "a".repeat(121),
            "employee_number": "1000a",
            "password": "p".repeat(121),
            "extra": 1,
        }),
    )
    .await;
    let errors = assert_error(response, 422, "validation-failed").await;
    assert_eq!(
        pointers(&errors),
        [
            "/application_name",
            "/employee_number",
            "/entity_number",
            "/extra",
            "/password",
            "/session_id"
        ]
    );
    // At the edges, the same fields pass.
    let mut body = login_body(&Uuid::new_v4().to_string(), &"p".repeat(120));
    body["application_name"] = json!("a".repeat(120));
    assert_eq!(
        send(
            &app,
            Method::POST,
            "/jef-one-validate-login-and-create-session",
            &body
        )
        .await
        .status(),
        202
    );

    // Seed 001: booleans as JSON, "true" and "True"; a context object or a
    // string holding one; the seed's times.
    let seeded = seed(&app).await;
    let mut body = post_one_body(&seeded, &Uuid::new_v4().to_string());
    body["is_valid"] = json!("yes");
    body["is_active"] = json!(1);
    body["session_context"] = json!("not json");
    body["expires_at"] = json!("2026-05-17 15:49:56");
    body["created_at"] = json!("2026-02-30T15:49:56Z");
    body["application_type"] = json!("tablet");
    body["status"] = json!("active");
    body["session_entity_field"] = json!("1field");
    body["failure_reason"] = json!("x".repeat(501));
    body.as_object_mut().unwrap().remove("user_id");
    let errors = assert_error(
        admin_send(&app, Method::POST, "/one-sessions-post-one", &body).await,
        422,
        "validation-failed",
    )
    .await;
    assert_eq!(
        pointers(&errors),
        [
            "/application_type",
            "/created_at",
            "/expires_at",
            "/failure_reason",
            "/is_active",
            "/is_valid",
            "/session_context",
            "/session_entity_field",
            "/status",
            "/user_id"
        ]
    );
    for (valid, active, context) in [
        (json!(true), json!(false), json!({"k": "v"})),
        (json!("true"), json!("false"), json!("{\"k\": 1}")),
        (json!("True"), json!("False"), json!({})),
    ] {
        let mut body = post_one_body(&seeded, &Uuid::new_v4().to_string());
        body["is_valid"] = valid;
        body["is_active"] = active;
        body["session_context"] = context;
        body["expires_at"] = json!("2099-05-17T15:49:56.123456");
        let response = admin_send(&app, Method::POST, "/one-sessions-post-one", &body).await;
        assert_eq!(response.status(), 202);
    }
    // Seed 000's session_entity_field_value is four digits.
    let errors = assert_error(
        admin_send(
            &app,
            Method::PATCH,
            "/one-sessions-patch-one",
            &json!({"session_id": Uuid::new_v4(), "session_entity_field": "entity_number", "session_entity_field_value": "10001"}),
        )
        .await,
        422,
        "validation-failed",
    )
    .await;
    assert_eq!(pointers(&errors), ["/session_entity_field_value"]);
    // The backend's calls need an admin token.
    assert_error(
        send(&app, Method::POST, "/one-sessions-post-one", &body).await,
        401,
        "unauthorized",
    )
    .await;
}

#[tokio::test]
async fn post_one_records_a_pending_session_and_mails_its_code_whatever_the_body_says() {
    let app = spawn_app().await;
    let seeded = seed(&app).await;
    let session_id = Uuid::new_v4().to_string();
    let body = post_one_body(&seeded, &session_id);
    let accepted =
        accepted(admin_send(&app, Method::POST, "/one-sessions-post-one", &body).await).await;
    assert!(accepted.get("receipt").is_none());
    let outcome = finished(&app, accepted["request_id"].as_str().unwrap(), None).await;
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    let result = &outcome["result"];
    assert_eq!(result["status"], "pending");
    assert_eq!(result["is_valid"], false);
    assert_eq!(result["status_code"], 201);
    assert_eq!(
        result["ignored_fields"],
        json!([
            "is_valid",
            "verified_at",
            "created_at",
            "updated_at",
            "failure_reason"
        ])
    );
    // Far beyond the configured lifetime: capped to it.
    assert_eq!(result["expires_at_capped"], true);

    let session = json(get_one(&app, &session_id, &app.admin_token).await).await;
    assert_eq!(session["status"], "pending");
    assert_eq!(session["session_entity_field"], "mobile_application_id");
    assert_eq!(
        session["session_entity_field_value"],
        seeded.mobile_app.as_str()
    );
    assert_eq!(session["mobile_application_id"], seeded.mobile_app.as_str());
    assert_eq!(
        session["desktop_application_id"],
        seeded.desktop_app.as_str()
    );
    assert_eq!(session["application_id"], seeded.mobile_app.as_str());
    assert_eq!(session["session_context"], json!({}));
    assert!(session["verified_at"].is_null());
    let mail = app.smtp.wait_for(1).await.remove(0);
    assert_eq!(mail.code().len(), 6);
    // The same session on the PACE face.
    let pace = json(app.get(&format!("/sessions/{session_id}")).await).await;
    assert_eq!(pace["status"], "pending");

    // The id in use: the request fails with conflict.
    let again = accepted_then_finished(&app, Method::POST, "/one-sessions-post-one", &body).await;
    assert_eq!(again["status"], "failed");
    assert_eq!(again["result"]["failure_code"], "conflict");
    assert_eq!(again["error"]["source"]["pointer"], "/session_id");

    // What the stored records contradict fails, with the field named.
    let mut wrong = post_one_body(&seeded, &Uuid::new_v4().to_string());
    wrong["employee_number"] = json!("99999");
    let failed = accepted_then_finished(&app, Method::POST, "/one-sessions-post-one", &wrong).await;
    assert_eq!(failed["result"]["failure_code"], "record-mismatch");
    assert_eq!(failed["error"]["source"]["pointer"], "/employee_number");
    let mut wrong = post_one_body(&seeded, &Uuid::new_v4().to_string());
    wrong["session_entity_field_value"] = json!(seeded.desktop_app);
    let failed = accepted_then_finished(&app, Method::POST, "/one-sessions-post-one", &wrong).await;
    assert_eq!(failed["result"]["failure_code"], "record-mismatch");
    assert_eq!(
        failed["error"]["source"]["pointer"],
        "/session_entity_field_value"
    );
}

async fn accepted_then_finished(app: &TestApp, method: Method, path: &str, body: &Value) -> Value {
    let accepted = accepted(admin_send(app, method, path, body).await).await;
    finished(app, accepted["request_id"].as_str().unwrap(), None).await
}

#[tokio::test]
async fn patch_one_obeys_the_engine_valid_only_when_proven_lifetime_capped_invalid_ends_it() {
    let app = spawn_app().await;
    let seeded = seed(&app).await;
    let session_id = Uuid::new_v4().to_string();
    // A session the user logged into: it has a token to kill later.
    let accepted = start_login(&app, &session_id).await;
    let outcome = finished(
        &app,
        accepted["request_id"].as_str().unwrap(),
        accepted["receipt"].as_str(),
    )
    .await;
    let token = outcome["session_token"].as_str().unwrap().to_owned();
    let patch = |body: Value| {
        let app = &app;
        async move { accepted_then_finished(app, Method::PATCH, "/one-sessions-patch-one", &body).await }
    };

    let refused = patch(json!({"session_id": session_id, "is_valid": "True"})).await;
    assert_eq!(refused["status"], "failed");
    assert_eq!(refused["result"]["failure_code"], "session-not-verified");
    let too_long =
        patch(json!({"session_id": session_id, "expires_at": "2099-01-01T00:00:00Z"})).await;
    assert_eq!(too_long["result"]["failure_code"], "lifetime-too-long");
    assert_eq!(too_long["error"]["source"]["pointer"], "/expires_at");
    let other_user = patch(json!({"session_id": session_id, "user_id": Uuid::new_v4()})).await;
    assert_eq!(other_user["result"]["failure_code"], "record-mismatch");

    // Shorter is applied, with the binding (seed 000's example).
    let soon = (app.clock.now() + chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let changed = patch(json!({
        "session_id": session_id,
        "user_id": seeded.user.id,
        "entity_id": seeded.entity_id,
        "session_entity_field": "entity_number",
        "session_entity_field_value": "1000",
        "mobile_application_id": seeded.mobile_app,
        "expires_at": soon,
        "created_at": "2026-05-15T05:50:29Z",
    }))
    .await;
    assert_eq!(changed["status"], "succeeded", "{changed}");
    assert_eq!(changed["result"]["expires_at"], soon.as_str());
    assert_eq!(changed["result"]["ignored_fields"], json!(["created_at"]));
    let session = json(get_one(&app, &session_id, &token).await).await;
    assert_eq!(session["session_entity_field_value"], "1000");
    assert_eq!(session["expires_at"], soon.as_str());

    // Proven (a trusted backend vouches on the PACE face): valid is accepted.
    let vouch = app
        .put(
            &format!("/sessions/{session_id}"),
            &json!({"userId": seeded.user.id, "passedLoginOTP": true}),
        )
        .await;
    assert_eq!(vouch.status(), 204);
    let valid = patch(json!({"session_id": session_id, "is_valid": true})).await;
    assert_eq!(valid["status"], "succeeded");
    assert_eq!(valid["result"]["is_valid"], true);

    // is_valid false ends it: failed, its token dead at once.
    let ended = patch(json!({"session_id": session_id, "is_valid": false, "failure_reason": "Invalid login credentials"})).await;
    assert_eq!(ended["status"], "succeeded");
    assert_eq!(ended["result"]["status"], "failed");
    assert_eq!(
        ended["result"]["failure_reason"],
        "Invalid login credentials"
    );
    assert_error(
        get_one(&app, &session_id, &token).await,
        401,
        "unauthorized",
    )
    .await;
    let session = json(get_one(&app, &session_id, &app.admin_token).await).await;
    assert_eq!(session["status"], "failed");
    assert_eq!(session["failure_code"], "invalidated");
    assert!(
        audit_kinds(&app, &seeded.user.id)
            .await
            .contains(&"session_failed".to_owned())
    );
}

#[tokio::test]
async fn an_idempotency_key_answers_the_same_request_and_refuses_another_body() {
    let app = spawn_app().await;
    let seeded = seed(&app).await;
    let body = post_one_body(&seeded, &Uuid::new_v4().to_string());
    let key = Uuid::new_v4().to_string();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let response = app
            .admin(Method::POST, "/one-sessions-post-one")
            .header("Idempotency-Key", &key)
            .json(&body)
            .send()
            .await
            .unwrap();
        ids.push(
            accepted(response).await["request_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let outcome = finished(&app, &ids[0], None).await;
    assert_eq!(outcome["status"], "succeeded");
    // The work was done once: one code mailed.
    app.smtp.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.smtp.received().len(), 1);

    let mut other = body.clone();
    other["session_context"] = json!({"other": true});
    let response = app
        .admin(Method::POST, "/one-sessions-post-one")
        .header("Idempotency-Key", &key)
        .json(&other)
        .send()
        .await
        .unwrap();
    let errors = assert_error(response, 422, "idempotency-key-reused").await;
    assert_eq!(errors[0]["source"]["header"], "Idempotency-Key");
}

#[tokio::test]
async fn a_request_accepted_before_a_restart_is_done_after_it_in_order() {
    let db = Arc::new(TestDatabase::new());
    let smtp = SmtpServer::start();
    // A node that only accepts: the requests wait in the table.
    let app = spawn_app_with(
        db.clone(),
        smtp.clone(),
        &[("LATCHKEY_ASYNC_WORKER", "false")],
    )
    .await;
    let seeded = seed(&app).await;
    let session_id = Uuid::new_v4().to_string();
    let post = accepted(
        admin_send(
            &app,
            Method::POST,
            "/one-sessions-post-one",
            &post_one_body(&seeded, &session_id),
        )
        .await,
    )
    .await;
    let patch = accepted(
        admin_send(
            &app,
            Method::PATCH,
            "/one-sessions-patch-one",
            &json!({"session_id": session_id, "is_valid": false, "failure_reason": "Login timeout during sync"}),
        )
        .await,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiting = json(read_request(&app, post["request_id"].as_str().unwrap(), None).await).await;
    assert_eq!(waiting["status"], "accepted");

    let app = app.restart_with(&[]).await;
    let first = finished(&app, post["request_id"].as_str().unwrap(), None).await;
    let second = finished(&app, patch["request_id"].as_str().unwrap(), None).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    // The patch ran after the post it was accepted after.
    assert_eq!(second["status"], "succeeded", "{second}");
    let session = json(get_one(&app, &session_id, &app.admin_token).await).await;
    assert_eq!(session["status"], "failed");
    assert_eq!(session["failure_reason"], "Login timeout during sync");
}

#[tokio::test]
async fn two_nodes_on_one_database_process_each_request_once() {
    let db = Arc::new(TestDatabase::new());
    let smtp = SmtpServer::start();
    let first = spawn_app_with(
        db.clone(),
        smtp.clone(),
        &[("LATCHKEY_ASYNC_POLL_MS", "20")],
    )
    .await;
    let second = spawn_app_with(
        db.clone(),
        smtp.clone(),
        &[("LATCHKEY_ASYNC_POLL_MS", "20")],
    )
    .await;
    let seeded = seed(&first).await;
    let mut requests = Vec::new();
    for i in 0..12 {
        let node = if i % 2 == 0 { &first } else { &second };
        let body = post_one_body(&seeded, &Uuid::new_v4().to_string());
        let response = node
            .client
            .post(node.url("/one-sessions-post-one"))
            .bearer_auth(&first.admin_token)
            .json(&body)
            .send()
            .await
            .unwrap();
        requests.push(
            accepted(response).await["request_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    for id in &requests {
        let outcome = finished(&second, id, None).await;
        assert_eq!(outcome["status"], "succeeded", "{outcome}");
    }
    // Each request's session mailed one code: 12, not more.
    smtp.wait_for(12).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(smtp.received().len(), 12);
    let sessions = json(
        first
            .get(&format!("/sessions?userId={}&limit=100", seeded.user.id))
            .await,
    )
    .await;
    assert_eq!(sessions["meta"]["total"], 12);
}

#[tokio::test]
async fn metrics_count_accepted_and_finished_requests() {
    let app = spawn_app().await;
    seed(&app).await;
    let accepted = accepted(
        send(
            &app,
            Method::POST,
            "/jef-one-validate-login-and-create-session",
            &login_body(&Uuid::new_v4().to_string(), "wrong"),
        )
        .await,
    )
    .await;
    finished(
        &app,
        accepted["request_id"].as_str().unwrap(),
        accepted["receipt"].as_str(),
    )
    .await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    for name in [
        "latchkey_async_requests_accepted_total",
        "latchkey_async_requests_finished_total",
        "latchkey_async_request_seconds",
        "latchkey_async_queue_depth",
        "latchkey_async_oldest_waiting_seconds",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }
}

#[tokio::test]
async fn the_same_key_sent_in_parallel_records_one_request() {
    let app = spawn_app().await;
    let seeded = seed(&app).await;
    let body = post_one_body(&seeded, &Uuid::new_v4().to_string());
    let key = Uuid::new_v4().to_string();
    let send = || {
        app.admin(Method::POST, "/one-sessions-post-one")
            .header("Idempotency-Key", &key)
            .json(&body)
            .send()
    };
    let responses = futures_util::future::join_all((0..10).map(|_| send())).await;
    let mut ids = Vec::new();
    for response in responses {
        ids.push(
            accepted(response.unwrap()).await["request_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(finished(&app, &ids[0], None).await["status"], "succeeded");
}

#[tokio::test]
async fn an_anonymous_key_belongs_to_its_client_network_and_is_no_password_oracle() {
    let db = Arc::new(TestDatabase::new());
    let app = spawn_app_with(
        db,
        SmtpServer::start(),
        &[("LATCHKEY_TRUSTED_PROXIES", "127.0.0.1/32")],
    )
    .await;
    let seeded = seed(&app).await;
    let session_id = Uuid::new_v4().to_string();
    let key = session_id.clone();
    let login = |from: &'static str, password: &str| {
        app.client
            .post(app.url("/jef-one-validate-login-and-create-session"))
            .header("X-Forwarded-For", from)
            .header("Idempotency-Key", &key)
            .json(&login_body(&session_id, password))
            .send()
    };
    let victim = accepted(login("203.0.113.5", PASSWORD).await.unwrap()).await;
    // From elsewhere, the victim's key is no key at all: a wrong password is
    // a login of its own, refused and counted, not "another body".
    let guess = accepted(login("198.51.100.7", "guess").await.unwrap()).await;
    assert_ne!(guess["request_id"], victim["request_id"]);
    let outcome = finished(
        &app,
        guess["request_id"].as_str().unwrap(),
        guess["receipt"].as_str(),
    )
    .await;
    assert_eq!(outcome["result"]["failure_code"], "invalid-credentials");
    // The right password from elsewhere gets its own request, never the
    // victim's receipt.
    let other = accepted(login("198.51.100.8", PASSWORD).await.unwrap()).await;
    assert_ne!(other["request_id"], victim["request_id"]);
    assert_ne!(other["receipt"], victim["receipt"]);
    // Within one network a key is one request: another body is refused.
    assert_error(
        login("198.51.100.7", PASSWORD).await.unwrap(),
        422,
        "idempotency-key-reused",
    )
    .await;
    // From the victim's network, the same key and body is a replay.
    let replay = accepted(login("203.0.113.5", PASSWORD).await.unwrap()).await;
    assert_eq!(replay["request_id"], victim["request_id"]);
    let kinds = audit_kinds(&app, &seeded.user.id).await;
    assert!(kinds.contains(&"login_failed".to_owned()), "{kinds:?}");
}

#[tokio::test]
async fn a_closed_session_hands_out_no_token_and_the_outcome_stays_readable() {
    let app = spawn_app().await;
    seed(&app).await;
    let session_id = Uuid::new_v4().to_string();
    let accepted = start_login(&app, &session_id).await;
    let (id, receipt) = (
        accepted["request_id"].as_str().unwrap(),
        accepted["receipt"].as_str().unwrap(),
    );
    // The backend's view: the request finished (no token taken).
    finished(&app, id, None).await;
    let ended = accepted_then_finished(
        &app,
        Method::PATCH,
        "/one-sessions-patch-one",
        &json!({"session_id": session_id, "is_valid": false}),
    )
    .await;
    assert_eq!(ended["status"], "succeeded");
    for _ in 0..2 {
        let response = read_request(&app, id, Some(receipt)).await;
        assert_eq!(response.status(), 200);
        let view = json(response).await;
        assert_eq!(view["status"], "succeeded");
        assert!(view.get("session_token").is_none(), "{view}");
        assert!(view.get("session_token_issued_at").is_none(), "{view}");
    }
}

#[tokio::test]
async fn a_nul_in_a_failure_reason_is_refused_at_the_door() {
    let app = spawn_app().await;
    let errors = assert_error(
        admin_send(
            &app,
            Method::PATCH,
            "/one-sessions-patch-one",
            &json!({"session_id": Uuid::new_v4(), "is_valid": false, "failure_reason": "bad\u{0}reason"}),
        )
        .await,
        422,
        "validation-failed",
    )
    .await;
    assert_eq!(pointers(&errors), ["/failure_reason"]);
}

#[tokio::test]
async fn parallel_patches_of_one_session_apply_in_their_accepted_order() {
    use diesel::prelude::*;
    use latchkey::db::schema::one_requests as r;
    let app = spawn_app().await;
    let seeded = seed(&app).await;
    let session_id = Uuid::new_v4().to_string();
    let created = accepted_then_finished(
        &app,
        Method::POST,
        "/one-sessions-post-one",
        &post_one_body(&seeded, &session_id),
    )
    .await;
    assert_eq!(created["status"], "succeeded");
    for round in 0..3 {
        let times: Vec<String> = (1..=8)
            .map(|i| {
                (app.clock.now() + chrono::Duration::minutes(round * 10 + i))
                    .format("%Y-%m-%dT%H:%M:%SZ")
                    .to_string()
            })
            .collect();
        let patches = times.iter().map(|at| {
            app.admin(Method::PATCH, "/one-sessions-patch-one")
                .json(&json!({"session_id": session_id, "expires_at": at}))
                .send()
        });
        let mut ids = Vec::new();
        for response in futures_util::future::join_all(patches).await {
            ids.push(
                accepted(response.unwrap()).await["request_id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        for id in &ids {
            assert_eq!(finished(&app, id, None).await["status"], "succeeded");
        }
        // The last accepted patch is the one that stays.
        let last_command: String = {
            let mut conn = app.core.db.connection().unwrap();
            r::table
                .filter(r::session_id.eq(&session_id))
                .filter(r::operation.eq("patch-one"))
                .order(r::sequence.desc())
                .select(r::command)
                .first(&mut conn)
                .unwrap()
        };
        let last: Value = serde_json::from_str(&last_command).unwrap();
        let session = json(get_one(&app, &session_id, &app.admin_token).await).await;
        assert_eq!(session["expires_at"], last["expires_at"], "round {round}");
    }
}
