//! The API's errors: `{"error": code, "message": text}` with the status code, for every
//! error, the framework's own rejections (body limit, path, query) included.

use std::borrow::Cow;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::error::Error;

/// An error answered as `{"error": code, "message": text}` with its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    code: Cow<'static, str>,
    message: String,
}

impl ApiError {
    /// An error with a status, a machine-readable code and a message for people.
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 404 for a workspace that does not exist or that the caller may not see (the same
    /// answer for both, so nothing leaks).
    pub fn workspace_not_found() -> Self {
        Self::not_found("no such workspace")
    }

    /// 409 `conflict`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 500 `internal`, with a message that reveals nothing of the cause (log it instead).
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code (`bad_request`, `not_found`, …).
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// An error from one of the framework's rejections, keeping its status.
    pub(crate) fn from_rejection(status: StatusCode, text: String) -> Self {
        Self::new(status, code_for(status), text)
    }
}

/// The code of a status the framework chose.
pub(crate) fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => "bad_request",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::CONFLICT => "conflict",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.code, "message": self.message });
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<Error> for ApiError {
    /// A library error as the API answers it: a configuration error (a bad or unknown key,
    /// a disabled connector) is a 400 naming it, a conflict a 409; anything else is a 500
    /// whose cause goes to the log, never to the caller.
    fn from(e: Error) -> Self {
        match e {
            Error::Config(message) => ApiError::bad_request(message),
            Error::Conflict { message, .. } => ApiError::conflict(message),
            other => {
                tracing::error!(error = %other, "API request failed");
                ApiError::internal()
            }
        }
    }
}

/// A JSON body, read whole within the router's body limit (413 over it) and parsed
/// strictly; any failure is an [`ApiError`] (400). An empty body is `null`, so an optional
/// body can be `Option<T>`.
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|r| ApiError::from_rejection(r.status(), r.body_text()))?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"null"
        } else {
            &bytes
        };
        serde_json::from_slice(text)
            .map(ApiJson)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// Path parameters; a malformed one (a workspace or job id that is not a UUID) is a 400.
pub(crate) struct ApiPath<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|r| ApiError::bad_request(r.body_text()))
    }
}

/// Query parameters; a malformed or unknown one is a 400.
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|r| ApiError::bad_request(r.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_errors_map_to_statuses_without_leaking_causes() {
        let e: ApiError = Error::config("unknown field `foo`").into();
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::BAD_REQUEST, "bad_request")
        );
        assert!(e.message().contains("foo"));
        let e: ApiError = Error::Conflict {
            message: "busy".into(),
            running_id: None,
        }
        .into();
        assert_eq!(e.status(), StatusCode::CONFLICT);
        let e: ApiError = Error::Storage {
            message: "password=hunter2".into(),
            source: None,
        }
        .into();
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.message().contains("hunter2"));
    }
}
