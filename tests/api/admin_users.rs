use serde_json::json;

use crate::helpers::{assert_error, json, pointers, spawn_app};

#[tokio::test]
async fn user_crud_round_trip() {
    let app = spawn_app().await;
    let entity_id = app.create_entity("1000").await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let response = app
        .post(
            "/admin/users",
            &json!({
                "entityNumber": "1000",
                "employeeNumber": "10000",
                "displayName": "Ann Example",
                "email": "Ann@Example.com",
                "preferredLanguage": "de",
                "password": "correct horse battery",
            }),
        )
        .await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let user = json(response).await;
    assert_eq!(user["entityId"], entity_id.as_str());
    assert_eq!(user["email"], "Ann@Example.com");
    // The login name defaults to the email, folded to lower case.
    assert_eq!(user["loginName"], "ann@example.com");
    assert_eq!(user["preferredLanguage"], "de");
    assert_eq!(user["hasPassword"], true);
    assert_eq!(user["hasPin"], false);
    assert!(user.get("passwordHash").is_none());
    assert!(!user.to_string().contains("argon2"), "no hash in responses");

    assert_eq!(json(app.get(&location).await).await, user);

    let patched = json(
        app.patch(&location, &json!({"displayName": "Ann E.", "email": null}))
            .await,
    )
    .await;
    assert_eq!(patched["displayName"], "Ann E.");
    assert_eq!(patched["email"], serde_json::Value::Null);
    assert_eq!(patched["loginName"], "ann@example.com");

    assert_eq!(app.delete(&location).await.status(), 204);
    assert_error(app.get(&location).await, 404, "not-found").await;
}

#[tokio::test]
async fn password_is_stored_as_argon2id_and_can_be_replaced() {
    let app = spawn_app().await;
    let entity_id = app.create_entity("1000").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let user = json(
        app.post(
            "/admin/users",
            &json!({"entityId": entity_id, "employeeNumber": "10001", "displayName": "Bob", "loginName": "bob"}),
        )
        .await,
    )
    .await;
    assert_eq!(user["hasPassword"], false);
    assert_eq!(user["preferredLanguage"], "en");
    assert_eq!(user["email"], serde_json::Value::Null);
    let id = user["id"].as_str().unwrap().to_owned();

    let path = format!("/admin/users/{id}/password");
    let errors = assert_error(
        app.put(&path, &json!({"password": "short"})).await,
        422,
        "validation-failed",
    )
    .await;
    assert_eq!(pointers(&errors), ["/password"]);
    assert_eq!(
        app.put(&path, &json!({"password": "a much longer secret"}))
            .await
            .status(),
        204
    );

    let stored = {
        use diesel::prelude::*;
        use latchkey::db::schema::users;
        let mut conn = app.core.db.connection().unwrap();
        users::table
            .find(&id)
            .select(users::password_hash)
            .first::<Option<String>>(&mut conn)
            .unwrap()
    };
    let hash = stored.expect("a stored hash");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains("a much longer secret"));
    assert!(app.core.hasher.verify("a much longer secret", &hash));
    assert_eq!(
        json(app.get(&format!("/admin/users/{id}")).await).await["hasPassword"],
        true
    );

    let missing = uuid::Uuid::new_v4();
    let body = json!({"password": "a much longer secret"});
    assert_error(
        app.put(&format!("/admin/users/{missing}/password"), &body)
            .await,
        404,
        "not-found",
    )
    .await;
}

#[tokio::test]
async fn user_validation_reports_every_field() {
    let app = spawn_app().await;
    app.create_entity("1000").await;
    let errors = assert_error(
        app.post(
            "/admin/users",
            &json!({
                "entityNumber": "10",
                "employeeNumber": "123",
                "displayName": "",
                "email": "not-an-email",
                "preferredLanguage": "fr",
                "password": "short",
            }),
        )
        .await,
        422,
        "validation-failed",
    )
    .await;
    assert_eq!(
        pointers(&errors),
        [
            "/displayName",
            "/email",
            "/employeeNumber",
            "/entityNumber",
            "/password",
            "/preferredLanguage"
        ]
    );

    // No email and no login name; no entity at all.
    let errors = assert_error(
        app.post(
            "/admin/users",
            &json!({"employeeNumber": "12345", "displayName": "X"}),
        )
        .await,
        422,
        "validation-failed",
    )
    .await;
    assert_eq!(pointers(&errors), ["/entityId", "/loginName"]);

    // A well-formed reference to an entity that does not exist.
    let errors = assert_error(
        app.post(
            "/admin/users",
            &json!({"entityNumber": "9999", "employeeNumber": "12345", "displayName": "X", "loginName": "x"}),
        )
        .await,
        422,
        "validation-failed",
    )
    .await;
    assert_eq!(pointers(&errors), ["/entityNumber"]);

    let errors = assert_error(
        app.post(
            "/admin/users",
            &json!({"entityId": "nope", "employeeNumber": "12345", "displayName": "X", "loginName": "x"}),
        )
        .await,
        422,
        "validation-failed",
    )
    .await;
    assert_eq!(pointers(&errors), ["/entityId"]);
}

#[tokio::test]
async fn duplicate_login_names_and_employee_numbers_conflict() {
    let app = spawn_app().await;
    let first = app.create_entity("1000").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = app.create_entity("2000").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.create_user(&first, "10000", "ann@example.com").await;

    // Same login name (case-insensitively) in another entity.
    let errors = assert_error(
        app.post(
            "/admin/users",
            &json!({"entityId": second, "employeeNumber": "10000", "displayName": "A", "email": "ANN@example.com"}),
        )
        .await,
        409,
        "conflict",
    )
    .await;
    assert_eq!(errors[0]["source"]["pointer"], "/loginName");

    // Same employee number in the same entity.
    let errors = assert_error(
        app.post(
            "/admin/users",
            &json!({"entityId": first, "employeeNumber": "10000", "displayName": "B", "email": "bob@example.com"}),
        )
        .await,
        409,
        "conflict",
    )
    .await;
    assert_eq!(errors[0]["source"]["pointer"], "/employeeNumber");

    // Same employee number in another entity is fine.
    app.create_user(&second, "10000", "carl@example.com").await;
}

#[tokio::test]
async fn users_are_listed_by_entity_and_paginated() {
    let app = spawn_app().await;
    let first = app.create_entity("1000").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = app.create_entity("2000").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.create_user(&first, "10000", "a@example.com").await;
    app.create_user(&first, "10001", "b@example.com").await;
    app.create_user(&second, "10000", "c@example.com").await;

    let all = json(app.get("/admin/users").await).await;
    assert_eq!(all["meta"]["total"], 3);

    let page = json(
        app.get(&format!("/admin/users?entityId={first}&limit=1&offset=1"))
            .await,
    )
    .await;
    assert_eq!(page["meta"], json!({"total": 2, "limit": 1, "offset": 1}));
    assert_eq!(page["data"][0]["loginName"], "b@example.com");

    let errors = assert_error(
        app.get("/admin/users?entityId=xyz").await,
        422,
        "validation-failed",
    )
    .await;
    assert_eq!(errors[0]["source"]["parameter"], "entityId");
}

#[tokio::test]
async fn names_that_look_alike_are_one_user() {
    let app = spawn_app().await;
    let entity = app.create_entity("1000").await;
    let create = |employee: &str, login_name: &str, display_name: &str| {
        let body = serde_json::json!({
            "entityId": entity["id"],
            "employeeNumber": employee,
            "displayName": display_name,
            "loginName": login_name,
            "password": "correct horse battery",
        });
        let app = &app;
        async move { app.post("/admin/users", &body).await }
    };
    // Composed ü.
    let first = create("10000", "j\u{00fc}rgen", "J\u{00fc}rgen").await;
    assert_eq!(first.status(), 201);
    assert_eq!(
        json(first).await["loginName"],
        "j\u{00fc}rgen",
        "stored in its enforced form"
    );
    // Decomposed, full-width and upper-case spellings are the same name.
    for same in ["ju\u{0308}rgen", "\u{ff2a}\u{00fc}rgen", "J\u{00dc}RGEN"] {
        let errors = assert_error(create("10001", same, "Other").await, 409, "conflict").await;
        assert_eq!(errors[0]["source"]["pointer"], "/loginName", "{same:?}");
    }
    // ... and log in as the one user.
    let login = app
        .login_response(&serde_json::json!({"loginName": "ju\u{0308}rgen", "password": "correct horse battery"}))
        .await;
    assert_eq!(login.status(), 201);
    // Invisible and control characters are refused, in names and display names.
    for (login_name, display_name, pointer) in [
        ("ann\u{200b}", "Ann", "/loginName"),
        ("ann", "Ann\u{202e}", "/displayName"),
        ("ann", "Ann\u{200b}", "/displayName"),
    ] {
        let errors = assert_error(
            create("10002", login_name, display_name).await,
            422,
            "validation-failed",
        )
        .await;
        assert_eq!(
            errors[0]["source"]["pointer"], pointer,
            "{login_name:?} {display_name:?}"
        );
    }
}

/// An address the mailer cannot use is refused when it is given, on create
/// and on patch, instead of being stored and its mail dying later.
#[tokio::test]
async fn emails_the_mailer_cannot_use_are_refused() {
    let app = spawn_app().await;
    app.create_entity("1000").await;
    let body = |email: &str, employee: &str| {
        json!({
            "entityNumber": "1000",
            "employeeNumber": employee,
            "displayName": "Ann Example",
            "email": email,
            "loginName": format!("user{employee}"),
            "password": "correct horse battery",
        })
    };
    for bad in ["a,b@example.com", "a..b@example.com"] {
        let errors = assert_error(
            app.post("/admin/users", &body(bad, "10000")).await,
            422,
            "validation-failed",
        )
        .await;
        assert_eq!(pointers(&errors), ["/email"], "{bad}");
    }
    let list = json(app.get("/admin/users").await).await;
    assert_eq!(list["meta"]["total"], 0, "nothing was stored");

    let response = app
        .post("/admin/users", &body("a.b@example.com", "10000"))
        .await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    for bad in ["a,b@example.com", "a..b@example.com"] {
        let errors = assert_error(
            app.patch(&location, &json!({"email": bad})).await,
            422,
            "validation-failed",
        )
        .await;
        assert_eq!(pointers(&errors), ["/email"], "{bad}");
    }
    assert_eq!(
        json(app.get(&location).await).await["email"],
        "a.b@example.com"
    );
    let patched = app
        .patch(&location, &json!({"email": "ann+tag@example.com"}))
        .await;
    assert_eq!(patched.status(), 200);
    assert_eq!(json(patched).await["email"], "ann+tag@example.com");
}
