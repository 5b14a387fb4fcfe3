//! The OpenAPI 3.1 document, assembled from the faces' `#[utoipa::path]`
//! attributes (their bodies documented by their readers, their responses by
//! `super::responses`), served at `/openapi.json` with Swagger UI (vendored
//! assets, no CDN) at `/docs/`. Only this module and the router import it.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Latchkey", description = "OTP-driven session authentication server. Every error is a JSON:API error document."),
    modifiers(&BearerAuth),
    paths(
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics,
        super::ops::jwks,
        super::admin::create_entity,
        super::admin::list_entities,
        super::admin::get_entity,
        super::admin::update_entity,
        super::admin::delete_entity,
        super::admin::create_application,
        super::admin::list_applications,
        super::admin::get_application,
        super::admin::update_application,
        super::admin::delete_application,
        super::admin::create_user,
        super::admin::list_users,
        super::admin::get_user,
        super::admin::update_user,
        super::admin::delete_user,
        super::admin::set_user_password,
        super::admin::lock_user,
        super::admin::unlock_user,
        super::admin::list_outbox,
        super::admin::retry_outbox,
        super::admin::list_audit,
        super::pace::login,
        super::pace::list_sessions,
        super::pace::get_session,
        super::pace::update_session,
        super::pace::delete_session,
        super::pace::verify_otp,
        super::pace::create_otp,
        super::pace::set_pin,
        super::pace::enroll_totp,
        super::pace::confirm_totp,
        super::pace::remove_totp,
        super::pace::create_recovery_codes,
        super::admin::remove_user_totp,
        super::zitadel::create_session,
        super::zitadel::set_session,
        super::zitadel::get_session,
        super::zitadel::delete_session,
        super::zitadel::search_sessions,
        super::one::post_one,
        super::one::patch_one,
        super::one::validate_login,
        super::one::get_request,
        super::one::get_session,
    ),
    tags(
        (name = "ops", description = "Health, readiness, metrics and signing keys"),
        (name = "admin", description = "Entities, applications and users (admin scope)"),
        (name = "sessions", description = "Login sessions (PACE-style)"),
        (name = "otp", description = "One-time codes and the PIN"),
        (name = "totp", description = "Authenticator apps and recovery codes"),
        (name = "v2", description = "ZITADEL v2 Session API shape"),
        (name = "async", description = "The asynchronous face (seeds 000-002): 202 Accepted, then a read to confirm"),
    )
)]
pub struct ApiDoc;

/// `/openapi.json` and Swagger UI at `/docs/`.
pub fn service() -> SwaggerUi {
    SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", ApiDoc::openapi())
}

/// `GET /docs` (as typed, without the slash): a permanent redirect to the
/// Swagger UI at `/docs/`, keeping the query string. The page's assets are
/// relative to `/docs/`, so it is not served at `/docs` itself.
pub async fn docs_redirect(req: HttpRequest) -> HttpResponse {
    let location = match req.query_string() {
        "" => "/docs/".to_owned(),
        query => format!("/docs/?{query}"),
    };
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, location))
        .finish()
}
