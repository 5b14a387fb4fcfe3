use serde_json::json;

use crate::helpers::{assert_error, json, pointers, spawn_app};

#[tokio::test]
async fn entity_crud_round_trip() {
    let app = spawn_app().await;

    let response = app
        .post(
            "/admin/entities",
            &json!({"entityNumber": "1000", "name": "Acme"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created = json(response).await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(location, format!("/admin/entities/{id}"));
    assert_eq!(created["entityNumber"], "1000");
    assert_eq!(created["name"], "Acme");

    let fetched = json(app.get(&location).await).await;
    assert_eq!(fetched, created);

    let response = app.patch(&location, &json!({"name": "Acme Corp"})).await;
    assert_eq!(response.status(), 200);
    let patched = json(response).await;
    assert_eq!(patched["name"], "Acme Corp");
    assert_eq!(patched["entityNumber"], "1000");

    assert_eq!(app.delete(&location).await.status(), 204);
    assert_error(app.get(&location).await, 404, "not-found").await;
    assert_error(app.delete(&location).await, 404, "not-found").await;
}

#[tokio::test]
async fn entity_list_is_paginated() {
    let app = spawn_app().await;
    for number in ["1003", "1001", "1002"] {
        app.create_entity(number).await;
    }
    let page = json(app.get("/admin/entities?limit=2").await).await;
    assert_eq!(page["meta"], json!({"total": 3, "limit": 2, "offset": 0}));
    let numbers: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["entityNumber"].as_str().unwrap())
        .collect();
    assert_eq!(numbers, ["1001", "1002"]);

    let page = json(app.get("/admin/entities?limit=2&offset=2").await).await;
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert_eq!(page["data"][0]["entityNumber"], "1003");

    let page = json(app.get("/admin/entities").await).await;
    assert_eq!(page["meta"]["limit"], 50);

    let errors = assert_error(
        app.get("/admin/entities?limit=201&offset=-1").await,
        422,
        "validation-failed",
    )
    .await;
    let mut parameters: Vec<&str> = errors
        .iter()
        .map(|e| e["source"]["parameter"].as_str().unwrap())
        .collect();
    parameters.sort();
    assert_eq!(parameters, ["limit", "offset"]);
    assert_error(
        app.get("/admin/entities?limit=abc").await,
        422,
        "validation-failed",
    )
    .await;
}

#[tokio::test]
async fn entity_validation_reports_every_field() {
    let app = spawn_app().await;
    let errors = assert_error(
        app.post(
            "/admin/entities",
            &json!({"entityNumber": "12345", "name": 7, "extra": true}),
        )
        .await,
        422,
        "validation-failed",
    )
    .await;
    assert_eq!(pointers(&errors), ["/entityNumber", "/extra", "/name"]);

    let errors = assert_error(
        app.post("/admin/entities", &json!({})).await,
        422,
        "validation-failed",
    )
    .await;
    assert_eq!(pointers(&errors), ["/entityNumber", "/name"]);

    let id = app.create_entity("1000").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let errors = assert_error(
        app.patch(
            &format!("/admin/entities/{id}"),
            &json!({"entityNumber": null, "name": ""}),
        )
        .await,
        422,
        "validation-failed",
    )
    .await;
    assert_eq!(pointers(&errors), ["/entityNumber", "/name"]);
}

#[tokio::test]
async fn duplicate_entity_number_is_a_conflict() {
    let app = spawn_app().await;
    app.create_entity("1000").await;
    let other = app.create_entity("2000").await;
    let errors = assert_error(
        app.post(
            "/admin/entities",
            &json!({"entityNumber": "1000", "name": "Again"}),
        )
        .await,
        409,
        "conflict",
    )
    .await;
    assert_eq!(errors[0]["source"]["pointer"], "/entityNumber");

    let path = format!("/admin/entities/{}", other["id"].as_str().unwrap());
    assert_error(
        app.patch(&path, &json!({"entityNumber": "1000"})).await,
        409,
        "conflict",
    )
    .await;
    // The failed update changed nothing.
    assert_eq!(json(app.get(&path).await).await["entityNumber"], "2000");
}

#[tokio::test]
async fn an_entity_with_users_cannot_be_deleted() {
    let app = spawn_app().await;
    let entity = app.create_entity("1000").await;
    let entity_id = entity["id"].as_str().unwrap();
    app.create_user(entity_id, "10000", "ann@example.com").await;
    assert_error(
        app.delete(&format!("/admin/entities/{entity_id}")).await,
        409,
        "conflict",
    )
    .await;
    assert_eq!(
        app.get(&format!("/admin/entities/{entity_id}"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn malformed_ids_in_paths_are_not_found() {
    let app = spawn_app().await;
    for path in [
        "/admin/entities/not-a-uuid",
        "/admin/users/123",
        "/admin/applications/%20",
    ] {
        assert_error(app.get(path).await, 404, "not-found").await;
    }
}
