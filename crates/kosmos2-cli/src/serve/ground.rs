//! `POST /v1/ground`: a task on one image (caption, caption_detailed, ground, refer, vqa), with
//! the same grounded JSON as the CLI's `--json` record.
//!
//! ```json
//! {"image": "data:image/jpeg;base64,...", "task": "ground", "phrase": "a snowman"}
//! {"image": "...", "task": "refer", "box": [0.1, 0.2, 0.5, 0.6]}            // or "pixels": true
//! {"image": "...", "task": "vqa", "question": "What is he doing?", "max_tokens": 32}
//! ```

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use kosmos2::task::{CaptionStyle, Task};
use kosmos_processor::post_process_generation;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::routes::parse_json;
use super::state::{wait_done, AppState, PromptSource};
use crate::record::{grounding_object, objects, vqa_answer};
use crate::run::TaskSpec;

/// The body of `/v1/ground`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroundRequest {
    /// The model name (optional; checked when given).
    #[serde(default)]
    pub model: Option<String>,
    /// The image: base64 or a `data:` URL.
    pub image: String,
    /// `caption`, `caption_detailed`, `ground`, `refer` or `vqa`.
    pub task: String,
    /// Ground: the phrase to locate.
    #[serde(default)]
    pub phrase: Option<String>,
    /// Refer: the box `[x1, y1, x2, y2]`, normalised (or pixels with `pixels`).
    #[serde(default, rename = "box")]
    pub bbox: Option<[f64; 4]>,
    /// Refer: the box is in pixels.
    #[serde(default)]
    pub pixels: bool,
    /// Vqa: the question.
    #[serde(default)]
    pub question: Option<String>,
    /// Most new tokens.
    #[serde(default)]
    pub max_tokens: Option<usize>,
}

fn need<T>(v: Option<T>, task: &str, field: &str) -> Result<T, ApiError> {
    v.ok_or_else(|| ApiError::invalid("missing_field", format!("task `{task}` needs `{field}`")))
}

impl GroundRequest {
    /// The task.
    pub fn spec(&self) -> Result<TaskSpec, ApiError> {
        let t = self.task.as_str();
        let spec = match t {
            "caption" => TaskSpec::Caption(CaptionStyle::Brief),
            "caption_detailed" => TaskSpec::Caption(CaptionStyle::Detailed),
            "ground" => TaskSpec::Ground(need(self.phrase.clone(), t, "phrase")?),
            "refer" => TaskSpec::Refer {
                bbox: need(self.bbox, t, "box")?,
                pixels: self.pixels,
            },
            "vqa" => TaskSpec::Vqa(need(self.question.clone(), t, "question")?),
            other => {
                return Err(ApiError::invalid(
                    "invalid_task",
                    format!(
                    "unknown task `{other}`: use caption, caption_detailed, ground, refer or vqa"
                ),
                ))
            }
        };
        if let TaskSpec::Refer { bbox, .. } = &spec {
            if bbox.iter().any(|v| !v.is_finite()) {
                return Err(ApiError::invalid(
                    "invalid_box",
                    "the box has a non-finite coordinate",
                ));
            }
        }
        spec.check()
            .map_err(|e| ApiError::invalid("invalid_task", crate::app::one_line(&e)))?;
        Ok(spec)
    }
}

/// The grounded JSON of a generated sequence: the decoded text, HF's caption and entities, and
/// the entities with colours and pixel boxes (as the CLI's record).
pub fn grounded_json(
    state: &AppState,
    sequence: &[u32],
    width: u32,
    height: u32,
) -> Result<(Value, kosmos_processor::Grounded), ApiError> {
    let text = state.processor.decode(sequence, true);
    let g = post_process_generation(&text, true)
        .map_err(|e| ApiError::internal(format!("post-processing failed: {e}")))?;
    let v = json!({
        "text": text,
        "caption": g.caption,
        "entities": g.entities,
        "objects": objects(&g.entities, width, height),
        "width": width,
        "height": height,
    });
    Ok((v, g))
}

/// `POST /v1/ground`.
pub async fn ground(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let arrived = Instant::now();
    state.metrics.request("ground");
    let r: Result<Json<Value>, ApiError> = async {
        state.authorize(&headers)?;
        let req: GroundRequest = parse_json(&headers, body)?;
        state.check_model(req.model.as_deref())?;
        let spec = req.spec()?;
        let cfg = state.generation(req.max_tokens, None, None, None)?;
        let p = state
            .prepare(
                req.image.clone(),
                PromptSource::Task(spec.clone()),
                cfg.max_new_tokens,
            )
            .await?;
        let (w, h) = p.image.dimensions();
        let rx = state.enqueue(p.processed, cfg, Vec::new(), arrived)?;
        let done = wait_done(rx).await?;
        let (mut v, g) = grounded_json(&state, &done.sequence, w, h)?;
        let task = spec.task(w, h);
        v["task"] = json!(task.name());
        v["prompt"] = json!(p.prompt.text);
        if let Some(b) = p.prompt.normalized_boxes().first() {
            v["bbox"] = json!(b);
        }
        // As in the CLI's record: absent rather than null.
        match &task {
            Task::Vqa { .. } => {
                if let Some(a) = vqa_answer(&g.caption) {
                    v["answer"] = json!(a);
                }
            }
            Task::Ground { phrase } => {
                if let Some(o) = grounding_object(&g, phrase, w, h) {
                    v["grounding"] = json!(o);
                }
            }
            _ => {}
        }
        v["finish_reason"] = json!(done.cli_finish_reason);
        v["usage"] = json!({
            "prompt_tokens": done.prompt_tokens,
            "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens,
        });
        Ok(Json(v))
    }
    .await;
    if let Err(e) = &r {
        state.metrics.error(e.status.as_u16());
    }
    r
}
