//! Entities: the organisations users and applications belong to.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{Core, Page, Paged, parse_id, to_utc};
use crate::db::entities::{self as rows, EntityChanges, EntityRow};
use crate::db::violates_unique;
use crate::error::ApiError;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Entity {
    pub id: String,
    pub entity_number: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<EntityRow> for Entity {
    fn from(row: EntityRow) -> Self {
        Self {
            id: row.id,
            entity_number: row.entity_number,
            name: row.name,
            created_at: to_utc(row.created_at),
            updated_at: to_utc(row.updated_at),
        }
    }
}

#[derive(Debug)]
pub struct NewEntity {
    pub entity_number: String,
    pub name: String,
}

#[derive(Debug, Default)]
pub struct EntityPatch {
    pub entity_number: Option<String>,
    pub name: Option<String>,
}

fn map_write_error(err: diesel::result::Error, entity_number: Option<&str>) -> ApiError {
    if violates_unique(&err, "entities", "entity_number") {
        return ApiError::conflict(format!(
            "An entity with number {:?} already exists.",
            entity_number.unwrap_or_default()
        ))
        .at_pointer("/entityNumber");
    }
    err.into()
}

pub async fn create(core: &Core, input: NewEntity) -> Result<Entity, ApiError> {
    let now = core.now();
    let row = EntityRow {
        id: Uuid::new_v4().to_string(),
        entity_number: input.entity_number,
        name: input.name,
        created_at: now,
        updated_at: now,
    };
    core.db
        .write(move |conn| {
            rows::insert(conn, &row).map_err(|e| map_write_error(e, Some(&row.entity_number)))?;
            Ok(row.into())
        })
        .await
}

pub async fn get(core: &Core, raw_id: &str) -> Result<Entity, ApiError> {
    let id = parse_id(raw_id, "entity")?;
    core.db
        .run(move |conn| {
            rows::find(conn, &id)?
                .map(Entity::from)
                .ok_or_else(|| ApiError::not_found(format!("There is no entity with id {id:?}.")))
        })
        .await
}

pub async fn list(core: &Core, page: Page) -> Result<Paged<Entity>, ApiError> {
    core.db
        .run(move |conn| {
            let (items, total) = rows::list(conn, page.limit, page.offset)?;
            Ok(Paged {
                items: items.into_iter().map(Entity::from).collect(),
                total,
                page,
            })
        })
        .await
}

pub async fn update(core: &Core, raw_id: &str, patch: EntityPatch) -> Result<Entity, ApiError> {
    let id = parse_id(raw_id, "entity")?;
    let changes = EntityChanges {
        entity_number: patch.entity_number,
        name: patch.name,
        updated_at: Some(core.now()),
    };
    core.db
        .write(move |conn| {
            let changed = rows::update(conn, &id, &changes)
                .map_err(|e| map_write_error(e, changes.entity_number.as_deref()))?;
            if changed == 0 {
                return Err(ApiError::not_found(format!(
                    "There is no entity with id {id:?}."
                )));
            }
            rows::find(conn, &id)?
                .map(Entity::from)
                .ok_or_else(|| ApiError::not_found("The entity was deleted."))
        })
        .await
}

pub async fn delete(core: &Core, raw_id: &str) -> Result<(), ApiError> {
    let id = parse_id(raw_id, "entity")?;
    core.db
        .write(move |conn| match rows::delete(conn, &id) {
            Ok(0) => Err(ApiError::not_found(format!(
                "There is no entity with id {id:?}."
            ))),
            Ok(_) => Ok(()),
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::ForeignKeyViolation,
                _,
            )) => Err(ApiError::conflict(
                "The entity still has users or applications; delete those first.",
            )),
            Err(e) => Err(e.into()),
        })
        .await
}
