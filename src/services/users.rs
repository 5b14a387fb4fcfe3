//! Users: people who log in. Password hashes never leave this module.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{Core, Page, Paged, parse_id, to_utc};
use crate::db::users::{self as rows, UserChanges, UserRow};
use crate::db::{entities, violates_unique};
use crate::domain::LoginName;
use crate::error::ApiError;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: String,
    pub entity_id: String,
    pub employee_number: String,
    pub login_name: String,
    pub email: Option<String>,
    pub display_name: String,
    pub preferred_language: String,
    pub has_password: bool,
    pub has_pin: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        Self {
            id: row.id,
            entity_id: row.entity_id,
            employee_number: row.employee_number,
            login_name: row.login_name,
            email: row.email,
            display_name: row.display_name,
            preferred_language: row.preferred_language,
            has_password: row.password_hash.is_some(),
            has_pin: row.pin_hash.is_some(),
            created_at: to_utc(row.created_at),
            updated_at: to_utc(row.updated_at),
        }
    }
}

/// How a request names the user's entity.
#[derive(Debug, Clone)]
pub enum EntityRef {
    Id(String),
    Number(String),
}

#[derive(Debug)]
pub struct NewUser {
    pub entity: EntityRef,
    pub employee_number: String,
    pub display_name: String,
    pub email: Option<String>,
    /// Defaults to the email; the face makes sure one of them is there.
    pub login_name: Option<String>,
    pub preferred_language: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Default)]
pub struct UserPatch {
    pub employee_number: Option<String>,
    pub login_name: Option<String>,
    pub email: Option<Option<String>>,
    pub display_name: Option<String>,
    pub preferred_language: Option<String>,
}

/// Login names are stored as RFC 8265 UsernameCaseMapped enforces them,
/// so that names that look alike are one name (a second one is a 409).
fn login_name(raw: &str) -> Result<String, ApiError> {
    LoginName::parse(raw)
        .map(LoginName::into_string)
        .map_err(|why| ApiError::invalid_field("/loginName", format!("loginName {why}.")))
}

/// Display names are stored as RFC 8266 Nickname enforces them.
fn display_name(raw: &str) -> Result<String, ApiError> {
    crate::domain::display_name(raw)
        .map_err(|why| ApiError::invalid_field("/displayName", format!("displayName {why}.")))
}

fn map_write_error(err: diesel::result::Error) -> ApiError {
    if violates_unique(&err, "users", "login_name") {
        return ApiError::conflict("Another user already has this login name.")
            .at_pointer("/loginName");
    }
    if violates_unique(&err, "users", "employee_number") {
        return ApiError::conflict("The entity already has a user with this employee number.")
            .at_pointer("/employeeNumber");
    }
    err.into()
}

fn no_user(id: &str) -> ApiError {
    ApiError::not_found(format!("There is no user with id {id:?}."))
}

pub async fn create(core: &Core, input: NewUser) -> Result<User, ApiError> {
    let password_hash = match input.password {
        Some(password) => {
            let hasher = core.hasher.clone();
            Some(
                core.blocking(move || hasher.hash(&password))
                    .await?
                    .map_err(ApiError::internal)?,
            )
        }
        None => None,
    };
    let login_name = input
        .login_name
        .or_else(|| input.email.clone())
        .ok_or_else(|| {
            ApiError::invalid_field("/loginName", "is required when the user has no email")
        })
        .and_then(|name| login_name(&name))?;
    let display_name = display_name(&input.display_name)?;
    let now = core.now();
    let entity = input.entity;
    let mut row = UserRow {
        id: Uuid::new_v4().to_string(),
        entity_id: String::new(),
        employee_number: input.employee_number,
        login_name,
        email: input.email,
        display_name,
        preferred_language: input.preferred_language.unwrap_or_else(|| "en".to_owned()),
        password_hash,
        pin_hash: None,
        failed_logins: 0,
        failed_logins_since: None,
        locked_until: None,
        failed_second_factors: 0,
        failed_second_factors_since: None,
        created_at: now,
        updated_at: now,
    };
    core.db
        .write(move |conn| {
            let found = match &entity {
                EntityRef::Id(id) => entities::find(conn, id)?,
                EntityRef::Number(number) => entities::find_by_number(conn, number)?,
            };
            row.entity_id = match (found, &entity) {
                (Some(entity), _) => entity.id,
                (None, EntityRef::Id(_)) => {
                    return Err(ApiError::invalid_field(
                        "/entityId",
                        "names no existing entity",
                    ));
                }
                (None, EntityRef::Number(_)) => {
                    return Err(ApiError::invalid_field(
                        "/entityNumber",
                        "names no existing entity",
                    ));
                }
            };
            rows::insert(conn, &row).map_err(map_write_error)?;
            Ok(row.into())
        })
        .await
}

pub async fn get(core: &Core, raw_id: &str) -> Result<User, ApiError> {
    let id = parse_id(raw_id, "user")?;
    core.db
        .run(move |conn| {
            rows::find(conn, &id)?
                .map(User::from)
                .ok_or_else(|| no_user(&id))
        })
        .await
}

pub async fn list(
    core: &Core,
    entity_id: Option<String>,
    page: Page,
) -> Result<Paged<User>, ApiError> {
    core.db
        .run(move |conn| {
            let (items, total) = rows::list(conn, entity_id.as_deref(), page.limit, page.offset)?;
            Ok(Paged {
                items: items.into_iter().map(User::from).collect(),
                total,
                page,
            })
        })
        .await
}

pub async fn update(core: &Core, raw_id: &str, patch: UserPatch) -> Result<User, ApiError> {
    let id = parse_id(raw_id, "user")?;
    let changes = UserChanges {
        employee_number: patch.employee_number,
        login_name: patch.login_name.map(|name| login_name(&name)).transpose()?,
        email: patch.email,
        display_name: patch
            .display_name
            .map(|name| display_name(&name))
            .transpose()?,
        preferred_language: patch.preferred_language,
        password_hash: None,
        updated_at: Some(core.now()),
    };
    core.db
        .write(move |conn| {
            if rows::update(conn, &id, &changes).map_err(map_write_error)? == 0 {
                return Err(no_user(&id));
            }
            rows::find(conn, &id)?
                .map(User::from)
                .ok_or_else(|| no_user(&id))
        })
        .await
}
