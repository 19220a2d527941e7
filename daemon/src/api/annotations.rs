//! Dify's annotation reply routes of the Service API (`/v1/apps/...` with
//! an app key), as `api/controllers/service_api/app/annotation.py`: list,
//! create, update and delete an app's annotations, and the enable/disable
//! jobs with their status. Shapes follow Dify's `annotation_fields`.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::{self, Body};
use super::dify::query;
use super::error::ApiError;
use super::ApiState;
use crate::engine::AppDefinition;
use crate::service::annotations::{Annotations, ReplyAction};
use crate::store::AnnotationRecord;

/// Whether `rest` (the path after `/v1/`) is one of these routes. Ids must
/// be UUIDs, as in Dify's `<uuid:...>` routes, so anything else is a 404
/// before any key is checked.
pub fn is_route(rest: &[String]) -> bool {
    let r: Vec<&str> = rest.iter().map(String::as_str).collect();
    match r.as_slice() {
        ["apps", "annotations"] | ["apps", "annotation-reply", _] => true,
        ["apps", "annotations", id] | ["apps", "annotation-reply", _, "status", id] => uuid::Uuid::parse_str(id).is_ok(),
        _ => false,
    }
}

#[derive(Deserialize)]
struct AnnotationBody {
    question: String,
    answer: String,
}

/// Dify requires all three; the embedding model is this daemon's own, so
/// the provider and model names are checked for presence only.
#[derive(Deserialize)]
struct ReplyBody {
    score_threshold: f32,
    #[serde(rename = "embedding_provider_name")]
    _provider: String,
    #[serde(rename = "embedding_model_name")]
    _model: String,
}

pub async fn route(
    state: &Arc<ApiState>,
    app: Arc<AppDefinition>,
    rest: &[String],
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let r: Vec<&str> = rest.iter().map(String::as_str).collect();
    let annotations = state.service.annotations().ok_or(ApiError::KnowledgeUnavailable)?;
    let m = req.method().clone();
    let limit = state.limits.max_body_bytes;
    match (r.as_slice(), &m) {
        (["apps", "annotations"], &Method::GET) => list(annotations, &app, &req).await,
        (["apps", "annotations"], &Method::POST) => {
            let b: AnnotationBody = body::typed(body::read_json(req.into_body(), limit).await?)?;
            let a = annotations.create(&app.id, &b.question, &b.answer).await?;
            Ok(body::json(StatusCode::OK, &annotation_json(&a)))
        }
        (["apps", "annotations", id], &Method::PUT) => {
            let b: AnnotationBody = body::typed(body::read_json(req.into_body(), limit).await?)?;
            let a = annotations.update(&app.id, id, &b.question, &b.answer).await?;
            Ok(body::json(StatusCode::OK, &annotation_json(&a)))
        }
        (["apps", "annotations", id], &Method::DELETE) => {
            annotations.delete(&app.id, id).await?;
            Ok(body::empty(StatusCode::NO_CONTENT))
        }
        (["apps", "annotation-reply", action], &Method::POST) => {
            let action = parse_action(action)?;
            let b: ReplyBody = body::typed(body::read_json(req.into_body(), limit).await?)?;
            let (job_id, status) = annotations.start_job(&app.id, action, b.score_threshold)?;
            Ok(body::json(StatusCode::OK, &json!({"job_id": job_id, "job_status": status.as_str()})))
        }
        (["apps", "annotation-reply", action, "status", job_id], &Method::GET) => {
            let action = parse_action(action)?;
            let status = annotations.job(&app.id, action, job_id)?;
            let error_msg = match &status {
                crate::service::annotations::JobStatus::Error(e) => e.clone(),
                _ => String::new(),
            };
            Ok(body::json(StatusCode::OK, &json!({"job_id": job_id, "job_status": status.as_str(), "error_msg": error_msg})))
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// Dify raises "Unsupported annotation reply action" for anything else.
fn parse_action(action: &str) -> Result<ReplyAction, ApiError> {
    ReplyAction::parse(action).ok_or_else(|| ApiError::InvalidParam("Unsupported annotation reply action".into()))
}

async fn list(annotations: &Annotations, app: &AppDefinition, req: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let q = query(req);
    let number = |name: &str, default: u32, max: u32| match q.get(name) {
        None => Ok(default),
        Some(s) => match s.parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::InvalidParam(format!("{name} must be an integer from 1 to {max}, not {s:?}"))),
        },
    };
    let page = number("page", 1, u32::MAX / 100)?;
    let limit = number("limit", 20, 100)?;
    let keyword = q.get("keyword").map(String::as_str).filter(|k| !k.is_empty());
    let (data, total) = annotations.list(&app.id, page, limit, keyword).await?;
    let has_more = data.len() == limit as usize;
    let data: Vec<Value> = data.iter().map(annotation_json).collect();
    Ok(body::json(StatusCode::OK, &json!({"data": data, "has_more": has_more, "limit": limit, "total": total, "page": page})))
}

/// Dify's `annotation_fields`.
fn annotation_json(a: &AnnotationRecord) -> Value {
    json!({"id": a.id, "question": a.question, "answer": a.answer, "hit_count": a.hit_count, "created_at": a.created_at})
}
