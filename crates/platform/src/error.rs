//! The one error type every handler returns, rendered as RFC 9457 problem+json.
//!
//! Each error becomes a [`Problem`] body. The request id is filled in afterwards by
//! [`crate::http::problem_request_id`], so handlers never have to thread it through.
//! 5xx bodies never carry internal details: those go to the log.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// One invalid input, named by its JSON path (`items[3].email`), query or path parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    #[schema(example = "email")]
    pub field: String,
    #[schema(example = "is not a valid email address")]
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// RFC 9457 problem details.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "type": "https://mercato.dev/problems/validation",
    "title": "Invalid request",
    "status": 422,
    "detail": "1 field is invalid",
    "request_id": "5f0c6a3e-8d7b-4c1e-9a53-0f6f3b2d9c11",
    "errors": [{"field": "email", "message": "is not a valid email address"}]
}))]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl Problem {
    pub fn new(status: StatusCode, slug: &str, title: &str) -> Self {
        Self {
            kind: format!("https://mercato.dev/problems/{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: None,
            request_id: None,
            errors: Vec::new(),
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// A problem for a status produced outside our handlers (413 from the body limit,
    /// 404 from the router, 405...).
    pub fn for_status(status: StatusCode) -> Self {
        let (slug, title) = match status {
            StatusCode::NOT_FOUND => ("not-found", "Not found"),
            StatusCode::METHOD_NOT_ALLOWED => ("method-not-allowed", "Method not allowed"),
            StatusCode::PAYLOAD_TOO_LARGE => ("payload-too-large", "Request body too large"),
            StatusCode::REQUEST_TIMEOUT => ("timeout", "Request timed out"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                ("unsupported-media-type", "Unsupported media type")
            }
            StatusCode::TOO_MANY_REQUESTS => ("rate-limited", "Too many requests"),
            StatusCode::BAD_GATEWAY => ("bad-gateway", "Upstream unavailable"),
            StatusCode::GATEWAY_TIMEOUT => ("gateway-timeout", "Upstream timed out"),
            s if s.is_server_error() => ("internal", "Internal error"),
            _ => ("bad-request", "Bad request"),
        };
        Self::new(status, slug, title)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(&self)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response.extensions_mut().insert(self);
        response
    }
}

/// Everything a handler can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body, query or path is malformed (not JSON, wrong type, unknown field).
    #[error("bad request: {detail}")]
    BadRequest {
        detail: String,
        errors: Vec<FieldError>,
    },
    /// Well-formed but semantically invalid input.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("payload too large: {0}")]
    PayloadTooLarge(String),
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("authentication required: {0}")]
    Unauthorized(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Also used for resources of another tenant, which must look absent.
    #[error("{0} not found")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("rate limited")]
    RateLimited { retry_after_secs: u64 },
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A service behind the gateway failed to answer (502) or answered too late (504).
    #[error("upstream: {detail}")]
    Upstream { timeout: bool, detail: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(field: impl Into<String>, message: impl Into<String>) -> Self {
        let error = FieldError::new(field, message);
        Self::BadRequest {
            detail: format!("{}: {}", error.field, error.message),
            errors: vec![error],
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        Self::Internal(error.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Upstream { timeout: true, .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Upstream { timeout: false, .. } => StatusCode::BAD_GATEWAY,
            Self::Database(sqlx::Error::PoolTimedOut) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Database(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn to_problem(&self) -> Problem {
        let status = self.status();
        match self {
            Self::BadRequest { detail, errors } => {
                let mut p = Problem::new(status, "bad-request", "Malformed request")
                    .with_detail(detail.clone());
                p.errors = errors.clone();
                p
            }
            Self::Validation(errors) => {
                let detail = match errors.as_slice() {
                    [one] => format!("{}: {}", one.field, one.message),
                    many => format!("{} fields are invalid", many.len()),
                };
                let mut p =
                    Problem::new(status, "validation", "Invalid request").with_detail(detail);
                p.errors = errors.clone();
                p
            }
            Self::PayloadTooLarge(d) => Problem::for_status(status).with_detail(d.clone()),
            Self::UnsupportedMediaType(d) => {
                Problem::new(status, "unsupported-media-type", "Unsupported media type")
                    .with_detail(d.clone())
            }
            Self::Unauthorized(d) => {
                Problem::new(status, "unauthorized", "Authentication required")
                    .with_detail(d.clone())
            }
            Self::Forbidden(d) => {
                Problem::new(status, "forbidden", "Forbidden").with_detail(d.clone())
            }
            Self::NotFound(what) => Problem::new(status, "not-found", "Not found")
                .with_detail(format!("{what} not found")),
            Self::Conflict(d) => {
                Problem::new(status, "conflict", "Conflict").with_detail(d.clone())
            }
            Self::RateLimited { retry_after_secs } => {
                Problem::new(status, "rate-limited", "Too many requests")
                    .with_detail(format!("retry after {retry_after_secs} s"))
            }
            Self::Unavailable(d) => {
                Problem::new(status, "unavailable", "Service unavailable").with_detail(d.clone())
            }
            Self::Upstream { detail, .. } => {
                Problem::for_status(status).with_detail(detail.clone())
            }
            Self::Database(_) | Self::Internal(_) => {
                Problem::new(status, "internal", "Internal error")
                    .with_detail("the error was logged; quote the request id when reporting it")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status().is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let retry_after = match &self {
            Self::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        };
        let mut response = self.to_problem().into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_their_cause() {
        let problem = ApiError::Internal("password=hunter2 at db".into()).to_problem();
        assert_eq!(problem.status, 500);
        assert!(!problem.detail.unwrap_or_default().contains("hunter2"));
    }

    #[test]
    fn validation_names_the_field() {
        let problem = ApiError::invalid("items[2].email", "is not a valid email").to_problem();
        assert_eq!(problem.status, 422);
        assert_eq!(problem.errors[0].field, "items[2].email");
        assert_eq!(
            problem.detail.as_deref(),
            Some("items[2].email: is not a valid email")
        );
    }
}
