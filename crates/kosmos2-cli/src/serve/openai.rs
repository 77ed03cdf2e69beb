//! `POST /v1/chat/completions` in OpenAI's schema, with `stream: true` as server-sent events in
//! OpenAI's chunk format.
//!
//! KOSMOS-2 is not a chat model: the text of the last user message is the raw prompt (e.g.
//! `<grounding>An image of`; empty means that caption prompt), and the request carries exactly
//! one image, as an `image_url` part with a `data:` URL. The reply's `content` is the generated
//! continuation (its grounding tags kept, exactly as generated); the extra field `grounding`
//! carries the whole decoded text, HF's cleaned caption and entities, and the entities with
//! normalised and pixel boxes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

use super::error::ApiError;
use super::ground::grounded_json;
use super::routes::parse_json;
use super::scheduler::{Event, Finished};
use super::state::{wait_done, AppState, PromptSource};

/// The caption prompt used when the user message has no text.
pub const DEFAULT_PROMPT: &str = "<grounding>An image of";

/// A chat completion request (fields OpenAI defines that do not apply are accepted and ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    /// The model name.
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Most new tokens.
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// OpenAI's newer name for `max_tokens`.
    #[serde(default)]
    pub max_completion_tokens: Option<usize>,
    /// Sampling temperature (0 or absent: greedy).
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Nucleus mass.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Sampling seed.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Stop strings.
    #[serde(default)]
    pub stop: Option<Stop>,
    /// Choices (only 1).
    #[serde(default)]
    pub n: Option<usize>,
    /// Stream server-sent events.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
}

/// `stream_options`.
#[derive(Debug, Clone, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with `usage`.
    #[serde(default)]
    pub include_usage: bool,
}

/// `stop`: one string or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// A message.
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    /// Its content.
    #[serde(default)]
    pub content: Option<Content>,
}

/// Message content: a string or parts.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Text and image parts.
    Parts(Vec<Part>),
}

/// A content part.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type")]
pub enum Part {
    /// `{"type": "text", "text": ...}`.
    #[serde(rename = "text")]
    Text {
        /// The text.
        text: String,
    },
    /// `{"type": "image_url", "image_url": {"url": ...}}`.
    #[serde(rename = "image_url")]
    ImageUrl {
        /// The image.
        image_url: ImageUrl,
    },
}

/// An image URL.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageUrl {
    /// `data:image/...;base64,...`.
    pub url: String,
    /// OpenAI's detail level (ignored).
    #[serde(default)]
    pub detail: Option<String>,
}

impl ChatRequest {
    /// The prompt (the last user message's text) and the image URL.
    pub fn prompt_and_image(&self) -> Result<(String, String), ApiError> {
        let mut images = Vec::new();
        let mut prompt = None;
        for m in &self.messages {
            if !matches!(
                m.role.as_str(),
                "system" | "developer" | "user" | "assistant"
            ) {
                return Err(ApiError::invalid(
                    "invalid_role",
                    format!("unknown message role `{}`", m.role),
                ));
            }
            if m.role != "user" {
                continue;
            }
            let mut text = String::new();
            match &m.content {
                Some(Content::Text(t)) => text.push_str(t),
                Some(Content::Parts(parts)) => {
                    for p in parts {
                        match p {
                            Part::Text { text: t } => text.push_str(t),
                            Part::ImageUrl { image_url } => images.push(image_url.url.clone()),
                        }
                    }
                }
                None => {}
            }
            prompt = Some(text);
        }
        let Some(prompt) = prompt else {
            return Err(ApiError::invalid(
                "missing_user_message",
                "the request has no user message",
            ));
        };
        let image = match images.len() {
            1 => images.remove(0),
            0 => {
                return Err(ApiError::invalid(
                    "missing_image",
                    "KOSMOS-2 needs an image: add one image_url part with a data: URL",
                ))
            }
            n => {
                return Err(ApiError::invalid(
                    "too_many_images",
                    format!("the request has {n} images; KOSMOS-2 takes exactly one"),
                ))
            }
        };
        let prompt = if prompt.trim().is_empty() {
            DEFAULT_PROMPT.to_string()
        } else {
            prompt
        };
        Ok((prompt, image))
    }

    fn stops(&self) -> Result<Vec<String>, ApiError> {
        let v = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if v.len() > 4 {
            return Err(ApiError::invalid("invalid_stop", "at most 4 stop strings"));
        }
        Ok(v)
    }
}

struct Meta {
    id: String,
    created: u64,
    model: String,
    width: u32,
    height: u32,
    include_usage: bool,
}

impl Meta {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        let mut v = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if self.include_usage {
            v["usage"] = Value::Null;
        }
        v
    }
}

fn usage(f: &Finished) -> Value {
    json!({
        "prompt_tokens": f.prompt_tokens,
        "completion_tokens": f.completion_tokens,
        "total_tokens": f.prompt_tokens + f.completion_tokens,
    })
}

fn sse(v: &Value) -> String {
    format!("data: {v}\n\n")
}

/// `POST /v1/chat/completions`.
pub async fn chat(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    state.metrics.request("chat_completions");
    let r = chat_inner(state.clone(), headers, body).await;
    if let Err(e) = &r {
        state.metrics.error(e.status.as_u16());
    }
    r
}

async fn chat_inner(
    state: Arc<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    state.authorize(&headers)?;
    let req: ChatRequest = parse_json(&headers, body)?;
    state.check_model(Some(&req.model))?;
    if req.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("invalid_n", "only n = 1 is supported"));
    }
    let (prompt, image) = req.prompt_and_image()?;
    let stop = req.stops()?;
    let cfg = state.generation(
        req.max_completion_tokens.or(req.max_tokens),
        req.temperature,
        req.top_p,
        req.seed,
    )?;
    let p = state
        .prepare(image, PromptSource::Text(prompt), cfg.max_new_tokens)
        .await?;
    let (width, height) = p.image.dimensions();
    let rx = state.enqueue(p.processed, cfg, stop, arrived)?;
    let meta = Meta {
        id: state.next_id("chatcmpl"),
        created: super::state::unix_now(),
        model: state.model_name.clone(),
        width,
        height,
        include_usage: req.stream_options.as_ref().is_some_and(|o| o.include_usage),
    };
    if req.stream == Some(true) {
        return Ok(stream_response(state, rx, meta));
    }
    let done = wait_done(rx).await?;
    let (grounding, _) = grounded_json(&state, &done.sequence, width, height)?;
    Ok(Json(json!({
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "system_fingerprint": null,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": done.content, "refusal": null},
            "logprobs": null,
            "finish_reason": done.finish_reason,
        }],
        "usage": usage(&done),
        "grounding": grounding,
    }))
    .into_response())
}

fn stream_response(
    state: Arc<AppState>,
    rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
    meta: Meta,
) -> Response {
    let first = sse(&meta.chunk(json!({"role": "assistant", "content": ""}), None));
    let head = tokio_stream::once(first);
    // Dropping this stream (the client went away) drops the receiver: the worker sees it closed
    // and stops at the next token.
    let events = UnboundedReceiverStream::new(rx).map(move |ev| match ev {
        Event::Delta(piece) => sse(&meta.chunk(json!({"content": piece}), None)),
        Event::Done(Ok(done)) => {
            let mut last = meta.chunk(json!({}), Some(done.finish_reason));
            match grounded_json(&state, &done.sequence, meta.width, meta.height) {
                Ok((g, _)) => last["grounding"] = g,
                Err(e) => state.metrics.error(e.status.as_u16()),
            }
            let mut s = sse(&last);
            if meta.include_usage {
                let mut u = meta.chunk(json!({}), None);
                u["choices"] = json!([]);
                u["usage"] = usage(&done);
                s.push_str(&sse(&u));
            }
            s.push_str("data: [DONE]\n\n");
            s
        }
        Event::Done(Err(e)) => {
            state.metrics.error(e.status.as_u16());
            format!("{}data: [DONE]\n\n", sse(&e.body()))
        }
    });
    let body = head.chain(events).map(Ok::<_, Infallible>);
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| ApiError::internal("cannot build the response").into_response())
}
