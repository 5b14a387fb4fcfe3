use serde_json::json;

use crate::helpers::{assert_error, json, spawn_app, spawn_app_with};

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(json(response).await, json!({"status": "ok"}));
    let response = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(json(response).await, json!({"status": "ready"}));
}

#[tokio::test]
async fn readiness_fails_when_the_database_does_not_answer() {
    let app = spawn_app().await;
    // Hold every pooled connection: the probe cannot get one in time.
    let pool = app.core.db.pool().clone();
    let held = tokio::task::spawn_blocking(move || {
        (0..pool.max_size())
            .map(|_| pool.get().unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let response = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert!(response.headers().contains_key("retry-after"));
    assert_error(response, 503, "service-unavailable").await;
    drop(held);
    assert_eq!(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let app = spawn_app().await;
    app.get("/admin/entities").await;
    app.client
        .get(app.url("/admin/entities"))
        .send()
        .await
        .unwrap();
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("latchkey_http_requests_total"), "{text}");
    assert!(text.contains("route=\"/admin/entities\""), "{text}");
    assert!(text.contains("status=\"401\""), "{text}");
    assert!(
        text.contains("latchkey_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("latchkey_db_pool_connections"), "{text}");
}

#[tokio::test]
async fn jwks_publishes_the_signing_key() {
    let app = spawn_app().await;
    let jwks = json(
        app.client
            .get(app.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "OKP");
    assert_eq!(keys[0]["crv"], "Ed25519");
    assert_eq!(keys[0]["alg"], "EdDSA");
    assert_eq!(keys[0]["x"].as_str().unwrap().len(), 43);
}

#[tokio::test]
async fn a_restart_keeps_data_and_keys() {
    let app = spawn_app().await;
    let entity = app.create_entity("1000").await;
    let token = app.admin_token.clone();
    let app = app.restart().await;
    // Migrations ran again without harm; the data and the signing key survived.
    let response = app
        .client
        .get(app.url("/admin/entities"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let list = json(response).await;
    assert_eq!(list["data"][0], entity);
    let response = app
        .get("/admin/entities/00000000-0000-4000-8000-000000000000")
        .await;
    assert_error(response, 404, "not-found").await;
}

/// With LATCHKEY_METRICS_TOKEN set, /metrics answers only that bearer
/// token (an admin token is not it); other callers get a JSON:API 401.
#[tokio::test]
async fn the_metrics_token_guards_metrics() {
    const TOKEN: &str = "metrics-0123456789abcdef";
    let app = spawn_app_with(
        std::sync::Arc::new(crate::helpers::TestDatabase::new()),
        crate::smtp::SmtpServer::start(),
        &[("LATCHKEY_METRICS_TOKEN", TOKEN)],
    )
    .await;
    let metrics = |authorization: Option<String>| {
        let mut request = app.client.get(app.url("/metrics"));
        if let Some(value) = authorization {
            request = request.header("Authorization", value);
        }
        async move { request.send().await.unwrap() }
    };
    let response = metrics(None).await;
    assert_eq!(
        crate::auth::challenge(&response).as_deref(),
        Some(crate::auth::NO_TOKEN)
    );
    assert_error(response, 401, "unauthorized").await;
    for wrong in [
        format!("Bearer {TOKEN}x"),
        format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]),
        format!("Bearer {}", app.admin_token),
    ] {
        let response = metrics(Some(wrong)).await;
        assert_eq!(
            crate::auth::challenge(&response).as_deref(),
            Some(crate::auth::INVALID_TOKEN)
        );
        assert_error(response, 401, "unauthorized").await;
    }
    let response = metrics(Some(format!("Bearer {TOKEN}"))).await;
    assert_eq!(response.status(), 200);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("latchkey_http_requests_total")
    );
}

/// Ends every connection the server holds, as a database restart or a
/// failover does (PostgreSQL only: a SQLite file cannot go away).
fn drop_server_connections(app: &crate::helpers::TestApp) -> bool {
    use diesel::RunQueryDsl;
    let mut conn = app.core.db.connection().unwrap();
    if !matches!(conn, latchkey::db::DbConnection::Postgresql(_)) {
        return false;
    }
    diesel::sql_query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .execute(&mut conn)
    .unwrap();
    true
}

#[tokio::test]
async fn connections_the_database_dropped_are_replaced() {
    let app = spawn_app().await;
    let user = app.seed_user("1000", "10000", "ann@example.com").await;
    let login = app.login(&user).await;
    // A session read: one query outside any transaction.
    let read = || app.read_own_session(&login);
    for _ in 0..8 {
        assert_eq!(read().await.status(), 200);
    }
    if !drop_server_connections(&app) {
        return;
    }
    // Right away: a connection used within the last half second is trusted
    // without a ping, so a request may meet a dead one, once per pooled
    // connection. It gets a 503 (retry), and the connection is discarded.
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let response = read().await;
        statuses.push(response.status().as_u16());
        if response.status() == 503 {
            assert_error(response, 503, "service-unavailable").await;
        }
    }
    let pool_size = app.core.db.pool().max_size() as usize;
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    assert!(
        statuses[pool_size..].iter().all(|s| *s == 200),
        "{statuses:?}"
    );

    // After a rest, connections are pinged before use: a dead one is
    // replaced and no request sees an error, the readiness probe first.
    drop_server_connections(&app);
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    for _ in 0..20 {
        assert_eq!(read().await.status(), 200);
    }
}
