//! Request extractors shared by every face: a JSON object body read with a
//! size limit, a field reader that reports every bad field at once, list
//! paging from the query string, and bearer-token callers. Each failure is
//! an [`ApiError`], so framework errors look like every other error.

use std::collections::HashMap;

use actix_web::dev::Payload;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::web::{self, BytesMut};
use actix_web::{FromRequest, HttpRequest};
use futures_util::StreamExt;
use futures_util::future::{LocalBoxFuture, Ready, ready};
use serde_json::{Map, Value};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ArrayBuilder, ArrayItems, ObjectBuilder, Schema, SchemaType, Type};

use super::forwarded;
use crate::db::sessions::SessionRow;
use crate::engine::caller::{self, Caller};
use crate::error::{ApiError, ErrorCode, Problem, Source, pointer_token};
use crate::services::audit::ClientInfo;
use crate::services::rules::Rule;
use crate::services::{Core, Page};
use crate::tokens::{ADMIN_SCOPE, Claims};

fn core(req: &HttpRequest) -> Result<web::Data<Core>, ApiError> {
    req.app_data::<web::Data<Core>>()
        .cloned()
        .ok_or_else(|| ApiError::internal("application state missing"))
}

/// A request body that is a JSON object.
pub struct JsonObject(pub Map<String, Value>);

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn is_json_media_type(req: &HttpRequest) -> bool {
    let Some(value) = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let media_type = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    media_type == "application/json"
        || (media_type.starts_with("application/") && media_type.ends_with("+json"))
}

impl FromRequest for JsonObject {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let checks = core(req).and_then(|core| {
            if is_json_media_type(req) {
                Ok(core.settings.max_body_bytes)
            } else {
                Err(ApiError::new(
                    ErrorCode::UnsupportedMediaType,
                    "Send the body as JSON with the header Content-Type: application/json.",
                ))
            }
        });
        let mut payload = payload.take();
        Box::pin(async move {
            let limit = checks?;
            let too_large = || {
                ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    format!("The request body is larger than the limit of {limit} bytes."),
                )
            };
            let mut body = BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| match e {
                    actix_web::error::PayloadError::Overflow => too_large(),
                    _ => ApiError::new(
                        ErrorCode::InvalidJson,
                        "The request body could not be read completely.",
                    ),
                })?;
                if body.len() + chunk.len() > limit {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            match serde_json::from_slice::<Value>(&body) {
                Ok(Value::Object(object)) => Ok(JsonObject(object)),
                Ok(other) => Err(ApiError::new(
                    ErrorCode::InvalidJson,
                    format!(
                        "The request body must be a JSON object, not {}.",
                        json_type_name(&other)
                    ),
                )),
                Err(e) if body.is_empty() => Err(ApiError::new(
                    ErrorCode::InvalidJson,
                    format!("The request body is empty; a JSON object is expected ({e})."),
                )),
                Err(e) => Err(ApiError::new(
                    ErrorCode::InvalidJson,
                    format!("The request body is not valid JSON: {e}."),
                )),
            }
        })
    }
}

/// Reads typed fields out of a [`JsonObject`], collecting one problem per
/// bad field. Getters return a placeholder for a bad field; [`Fields::finish`]
/// then fails, so a placeholder is never used.
///
/// The same reading code also documents the body: in describe mode
/// ([`Fields::describing`], used by [`super::body`]) the getters read
/// nothing, record each field's schema (type, rule, required) and return
/// placeholders, so the OpenAPI schema of a body is made by the code that
/// parses it and cannot disagree with it.
pub struct Fields<'a> {
    body: &'a Map<String, Value>,
    known: Vec<&'static str>,
    problems: Vec<Problem>,
    /// The JSON pointer of this object (empty for the body itself).
    prefix: String,
    /// Describe mode: what the getters recorded.
    described: Option<Described>,
}

/// The schema of an object as its reader describes it.
#[derive(Default)]
pub struct Described {
    properties: Vec<(String, RefOr<Schema>)>,
    required: Vec<String>,
    /// For a nested reader: its field name in the parent, and whether the
    /// parent holds a list of such objects.
    slot: Option<(&'static str, bool)>,
}

impl Described {
    pub fn into_schema(self) -> Schema {
        let mut object = ObjectBuilder::new().schema_type(Type::Object);
        for (name, schema) in self.properties {
            object = object.property(name, schema);
        }
        for name in self.required {
            object = object.required(name);
        }
        Schema::Object(object.build())
    }
}

fn string_schema(rule: Rule, nullable: bool) -> Schema {
    let schema_type = if nullable {
        SchemaType::Array(vec![Type::String, Type::Null])
    } else {
        SchemaType::Type(Type::String)
    };
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(schema_type)
            .pattern(rule.pattern)
            .description(Some(rule.description))
            .build(),
    )
}

fn typed_schema(schema_type: Type, description: Option<String>) -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(schema_type)
            .description(description)
            .build(),
    )
}

fn list_schema(items: Schema, min_items: usize) -> Schema {
    Schema::Array(
        ArrayBuilder::new()
            .items(ArrayItems::RefOrSchema(Box::new(items.into())))
            .min_items((min_items > 0).then_some(min_items))
            .build(),
    )
}

impl<'a> Fields<'a> {
    pub fn new(body: &'a JsonObject) -> Self {
        Self::over(&body.0)
    }

    /// A reader over an object (also a stored body, read again later).
    pub fn over(body: &'a Map<String, Value>) -> Self {
        Self {
            body,
            known: Vec::new(),
            problems: Vec::new(),
            prefix: String::new(),
            described: None,
        }
    }

    /// A reader in describe mode (over an empty object).
    pub fn describing(empty: &'a Map<String, Value>) -> Self {
        Self {
            described: Some(Described::default()),
            ..Self::over(empty)
        }
    }

    /// What a reader in describe mode recorded.
    pub fn into_described(self) -> Described {
        self.described.unwrap_or_default()
    }

    /// In describe mode: records `name` with `schema` and says so (the
    /// getter then returns its placeholder).
    fn describe(&mut self, name: &'static str, schema: Schema, required: bool) -> bool {
        let Some(described) = &mut self.described else {
            return false;
        };
        self.known.push(name);
        described.properties.push((name.to_owned(), schema.into()));
        if required {
            described.required.push(name.to_owned());
        }
        true
    }

    /// A nested reader in describe mode, for the field `name`.
    fn describing_child(&self, name: &'static str, list: bool) -> Option<Fields<'a>> {
        self.described.as_ref().map(|_| Fields {
            body: self.body,
            known: Vec::new(),
            problems: Vec::new(),
            prefix: self.pointer(name),
            described: Some(Described {
                slot: Some((name, list)),
                ..Described::default()
            }),
        })
    }

    /// The pointer of this object's member `name` (escaped: unknown
    /// fields' names are the client's).
    fn pointer(&self, name: &str) -> String {
        format!("{}/{}", self.prefix, pointer_token(name))
    }

    /// A nested object, read with its own `Fields`; hand it back with
    /// [`Fields::absorb`] so its problems are reported.
    pub fn object(&mut self, name: &'static str) -> Option<Fields<'a>> {
        if let Some(child) = self.describing_child(name, false) {
            return Some(child);
        }
        match self.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => Some(Fields {
                prefix: self.pointer(name),
                ..Fields::over(map)
            }),
            Some(other) => {
                self.problem(
                    name,
                    format!("{name} must be an object, not {}.", json_type_name(other)),
                );
                None
            }
        }
    }

    /// Takes a nested reader's problems (and its unknown fields) over.
    pub fn absorb(&mut self, mut child: Fields<'a>) {
        if let Some(described) = child.described.take() {
            if let Some((name, list)) = described.slot {
                let object = described.into_schema();
                let schema = if list { list_schema(object, 0) } else { object };
                self.describe(name, schema, false);
            }
            return;
        }
        child.reject_unknown();
        self.problems.append(&mut child.problems);
    }

    /// An object of string values, each passing `rule`.
    pub fn string_map(
        &mut self,
        name: &'static str,
        rule: Rule,
    ) -> Option<std::collections::BTreeMap<String, String>> {
        let map_schema = Schema::Object(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .additional_properties(Some(string_schema(rule, false)))
                .build(),
        );
        if self.describe(name, map_schema, false) {
            return None;
        }
        match self.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => {
                let mut values = std::collections::BTreeMap::new();
                for (key, value) in map {
                    let pointer = format!("{}/{}", self.pointer(name), pointer_token(key));
                    match value {
                        Value::String(s) => match (rule.check)(s) {
                            Ok(()) => {
                                values.insert(key.clone(), s.clone());
                            }
                            Err(why) => self.problems.push(Problem {
                                detail: format!("{name}.{key} {why}."),
                                source: Some(Source::Pointer(pointer)),
                            }),
                        },
                        other => self.problems.push(Problem {
                            detail: format!(
                                "{name}.{key} must be a string, not {}.",
                                json_type_name(other)
                            ),
                            source: Some(Source::Pointer(pointer)),
                        }),
                    }
                }
                Some(values)
            }
            Some(other) => {
                self.problem(
                    name,
                    format!("{name} must be an object, not {}.", json_type_name(other)),
                );
                None
            }
        }
    }

    /// A field of a known shape whose content is not read (a feature that
    /// is refused as a whole): whether it was sent (not absent or null).
    /// It is documented as an object with `description`.
    pub fn present(&mut self, name: &'static str, description: &'static str) -> bool {
        let schema = typed_schema(Type::Object, Some(description.to_owned()));
        if self.describe(name, schema, false) {
            return false;
        }
        !matches!(self.get(name), None | Some(Value::Null))
    }

    /// An object of string lists (HTTP headers: name -> values), each
    /// value written as protobuf's JSON writes it (`{"values": [...]}`) or
    /// as a bare array; every string must pass `rule`.
    pub fn string_lists(
        &mut self,
        name: &'static str,
        rule: Rule,
    ) -> Option<std::collections::BTreeMap<String, Vec<String>>> {
        let values = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("values", list_schema(string_schema(rule, false), 0))
            .build();
        let map_schema = Schema::Object(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .additional_properties(Some(Schema::Object(values)))
                .build(),
        );
        if self.describe(name, map_schema, false) {
            return None;
        }
        let map = match self.get(name) {
            None | Some(Value::Null) => return None,
            Some(Value::Object(map)) => map,
            Some(other) => {
                self.problem(
                    name,
                    format!("{name} must be an object, not {}.", json_type_name(other)),
                );
                return None;
            }
        };
        let mut lists = std::collections::BTreeMap::new();
        for (key, value) in map {
            let pointer = format!("{}/{key}", self.pointer(name));
            let items = match value {
                Value::Array(items) => Some((items, pointer.clone())),
                Value::Object(inner) if inner.keys().all(|k| k == "values") => {
                    match inner.get("values") {
                        None | Some(Value::Null) => {
                            lists.insert(key.clone(), Vec::new());
                            continue;
                        }
                        Some(Value::Array(items)) => Some((items, format!("{pointer}/values"))),
                        Some(_) => None,
                    }
                }
                _ => None,
            };
            let Some((items, pointer)) = items else {
                self.problems.push(Problem {
                    detail: format!("{name}.{key} must be {{\"values\": [strings]}}."),
                    source: Some(Source::Pointer(pointer)),
                });
                continue;
            };
            let mut strings = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) if (rule.check)(s).is_ok() => strings.push(s.clone()),
                    _ => self.problems.push(Problem {
                        detail: format!("{name}.{key}[{index}] must be {}.", rule.description),
                        source: Some(Source::Pointer(format!("{pointer}/{index}"))),
                    }),
                }
            }
            lists.insert(key.clone(), strings);
        }
        Some(lists)
    }

    fn problem(&mut self, name: &str, detail: String) {
        let pointer = self.pointer(name);
        self.problems.push(Problem {
            detail,
            source: Some(Source::Pointer(pointer)),
        });
    }

    /// The field's value; `None` when absent. Marks the field as known.
    fn get(&mut self, name: &'static str) -> Option<&'a Value> {
        self.known.push(name);
        self.body.get(name)
    }

    fn checked_string(&mut self, name: &'static str, value: &Value, rule: Rule) -> Option<String> {
        match value {
            Value::String(s) => match (rule.check)(s) {
                Ok(()) => Some(s.clone()),
                Err(why) => {
                    self.problem(name, format!("{name} {why}."));
                    None
                }
            },
            other => {
                self.problem(
                    name,
                    format!("{name} must be a string, not {}.", json_type_name(other)),
                );
                None
            }
        }
    }

    pub fn required_str(&mut self, name: &'static str, rule: Rule) -> String {
        if self.describe(name, string_schema(rule, false), true) {
            return String::new();
        }
        match self.get(name) {
            None | Some(Value::Null) => {
                self.problem(name, format!("{name} is required."));
                String::new()
            }
            Some(value) => self.checked_string(name, value, rule).unwrap_or_default(),
        }
    }

    /// Absent or null reads as `None`.
    pub fn optional_str(&mut self, name: &'static str, rule: Rule) -> Option<String> {
        if self.describe(name, string_schema(rule, false), false) {
            return None;
        }
        match self.get(name) {
            None | Some(Value::Null) => None,
            Some(value) => self.checked_string(name, value, rule),
        }
    }

    /// For PATCH: absent → `None` (leave alone), null → `Some(None)` (clear).
    pub fn nullable_str(&mut self, name: &'static str, rule: Rule) -> Option<Option<String>> {
        if self.describe(name, string_schema(rule, true), false) {
            return None;
        }
        match self.get(name) {
            None => None,
            Some(Value::Null) => Some(None),
            Some(value) => self.checked_string(name, value, rule).map(Some),
        }
    }

    /// For PATCH: absent → `None`; null is refused for a field that cannot be cleared.
    pub fn patch_str(&mut self, name: &'static str, rule: Rule) -> Option<String> {
        if self.describe(name, string_schema(rule, false), false) {
            return None;
        }
        match self.get(name) {
            None => None,
            Some(Value::Null) => {
                self.problem(name, format!("{name} cannot be cleared."));
                None
            }
            Some(value) => self.checked_string(name, value, rule),
        }
    }

    /// An optional array of strings, each passing `rule`, with at least
    /// `min_items` of them (1 where an empty list would mean nothing: a
    /// list that names what to do must name something).
    pub fn optional_str_list(
        &mut self,
        name: &'static str,
        rule: Rule,
        min_items: usize,
    ) -> Option<Vec<String>> {
        if self.describe(
            name,
            list_schema(string_schema(rule, false), min_items),
            false,
        ) {
            return None;
        }
        match self.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) if items.len() < min_items => {
                self.problem(
                    name,
                    format!(
                        "{name} must list at least {min_items} value{} ({}).",
                        if min_items == 1 { "" } else { "s" },
                        rule.description
                    ),
                );
                None
            }
            Some(Value::Array(items)) => {
                let mut values = Vec::with_capacity(items.len());
                for (index, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => match (rule.check)(s) {
                            Ok(()) => values.push(s.clone()),
                            Err(why) => self.problems.push(Problem {
                                detail: format!("{name}[{index}] {why}."),
                                source: Some(Source::Pointer(format!(
                                    "{}/{index}",
                                    self.pointer(name)
                                ))),
                            }),
                        },
                        other => self.problems.push(Problem {
                            detail: format!(
                                "{name}[{index}] must be a string, not {}.",
                                json_type_name(other)
                            ),
                            source: Some(Source::Pointer(format!(
                                "{}/{index}",
                                self.pointer(name)
                            ))),
                        }),
                    }
                }
                Some(values)
            }
            Some(other) => {
                self.problem(
                    name,
                    format!(
                        "{name} must be an array of strings, not {}.",
                        json_type_name(other)
                    ),
                );
                None
            }
        }
    }

    /// An optional whole number from `min` to `max`, as a JSON number or a
    /// numeric string (protobuf's JSON writes 64-bit numbers as strings).
    pub fn optional_count(&mut self, name: &'static str, min: i64, max: i64) -> Option<i64> {
        let description =
            format!("a whole number from {min} to {max}, or such a number as a string");
        if self.describe(name, typed_schema(Type::Integer, Some(description)), false) {
            return None;
        }
        let parsed = match self.get(name) {
            None | Some(Value::Null) => return None,
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.parse::<i64>().ok(),
            Some(_) => None,
        };
        match parsed {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.problem(
                    name,
                    format!("{name} must be a whole number from {min} to {max}."),
                );
                None
            }
        }
    }

    pub fn optional_bool(&mut self, name: &'static str) -> Option<bool> {
        if self.describe(name, typed_schema(Type::Boolean, None), false) {
            return None;
        }
        match self.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                self.problem(
                    name,
                    format!(
                        "{name} must be true or false, not {}.",
                        json_type_name(other)
                    ),
                );
                None
            }
        }
    }

    /// An array of objects, each read with its own `Fields` (absorb each).
    pub fn object_list(&mut self, name: &'static str) -> Option<Vec<Fields<'a>>> {
        if let Some(child) = self.describing_child(name, true) {
            return Some(vec![child]);
        }
        match self.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => {
                let mut readers = Vec::with_capacity(items.len());
                for (index, item) in items.iter().enumerate() {
                    let prefix = format!("{}/{index}", self.pointer(name));
                    match item {
                        Value::Object(map) => readers.push(Fields {
                            prefix,
                            ..Fields::over(map)
                        }),
                        other => self.problems.push(Problem {
                            detail: format!(
                                "{name}[{index}] must be an object, not {}.",
                                json_type_name(other)
                            ),
                            source: Some(Source::Pointer(prefix)),
                        }),
                    }
                }
                Some(readers)
            }
            Some(other) => {
                self.problem(
                    name,
                    format!("{name} must be an array, not {}.", json_type_name(other)),
                );
                None
            }
        }
    }

    pub fn required_bool(&mut self, name: &'static str) -> bool {
        if self.describe(name, typed_schema(Type::Boolean, None), true) {
            return false;
        }
        match self.get(name) {
            None | Some(Value::Null) => {
                self.problem(name, format!("{name} is required."));
                false
            }
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.problem(
                    name,
                    format!(
                        "{name} must be true or false, not {}.",
                        json_type_name(other)
                    ),
                );
                false
            }
        }
    }

    /// A boolean as the seed documents write it: JSON `true`/`false`, the
    /// strings `"true"`/`"false"` of their regexes, or `"True"`/`"False"` of
    /// their payload examples. `None` when absent (a problem when `required`).
    pub fn flag(&mut self, name: &'static str, required: bool) -> Option<bool> {
        let schema = Schema::OneOf(
            utoipa::openapi::schema::OneOfBuilder::new()
                .item(typed_schema(Type::Boolean, None))
                .item(Schema::Object(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(["true", "false", "True", "False"]))
                        .build(),
                ))
                .description(Some("true or false, as JSON or as a string"))
                .build(),
        );
        if self.describe(name, schema, required) {
            return None;
        }
        match self.get(name) {
            None | Some(Value::Null) => {
                if required {
                    self.problem(name, format!("{name} is required."));
                }
                None
            }
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::String(s)) if s == "true" || s == "True" => Some(true),
            Some(Value::String(s)) if s == "false" || s == "False" => Some(false),
            Some(other) => {
                self.problem(
                    name,
                    format!(
                        "{name} must be true or false (or the string \"true\" or \"false\"), not {}.",
                        json_type_name(other)
                    ),
                );
                None
            }
        }
    }

    /// A JSON object, sent as an object or as a string that holds one
    /// (seed 001's `session_context`). `None` when absent (a problem when
    /// `required`).
    pub fn object_or_json_string(
        &mut self,
        name: &'static str,
        required: bool,
    ) -> Option<Map<String, Value>> {
        let schema = typed_schema(
            Type::Object,
            Some("a JSON object, or a string holding one".to_owned()),
        );
        if self.describe(name, schema, required) {
            return None;
        }
        match self.get(name) {
            None | Some(Value::Null) => {
                if required {
                    self.problem(name, format!("{name} is required."));
                }
                None
            }
            Some(Value::Object(map)) => Some(map.clone()),
            Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(map)) => Some(map),
                _ => {
                    self.problem(
                        name,
                        format!("{name} must be a JSON object, or a string holding one."),
                    );
                    None
                }
            },
            Some(other) => {
                self.problem(
                    name,
                    format!(
                        "{name} must be an object (or a string holding one), not {}.",
                        json_type_name(other)
                    ),
                );
                None
            }
        }
    }

    /// Adds a problem the caller found (a rule across fields).
    pub fn reject(&mut self, name: &'static str, detail: impl Into<String>) {
        self.problem(name, detail.into());
    }

    /// Whether any of `names` already has a problem (to avoid reporting
    /// "required" beside "malformed" for the same field).
    pub fn has_problems_at(&self, names: &[&str]) -> bool {
        self.problems.iter().any(|p| match &p.source {
            Some(Source::Pointer(pointer)) => {
                names.iter().any(|n| pointer.strip_prefix('/') == Some(*n))
            }
            _ => false,
        })
    }

    /// Fails with every problem found, including unknown fields (a typo in
    /// a field name must not be silently ignored).
    pub fn finish(mut self) -> Result<(), ApiError> {
        self.reject_unknown();
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(self.problems))
        }
    }

    fn reject_unknown(&mut self) {
        let unknown: Vec<String> = self
            .body
            .keys()
            .filter(|k| !self.known.contains(&k.as_str()))
            .cloned()
            .collect();
        for name in unknown {
            let allowed = self.known.join(", ");
            self.problem(
                &name,
                format!("{name} is not a field of this request (allowed: {allowed})."),
            );
        }
    }
}

/// The query string as name → value (the last value wins).
pub struct QueryParams(HashMap<String, String>);

pub const DEFAULT_PAGE_LIMIT: i64 = 50;
pub const MAX_PAGE_LIMIT: i64 = 200;

impl QueryParams {
    fn number(&self, name: &str, default: i64, min: i64, max: i64) -> Result<i64, Problem> {
        match self.0.get(name) {
            None => Ok(default),
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(Problem {
                    detail: format!(
                        "{name} must be a whole number from {min} to {max}, got {raw:?}."
                    ),
                    source: Some(Source::Parameter(name.to_owned())),
                }),
            },
        }
    }

    /// `?limit=` (default 50, at most 200) and `?offset=`.
    pub fn page(&self) -> Result<Page, ApiError> {
        let limit = self.number("limit", DEFAULT_PAGE_LIMIT, 1, MAX_PAGE_LIMIT);
        let offset = self.number("offset", 0, 0, i64::MAX / 2);
        match (limit, offset) {
            (Ok(limit), Ok(offset)) => Ok(Page { limit, offset }),
            (limit, offset) => Err(ApiError::validation(
                [limit.err(), offset.err()].into_iter().flatten().collect(),
            )),
        }
    }

    /// An optional filter that must pass `rule`.
    pub fn optional(&self, name: &str, rule: Rule) -> Result<Option<String>, ApiError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(value) => match (rule.check)(value) {
                Ok(()) => Ok(Some(value.clone())),
                Err(why) => Err(ApiError::new(
                    ErrorCode::ValidationFailed,
                    format!("{name} {why}."),
                )
                .at_parameter(name)),
            },
        }
    }
}

impl FromRequest for QueryParams {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            web::Query::<Vec<(String, String)>>::from_query(req.query_string())
                .map(|pairs| QueryParams(pairs.into_inner().into_iter().collect()))
                .map_err(|_| {
                    ApiError::new(
                        ErrorCode::ValidationFailed,
                        "The query string is malformed.",
                    )
                }),
        )
    }
}

/// A caller with a valid bearer token.
pub struct Bearer(pub Claims);

/// A caller whose token has the `admin` scope.
pub struct Admin(pub Claims);

/// The bearer token of the Authorization header. No header, or another
/// scheme, is a missing token (a challenge without an error code, RFC 6750
/// §3.1); a bearer header without a readable token is an invalid one.
pub(crate) fn bearer_token(req: &HttpRequest) -> Result<String, ApiError> {
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::token_missing("This route needs a bearer token in the Authorization header.")
        })?;
    let value = header
        .to_str()
        .map_err(|_| ApiError::token_invalid("The Authorization header is not readable text."))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::token_missing(
            "The Authorization header must be `Bearer <token>`.",
        ));
    }
    match token.trim() {
        "" => Err(ApiError::token_invalid(
            "The Authorization header must be `Bearer <token>`; the token is missing.",
        )),
        token => Ok(token.to_owned()),
    }
}

impl FromRequest for Bearer {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let found = core(req).and_then(|core| Ok((core, bearer_token(req)?)));
        Box::pin(async move {
            let (core, token) = found?;
            Ok(Bearer(core.tokens.verify(&token).await?))
        })
    }
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let bearer = Bearer::from_request(req, payload);
        Box::pin(async move {
            let Bearer(claims) = bearer.await?;
            if claims.is_admin() {
                Ok(Admin(claims))
            } else {
                Err(ApiError::insufficient_scope(
                    ADMIN_SCOPE,
                    "This route needs a token with the admin scope.",
                ))
            }
        })
    }
}

/// A caller with a live session token, or an admin token.
/// The second field is the caller's own session row, as authentication
/// read it (none for admin tokens).
pub struct SessionCaller(pub Caller, pub Option<SessionRow>);

impl FromRequest for SessionCaller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let bearer = Bearer::from_request(req, payload);
        let core = core(req);
        Box::pin(async move {
            let Bearer(claims) = bearer.await?;
            let core = core?;
            let (caller, session) = caller::authenticate(&core, claims).await?;
            Ok(SessionCaller(caller, session))
        })
    }
}

/// The client's address (the TCP peer, or the client a trusted proxy
/// names: [`forwarded::client_address`]) and its User-Agent.
impl FromRequest for ClientInfo {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(core(req).map(|core| {
            let trusted = &core.settings.trusted_proxies;
            let ip = req
                .peer_addr()
                .map(|peer| forwarded::client_address(peer.ip(), req.headers(), trusted));
            let user_agent = req
                .headers()
                .get(actix_web::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(500).collect());
            ClientInfo { ip, user_agent }
        }))
    }
}

/// A caller with a bearer token, or nobody (no Authorization header); a
/// token that is sent must be valid.
pub struct OptionalCaller(pub Option<Caller>);

impl FromRequest for OptionalCaller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        if req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .is_none()
        {
            return Box::pin(async { Ok(OptionalCaller(None)) });
        }
        let caller = SessionCaller::from_request(req, payload);
        Box::pin(async move { Ok(OptionalCaller(Some(caller.await?.0))) })
    }
}
