use chrono::Duration;
use latchkey::clock::Clock;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, TestUser, assert_error, json, pointers, spawn_app, spawn_app_with_env,
};
use crate::totp::{enrolled, totp_sha1, verified_login};

pub async fn create(app: &TestApp, token: Option<&str>, body: Value) -> reqwest::Response {
    let mut request = app.client.post(app.url("/v2/sessions")).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

pub async fn patch(app: &TestApp, token: &str, session_id: &str, body: Value) -> reqwest::Response {
    app.with_token(Method::PATCH, &format!("/v2/sessions/{session_id}"), token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn get(app: &TestApp, token: &str, session_id: &str) -> reqwest::Response {
    app.with_token(Method::GET, &format!("/v2/sessions/{session_id}"), token)
        .send()
        .await
        .unwrap()
}

pub fn login_checks(user: &TestUser) -> Value {
    json!({"checks": {"user": {"loginName": user.login_name}, "password": {"password": user.password}}})
}

pub async fn v2_login(app: &TestApp, user: &TestUser) -> (String, String) {
    let response = create(app, None, login_checks(user)).await;
    assert_eq!(response.status(), 201);
    let body = json(response).await;
    (
        body["sessionId"].as_str().unwrap().to_owned(),
        body["sessionToken"].as_str().unwrap().to_owned(),
    )
}

/// A v2 login whose emailed code is checked: a verified session.
pub async fn v2_verified_login(app: &TestApp, user: &TestUser) -> (String, String) {
    let mut body = login_checks(user);
    body["challenges"] = json!({"otpEmail": {"sendCode": {}}});
    let before = app.smtp.received().len();
    let response = create(app, None, body).await;
    assert_eq!(response.status(), 201);
    let created = json(response).await;
    let session_id = created["sessionId"].as_str().unwrap().to_owned();
    let code = app.smtp.wait_for(before + 1).await[before].code();
    let response = patch(
        app,
        created["sessionToken"].as_str().unwrap(),
        &session_id,
        json!({"checks": {"otpEmail": {"code": code}}}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let token = json(response).await["sessionToken"]
        .as_str()
        .unwrap()
        .to_owned();
    (session_id, token)
}

#[tokio::test]
async fn a_login_through_the_v2_api() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let response = create(&app, None, login_checks(&user)).await;
    assert_eq!(response.status(), 201);
    let body = json(response).await;
    assert!(body["details"]["sequence"].is_string());
    assert!(body["details"]["changeDate"].is_string());
    let entity_id =
        json(app.get(&format!("/admin/users/{}", user.id)).await).await["entityId"].clone();
    assert_eq!(body["details"]["resourceOwner"], entity_id);
    assert!(body.get("challenges").is_none());
    let (session_id, token) = (
        body["sessionId"].as_str().unwrap(),
        body["sessionToken"].as_str().unwrap(),
    );

    let session = json(get(&app, token, session_id).await).await["session"].clone();
    assert_eq!(session["id"], session_id);
    assert_eq!(session["factors"]["user"]["id"], user.id.as_str());
    assert_eq!(session["factors"]["user"]["loginName"], "ann@example.com");
    assert_eq!(session["factors"]["user"]["displayName"], "Employee 10000");
    assert_eq!(session["factors"]["user"]["organizationId"], entity_id);
    assert!(session["factors"]["password"]["verifiedAt"].is_string());
    assert!(session["factors"].get("otpEmail").is_none());
    assert!(session["expirationDate"].is_string());
    assert!(session["creationDate"].is_string());
}

#[tokio::test]
async fn creation_rules_and_authorization() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let wrong = json!({"checks": {"user": {"loginName": user.login_name}, "password": {"password": "wrong one"}}});
    let errors = assert_error(create(&app, None, wrong).await, 401, "invalid-credentials").await;
    assert_eq!(errors[0]["source"]["pointer"], "/checks/password");
    let failures = json(
        app.get(&format!(
            "/admin/audit?userId={}&kind=login_failed",
            user.id
        ))
        .await,
    )
    .await;
    assert_eq!(
        failures["meta"]["total"], 1,
        "a failed check counts toward lockout"
    );

    let no_password = json!({"checks": {"user": {"userId": user.id}}});
    assert_error(
        create(&app, None, no_password.clone()).await,
        401,
        "unauthorized",
    )
    .await;
    let (_, session_token) = v2_login(&app, &user).await;
    assert_error(
        create(&app, Some(&session_token), no_password.clone()).await,
        403,
        "forbidden",
    )
    .await;
    let response = create(&app, Some(&app.admin_token), no_password).await;
    assert_eq!(response.status(), 201);
    let session_id = json(response).await["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let session = json(get(&app, &app.admin_token, &session_id).await).await["session"].clone();
    assert!(session["factors"].get("password").is_none());

    let errors = assert_error(
        create(&app, None, json!({"checks": {}})).await,
        422,
        "validation-failed",
    )
    .await;
    assert_eq!(pointers(&errors), ["/checks/user"]);
    let errors = assert_error(
        create(&app, None, json!({"checks": {"user": {"loginName": "a", "userId": "b"}, "pasword": {}}, "lifetime": "soon"})).await,
        422,
        "validation-failed",
    )
    .await;
    assert_eq!(
        pointers(&errors),
        ["/checks/pasword", "/checks/user/userId", "/lifetime"]
    );
    let both = json!({"checks": {"user": {"loginName": "ann@example.com", "userId": user.id}}});
    let errors = assert_error(
        create(&app, Some(&app.admin_token), both).await,
        422,
        "validation-failed",
    )
    .await;
    assert_eq!(pointers(&errors), ["/checks/user/loginName"]);
    assert_error(
        create(
            &app,
            Some(&app.admin_token),
            json!({"checks": {"user": {"loginName": "nobody"}}}),
        )
        .await,
        404,
        "user-not-found",
    )
    .await;
}

#[tokio::test]
async fn email_code_challenge_and_check_with_rotating_tokens() {
    let app = spawn_app_with_env(&[("LATCHKEY_LINK_ORIGINS", "https://app.example.com")]).await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let (session_id, first_token) = v2_login(&app, &user).await;

    let template = "https://app.example.com/verify?code={{.Code}}&user={{.UserID}}&login={{.LoginName}}&session={{.SessionID}}";
    let response = patch(
        &app,
        &first_token,
        &session_id,
        json!({"challenges": {"otpEmail": {"sendCode": {"urlTemplate": template}}}}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    assert!(
        body.get("challenges").is_none(),
        "a sent code is not returned"
    );
    let second_token = body["sessionToken"].as_str().unwrap().to_owned();
    assert_ne!(second_token, first_token);
    assert_error(
        get(&app, &first_token, &session_id).await,
        401,
        "unauthorized",
    )
    .await;

    let mail = app.smtp.wait_for(1).await.remove(0);
    let code = mail.code();
    let link = format!(
        "https://app.example.com/verify?code={code}&user={}&login=ann%40example.com&session={session_id}",
        user.id
    );
    assert!(mail.text().contains(&link), "{}", mail.text());
    // In the HTML part the link is attribute-escaped.
    let html_link = mail.html().replace("&#x2f;", "/").replace("&amp;", "&");
    assert!(
        html_link.contains(&format!("href=\"{link}\"")),
        "{}",
        mail.html()
    );
    let stored = app
        .core
        .db
        .run(|conn| {
            Ok::<_, latchkey::error::ApiError>(latchkey::db::outbox::list(conn, None, 10, 0)?.0)
        })
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert!(
        stored[0].context.contains("code={{.Code}}") && !stored[0].context.contains(&code),
        "the link is stored without its code: {}",
        stored[0].context
    );

    let wrong = if code == "000000" { "000001" } else { "000000" };
    let errors = assert_error(
        patch(
            &app,
            &second_token,
            &session_id,
            json!({"checks": {"otpEmail": {"code": wrong}}}),
        )
        .await,
        404,
        "otp-invalid",
    )
    .await;
    assert_eq!(errors[0]["source"]["pointer"], "/checks/otpEmail");
    // A failed check leaves the session and its token as they were.
    let response = patch(
        &app,
        &second_token,
        &session_id,
        json!({"checks": {"otpEmail": {"code": code}}}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let third_token = json(response).await["sessionToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let session = json(get(&app, &third_token, &session_id).await).await["session"].clone();
    assert!(session["factors"]["otpEmail"]["verifiedAt"].is_string());
    let attempts: i32 = {
        use diesel::prelude::*;
        use latchkey::db::schema::otp_challenges as c;
        let mut conn = app.core.db.connection().unwrap();
        c::table.select(c::attempts).first(&mut conn).unwrap()
    };
    assert_eq!(attempts, 1, "the wrong try was counted");
    // The code is single-use.
    assert_error(
        patch(
            &app,
            &third_token,
            &session_id,
            json!({"checks": {"otpEmail": {"code": code}}}),
        )
        .await,
        404,
        "otp-invalid",
    )
    .await;
}

#[tokio::test]
async fn returned_codes_are_for_admins_only() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let (session_id, token) = v2_login(&app, &user).await;
    let body = json!({"challenges": {"otpEmail": {"returnCode": {}}}});
    assert_error(
        patch(&app, &token, &session_id, body.clone()).await,
        403,
        "forbidden",
    )
    .await;
    let response = patch(&app, &app.admin_token, &session_id, body).await;
    assert_eq!(response.status(), 200);
    let code = json(response).await["challenges"]["otpEmail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(code.len(), 6);
    let response = patch(
        &app,
        &app.admin_token,
        &session_id,
        json!({"checks": {"otpEmail": {"code": code}}}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(
        app.smtp.received().is_empty(),
        "a returned code is not mailed"
    );
}

#[tokio::test]
async fn the_user_cannot_change_and_metadata_and_lifetime_apply() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let other = app.seed_user("1000", "10001", "bob@example.com").await;
    let (session_id, token) = v2_login(&app, &user).await;
    let errors = assert_error(
        patch(
            &app,
            &token,
            &session_id,
            json!({"checks": {"user": {"userId": other.id}}}),
        )
        .await,
        409,
        "conflict",
    )
    .await;
    assert_eq!(errors[0]["source"]["pointer"], "/checks/user");

    let errors = assert_error(
        patch(
            &app,
            &token,
            &session_id,
            json!({"metadata": {"device": "not base64!"}, "lifetime": "-5s"}),
        )
        .await,
        422,
        "validation-failed",
    )
    .await;
    assert_eq!(pointers(&errors), ["/lifetime", "/metadata/device"]);

    // A pending session may not set metadata or its lifetime ...
    assert_error(
        patch(
            &app,
            &token,
            &session_id,
            json!({"metadata": {"device": "aVBob25l"}}),
        )
        .await,
        403,
        "session-not-verified",
    )
    .await;
    // ... a verified one may.
    let (session_id, token) = v2_verified_login(&app, &user).await;
    let response = patch(
        &app,
        &token,
        &session_id,
        json!({"metadata": {"device": "aVBob25l"}, "lifetime": "600s"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let token = json(response).await["sessionToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let session = json(get(&app, &token, &session_id).await).await["session"].clone();
    assert_eq!(session["metadata"], json!({"device": "aVBob25l"}));
    let expires: chrono::DateTime<chrono::Utc> =
        session["expirationDate"].as_str().unwrap().parse().unwrap();
    assert_eq!((expires - app.clock.now()).num_seconds(), 600);

    app.clock.advance(Duration::seconds(601));
    assert_error(get(&app, &token, &session_id).await, 401, "unauthorized").await;
}

#[tokio::test]
async fn deleting_a_session_kills_its_token() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let (session_id, token) = v2_login(&app, &user).await;
    let response = app
        .with_token(
            Method::DELETE,
            &format!("/v2/sessions/{session_id}"),
            &token,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(json(response).await["details"]["sequence"].is_string());
    assert_error(get(&app, &token, &session_id).await, 401, "unauthorized").await;
    assert_eq!(
        json(app.get(&format!("/sessions/{session_id}")).await).await["status"],
        "revoked"
    );
    assert_eq!(get(&app, &app.admin_token, &session_id).await.status(), 200);
}

#[tokio::test]
async fn search_by_ids_user_and_creation_date() {
    let app = spawn_app().await;
    let ann = app.seed_user("1000", "10000", "ann@example.com").await;
    let bob = app.seed_user("1000", "10001", "bob@example.com").await;
    let (first, ann_token) = v2_verified_login(&app, &ann).await;
    let cut = app.clock.now();
    app.clock.advance(Duration::seconds(10));
    let (second, _) = v2_login(&app, &ann).await;
    v2_login(&app, &bob).await;

    let search = |token: String, body: Value| {
        let app = &app;
        async move {
            json(
                app.with_token(Method::POST, "/v2/sessions/search", &token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let all = search(app.admin_token.clone(), json!({})).await;
    assert_eq!(all["details"]["totalResult"], "3");
    let by_user = search(
        app.admin_token.clone(),
        json!({"queries": [{"userIdQuery": {"id": ann.id}}], "query": {"asc": true}}),
    )
    .await;
    let ids: Vec<&str> = by_user["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first.as_str(), second.as_str()]);
    let by_ids = search(
        app.admin_token.clone(),
        json!({"queries": [{"idsQuery": {"ids": [second]}}]}),
    )
    .await;
    assert_eq!(by_ids["details"]["totalResult"], "1");
    let newer = search(
        app.admin_token.clone(),
        json!({"queries": [{"creationDateQuery": {"creationDate": cut.to_rfc3339(), "method": "TIMESTAMP_QUERY_METHOD_GREATER"}}]}),
    )
    .await;
    assert_eq!(newer["details"]["totalResult"], "2");
    let paged = search(
        app.admin_token.clone(),
        json!({"query": {"offset": "1", "limit": 1}}),
    )
    .await;
    assert_eq!(paged["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(paged["details"]["totalResult"], "3");

    // A session token sees only its user's sessions.
    let own = search(ann_token.clone(), json!({})).await;
    assert_eq!(own["details"]["totalResult"], "2");
    let others = search(
        ann_token,
        json!({"queries": [{"userIdQuery": {"id": bob.id}}]}),
    )
    .await;
    assert_eq!(others["details"]["totalResult"], "0");
}

/// An `idsQuery` naming no ids matches no session (as in ZITADEL, where
/// an absent repeated field is an empty one), not every session.
#[tokio::test]
async fn search_by_no_ids_matches_nothing() {
    let app = spawn_app().await;
    let ann = app.seed_user("1000", "10000", "ann@example.com").await;
    v2_login(&app, &ann).await;
    let (_, ann_token) = v2_verified_login(&app, &ann).await;
    for token in [app.admin_token.clone(), ann_token] {
        for query in [json!({"ids": []}), json!({})] {
            let found = json(
                app.with_token(Method::POST, "/v2/sessions/search", &token)
                    .json(&json!({"queries": [{"idsQuery": query}]}))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(found["details"]["totalResult"], "0", "{query}: {found}");
            assert_eq!(found["sessions"], json!([]), "{query}");
        }
    }
}

#[tokio::test]
async fn one_session_across_the_faces() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let (session_id, token) = v2_login(&app, &user).await;
    // The code is asked for through the PACE face with the v2 token ...
    let response = app
        .with_token(Method::PUT, &format!("/sessions/{session_id}"), &token)
        .json(&json!({"userId": user.id, "passedLoginOTP": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let code = app.smtp.wait_for(1).await[0].code();
    // ... verified with VerifyOTP ...
    let response = app
        .with_token(Method::POST, "/user/otp/verify", &token)
        .json(&json!({"otp": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // ... and read through the v2 face.
    let session = json(get(&app, &token, &session_id).await).await["session"].clone();
    assert!(session["factors"]["otpEmail"]["verifiedAt"].is_string());
    assert!(session["factors"]["password"]["verifiedAt"].is_string());

    // And the other way round: a PACE login, advanced by a v2 PATCH.
    let login = verified_login(&app, &user).await;
    let response = patch(
        &app,
        &login.token,
        &login.session_id,
        json!({"metadata": {"k": "dg=="}}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let pace = json(app.get(&format!("/sessions/{}", login.session_id)).await).await;
    assert_eq!(pace["metadata"], json!({"k": "dg=="}));
    // The PATCH replaced the token.
    assert_error(app.read_own_session(&login).await, 401, "unauthorized").await;
}

#[tokio::test]
async fn authenticator_and_recovery_code_checks() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let login = verified_login(&app, &user).await;
    let secret = enrolled(&app, &login).await;
    let codes: Vec<String> = json(
        app.with_token(Method::POST, "/user/recovery-codes", &login.token)
            .send()
            .await
            .unwrap(),
    )
    .await["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();

    app.clock.advance(Duration::seconds(30));
    let now = app.clock.now().timestamp();
    let mut body = login_checks(&user);
    body["checks"]["totp"] = json!({"code": totp_sha1(&secret, now, 6)});
    let response = create(&app, None, body.clone()).await;
    assert_eq!(response.status(), 201);
    let created = json(response).await;
    let session = json(
        get(
            &app,
            created["sessionToken"].as_str().unwrap(),
            created["sessionId"].as_str().unwrap(),
        )
        .await,
    )
    .await;
    assert!(session["session"]["factors"]["totp"]["verifiedAt"].is_string());
    // The same code again is a replay.
    let errors = assert_error(create(&app, None, body).await, 404, "otp-invalid").await;
    assert_eq!(errors[0]["source"]["pointer"], "/checks/totp");

    let (session_id, token) = v2_login(&app, &user).await;
    let response = patch(
        &app,
        &token,
        &session_id,
        json!({"checks": {"recoveryCode": {"code": codes[3]}}}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let token = json(response).await["sessionToken"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_error(
        patch(
            &app,
            &token,
            &session_id,
            json!({"checks": {"recoveryCode": {"code": codes[3]}}}),
        )
        .await,
        404,
        "otp-invalid",
    )
    .await;
}

#[tokio::test]
async fn sign_in_links_point_only_at_allowed_origins() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let send = |template: &str| {
        let mut body = login_checks(&user);
        body["challenges"] = json!({"otpEmail": {"sendCode": {"urlTemplate": template}}});
        body
    };
    for foreign in [
        "https://attacker.example.net/c?code={{.Code}}",
        "https://{{.LoginName}}.example.net/c?code={{.Code}}",
        "http://127.0.0.1:8081/c?code={{.Code}}",
        "https://127.0.0.1:8080/c?code={{.Code}}",
    ] {
        let errors = assert_error(
            create(&app, None, send(foreign)).await,
            422,
            "validation-failed",
        )
        .await;
        assert_eq!(
            errors[0]["source"]["pointer"], "/challenges/otpEmail/sendCode/urlTemplate",
            "{foreign}"
        );
        assert!(
            errors[0]["detail"]
                .as_str()
                .unwrap()
                .contains("http://127.0.0.1:8080"),
            "{errors:?}"
        );
    }
    // Nothing was sent, nothing was made.
    assert!(app.smtp.received().is_empty());
    // The public URL's origin is allowed by default ...
    let own = "http://127.0.0.1:8080/verify?code={{.Code}}";
    assert_eq!(create(&app, None, send(own)).await.status(), 201);
    // ... and an admin token may point anywhere.
    let mut admin_body = send("https://partner.example.org/c?code={{.Code}}");
    admin_body["checks"]
        .as_object_mut()
        .unwrap()
        .remove("password");
    assert_eq!(
        create(&app, Some(&app.admin_token), admin_body)
            .await
            .status(),
        201
    );
}
