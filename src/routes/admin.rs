//! The admin face: entities, applications and users. Every handler takes
//! [`Admin`] first, so a caller without the admin scope learns nothing about
//! the body or the resource.

use actix_web::{HttpResponse, web};

use super::body::{Body, RequestBody, request_bodies};
use super::extract::{Admin, Fields, QueryParams};
use super::{created, ok, paged};
use crate::engine::{Caller, account};
use crate::error::ApiError;
use crate::services::applications::{self, ApplicationPatch, NewApplication};
use crate::services::audit::{AuditKind, ClientInfo};
use crate::services::entities::{self, EntityPatch, NewEntity};
use crate::services::users::{self, EntityRef, NewUser, UserPatch};
use crate::services::{Core, audit, outbox, rules};

/// Under one scope: the router compares the static `/admin` prefix once
/// instead of trying each admin pattern (a regex each) on every request.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let admin = web::scope("/admin")
        .service(
            web::resource("/entities")
                .route(web::post().to(create_entity))
                .route(web::get().to(list_entities)),
        )
        .service(
            web::resource("/entities/{id}")
                .route(web::get().to(get_entity))
                .route(web::patch().to(update_entity))
                .route(web::delete().to(delete_entity)),
        )
        .service(
            web::resource("/entities/{id}/applications")
                .route(web::post().to(create_application))
                .route(web::get().to(list_applications)),
        )
        .service(
            web::resource("/applications/{id}")
                .route(web::get().to(get_application))
                .route(web::patch().to(update_application))
                .route(web::delete().to(delete_application)),
        )
        .service(
            web::resource("/users")
                .route(web::post().to(create_user))
                .route(web::get().to(list_users)),
        )
        .service(
            web::resource("/users/{id}")
                .route(web::get().to(get_user))
                .route(web::patch().to(update_user))
                .route(web::delete().to(delete_user)),
        )
        .service(web::resource("/users/{id}/password").route(web::put().to(set_user_password)))
        .service(web::resource("/users/{id}/lock").route(web::post().to(lock_user)))
        .service(web::resource("/users/{id}/unlock").route(web::post().to(unlock_user)))
        .service(web::resource("/users/{id}/totp").route(web::delete().to(remove_user_totp)))
        .service(web::resource("/audit").route(web::get().to(list_audit)))
        .service(web::resource("/outbox").route(web::get().to(list_outbox)))
        .service(web::resource("/outbox/{id}/retry").route(web::post().to(retry_outbox)));
    cfg.service(admin);
}

type Handler = Result<HttpResponse, ApiError>;

// --- request bodies -----------------------------------------------------------

impl RequestBody for NewEntity {
    fn read(fields: &mut Fields<'_>) -> Self {
        Self {
            entity_number: fields.required_str("entityNumber", rules::ENTITY_NUMBER),
            name: fields.required_str("name", rules::NAME),
        }
    }
}

impl RequestBody for EntityPatch {
    fn read(fields: &mut Fields<'_>) -> Self {
        Self {
            entity_number: fields.patch_str("entityNumber", rules::ENTITY_NUMBER),
            name: fields.patch_str("name", rules::NAME),
        }
    }
}

impl RequestBody for NewApplication {
    fn read(fields: &mut Fields<'_>) -> Self {
        Self {
            application_name: fields.required_str("applicationName", rules::APPLICATION_NAME),
            application_type: fields.required_str("applicationType", rules::APPLICATION_TYPE),
            application_number: fields.required_str("applicationNumber", rules::APPLICATION_NUMBER),
        }
    }
}

impl RequestBody for ApplicationPatch {
    fn read(fields: &mut Fields<'_>) -> Self {
        Self {
            application_name: fields.patch_str("applicationName", rules::APPLICATION_NAME),
            application_type: fields.patch_str("applicationType", rules::APPLICATION_TYPE),
            application_number: fields.patch_str("applicationNumber", rules::APPLICATION_NUMBER),
        }
    }
}

/// Give `entityId` or `entityNumber`; `loginName` defaults to the email and
/// is required when there is no email.
impl RequestBody for NewUser {
    fn read(fields: &mut Fields<'_>) -> Self {
        let entity_id = fields.optional_str("entityId", rules::UUID);
        let entity_number = fields.optional_str("entityNumber", rules::ENTITY_NUMBER);
        let entity = match (entity_id, entity_number) {
            (Some(id), None) => EntityRef::Id(id.to_ascii_lowercase()),
            (None, Some(number)) => EntityRef::Number(number),
            (Some(_), Some(_)) => {
                fields.reject("entityNumber", "Give entityId or entityNumber, not both.");
                EntityRef::Number(String::new())
            }
            (None, None) => {
                if !fields.has_problems_at(&["entityId", "entityNumber"]) {
                    fields.reject("entityId", "entityId or entityNumber is required.");
                }
                EntityRef::Number(String::new())
            }
        };
        let employee_number = fields.required_str("employeeNumber", rules::EMPLOYEE_NUMBER);
        let display_name = fields.required_str("displayName", rules::NAME);
        let email = fields.optional_str("email", rules::EMAIL);
        let login_name = fields.optional_str("loginName", rules::LOGIN_NAME);
        if email.is_none()
            && login_name.is_none()
            && !fields.has_problems_at(&["email", "loginName"])
        {
            fields.reject(
                "loginName",
                "loginName is required when the user has no email.",
            );
        }
        Self {
            entity,
            employee_number,
            display_name,
            email,
            login_name,
            preferred_language: fields.optional_str("preferredLanguage", rules::PREFERRED_LANGUAGE),
            password: fields.optional_str("password", rules::PASSWORD),
        }
    }
}

/// `email: null` removes the email.
impl RequestBody for UserPatch {
    fn read(fields: &mut Fields<'_>) -> Self {
        Self {
            employee_number: fields.patch_str("employeeNumber", rules::EMPLOYEE_NUMBER),
            login_name: fields.patch_str("loginName", rules::LOGIN_NAME),
            email: fields.nullable_str("email", rules::EMAIL),
            display_name: fields.patch_str("displayName", rules::NAME),
            preferred_language: fields.patch_str("preferredLanguage", rules::PREFERRED_LANGUAGE),
        }
    }
}

/// The new password (8 to 128 characters; hashed with argon2id).
pub struct PasswordBody {
    password: String,
}

impl RequestBody for PasswordBody {
    fn read(fields: &mut Fields<'_>) -> Self {
        Self {
            password: fields.required_str("password", rules::PASSWORD),
        }
    }
}

request_bodies!(
    NewEntity,
    EntityPatch,
    NewApplication,
    ApplicationPatch,
    NewUser,
    UserPatch,
    PasswordBody
);

// --- entities ---------------------------------------------------------------

#[utoipa::path(post, path = "/admin/entities", tag = "admin", summary = "Create an entity", security(("bearer" = [])), request_body = NewEntity, responses((status = 201, description = "Created; `Location` names it", body = crate::services::entities::Entity), super::responses::AuthErrors, super::responses::BodyErrors, super::responses::ConflictError))]
pub(super) async fn create_entity(
    _: Admin,
    core: web::Data<Core>,
    Body(input): Body<NewEntity>,
) -> Handler {
    let entity = entities::create(&core, input).await?;
    Ok(created(format!("/admin/entities/{}", entity.id), &entity))
}

#[utoipa::path(get, path = "/admin/entities", tag = "admin", summary = "List entities", security(("bearer" = [])), params(("limit" = Option<i64>, Query, description = "1 to 200, default 50"), ("offset" = Option<i64>, Query)), responses((status = 200, body = super::responses::EntityList), super::responses::AuthErrors, super::responses::QueryErrors))]
pub(super) async fn list_entities(_: Admin, core: web::Data<Core>, query: QueryParams) -> Handler {
    Ok(paged(entities::list(&core, query.page()?).await?))
}

#[utoipa::path(get, path = "/admin/entities/{id}", tag = "admin", summary = "Read an entity", security(("bearer" = [])), params(("id" = String, Path)), responses((status = 200, body = crate::services::entities::Entity), super::responses::AuthErrors, super::responses::NotFoundError))]
pub(super) async fn get_entity(_: Admin, core: web::Data<Core>, id: web::Path<String>) -> Handler {
    Ok(ok(&entities::get(&core, &id).await?))
}

#[utoipa::path(patch, path = "/admin/entities/{id}", tag = "admin", summary = "Change an entity", security(("bearer" = [])), params(("id" = String, Path)), request_body = EntityPatch, responses((status = 200, body = crate::services::entities::Entity), super::responses::AuthErrors, super::responses::BodyErrors, super::responses::NotFoundError, super::responses::ConflictError))]
pub(super) async fn update_entity(
    _: Admin,
    core: web::Data<Core>,
    id: web::Path<String>,
    Body(patch): Body<EntityPatch>,
) -> Handler {
    Ok(ok(&entities::update(&core, &id, patch).await?))
}

#[utoipa::path(delete, path = "/admin/entities/{id}", tag = "admin", summary = "Delete an entity without users or applications", security(("bearer" = [])), params(("id" = String, Path)), responses((status = 204, description = "Deleted"), super::responses::AuthErrors, super::responses::NotFoundError, super::responses::ConflictError))]
pub(super) async fn delete_entity(
    _: Admin,
    core: web::Data<Core>,
    id: web::Path<String>,
) -> Handler {
    entities::delete(&core, &id).await?;
    Ok(HttpResponse::NoContent().finish())
}

// --- applications -----------------------------------------------------------

#[utoipa::path(post, path = "/admin/entities/{id}/applications", tag = "admin", summary = "Create an application of an entity", security(("bearer" = [])), params(("id" = String, Path, description = "entity id")), request_body = NewApplication, responses((status = 201, body = crate::services::applications::Application), super::responses::AuthErrors, super::responses::BodyErrors, super::responses::NotFoundError, super::responses::ConflictError))]
pub(super) async fn create_application(
    _: Admin,
    core: web::Data<Core>,
    entity_id: web::Path<String>,
    Body(input): Body<NewApplication>,
) -> Handler {
    let application = applications::create(&core, &entity_id, input).await?;
    Ok(created(
        format!("/admin/applications/{}", application.id),
        &application,
    ))
}

#[utoipa::path(get, path = "/admin/entities/{id}/applications", tag = "admin", summary = "List the applications of an entity", security(("bearer" = [])), params(("id" = String, Path, description = "entity id"), ("limit" = Option<i64>, Query), ("offset" = Option<i64>, Query)), responses((status = 200, body = super::responses::ApplicationList), super::responses::AuthErrors, super::responses::QueryErrors, super::responses::NotFoundError))]
pub(super) async fn list_applications(
    _: Admin,
    core: web::Data<Core>,
    entity_id: web::Path<String>,
    query: QueryParams,
) -> Handler {
    Ok(paged(
        applications::list_for_entity(&core, &entity_id, query.page()?).await?,
    ))
}

#[utoipa::path(get, path = "/admin/applications/{id}", tag = "admin", summary = "Read an application", security(("bearer" = [])), params(("id" = String, Path)), responses((status = 200, body = crate::services::applications::Application), super::responses::AuthErrors, super::responses::NotFoundError))]
pub(super) async fn get_application(
    _: Admin,
    core: web::Data<Core>,
    id: web::Path<String>,
) -> Handler {
    Ok(ok(&applications::get(&core, &id).await?))
}

#[utoipa::path(patch, path = "/admin/applications/{id}", tag = "admin", summary = "Change an application", security(("bearer" = [])), params(("id" = String, Path)), request_body = ApplicationPatch, responses((status = 200, body = crate::services::applications::Application), super::responses::AuthErrors, super::responses::BodyErrors, super::responses::NotFoundError, super::responses::ConflictError))]
pub(super) async fn update_application(
    _: Admin,
    core: web::Data<Core>,
    id: web::Path<String>,
    Body(patch): Body<ApplicationPatch>,
) -> Handler {
    Ok(ok(&applications::update(&core, &id, patch).await?))
}

#[utoipa::path(delete, path = "/admin/applications/{id}", tag = "admin", summary = "Delete an application", security(("bearer" = [])), params(("id" = String, Path)), responses((status = 204, description = "Deleted"), super::responses::AuthErrors, super::responses::NotFoundError))]
pub(super) async fn delete_application(
    _: Admin,
    core: web::Data<Core>,
    id: web::Path<String>,
) -> Handler {
    applications::delete(&core, &id).await?;
    Ok(HttpResponse::NoContent().finish())
}

// --- users ------------------------------------------------------------------

#[utoipa::path(post, path = "/admin/users", tag = "admin", summary = "Create a user", security(("bearer" = [])), request_body = NewUser, responses((status = 201, body = crate::services::users::User), super::responses::AuthErrors, super::responses::BodyErrors, super::responses::ConflictError))]
pub(super) async fn create_user(
    _: Admin,
    core: web::Data<Core>,
    Body(input): Body<NewUser>,
) -> Handler {
    let user = users::create(&core, input).await?;
    Ok(created(format!("/admin/users/{}", user.id), &user))
}

#[utoipa::path(get, path = "/admin/users", tag = "admin", summary = "List users", security(("bearer" = [])), params(("entityId" = Option<String>, Query), ("limit" = Option<i64>, Query), ("offset" = Option<i64>, Query)), responses((status = 200, body = super::responses::UserList), super::responses::AuthErrors, super::responses::QueryErrors))]
pub(super) async fn list_users(_: Admin, core: web::Data<Core>, query: QueryParams) -> Handler {
    let entity_id = query
        .optional("entityId", rules::UUID)?
        .map(|id| id.to_ascii_lowercase());
    Ok(paged(users::list(&core, entity_id, query.page()?).await?))
}

#[utoipa::path(get, path = "/admin/users/{id}", tag = "admin", summary = "Read a user", security(("bearer" = [])), params(("id" = String, Path)), responses((status = 200, body = crate::services::users::User), super::responses::AuthErrors, super::responses::NotFoundError))]
pub(super) async fn get_user(_: Admin, core: web::Data<Core>, id: web::Path<String>) -> Handler {
    Ok(ok(&users::get(&core, &id).await?))
}

#[utoipa::path(patch, path = "/admin/users/{id}", tag = "admin", summary = "Change a user", security(("bearer" = [])), params(("id" = String, Path)), request_body = UserPatch, responses((status = 200, body = crate::services::users::User), super::responses::AuthErrors, super::responses::BodyErrors, super::responses::NotFoundError, super::responses::ConflictError))]
pub(super) async fn update_user(
    _: Admin,
    core: web::Data<Core>,
    id: web::Path<String>,
    Body(patch): Body<UserPatch>,
) -> Handler {
    Ok(ok(&users::update(&core, &id, patch).await?))
}

#[utoipa::path(put, path = "/admin/users/{id}/password", tag = "admin", summary = "Set a user's password (hashed with argon2id); every session of the user ends", security(("bearer" = [])), params(("id" = String, Path)), request_body = PasswordBody, responses((status = 204, description = "Password set"), super::responses::AuthErrors, super::responses::BodyErrors, super::responses::NotFoundError))]
pub(super) async fn set_user_password(
    _: Admin,
    core: web::Data<Core>,
    client: ClientInfo,
    id: web::Path<String>,
    Body(PasswordBody { password }): Body<PasswordBody>,
) -> Handler {
    account::set_password(&core, &id, password, client).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(post, path = "/admin/users/{id}/lock", tag = "admin", summary = "Lock a user until unlocked; every session of the user ends", security(("bearer" = [])), params(("id" = String, Path)), responses((status = 204, description = "Locked"), super::responses::AuthErrors, super::responses::NotFoundError))]
pub(super) async fn lock_user(
    _: Admin,
    core: web::Data<Core>,
    client: ClientInfo,
    id: web::Path<String>,
) -> Handler {
    account::lock(&core, &id, client).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(post, path = "/admin/users/{id}/unlock", tag = "admin", summary = "Lift a user's lock (a lockout's or an admin's) and forget the counted failures", security(("bearer" = [])), params(("id" = String, Path)), responses((status = 204, description = "Unlocked"), super::responses::AuthErrors, super::responses::NotFoundError))]
pub(super) async fn unlock_user(
    _: Admin,
    core: web::Data<Core>,
    client: ClientInfo,
    id: web::Path<String>,
) -> Handler {
    account::unlock(&core, &id, client).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(delete, path = "/admin/users/{id}", tag = "admin", summary = "Delete a user", security(("bearer" = [])), params(("id" = String, Path)), responses((status = 204, description = "Deleted"), super::responses::AuthErrors, super::responses::NotFoundError))]
pub(super) async fn delete_user(
    _: Admin,
    core: web::Data<Core>,
    client: ClientInfo,
    id: web::Path<String>,
) -> Handler {
    account::delete(&core, &id, client).await?;
    Ok(HttpResponse::NoContent().finish())
}

// --- mail outbox ------------------------------------------------------------

const OUTBOX_STATUS: rules::Rule = rules::Rule::new(
    outbox_status,
    Some("^(pending|sent|dead)$"),
    "pending, sent or dead",
);

fn outbox_status(value: &str) -> Result<(), String> {
    match value {
        "pending" | "sent" | "dead" => Ok(()),
        _ => Err("must be one of pending, sent, dead".into()),
    }
}

#[utoipa::path(get, path = "/admin/outbox", tag = "admin", summary = "List queued, sent and dead mails (without bodies)", security(("bearer" = [])), params(("status" = Option<String>, Query, description = "pending, sent or dead"), ("limit" = Option<i64>, Query), ("offset" = Option<i64>, Query)), responses((status = 200, body = super::responses::OutboxList), super::responses::AuthErrors, super::responses::QueryErrors))]
pub(super) async fn list_outbox(_: Admin, core: web::Data<Core>, query: QueryParams) -> Handler {
    let status = query.optional("status", OUTBOX_STATUS)?;
    Ok(paged(outbox::list(&core, status, query.page()?).await?))
}

#[utoipa::path(post, path = "/admin/outbox/{id}/retry", tag = "admin", summary = "Queue a dead mail again (not for mails that carried a one-time code)", security(("bearer" = [])), params(("id" = String, Path)), responses((status = 200, body = crate::services::outbox::OutboxEntry), super::responses::AuthErrors, super::responses::NotFoundError, super::responses::ConflictError))]
pub(super) async fn retry_outbox(
    _: Admin,
    core: web::Data<Core>,
    id: web::Path<String>,
) -> Handler {
    Ok(ok(&outbox::retry(&core, &id).await?))
}

// --- audit ------------------------------------------------------------------

const AUDIT_KIND: rules::Rule = rules::Rule::new(audit_kind, None, "an audit event kind");

fn audit_kind(value: &str) -> Result<(), String> {
    if AuditKind::ALL.iter().any(|k| k.as_str() == value) {
        Ok(())
    } else {
        let kinds: Vec<&str> = AuditKind::ALL.iter().map(|k| k.as_str()).collect();
        Err(format!("must be one of {}", kinds.join(", ")))
    }
}

#[utoipa::path(get, path = "/admin/audit", tag = "admin", summary = "List security events, newest first", security(("bearer" = [])), params(("userId" = Option<String>, Query), ("kind" = Option<String>, Query, description = "e.g. login_failed, otp_verified"), ("limit" = Option<i64>, Query), ("offset" = Option<i64>, Query)), responses((status = 200, body = super::responses::AuditList), super::responses::AuthErrors, super::responses::QueryErrors))]
pub(super) async fn list_audit(_: Admin, core: web::Data<Core>, query: QueryParams) -> Handler {
    let user_id = query
        .optional("userId", rules::UUID)?
        .map(|id| id.to_ascii_lowercase());
    let kind = query.optional("kind", AUDIT_KIND)?;
    Ok(paged(
        audit::list(&core, user_id, kind, query.page()?).await?,
    ))
}

#[utoipa::path(delete, path = "/admin/users/{id}/totp", tag = "admin", summary = "Remove a user's authenticator (mails the user a notice)", security(("bearer" = [])), params(("id" = String, Path)), responses((status = 204, description = "Removed"), super::responses::AuthErrors, super::responses::NotFoundError))]
pub(super) async fn remove_user_totp(
    Admin(claims): Admin,
    core: web::Data<Core>,
    client: ClientInfo,
    id: web::Path<String>,
) -> Handler {
    let caller = Caller::Admin {
        subject: claims.sub,
    };
    crate::engine::authenticators::remove(&core, &caller, Some(&id), client).await?;
    Ok(HttpResponse::NoContent().finish())
}
