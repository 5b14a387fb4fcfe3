//! HTTP faces. Handlers are thin: extract, call a service, shape the
//! response. Every route is registered here, in one place.

pub mod admin;
pub mod body;
pub mod extract;
pub mod forwarded;
pub mod one;
pub mod openapi;
pub mod ops;
pub mod pace;
pub mod responses;
pub mod zitadel;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use serde_json::json;

use crate::error::ApiError;
use crate::services::Paged;

pub fn configure(cfg: &mut web::ServiceConfig) {
    ops::configure(cfg);
    admin::configure(cfg);
    pace::configure(cfg);
    zitadel::configure(cfg);
    one::configure(cfg);
    cfg.service(web::resource("/docs").route(web::get().to(openapi::docs_redirect)))
        .service(openapi::service());
}

/// The app's default service: no route matched.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found(format!(
        "There is no route for {} {}.",
        req.method(),
        req.path()
    )))
}

pub fn ok<T: Serialize>(body: &T) -> HttpResponse {
    HttpResponse::Ok().json(body)
}

pub fn created<T: Serialize>(location: String, body: &T) -> HttpResponse {
    HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .json(body)
}

/// `{"data":[…],"meta":{"total","limit","offset"}}`
pub fn paged<T: Serialize>(page: Paged<T>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "data": page.items,
        "meta": { "total": page.total, "limit": page.page.limit, "offset": page.page.offset },
    }))
}
