//! Request bodies, each written once: a type whose [`RequestBody::read`]
//! parses the JSON object with [`Fields`] (every bad field reported at once,
//! with its pointer, unknown fields refused) and whose OpenAPI schema is
//! made by running the same `read` in describe mode ([`schema_of`]). The
//! document therefore lists exactly the fields the parser reads, with the
//! rules it applies.

use actix_web::dev::Payload;
use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::{FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use serde_json::Map;
use utoipa::openapi::schema::Schema;

use super::extract::{Fields, JsonObject};
use crate::error::ApiError;

/// A request body type: reads itself out of the body's fields.
pub trait RequestBody: Sized {
    /// Reads every field; a bad field is recorded in `fields` (its value is
    /// then a placeholder that is never used: [`Fields::finish`] fails).
    fn read(fields: &mut Fields<'_>) -> Self;
}

/// The body's OpenAPI schema, as its reader describes it.
pub fn schema_of<T: RequestBody>() -> Schema {
    let empty = Map::new();
    let mut fields = Fields::describing(&empty);
    let _ = T::read(&mut fields);
    fields.into_described().into_schema()
}

/// An extracted, parsed body.
pub struct Body<T>(pub T);

impl<T: RequestBody + 'static> FromRequest for Body<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let object = JsonObject::from_request(req, payload);
        Box::pin(async move {
            let object = object.await?;
            let mut fields = Fields::new(&object);
            let body = T::read(&mut fields);
            fields.finish()?;
            Ok(Body(body))
        })
    }
}

/// A body that may be left out (ZITADEL's DELETE carries one, most
/// clients send none): no Content-Type and no content read as `None`; a
/// body that is sent is read like [`Body`].
pub struct OptionalBody<T>(pub Option<T>);

impl<T: RequestBody + 'static> FromRequest for OptionalBody<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let headers = req.headers();
        let empty = !headers.contains_key(CONTENT_TYPE)
            && headers
                .get(CONTENT_LENGTH)
                .is_none_or(|length| length.as_bytes() == b"0");
        if empty {
            return Box::pin(async { Ok(OptionalBody(None)) });
        }
        let body = Body::<T>::from_request(req, payload);
        Box::pin(async move { Ok(OptionalBody(Some(body.await?.0))) })
    }
}

/// Makes body types OpenAPI schemas (for `request_body = …`) from their
/// readers.
macro_rules! request_bodies {
    ($($body:ty),+ $(,)?) => {$(
        impl utoipa::PartialSchema for $body {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                $crate::routes::body::schema_of::<$body>().into()
            }
        }
        impl utoipa::ToSchema for $body {}
    )+};
}
pub(crate) use request_bodies;
