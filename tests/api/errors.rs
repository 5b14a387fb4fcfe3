use reqwest::Method;
use serde_json::json;

use crate::helpers::{assert_error, pointers, spawn_app};

#[tokio::test]
async fn bodies_that_are_not_json_objects_are_bad_requests() {
    let app = spawn_app().await;
    for body in ["{\"entityNumber\": ", "[1, 2]", "\"text\"", "", "null"] {
        let response = app
            .admin(Method::POST, "/admin/entities")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let errors = assert_error(response, 400, "invalid-json").await;
        assert!(!errors[0]["detail"].as_str().unwrap().is_empty());
    }
    // Where the syntax breaks is named.
    let response = app
        .admin(Method::POST, "/admin/entities")
        .header("content-type", "application/json")
        .body("{\"a\": tru}")
        .send()
        .await
        .unwrap();
    let errors = assert_error(response, 400, "invalid-json").await;
    assert!(
        errors[0]["detail"]
            .as_str()
            .unwrap()
            .contains("line 1 column"),
        "{}",
        errors[0]["detail"]
    );
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let app = spawn_app().await;
    assert_error(app.get("/no/such/route").await, 404, "not-found").await;
    // Inside the /admin and /v2/sessions scopes too.
    for path in ["/admin/no-such-thing", "/v2/sessions/a/b"] {
        assert_error(
            app.admin(Method::GET, path).send().await.unwrap(),
            404,
            "not-found",
        )
        .await;
    }
    assert_error(
        app.admin(Method::PUT, "/v2/sessions").send().await.unwrap(),
        405,
        "method-not-allowed",
    )
    .await;
    assert_error(
        app.admin(Method::PUT, "/admin/entities")
            .send()
            .await
            .unwrap(),
        405,
        "method-not-allowed",
    )
    .await;
    assert_error(
        app.admin(Method::POST, "/healthz").send().await.unwrap(),
        405,
        "method-not-allowed",
    )
    .await;
}

#[tokio::test]
async fn wrong_content_type_is_unsupported() {
    let app = spawn_app().await;
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut request = app
            .admin(Method::POST, "/admin/entities")
            .body("{\"entityNumber\":\"1000\",\"name\":\"A\"}");
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        assert_error(request.send().await.unwrap(), 415, "unsupported-media-type").await;
    }
    // JSON with a charset parameter, and the JSON:API media type, are fine.
    for content_type in [
        "application/json; charset=utf-8",
        "application/vnd.api+json",
    ] {
        let response = app
            .admin(Method::POST, "/admin/entities")
            .header("content-type", content_type)
            .body(format!(
                "{{\"entityNumber\":\"{}\",\"name\":\"A\"}}",
                if content_type.contains("api") {
                    "1001"
                } else {
                    "1000"
                }
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
}

#[tokio::test]
async fn oversized_bodies_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let big = json!({"entityNumber": "1000", "name": "x".repeat(70 * 1024)});
    assert_error(
        app.post("/admin/entities", &big).await,
        413,
        "payload-too-large",
    )
    .await;
    let list: serde_json::Value = app.get("/admin/entities").await.json().await.unwrap();
    assert_eq!(list["meta"]["total"], 0);
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123");
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "bad id; with spaces")
        .send()
        .await
        .unwrap();
    let generated = response.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated}");
}

/// RFC 6901: a client-chosen name in a pointer has `~` as `~0` and `/` as
/// `~1`, so each pointer names exactly the member that is wrong.
#[tokio::test]
async fn pointers_escape_client_chosen_names() {
    let app = spawn_app().await;
    // A v2 metadata key and unknown fields, at the top and nested.
    let response = app
        .client
        .post(app.url("/v2/sessions"))
        .json(&json!({
            "checks": {"user": {"loginName": "ann@example.com"}, "pass/word": {}},
            "metadata": {"a/b~c": "not base64!", "plain": "aVBob25l"},
            "~x": 1,
        }))
        .send()
        .await
        .unwrap();
    let errors = assert_error(response, 422, "validation-failed").await;
    assert_eq!(
        pointers(&errors),
        ["/checks/pass~1word", "/metadata/a~1b~0c", "/~0x"]
    );
    // An unknown field of an admin body.
    let errors = assert_error(
        app.post(
            "/admin/entities",
            &json!({"entityNumber": "1000", "name": "A", "x/y": true}),
        )
        .await,
        422,
        "validation-failed",
    )
    .await;
    assert_eq!(pointers(&errors), ["/x~1y"]);
}
