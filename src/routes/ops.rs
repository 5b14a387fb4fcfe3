//! Operations: liveness, readiness, metrics and the published signing keys.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use diesel::connection::SimpleConnection;
use serde_json::json;

use crate::db::outbox as outbox_rows;
use crate::error::ApiError;
use crate::services::Core;
use crate::telemetry;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/healthz").get(healthz))
        .service(web::resource("/readyz").get(readyz))
        .service(web::resource("/metrics").get(metrics))
        .service(web::resource("/.well-known/jwks.json").get(jwks));
}

/// The process is up and serving HTTP.
#[utoipa::path(get, path = "/healthz", tag = "ops", summary = "The process is up", responses((status = 200, description = "`{\"status\":\"ok\"}`")))]
pub(super) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// The database answers within two seconds.
#[utoipa::path(get, path = "/readyz", tag = "ops", summary = "The database answers", responses((status = 200, description = "`{\"status\":\"ready\"}`"), (status = 503, description = "`service-unavailable`", body = super::openapi::ErrorDocument, content_type = "application/vnd.api+json")))]
pub(super) async fn readyz(core: web::Data<Core>) -> Result<HttpResponse, ApiError> {
    let pool = core.db.pool().clone();
    let probe = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let mut conn = pool
            .get_timeout(Duration::from_secs(2))
            .map_err(|e| e.to_string())?;
        conn.batch_execute("SELECT 1").map_err(|e| e.to_string())
    });
    match tokio::time::timeout(Duration::from_secs(3), probe).await {
        Ok(Ok(Ok(()))) => Ok(HttpResponse::Ok().json(json!({ "status": "ready" }))),
        Ok(Ok(Err(cause))) => Err(ApiError::unavailable(format!("readiness: {cause}"))),
        Ok(Err(join)) => Err(ApiError::unavailable(format!("readiness: {join}"))),
        Err(_) => Err(ApiError::unavailable(
            "readiness: the database did not answer in time",
        )),
    }
}

#[utoipa::path(get, path = "/metrics", tag = "ops", summary = "Prometheus metrics", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub(super) async fn metrics(core: web::Data<Core>) -> HttpResponse {
    let now = core.now();
    let outbox = core
        .db
        .run(move |conn| -> Result<_, ApiError> {
            let by_status = outbox_rows::count_by_status(conn)?;
            let oldest = outbox_rows::oldest_pending(conn)?;
            Ok((
                by_status,
                oldest.map(|t| (now - t).num_milliseconds() as f64 / 1000.0),
            ))
        })
        .await;
    match outbox {
        Ok((by_status, oldest_age)) => {
            for status in [outbox_rows::PENDING, outbox_rows::SENT, outbox_rows::DEAD] {
                let count = by_status
                    .iter()
                    .find(|(s, _)| s == status)
                    .map_or(0, |(_, n)| *n);
                metrics::gauge!("latchkey_outbox_depth", "status" => status).set(count as f64);
            }
            metrics::gauge!("latchkey_outbox_oldest_pending_age_seconds")
                .set(oldest_age.unwrap_or(0.0));
        }
        Err(err) => tracing::warn!(error = %err, "outbox metrics unavailable"),
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(telemetry::render_metrics(core.db.pool().state()))
}

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "ops", summary = "The public keys that verify Latchkey's tokens (JWK set, Ed25519)", responses((status = 200, description = "JWK set")))]
pub(super) async fn jwks(core: web::Data<Core>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "public, max-age=60"))
        .json(core.tokens.jwks())
}
