//! Extractors that turn every kind of bad input into problem+json naming the field.
//!
//! axum's own `Json`, `Path` and `Query` reject with plain-text bodies and no field name;
//! these wrappers deserialize through `serde_path_to_error` so a client is told
//! `items[3].email`, not "invalid type".

use axum::{
    extract::{FromRequest, FromRequestParts, Request, rejection::PathRejection},
    http::{StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

use crate::error::{ApiError, FieldError};

/// JSON request body (must be `application/json` or `*+json`) or response body.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType(
                "expected `Content-Type: application/json`".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => {
                    ApiError::PayloadTooLarge("the body exceeds the size limit".into())
                }
                _ => ApiError::bad_request("body", rejection.body_text()),
            }
        })?;
        parse_json(&bytes).map(Json)
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Deserializes JSON, naming the offending path on failure. Syntax errors are 400,
/// well-formed JSON of the wrong shape is 422.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        json_error(&path, err.into_inner())
    })?;
    de.end().map_err(|e| json_error(".", e))?;
    Ok(value)
}

fn json_error(path: &str, inner: serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let message = strip_position(&inner.to_string());
    match inner.classify() {
        Category::Data => {
            let field = field_from_message(path, &message);
            ApiError::Validation(vec![FieldError::new(field, message)])
        }
        Category::Eof | Category::Syntax | Category::Io => {
            ApiError::bad_request("body", format!("malformed JSON: {message}"))
        }
    }
}

/// serde names missing and unknown fields only in its message; lift the name into the path.
fn field_from_message(path: &str, message: &str) -> String {
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    let parent = if path == "." { "" } else { path };
    match named {
        // For unknown fields serde_path_to_error's path already ends in the field itself.
        Some(name) if parent == name || parent.ends_with(&format!(".{name}")) => parent.to_owned(),
        Some(name) if parent.is_empty() => name.to_owned(),
        Some(name) => format!("{parent}.{name}"),
        None if parent.is_empty() => "body".to_owned(),
        None => parent.to_owned(),
    }
}

fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false)
}

/// Path parameters; a value that does not parse (a bad UUID) is a 400 naming the parameter.
#[derive(Debug, Clone, Copy)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                use axum::extract::path::ErrorKind;
                let error = match e.kind() {
                    ErrorKind::ParseErrorAtKey {
                        key, expected_type, ..
                    } => FieldError::new(
                        key.clone(),
                        format!("is not a valid {}", short_type(expected_type)),
                    ),
                    ErrorKind::ParseErrorAtIndex {
                        index,
                        expected_type,
                        ..
                    } => FieldError::new(
                        format!("path[{index}]"),
                        format!("is not a valid {}", short_type(expected_type)),
                    ),
                    ErrorKind::DeserializeError { key, message, .. } => {
                        FieldError::new(key.clone(), message.clone())
                    }
                    other => FieldError::new("path", other.to_string()),
                };
                Err(ApiError::BadRequest {
                    detail: format!("{}: {}", error.field, error.message),
                    errors: vec![error],
                })
            }
            Err(other) => Err(ApiError::bad_request("path", other.body_text())),
        }
    }
}

fn short_type(name: &str) -> &str {
    match name.rsplit("::").next() {
        Some("Uuid") => "UUID",
        Some(other) => other,
        None => name,
    }
}

/// Query string; a parameter of the wrong type or an unknown one is a 400 naming it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        parse_query(query).map(Query)
    }
}

pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let message = err.into_inner().to_string();
        let field = field_from_message(&path, &message);
        let field = if field == "body" {
            "query".to_owned()
        } else {
            field
        };
        ApiError::BadRequest {
            detail: format!("{field}: {message}"),
            errors: vec![FieldError::new(field, message)],
        }
    })
}

/// Deserializes one item of a batch, naming fields under `prefix` (`items[3].`), so one bad
/// item is reported on its own instead of failing the whole request.
pub fn item_from_value<T: DeserializeOwned>(
    value: serde_json::Value,
    prefix: &str,
) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let message = strip_position(&err.into_inner().to_string());
        let field = field_from_message(&path, &message);
        let field = if field == "body" {
            prefix.trim_end_matches('.').to_owned()
        } else {
            format!("{prefix}{field}")
        };
        FieldError::new(field, message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        email: String,
        age: u8,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Batch {
        items: Vec<Item>,
    }

    fn field_of(err: ApiError) -> String {
        err.to_problem().errors[0].field.clone()
    }

    #[test]
    fn wrong_type_names_the_nested_path() {
        let err =
            parse_json::<Batch>(br#"{"items":[{"email":"a","age":1},{"email":"b","age":"x"}]}"#)
                .expect_err("must fail");
        assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(field_of(err), "items[1].age");
    }

    #[test]
    fn unknown_and_missing_fields_are_named() {
        let err = parse_json::<Item>(br#"{"email":"a","age":1,"agee":2}"#).expect_err("unknown");
        assert_eq!(field_of(err), "agee");
        let err = parse_json::<Batch>(br#"{"items":[{"email":"a"}]}"#).expect_err("missing");
        assert_eq!(field_of(err), "items[0].age");
    }

    #[test]
    fn syntax_errors_are_400() {
        let err = parse_json::<Item>(br#"{"email": "#).expect_err("eof");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        let err = parse_json::<Item>(br#"{"email":"a","age":1} trailing"#).expect_err("trailing");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Page {
        limit: Option<u32>,
    }

    #[test]
    fn query_errors_name_the_parameter() {
        let err = parse_query::<Page>("limit=abc").expect_err("bad limit");
        assert_eq!(field_of(err), "limit");
        let err = parse_query::<Page>("limt=3").expect_err("unknown");
        assert_eq!(field_of(err), "limt");
    }
}
