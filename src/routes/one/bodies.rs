//! The three bodies of the asynchronous face, each read exactly as its seed
//! document's schema says (type, required, regex), in snake_case. A body
//! is read twice: when it is accepted (every bad field in one 422) and when
//! the worker processes the stored body (it passed once, so it passes
//! again), which keeps its shape written once.

use serde_json::Value;

use super::super::body::{RequestBody, request_bodies};
use super::super::extract::Fields;
use crate::engine::backend::{ChangeSession, RecordSession};
use crate::engine::lifecycle::Binding;
use crate::engine::login::{LoginInput, UserRef};
use crate::services::rules::{self, parse_seed_time};

/// A uuid as the seeds' regex allows it, in the form it is stored.
fn id(raw: String) -> String {
    raw.to_ascii_lowercase()
}

fn time(raw: &str) -> chrono::NaiveDateTime {
    parse_seed_time(raw).unwrap_or_default()
}

/// Seed 001 (`POST /one-sessions-post-one`): a session a trusted backend
/// records for a user. `status`, `is_valid`, `is_active`, `verified_at`,
/// `created_at`, `updated_at` and `failure_reason` are read and checked but
/// not applied: a new session is pending until its second factor is
/// proven, and its times are the server's (`ignored_fields` of the result
/// lists what was not applied).
pub struct PostOneBody {
    pub command: RecordSession,
    pub ignored: Vec<&'static str>,
}

impl RequestBody for PostOneBody {
    fn read(fields: &mut Fields<'_>) -> Self {
        let session_id = id(fields.required_str("session_id", rules::UUID));
        let user_id = id(fields.required_str("user_id", rules::UUID));
        let entity_id = id(fields.required_str("entity_id", rules::UUID));
        let entity_field = fields.required_str("session_entity_field", rules::FIELD_NAME);
        let entity_field_value = fields.required_str("session_entity_field_value", rules::UUID);
        let mobile_application_id = fields
            .optional_str("mobile_application_id", rules::UUID)
            .map(id);
        let desktop_application_id = fields
            .optional_str("desktop_application_id", rules::UUID)
            .map(id);
        let entity_number = fields.required_str("entity_number", rules::RECORD_NUMBER);
        let employee_number = fields.required_str("employee_number", rules::RECORD_NUMBER);
        let application_number =
            fields.required_str("application_number", rules::APPLICATION_NUMBER);
        let application_type = fields.required_str("application_type", rules::APPLICATION_TYPE);
        let status = fields.required_str("status", rules::SESSION_STATUS);
        let is_valid = fields.flag("is_valid", true);
        let is_active = fields.flag("is_active", true);
        let context = fields.object_or_json_string("session_context", true);
        let expires_at = fields.required_str("expires_at", rules::SEED_TIME);
        fields.required_str("created_at", rules::SEED_TIME);
        fields.required_str("updated_at", rules::SEED_TIME);
        let verified_at = fields.optional_str("verified_at", rules::SEED_TIME);
        let failure_reason = fields.optional_str("failure_reason", rules::FAILURE_REASON);
        let mut ignored = Vec::new();
        if status != "pending" {
            ignored.push("status");
        }
        if is_valid == Some(true) {
            ignored.push("is_valid");
        }
        if is_active == Some(false) {
            ignored.push("is_active");
        }
        if verified_at.is_some() {
            ignored.push("verified_at");
        }
        ignored.extend(["created_at", "updated_at"]);
        if failure_reason.is_some() {
            ignored.push("failure_reason");
        }
        let field_value = if entity_field.ends_with("_id") {
            id(entity_field_value)
        } else {
            entity_field_value
        };
        Self {
            command: RecordSession {
                session_id,
                user_id,
                entity_id,
                entity_number,
                employee_number,
                application_number,
                application_type,
                binding: Binding {
                    entity_field: Some(entity_field),
                    entity_field_value: Some(field_value),
                    mobile_application_id,
                    desktop_application_id,
                    context: context.map(|map| Value::Object(map).to_string()),
                },
                expires_at: time(&expires_at),
            },
            ignored,
        }
    }
}

/// Seed 000 (`PATCH /one-sessions-patch-one`): a trusted backend's change
/// to an existing session. `session_entity_field` and
/// `session_entity_field_value` come together; `created_at` is read and
/// checked but not applied.
pub struct PatchOneBody {
    pub command: ChangeSession,
    pub ignored: Vec<&'static str>,
}

impl RequestBody for PatchOneBody {
    fn read(fields: &mut Fields<'_>) -> Self {
        let session_id = id(fields.required_str("session_id", rules::UUID));
        let user_id = fields.optional_str("user_id", rules::UUID).map(id);
        let entity_id = fields.optional_str("entity_id", rules::UUID).map(id);
        let entity_field = fields.optional_str("session_entity_field", rules::FIELD_NAME);
        let entity_field_value =
            fields.optional_str("session_entity_field_value", rules::FOUR_DIGITS);
        let mobile_application_id = fields
            .optional_str("mobile_application_id", rules::UUID)
            .map(id);
        let desktop_application_id = fields
            .optional_str("desktop_application_id", rules::UUID)
            .map(id);
        let is_valid = fields.flag("is_valid", false);
        let expires_at = fields.optional_str("expires_at", rules::SEED_TIME);
        let created_at = fields.optional_str("created_at", rules::SEED_TIME);
        let failure_reason = fields.optional_str("failure_reason", rules::FAILURE_REASON);
        let entity_field = match (entity_field, entity_field_value) {
            (Some(field), Some(value)) => Some((field, value)),
            (None, None) => None,
            (Some(_), None) => {
                if !fields.has_problems_at(&["session_entity_field_value"]) {
                    fields.reject(
                        "session_entity_field_value",
                        "session_entity_field_value is required with session_entity_field.",
                    );
                }
                None
            }
            (None, Some(_)) => {
                if !fields.has_problems_at(&["session_entity_field"]) {
                    fields.reject(
                        "session_entity_field",
                        "session_entity_field is required with session_entity_field_value.",
                    );
                }
                None
            }
        };
        let mut ignored = Vec::new();
        if created_at.is_some() {
            ignored.push("created_at");
        }
        if failure_reason.is_some() && is_valid != Some(false) {
            ignored.push("failure_reason");
        }
        Self {
            command: ChangeSession {
                session_id,
                user_id,
                entity_id,
                entity_field,
                mobile_application_id,
                desktop_application_id,
                is_valid,
                failure_reason,
                expires_at: expires_at.as_deref().map(time),
            },
            ignored,
        }
    }
}

/// Seed 002 (`POST /jef-one-validate-login-and-create-session`): a login
/// with a session id the frontend chose.
pub struct ValidateLoginBody(pub LoginInput);

impl RequestBody for ValidateLoginBody {
    fn read(fields: &mut Fields<'_>) -> Self {
        let session_id = id(fields.required_str("session_id", rules::UUID));
        let entity_number = fields.required_str("entity_number", rules::ENTITY_NUMBER);
        let application_name = fields.required_str("application_name", rules::APPLICATION_NAME);
        let employee_number = fields.required_str("employee_number", rules::EMPLOYEE_NUMBER);
        let password = fields.required_str("password", rules::SEED_PASSWORD);
        Self(LoginInput {
            user: UserRef::Employee {
                entity_number,
                employee_number,
            },
            password,
            application_name: Some(application_name),
            session_id: Some(session_id),
        })
    }
}

request_bodies!(PostOneBody, PatchOneBody, ValidateLoginBody);
