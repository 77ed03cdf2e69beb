//! The router: endpoints, JSON body parsing with clear errors, health, models and metrics.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::error::ApiError;
use super::state::AppState;

/// The server's routes.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.limits.max_request_bytes;
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/metrics", get(metrics))
        .route("/v1/chat/completions", post(super::openai::chat))
        .route("/v1/ground", post(super::ground::ground))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Parses a JSON body: 415 unless `Content-Type` is JSON, 413 over the size limit, 400 with
/// serde's message (line and column) otherwise.
pub fn parse_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime != "application/json" {
        return Err(ApiError::content_type(format!(
            "expected Content-Type: application/json, got `{ct}`"
        )));
    }
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(
                "request_too_large",
                "the request body exceeds this server's size limit",
            )
        } else {
            ApiError::invalid("invalid_body", e.body_text())
        }
    })?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid("invalid_json", format!("invalid request body: {e}")))
}

async fn health(State(state): State<Arc<AppState>>) -> Json<Value> {
    state.metrics.request("health");
    Json(json!({"status": "ok", "model": state.model_name}))
}

async fn models(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.metrics.request("models");
    state
        .authorize(&headers)
        .inspect_err(|e| state.metrics.error(e.status.as_u16()))?;
    Ok(Json(json!({
        "object": "list",
        "data": [{
            "id": state.model_name,
            "object": "model",
            "created": state.started_unix,
            "owned_by": "kosmos2-rs",
        }],
    })))
}

async fn metrics(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    state.metrics.request("metrics");
    state
        .authorize(&headers)
        .inspect_err(|e| state.metrics.error(e.status.as_u16()))?;
    Ok((
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    ))
}

async fn not_found() -> ApiError {
    let mut e = ApiError::invalid("not_found", "no such endpoint");
    e.status = StatusCode::NOT_FOUND;
    e
}
