use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{json, spawn_app};

/// Every route the server registers, as the API contract.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/.well-known/jwks.json"),
    ("post", "/admin/entities"),
    ("get", "/admin/entities"),
    ("get", "/admin/entities/{id}"),
    ("patch", "/admin/entities/{id}"),
    ("delete", "/admin/entities/{id}"),
    ("post", "/admin/entities/{id}/applications"),
    ("get", "/admin/entities/{id}/applications"),
    ("get", "/admin/applications/{id}"),
    ("patch", "/admin/applications/{id}"),
    ("delete", "/admin/applications/{id}"),
    ("post", "/admin/users"),
    ("get", "/admin/users"),
    ("get", "/admin/users/{id}"),
    ("patch", "/admin/users/{id}"),
    ("delete", "/admin/users/{id}"),
    ("put", "/admin/users/{id}/password"),
    ("post", "/admin/users/{id}/lock"),
    ("post", "/admin/users/{id}/unlock"),
    ("get", "/admin/outbox"),
    ("post", "/admin/outbox/{id}/retry"),
    ("get", "/admin/audit"),
    ("post", "/sessions"),
    ("get", "/sessions"),
    ("get", "/sessions/{sessionId}"),
    ("put", "/sessions/{sessionId}"),
    ("delete", "/sessions/{sessionId}"),
    ("post", "/user/otp/verify"),
    ("post", "/user/otp"),
    ("put", "/user/pin"),
    ("post", "/user/devices/totp"),
    ("delete", "/user/devices/totp"),
    ("post", "/user/devices/totp/confirm"),
    ("post", "/user/recovery-codes"),
    ("delete", "/admin/users/{id}/totp"),
    ("post", "/v2/sessions"),
    ("post", "/v2/sessions/search"),
    ("post", "/one-sessions-post-one"),
    ("patch", "/one-sessions-patch-one"),
    ("post", "/jef-one-validate-login-and-create-session"),
    ("get", "/one-requests/{requestId}"),
    ("get", "/one-sessions-get-one"),
    ("get", "/v2/sessions/{sessionId}"),
    ("patch", "/v2/sessions/{sessionId}"),
    ("delete", "/v2/sessions/{sessionId}"),
];

fn operations(spec: &Value) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                found.insert((method.clone(), path.clone()));
            }
        }
    }
    found
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let spec = json(response).await;
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"));
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(operations(&spec), expected);

    // And every documented operation is routed by the server: it never
    // answers "no route" or "method not allowed".
    let some_id = "00000000-0000-4000-8000-000000000000";
    for (method, path) in operations(&spec) {
        let url = app.url(
            &path
                .replace("{id}", some_id)
                .replace("{sessionId}", some_id),
        );
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let response = app
            .client
            .request(method.clone(), &url)
            .bearer_auth(&app.admin_token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert_ne!(status, 405, "{method} {path}: {body}");
        assert!(
            !body.contains("There is no route"),
            "{method} {path}: {body}"
        );
    }

    // Every error response is documented as a JSON:API error document.
    let errors_documented = spec["paths"]["/admin/users"]["post"]["responses"]["422"]["content"]
        ["application/vnd.api+json"]["schema"]["$ref"]
        .as_str()
        .unwrap();
    assert_eq!(errors_documented, "#/components/schemas/ErrorDocument");
}

#[tokio::test]
async fn swagger_ui_is_served_without_a_cdn() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let html = response.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(!html.contains("https://"), "no external assets: {html}");
    let css = app
        .client
        .get(app.url("/docs/swagger-ui.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), 200);
}

/// `/docs` as typed in a browser's address bar leads to the page.
#[tokio::test]
async fn docs_without_the_slash_redirects_to_the_page() {
    let app = spawn_app().await;
    for (path, location) in [("/docs", "/docs/"), ("/docs?x=1", "/docs/?x=1")] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 308, "{path}");
        assert_eq!(response.headers()["location"], location, "{path}");
    }
    // Followed, it ends at the page.
    let response = reqwest::get(app.url("/docs")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.url().path(), "/docs/");
}

fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

/// Request bodies are documented by the code that parses them: the schema
/// lists exactly the fields the reader takes, with its rules.
#[tokio::test]
async fn request_bodies_are_documented_by_their_readers() {
    let app = spawn_app().await;
    let spec = json(
        app.client
            .get(app.url("/openapi.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let schemas = &spec["components"]["schemas"];
    let login = &schemas["LoginBody"];
    assert_eq!(
        keys(&login["properties"]),
        [
            "applicationName",
            "employeeNumber",
            "entityNumber",
            "loginName",
            "password",
            "sessionId"
        ]
    );
    assert_eq!(login["required"], serde_json::json!(["password"]));
    assert_eq!(
        schemas["NewEntity"]["properties"]["entityNumber"]["pattern"],
        "^[0-9]{4}$"
    );
    let v2 = &schemas["V2CreateBody"]["properties"];
    assert_eq!(
        keys(v2),
        ["challenges", "checks", "lifetime", "metadata", "userAgent"]
    );
    assert_eq!(
        keys(&v2["checks"]["properties"]),
        [
            "idpIntent",
            "otpEmail",
            "otpSms",
            "password",
            "recoveryCode",
            "totp",
            "user",
            "webAuthN"
        ]
    );
    assert_eq!(
        keys(&v2["checks"]["properties"]["user"]["properties"]),
        ["loginName", "userId"]
    );
    assert_eq!(
        keys(&v2["challenges"]["properties"]),
        ["otpEmail", "otpSms", "webAuthN"]
    );
    assert_eq!(
        keys(&v2["challenges"]["properties"]["otpEmail"]["properties"]),
        ["returnCode", "sendCode"]
    );
    // A list that must name something says so.
    assert_eq!(
        schemas["VerifyOtpBody"]["properties"]["types"]["minItems"],
        1
    );
    assert_eq!(
        keys(&v2["userAgent"]["properties"]),
        ["description", "fingerprintId", "header", "ip"]
    );
    assert_eq!(
        keys(&schemas["V2SetBody"]["properties"]),
        [
            "challenges",
            "checks",
            "lifetime",
            "metadata",
            "sessionToken"
        ]
    );
    assert_eq!(
        keys(&schemas["V2DeleteBody"]["properties"]),
        ["sessionToken"]
    );
    let search = &schemas["V2SearchBody"]["properties"];
    assert_eq!(keys(search), ["queries", "query", "sortingColumn"]);
    assert_eq!(
        keys(&search["queries"]["items"]["properties"]),
        [
            "creationDateQuery",
            "creatorQuery",
            "expirationDateQuery",
            "idsQuery",
            "userAgentQuery",
            "userIdQuery"
        ]
    );
    // The operations point at those schemas.
    assert_eq!(
        spec["paths"]["/sessions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
            ["$ref"],
        "#/components/schemas/LoginBody"
    );
}
