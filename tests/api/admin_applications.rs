use serde_json::json;

use crate::helpers::{assert_error, json, pointers, spawn_app};

#[tokio::test]
async fn application_crud_round_trip() {
    let app = spawn_app().await;
    let entity_id = app.create_entity("1000").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let collection = format!("/admin/entities/{entity_id}/applications");

    let response = app
        .post(
            &collection,
            &json!({"applicationName": "value_00", "applicationType": "mobile", "applicationNumber": "APP-1"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created = json(response).await;
    assert_eq!(created["entityId"], entity_id.as_str());
    assert_eq!(created["applicationType"], "mobile");
    assert_eq!(
        location,
        format!("/admin/applications/{}", created["id"].as_str().unwrap())
    );

    assert_eq!(json(app.get(&location).await).await, created);

    let patched = json(
        app.patch(&location, &json!({"applicationType": "web"}))
            .await,
    )
    .await;
    assert_eq!(patched["applicationType"], "web");
    assert_eq!(patched["applicationName"], "value_00");

    let list = json(app.get(&collection).await).await;
    assert_eq!(list["meta"]["total"], 1);
    assert_eq!(list["data"][0]["applicationType"], "web");

    assert_eq!(app.delete(&location).await.status(), 204);
    assert_error(app.get(&location).await, 404, "not-found").await;
    assert_eq!(json(app.get(&collection).await).await["meta"]["total"], 0);
}

#[tokio::test]
async fn application_names_are_unique_within_an_entity_only() {
    let app = spawn_app().await;
    let first = app.create_entity("1000").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = app.create_entity("2000").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let body =
        json!({"applicationName": "Portal", "applicationType": "web", "applicationNumber": "1"});
    assert_eq!(
        app.post(&format!("/admin/entities/{first}/applications"), &body)
            .await
            .status(),
        201
    );
    assert_eq!(
        app.post(&format!("/admin/entities/{second}/applications"), &body)
            .await
            .status(),
        201
    );
    let errors = assert_error(
        app.post(&format!("/admin/entities/{first}/applications"), &body)
            .await,
        409,
        "conflict",
    )
    .await;
    assert_eq!(errors[0]["source"]["pointer"], "/applicationName");
}

#[tokio::test]
async fn application_validation_and_unknown_entity() {
    let app = spawn_app().await;
    let entity_id = app.create_entity("1000").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let errors = assert_error(
        app.post(
            &format!("/admin/entities/{entity_id}/applications"),
            &json!({"applicationName": "bad!name", "applicationType": "tv", "applicationNumber": "_x"}),
        )
        .await,
        422,
        "validation-failed",
    )
    .await;
    assert_eq!(
        pointers(&errors),
        ["/applicationName", "/applicationNumber", "/applicationType"]
    );

    let missing = uuid::Uuid::new_v4();
    let body =
        json!({"applicationName": "App", "applicationType": "web", "applicationNumber": "1"});
    assert_error(
        app.post(&format!("/admin/entities/{missing}/applications"), &body)
            .await,
        404,
        "not-found",
    )
    .await;
    assert_error(
        app.get(&format!("/admin/entities/{missing}/applications"))
            .await,
        404,
        "not-found",
    )
    .await;
}
