//! What ZITADEL's own clients send to the v2 Session API: every field of
//! CreateSession, SetSession, GetSession, DeleteSession and ListSessions
//! (proto/zitadel/session/v2 in zitadel/zitadel) is used, ignored where
//! ZITADEL ignores it, or refused with a "not supported" code.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, assert_error, json, spawn_app_with_env};
use crate::zitadel::{create, login_checks, patch, v2_login};

const ORIGIN: &str = "https://login.example.com";

async fn app() -> TestApp {
    spawn_app_with_env(&[
        ("LATCHKEY_LINK_ORIGINS", ORIGIN),
        ("LATCHKEY_OTP_RESEND_COOLDOWN_SECS", "0"),
    ])
    .await
}

fn is_string_number(value: &Value) -> bool {
    value.as_str().is_some_and(|s| s.parse::<u64>().is_ok())
}

fn is_time(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok())
}

/// ZITADEL's `Details`.
fn assert_details(details: &Value) {
    assert!(is_string_number(&details["sequence"]), "{details}");
    assert!(is_time(&details["changeDate"]), "{details}");
    assert!(details["resourceOwner"].is_string(), "{details}");
}

/// ZITADEL's `Session`.
fn assert_session_shape(session: &Value) {
    let keys: Vec<&str> = session
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for key in [
        "id",
        "creationDate",
        "changeDate",
        "sequence",
        "factors",
        "metadata",
        "userAgent",
        "expirationDate",
    ] {
        assert!(keys.contains(&key), "{key} missing in {session}");
    }
    let known = [
        "id",
        "creationDate",
        "changeDate",
        "sequence",
        "factors",
        "metadata",
        "userAgent",
        "expirationDate",
    ];
    assert!(keys.iter().all(|k| known.contains(k)), "{session}");
    assert!(is_string_number(&session["sequence"]));
    assert!(is_time(&session["creationDate"]) && is_time(&session["changeDate"]));
    assert!(is_time(&session["expirationDate"]));
    for (name, factor) in session["factors"].as_object().unwrap() {
        assert!(
            [
                "user", "password", "webAuthN", "intent", "totp", "otpSms", "otpEmail"
            ]
            .contains(&name.as_str()),
            "{name}"
        );
        assert!(is_time(&factor["verifiedAt"]), "{factor}");
    }
}

fn user_agent() -> Value {
    json!({
        "fingerprintId": "fp-laptop-1",
        "ip": "203.0.113.7",
        "description": "Firefox on Linux",
        "header": {
            "User-Agent": {"values": ["Mozilla/5.0 (X11; Linux x86_64)"]},
            "Accept-Language": {"values": ["de-CH", "en"]}
        }
    })
}

/// CreateSession with every field of ZITADEL's shape (by a trusted
/// backend: metadata at creation needs an admin token): the session is
/// created, and GET returns each field as stored.
async fn create_with_every_field(app: &TestApp, user: &TestUser) -> (String, String) {
    let mut body = login_checks(user);
    body["metadata"] = json!({"device": "bGFwdG9w"});
    body["challenges"] = json!({"otpEmail": {"sendCode": {
        "urlTemplate": format!("{ORIGIN}/otp?code={{{{.Code}}}}&user={{{{.UserID}}}}")
    }}});
    body["userAgent"] = user_agent();
    body["lifetime"] = json!("3600s");
    let before = app.smtp.received().len();
    let response = create(app, Some(&app.admin_token), body).await;
    assert_eq!(response.status(), 201);
    let created = json(response).await;
    assert_details(&created["details"]);
    assert!(created["sessionId"].is_string() && created["sessionToken"].is_string());
    // A mailed code is not returned: ZITADEL leaves challenges.otpEmail out.
    assert!(created["challenges"].get("otpEmail").is_none());
    app.smtp.wait_for(before + 1).await;
    (
        created["sessionId"].as_str().unwrap().to_owned(),
        created["sessionToken"].as_str().unwrap().to_owned(),
    )
}

async fn get_v2(app: &TestApp, token: Option<&str>, path: &str) -> reqwest::Response {
    let mut request = app.client.get(app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn create_and_set_session_take_every_field_of_zitadels_shape() {
    let app = app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let (session_id, token) = create_with_every_field(&app, &user).await;

    let response = get_v2(&app, Some(&token), &format!("/v2/sessions/{session_id}")).await;
    assert_eq!(response.status(), 200);
    let session = json(response).await["session"].clone();
    assert_session_shape(&session);
    // Stored as the client sent it, not from the connection.
    assert_eq!(session["userAgent"], user_agent());
    assert_eq!(session["metadata"], json!({"device": "bGFwdG9w"}));
    let created =
        chrono::DateTime::parse_from_rfc3339(session["creationDate"].as_str().unwrap()).unwrap();
    let expires =
        chrono::DateTime::parse_from_rfc3339(session["expirationDate"].as_str().unwrap()).unwrap();
    assert_eq!((expires - created).num_seconds(), 3600);

    // SetSession with every field, the deprecated sessionToken included
    // (ignored: a wrong value changes nothing).
    let code = app.smtp.received().last().unwrap().code();
    let before = app.smtp.received().len();
    let response = patch(
        &app,
        &token,
        &session_id,
        json!({
            "sessionToken": "ignored-as-zitadel-does",
            "checks": {
                "user": {"userId": user.id},
                "password": {"password": user.password},
                "otpEmail": {"code": code}
            },
            "metadata": {"device": "", "app": "bG9naW4="},
            "challenges": {"otpEmail": {"sendCode": {}}},
            "lifetime": "7200s"
        }),
    )
    .await;
    assert_eq!(response.status(), 200);
    let set = json(response).await;
    assert_details(&set["details"]);
    assert!(set["sessionToken"].is_string());
    assert!(set.get("sessionId").is_none());
    app.smtp.wait_for(before + 1).await;
    let token = set["sessionToken"].as_str().unwrap();

    let session = json(get_v2(&app, Some(token), &format!("/v2/sessions/{session_id}")).await)
        .await["session"]
        .clone();
    assert_session_shape(&session);
    assert_eq!(session["metadata"], json!({"app": "bG9naW4="}));
    assert!(is_time(&session["factors"]["otpEmail"]["verifiedAt"]));
    assert!(is_time(&session["factors"]["password"]["verifiedAt"]));
    assert_eq!(session["factors"]["user"]["id"], user.id.as_str());
    assert_eq!(session["userAgent"]["fingerprintId"], "fp-laptop-1");

    // A field in no ZITADEL shape is still a typo.
    let errors = assert_error(
        patch(&app, token, &session_id, json!({"lifetme": "60s"})).await,
        422,
        "validation-failed",
    )
    .await;
    assert_eq!(errors[0]["source"]["pointer"], "/lifetme");
    let mut body = login_checks(&user);
    body["userAgent"] = json!({"fingerprint": "x"});
    let errors = assert_error(create(&app, None, body).await, 422, "validation-failed").await;
    assert_eq!(errors[0]["source"]["pointer"], "/userAgent/fingerprint");
    // userAgent belongs to CreateSession only.
    let errors = assert_error(
        patch(&app, token, &session_id, json!({"userAgent": user_agent()})).await,
        422,
        "validation-failed",
    )
    .await;
    assert_eq!(errors[0]["source"]["pointer"], "/userAgent");
}

#[tokio::test]
async fn a_session_without_lifetime_lives_the_configured_default() {
    let app = app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let (session_id, token) = v2_login(&app, &user).await;
    let session = json(get_v2(&app, Some(&token), &format!("/v2/sessions/{session_id}")).await)
        .await["session"]
        .clone();
    let created =
        chrono::DateTime::parse_from_rfc3339(session["creationDate"].as_str().unwrap()).unwrap();
    let expires =
        chrono::DateTime::parse_from_rfc3339(session["expirationDate"].as_str().unwrap()).unwrap();
    assert_eq!((expires - created).num_seconds(), 43_200);
}

#[tokio::test]
async fn get_session_takes_the_session_token_parameter() {
    let app = app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let (session_id, token) = v2_login(&app, &user).await;
    let (_, other_token) = v2_login(&app, &user).await;
    let path = format!("/v2/sessions/{session_id}");

    // The session's token in the query string is enough by itself…
    let response = get_v2(&app, None, &format!("{path}?sessionToken={token}")).await;
    assert_eq!(response.status(), 200);
    let session = json(response).await["session"].clone();
    assert_session_shape(&session);
    assert_eq!(session["id"], session_id.as_str());
    // …and beside another session's bearer token.
    let response = get_v2(
        &app,
        Some(&other_token),
        &format!("{path}?sessionToken={token}"),
    )
    .await;
    assert_eq!(response.status(), 200);
    // Without it, that bearer may not read this session.
    assert_error(
        get_v2(&app, Some(&other_token), &path).await,
        403,
        "forbidden",
    )
    .await;
    // Another session's token is not this session's token.
    assert_error(
        get_v2(&app, None, &format!("{path}?sessionToken={other_token}")).await,
        403,
        "forbidden",
    )
    .await;
    assert_error(
        get_v2(&app, None, &format!("{path}?sessionToken=not-a-token")).await,
        401,
        "unauthorized",
    )
    .await;
    assert_error(get_v2(&app, None, &path).await, 401, "unauthorized").await;
}

#[tokio::test]
async fn delete_session_takes_the_session_token_in_its_body() {
    let app = app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let (session_id, token) = v2_login(&app, &user).await;
    let path = format!("/v2/sessions/{session_id}");

    // No bearer and no body: who asks is unknown.
    let response = app.client.delete(app.url(&path)).send().await.unwrap();
    assert_error(response, 401, "unauthorized").await;
    // A body with a field in no ZITADEL shape is refused.
    let response = app
        .client
        .delete(app.url(&path))
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap();
    assert_error(response, 422, "validation-failed").await;

    let response = app
        .client
        .delete(app.url(&path))
        .json(&json!({"sessionToken": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    assert_details(&body["details"]);
    assert_eq!(body.as_object().unwrap().len(), 1);
    // The token stopped working.
    assert_error(get_v2(&app, Some(&token), &path).await, 401, "unauthorized").await;

    // The bearer alone still works, with or without an (empty) body.
    let (session_id, token) = v2_login(&app, &user).await;
    let response = app
        .with_token(
            Method::DELETE,
            &format!("/v2/sessions/{session_id}"),
            &token,
        )
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

async fn search(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.with_token(Method::POST, "/v2/sessions/search", token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// An admin-made session with the given user agent fingerprint.
async fn admin_session(app: &TestApp, user: &TestUser, fingerprint: &str) -> String {
    let body = json!({
        "checks": {"user": {"userId": user.id}},
        "userAgent": {"fingerprintId": fingerprint},
        "lifetime": "600s"
    });
    let response = create(app, Some(&app.admin_token), body).await;
    assert_eq!(response.status(), 201);
    json(response).await["sessionId"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn list_sessions_takes_every_query_of_zitadels_shape() {
    let app = app().await;
    let ann = app.seed_user("1000", "10000", "ann@example.com").await;
    let bob = app.seed_user("1000", "10001", "bob@example.com").await;
    let a1 = admin_session(&app, &ann, "fp-a").await;
    app.clock.advance(chrono::Duration::seconds(1));
    let a2 = admin_session(&app, &ann, "fp-a").await;
    app.clock.advance(chrono::Duration::seconds(1));
    let b1 = admin_session(&app, &bob, "fp-b").await;
    let now = chrono::Utc::now() + chrono::Duration::days(1);

    let admin = app.admin_token.clone();
    let every = json!({
        "query": {"offset": "0", "limit": 10, "asc": true},
        "sortingColumn": "SESSION_FIELD_NAME_CREATION_DATE",
        "queries": [
            {"idsQuery": {"ids": [a1, a2, b1]}},
            {"userIdQuery": {"id": ann.id}},
            {"creationDateQuery": {"creationDate": now.to_rfc3339(), "method": "TIMESTAMP_QUERY_METHOD_LESS_OR_EQUALS"}},
            {"creatorQuery": {"id": "test-admin"}},
            {"userAgentQuery": {"fingerprintId": "fp-a"}},
            {"expirationDateQuery": {"expirationDate": now.to_rfc3339(), "method": "TIMESTAMP_QUERY_METHOD_LESS"}}
        ]
    });
    let response = search(&app, &admin, every).await;
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    assert_eq!(body["details"]["totalResult"], "2");
    assert!(is_time(&body["details"]["timestamp"]));
    let sessions = body["sessions"].as_array().unwrap();
    let ids: Vec<&str> = sessions.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [a1.as_str(), a2.as_str()]);
    for session in sessions {
        assert_session_shape(session);
        assert_eq!(session["userAgent"]["fingerprintId"], "fp-a");
    }

    // Descending, paged; UNSPECIFIED also sorts by creation date.
    let body = json(
        search(
            &app,
            &admin,
            json!({"query": {"offset": 1, "limit": 1}, "sortingColumn": "SESSION_FIELD_NAME_UNSPECIFIED"}),
        )
        .await,
    )
    .await;
    assert_eq!(body["details"]["totalResult"], "3");
    assert_eq!(body["sessions"][0]["id"], a2.as_str());

    // Expiration after a time far ahead: none.
    let body = json(
        search(
            &app,
            &admin,
            json!({"queries": [{"expirationDateQuery": {"expirationDate": now.to_rfc3339(), "method": "TIMESTAMP_QUERY_METHOD_GREATER"}}]}),
        )
        .await,
    )
    .await;
    assert_eq!(body["details"]["totalResult"], "0");

    // Ids that cannot exist match nothing (no 422).
    for query in [
        json!({"idsQuery": {"ids": ["222430354126975533"]}}),
        json!({"userIdQuery": {"id": "222430354126975533"}}),
        json!({"creatorQuery": {"id": "someone-else"}}),
    ] {
        let response = search(&app, &admin, json!({"queries": [query]})).await;
        assert_eq!(response.status(), 200);
        let body = json(response).await;
        assert_eq!(body["details"]["totalResult"], "0");
        assert_eq!(body["sessions"], json!([]));
    }
    // An empty creatorQuery means the caller.
    let body = json(search(&app, &admin, json!({"queries": [{"creatorQuery": {}}]})).await).await;
    assert_eq!(body["details"]["totalResult"], "3");

    // A wrong enum value is a 422 at its pointer.
    let errors = assert_error(
        search(
            &app,
            &admin,
            json!({"sortingColumn": "SESSION_FIELD_NAME_USER"}),
        )
        .await,
        422,
        "validation-failed",
    )
    .await;
    assert_eq!(errors[0]["source"]["pointer"], "/sortingColumn");
}

#[tokio::test]
async fn a_user_finds_sessions_of_its_own_user_agent_and_its_own_logins() {
    let app = app().await;
    let ann = app.seed_user("1000", "10000", "ann@example.com").await;
    // A verified login that reports a user agent.
    let mut body = login_checks(&ann);
    body["userAgent"] = json!({"fingerprintId": "fp-phone"});
    body["challenges"] = json!({"otpEmail": {"sendCode": {}}});
    let before = app.smtp.received().len();
    let created = json(create(&app, None, body).await).await;
    let session_id = created["sessionId"].as_str().unwrap().to_owned();
    let code = app.smtp.wait_for(before + 1).await[before].code();
    let set = json(
        patch(
            &app,
            created["sessionToken"].as_str().unwrap(),
            &session_id,
            json!({"checks": {"otpEmail": {"code": code}}}),
        )
        .await,
    )
    .await;
    let token = set["sessionToken"].as_str().unwrap().to_owned();
    admin_session(&app, &ann, "fp-desk").await;

    // fingerprintId left empty: the caller's own user agent.
    let body = json(search(&app, &token, json!({"queries": [{"userAgentQuery": {}}]})).await).await;
    assert_eq!(body["details"]["totalResult"], "1");
    assert_eq!(body["sessions"][0]["id"], session_id.as_str());
    // creatorQuery empty: sessions this user created (its logins).
    let body = json(
        search(
            &app,
            &token,
            json!({"queries": [{"creatorQuery": {"id": ""}}]}),
        )
        .await,
    )
    .await;
    assert_eq!(body["details"]["totalResult"], "1");
    // An admin token has no user agent of its own.
    let errors = assert_error(
        search(
            &app,
            &app.admin_token,
            json!({"queries": [{"userAgentQuery": {}}]}),
        )
        .await,
        422,
        "validation-failed",
    )
    .await;
    assert_eq!(errors[0]["source"]["pointer"], "/queries");
}

#[tokio::test]
async fn unsupported_checks_and_challenges_have_their_codes() {
    let app = app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let (session_id, token) = v2_login(&app, &user).await;
    let checks = [
        (
            "webAuthN",
            json!({"credentialAssertionData": {"id": "AAAA", "type": "public-key"}}),
        ),
        (
            "idpIntent",
            json!({"idpIntentId": "d654e6ba-70a3-48ef-a95d-37c8d8a7901a", "idpIntentToken": "SJKL3ioIDpo342ioqw98fjp3sdf32wahb="}),
        ),
        ("otpSms", json!({"code": "3237642"})),
    ];
    for (name, value) in checks {
        let mut body = login_checks(&user);
        body["checks"][name] = value.clone();
        let errors = assert_error(create(&app, None, body).await, 422, "check-not-supported").await;
        assert_eq!(errors[0]["source"]["pointer"], format!("/checks/{name}"));
        let errors = assert_error(
            patch(&app, &token, &session_id, json!({"checks": {name: value}})).await,
            422,
            "check-not-supported",
        )
        .await;
        assert_eq!(errors[0]["source"]["pointer"], format!("/checks/{name}"));
    }
    let challenges = [
        (
            "webAuthN",
            json!({"domain": "login.example.com", "userVerificationRequirement": "USER_VERIFICATION_REQUIREMENT_REQUIRED"}),
        ),
        ("otpSms", json!({"returnCode": true})),
    ];
    for (name, value) in challenges {
        let mut body = login_checks(&user);
        body["challenges"] = json!({ name: value.clone() });
        let errors = assert_error(
            create(&app, None, body).await,
            422,
            "challenge-not-supported",
        )
        .await;
        assert_eq!(
            errors[0]["source"]["pointer"],
            format!("/challenges/{name}")
        );
        let errors = assert_error(
            patch(
                &app,
                &token,
                &session_id,
                json!({"challenges": {name: value}}),
            )
            .await,
            422,
            "challenge-not-supported",
        )
        .await;
        assert_eq!(
            errors[0]["source"]["pointer"],
            format!("/challenges/{name}")
        );
    }
    // None of them changed the session or counted against the user: the
    // token still works.
    let response = get_v2(&app, Some(&token), &format!("/v2/sessions/{session_id}")).await;
    assert_eq!(response.status(), 200);
}
