//! Logs and metrics: the tracing subscriber, the request middleware (request
//! id, one log line per request, Prometheus counters) and the `/metrics`
//! text. The middleware is also the last net for framework responses that
//! did not come from an `ApiError`: they are turned into JSON:API here.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, ResponseError};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use uuid::Uuid;

use crate::config::{LogFormat, Settings};
use crate::error::{ApiError, ErrorCode, ErrorIds, JSON_API};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Installs the global subscriber once; later calls (tests) are no-ops.
pub fn init_tracing(settings: &Settings, to_stderr: bool) {
    let filter = EnvFilter::try_new(&settings.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = if to_stderr {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi);
    let result = match (settings.log_format, to_stderr) {
        (LogFormat::Json, true) => builder.json().with_writer(std::io::stderr).try_init(),
        (LogFormat::Json, false) => builder.json().try_init(),
        (LogFormat::Text, true) => builder.with_writer(std::io::stderr).try_init(),
        (LogFormat::Text, false) => builder.try_init(),
    };
    drop(result);
}

fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ];
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .and_then(|builder| builder.install_recorder())
                .ok()
        })
        .as_ref()
}

/// Installs the metrics recorder (once per process).
pub fn init_metrics() {
    prometheus();
}

pub fn render_metrics(pool: diesel::r2d2::State) -> String {
    metrics::gauge!("latchkey_db_pool_connections").set(f64::from(pool.connections));
    metrics::gauge!("latchkey_db_pool_idle_connections").set(f64::from(pool.idle_connections));
    match prometheus() {
        Some(handle) => {
            handle.run_upkeep();
            handle.render()
        }
        None => String::new(),
    }
}

/// A client's request id is kept if it is short and plain; otherwise a new
/// one is made, so log lines cannot be forged through the header.
fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .filter(|v| {
            v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| Uuid::new_v4().to_string())
}

fn framework_error_detail(code: ErrorCode, method: &str, path: &str) -> String {
    match code {
        ErrorCode::NotFound => format!("There is no route for {method} {path}."),
        ErrorCode::MethodNotAllowed => format!("{method} is not allowed on {path}."),
        ErrorCode::PayloadTooLarge => "The request body is too large.".to_owned(),
        ErrorCode::UnsupportedMediaType => {
            "The request's content type is not supported.".to_owned()
        }
        ErrorCode::InvalidJson => "The request could not be read.".to_owned(),
        _ => "The request could not be processed.".to_owned(),
    }
}

/// Request id, access log line, metrics, and JSON:API for stray errors.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let started = Instant::now();
    let request_id = request_id(&req);
    let method = req.method().to_string();
    let path = req.path().to_owned();

    // Handlers' and extractors' errors arrive here already rendered as
    // responses; an `Err` is rare and is rendered by actix from the error.
    // (Holding a clone of the request across `next` is not allowed: the
    // router needs it unshared.)
    let mut response = match next.call(req).await {
        Ok(response) => response.map_into_boxed_body(),
        Err(err) => {
            tracing::warn!(request_id = %request_id, method = %method, error = %err, "request failed in a middleware");
            return Err(err);
        }
    };

    let status = response.status();
    let is_json_api = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == JSON_API.as_bytes());
    if (status.is_client_error() || status.is_server_error()) && !is_json_api {
        let code = ErrorCode::from_status(status);
        let replacement =
            ApiError::new(code, framework_error_detail(code, &method, &path)).error_response();
        response = response.into_response(replacement);
    }

    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "(unmatched)".to_owned());
    let status = response.status();
    let error_ids = response
        .response()
        .extensions()
        .get::<ErrorIds>()
        .map(|ids| ids.0.join(","))
        .unwrap_or_default();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }

    let elapsed = started.elapsed();
    let status_label = status.as_u16().to_string();
    metrics::counter!("latchkey_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status_label)
        .increment(1);
    metrics::histogram!("latchkey_http_request_duration_seconds", "route" => route.clone())
        .record(elapsed.as_secs_f64());

    // The route pattern, not the path: paths carry ids, never secrets, but
    // the pattern keeps the log compact and groupable.
    tracing::info!(
        request_id = %request_id,
        method = %method,
        route = %route,
        status = status.as_u16(),
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        error_id = %error_ids,
        "request"
    );
    Ok(response)
}
