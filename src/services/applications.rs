//! Applications: the mobile, desktop and web clients of an entity.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{Core, Page, Paged, parse_id, to_utc};
use crate::db::applications::{self as rows, ApplicationChanges, ApplicationRow};
use crate::db::{entities, violates_unique};
use crate::error::ApiError;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Application {
    pub id: String,
    pub entity_id: String,
    pub application_name: String,
    pub application_type: String,
    pub application_number: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<ApplicationRow> for Application {
    fn from(row: ApplicationRow) -> Self {
        Self {
            id: row.id,
            entity_id: row.entity_id,
            application_name: row.application_name,
            application_type: row.application_type,
            application_number: row.application_number,
            created_at: to_utc(row.created_at),
            updated_at: to_utc(row.updated_at),
        }
    }
}

#[derive(Debug)]
pub struct NewApplication {
    pub application_name: String,
    pub application_type: String,
    pub application_number: String,
}

#[derive(Debug, Default)]
pub struct ApplicationPatch {
    pub application_name: Option<String>,
    pub application_type: Option<String>,
    pub application_number: Option<String>,
}

fn map_write_error(err: diesel::result::Error) -> ApiError {
    if violates_unique(&err, "applications", "application_name") {
        return ApiError::conflict("The entity already has an application with this name.")
            .at_pointer("/applicationName");
    }
    err.into()
}

fn no_entity(id: &str) -> ApiError {
    ApiError::not_found(format!("There is no entity with id {id:?}."))
}

fn no_application(id: &str) -> ApiError {
    ApiError::not_found(format!("There is no application with id {id:?}."))
}

pub async fn create(
    core: &Core,
    raw_entity_id: &str,
    input: NewApplication,
) -> Result<Application, ApiError> {
    let entity_id = parse_id(raw_entity_id, "entity")?;
    let now = core.now();
    let row = ApplicationRow {
        id: Uuid::new_v4().to_string(),
        entity_id,
        application_name: input.application_name,
        application_type: input.application_type,
        application_number: input.application_number,
        created_at: now,
        updated_at: now,
    };
    core.db
        .write(move |conn| {
            if entities::find(conn, &row.entity_id)?.is_none() {
                return Err(no_entity(&row.entity_id));
            }
            rows::insert(conn, &row).map_err(map_write_error)?;
            Ok(row.into())
        })
        .await
}

pub async fn get(core: &Core, raw_id: &str) -> Result<Application, ApiError> {
    let id = parse_id(raw_id, "application")?;
    core.db
        .run(move |conn| {
            rows::find(conn, &id)?
                .map(Application::from)
                .ok_or_else(|| no_application(&id))
        })
        .await
}

pub async fn list_for_entity(
    core: &Core,
    raw_entity_id: &str,
    page: Page,
) -> Result<Paged<Application>, ApiError> {
    let entity_id = parse_id(raw_entity_id, "entity")?;
    core.db
        .run(move |conn| {
            if entities::find(conn, &entity_id)?.is_none() {
                return Err(no_entity(&entity_id));
            }
            let (items, total) = rows::list_for_entity(conn, &entity_id, page.limit, page.offset)?;
            Ok(Paged {
                items: items.into_iter().map(Application::from).collect(),
                total,
                page,
            })
        })
        .await
}

pub async fn update(
    core: &Core,
    raw_id: &str,
    patch: ApplicationPatch,
) -> Result<Application, ApiError> {
    let id = parse_id(raw_id, "application")?;
    let changes = ApplicationChanges {
        application_name: patch.application_name,
        application_type: patch.application_type,
        application_number: patch.application_number,
        updated_at: Some(core.now()),
    };
    core.db
        .write(move |conn| {
            if rows::update(conn, &id, &changes).map_err(map_write_error)? == 0 {
                return Err(no_application(&id));
            }
            rows::find(conn, &id)?
                .map(Application::from)
                .ok_or_else(|| no_application(&id))
        })
        .await
}

pub async fn delete(core: &Core, raw_id: &str) -> Result<(), ApiError> {
    let id = parse_id(raw_id, "application")?;
    core.db
        .write(move |conn| match rows::delete(conn, &id)? {
            0 => Err(no_application(&id)),
            _ => Ok(()),
        })
        .await
}
