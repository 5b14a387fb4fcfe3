//! Operations: liveness, readiness, metrics and the published signing keys.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use diesel::connection::SimpleConnection;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::extract::bearer_token;
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
#[utoipa::path(get, path = "/readyz", tag = "ops", summary = "The database answers", responses((status = 200, description = "`{\"status\":\"ready\"}`"), (status = 503, description = "`service-unavailable`", body = super::responses::ErrorDocument, content_type = "application/vnd.api+json")))]
pub(super) async fn readyz(core: web::Data<Core>) -> Result<HttpResponse, ApiError> {
    let db = core.db.clone();
    let probe = tokio::task::spawn_blocking(move || -> Result<(), String> {
        // Through the pool's checkout: dead connections left by a database
        // restart are discarded here instead of failing probe after probe.
        let mut conn = db
            .checkout_within(Duration::from_secs(2))
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

/// With `LATCHKEY_METRICS_TOKEN` set, the request must carry it as its
/// bearer token. The two are compared as SHA-256 digests in constant time,
/// so neither the content nor the length of the token leaks through timing.
fn check_metrics_token(req: &HttpRequest, core: &Core) -> Result<(), ApiError> {
    let Some(expected) = &core.settings.metrics_token else {
        return Ok(());
    };
    let given = bearer_token(req)?;
    let given = Sha256::digest(given.as_bytes());
    let expected = Sha256::digest(expected.expose().as_bytes());
    if bool::from(given[..].ct_eq(&expected[..])) {
        Ok(())
    } else {
        Err(ApiError::token_invalid(
            "The bearer token is not the metrics token (LATCHKEY_METRICS_TOKEN).",
        ))
    }
}

#[utoipa::path(get, path = "/metrics", tag = "ops", summary = "Prometheus metrics",
    description = "Open unless `LATCHKEY_METRICS_TOKEN` is set; then it needs `Authorization: Bearer <that token>`.",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 401, description = "`unauthorized`: the metrics token is set and was not sent, or is wrong", body = super::responses::ErrorDocument, content_type = "application/vnd.api+json")))]
pub(super) async fn metrics(
    req: HttpRequest,
    core: web::Data<Core>,
) -> Result<HttpResponse, ApiError> {
    check_metrics_token(&req, &core)?;
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
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(telemetry::render_metrics(core.db.pool().state())))
}

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "ops", summary = "The public keys that verify Latchkey's tokens (JWK set, Ed25519)", responses((status = 200, description = "JWK set")))]
pub(super) async fn jwks(core: web::Data<Core>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "public, max-age=60"))
        .json(core.tokens.jwks())
}
