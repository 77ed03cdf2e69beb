//! Errors as JSON bodies in OpenAI's shape: `{"error": {"message", "type", "code"}}`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// A request that failed, with its status and a message a client can act on.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// OpenAI's error `type` (`invalid_request_error`, `authentication_error`, ...).
    pub kind: &'static str,
    /// A machine-readable code.
    pub code: &'static str,
    /// What went wrong.
    pub message: String,
    /// Seconds for `Retry-After` (429 and 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, code: &'static str, msg: String) -> Self {
        Self {
            status,
            kind,
            code,
            message: msg,
            retry_after: None,
        }
    }

    /// 400: the request is malformed or asks for something invalid.
    pub fn invalid(code: &'static str, msg: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            msg.into(),
        )
    }

    /// 413: the body or the image is too large.
    pub fn too_large(code: &'static str, msg: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            code,
            msg.into(),
        )
    }

    /// 415: the body is not `application/json`.
    pub fn content_type(msg: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            "unsupported_media_type",
            msg.into(),
        )
    }

    /// 401: a missing or wrong bearer token.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_api_key",
            "missing or invalid API key: send `Authorization: Bearer TOKEN`".into(),
        )
    }

    /// 404: an unknown model.
    pub fn unknown_model(name: &str, served: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!("the model `{name}` does not exist: this server serves `{served}`"),
        )
    }

    /// 429: the queue is full.
    pub fn busy(capacity: usize) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "queue_full",
            format!("the server is busy: its queue of {capacity} requests is full; retry later"),
        );
        e.retry_after = Some(1);
        e
    }

    /// 503: the server is shutting down or its worker stopped.
    pub fn unavailable(msg: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "unavailable",
            msg.into(),
        );
        e.retry_after = Some(5);
        e
    }

    /// 504: the request ran past its time limit.
    pub fn timeout(secs: f64) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "server_error",
            "timeout",
            format!("the request ran past the server's limit of {secs} s"),
        )
    }

    /// 500: generation failed.
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal_error",
            msg.into(),
        )
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": null,
            "code": self.code,
        }})
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.code, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut().insert("retry-after", HeaderValue::from(s));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
        }
        r
    }
}
