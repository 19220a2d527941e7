//! Dify's Knowledge (datasets) API under `/v1/datasets`, authorised by a
//! `Bearer dataset-…` key: datasets, documents (by text, by file as
//! multipart with a byte cap), indexing status, enable/disable, segments,
//! and `retrieve`. Paths, shapes and error codes follow Dify's
//! `api/controllers/service_api/dataset/{dataset,document,segment,hit_testing}.py`;
//! everything else is the knowledge service's (`service::knowledge`).

pub(super) mod wire;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::body::{self, Body};
use super::dify::query;
use super::error::ApiError;
use super::ApiState;
use crate::knowledge::{IndexingTechnique, RetrievalSettings, SearchMethod};
use crate::service::features::FeatureError;
use crate::service::knowledge::{DatasetPatch, DocumentContent, Knowledge, KnowledgeError, NewDataset};

/// Room for the multipart framing and the `data` part around the file.
const FORM_OVERHEAD_BYTES: u64 = 64 << 10;
/// Longest `data` part (the JSON options of a file document).
const MAX_DATA_FIELD_BYTES: u64 = 32 << 10;
/// `top_k` of `retrieve` when neither the request nor the dataset says
/// (Dify's hit-testing default).
const RETRIEVE_TOP_K: u32 = 4;

fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok()
}

/// Who is calling the Knowledge API, which decides what is left to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A `/v1/datasets` caller, who must show a `Bearer dataset-…` key.
    KeyHolder,
    /// An admin API caller (`/admin/v1/datasets`), already authorised by
    /// its peer credentials on the unix socket.
    Admin,
}

/// The one entry point of both `/v1/datasets…` and `/admin/v1/datasets…`
/// (`rest` is the path after either prefix): the same routes, handlers,
/// wire shapes and errors; only a key holder's key is still checked.
pub async fn serve(state: &Arc<ApiState>, rest: &[String], req: Request<Incoming>, caller: Caller) -> Result<Response<Body>, ApiError> {
    if !is_route(rest) {
        return Err(ApiError::NoRoute);
    }
    match caller {
        Caller::KeyHolder if rest.get(1).is_some_and(|a| a == "reindex") => return Err(ApiError::NoRoute),
        Caller::KeyHolder => super::authenticate_dataset(state, &req).await?,
        Caller::Admin => {
            // Operator-only, not part of Dify's API: re-index after a model change.
            if let [ds, action] = rest {
                if action == "reindex" && is_uuid(ds) {
                    if req.method() != Method::POST {
                        return Err(ApiError::MethodNotAllowed);
                    }
                    let docs = knowledge(state)?.reindex(ds).await?;
                    let ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
                    let batches: Vec<&str> = docs.iter().map(|d| d.batch.as_str()).collect();
                    return Ok(body::json(StatusCode::OK, &json!({"documents": ids, "batches": batches})));
                }
            }
        }
    }
    route(state, rest, req).await
}

/// Whether `rest` (the path after `/v1/datasets`) is a route of this API.
/// Ids must be UUIDs, as Dify's `<uuid:…>` routes want, so anything else
/// is a 404 before the key is checked.
fn is_route(rest: &[String]) -> bool {
    let r: Vec<&str> = rest.iter().map(String::as_str).collect();
    match r.as_slice() {
        // The admin socket's re-index (refused by `serve` for key holders).
        [ds, "reindex"] => is_uuid(ds),
        [] => true,
        [ds, tail @ ..] if is_uuid(ds) => match tail {
            [] | ["retrieve" | "hit-testing"] | ["documents"] => true,
            ["document", "create-by-text" | "create_by_text" | "create-by-file" | "create_by_file"] => true,
            ["documents", "status", _] => true,
            ["documents", batch, "indexing-status"] => !batch.is_empty(),
            ["documents", doc, rest @ ..] if is_uuid(doc) => match rest {
                [] | ["segments"] => true,
                ["update-by-text" | "update_by_text" | "update-by-file" | "update_by_file"] => true,
                ["segments", seg] => is_uuid(seg),
                _ => false,
            },
            _ => false,
        },
        _ => false,
    }
}

/// The knowledge service, or Dify's 503 while it is not running.
fn knowledge(state: &ApiState) -> Result<Arc<Knowledge>, ApiError> {
    state.knowledge.clone().ok_or(ApiError::KnowledgeUnavailable)
}

async fn route(state: &Arc<ApiState>, rest: &[String], req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let r: Vec<&str> = rest.iter().map(String::as_str).collect();
    let m = req.method().clone();
    let k = knowledge(state)?;
    let ok = |v: Value| Ok(body::json(StatusCode::OK, &v));
    match (r.as_slice(), &m) {
        ([], &Method::GET) => {
            let q = query(&req);
            let page = k.list_datasets(wire::page(&q)?, wire::keyword(&q)?).await?;
            ok(wire::paged_json(&page, wire::dataset_json))
        }
        ([], &Method::POST) => {
            let b = wire::create_dataset(&read_json(state, req).await?)?;
            let new = NewDataset {
                name: b.name.unwrap_or_default(),
                description: b.description.unwrap_or_default(),
                indexing_technique: b.indexing_technique.unwrap_or(IndexingTechnique::HighQuality),
                retrieval_model: checked_retrieval_model(b.retrieval_model.as_ref())?,
            };
            ok(wire::dataset_json(&k.create_dataset(new).await?))
        }
        ([ds], &Method::GET) => ok(wire::dataset_json(&k.dataset(ds).await?)),
        ([ds], &Method::PATCH) => {
            let b = wire::patch_dataset(&read_json(state, req).await?)?;
            let patch = DatasetPatch {
                name: b.name,
                description: b.description,
                indexing_technique: b.indexing_technique,
                retrieval_model: checked_retrieval_model(b.retrieval_model.as_ref())?,
            };
            ok(wire::dataset_json(&k.update_dataset(ds, patch).await?))
        }
        ([ds], &Method::DELETE) => {
            // As Dify: a dataset an app still searches is not deleted.
            k.dataset(ds).await?;
            let users = state.service.apps_using_dataset(ds);
            if !users.is_empty() {
                tracing::info!(dataset = %ds, apps = ?users, "dataset in use; not deleted");
                return Err(KnowledgeError::DatasetInUse.into());
            }
            k.delete_dataset(ds).await?;
            Ok(body::empty(StatusCode::NO_CONTENT))
        }
        ([ds, "retrieve" | "hit-testing"], &Method::POST) => retrieve(state, &k, ds, req).await,
        ([ds, "document", "create-by-text" | "create_by_text"], &Method::POST) => {
            let (name, text, opts) = wire::create_by_text(&read_json(state, req).await?)?;
            checked_retrieval_model(opts.retrieval_model.as_ref())?;
            let doc = k.add_document(ds, DocumentContent::Text { name, text }, opts.process_rule, opts.replace.as_deref()).await?;
            ok(wire::document_and_batch_json(&doc))
        }
        ([ds, "document", "create-by-file" | "create_by_file"], &Method::POST) => {
            let form = read_file_form(state, req).await?;
            let opts = wire::document_options(&wire::Fields::of(&form.data, "data")?)?;
            checked_retrieval_model(opts.retrieval_model.as_ref())?;
            let (name, bytes) = form.file.ok_or(ApiError::NoFileUploaded)?;
            let doc = k.add_document(ds, DocumentContent::File { name, bytes }, opts.process_rule, opts.replace.as_deref()).await?;
            ok(wire::document_and_batch_json(&doc))
        }
        ([ds, "documents"], &Method::GET) => {
            let q = query(&req);
            let page = k.list_documents(ds, wire::page(&q)?, wire::keyword(&q)?).await?;
            ok(wire::paged_json(&page, wire::document_json))
        }
        ([ds, "documents", "status", action], &Method::PATCH) => {
            let (enabled, ids) = wire::status_action(action, &read_json(state, req).await?)?;
            k.set_documents_enabled(ds, &ids, enabled).await?;
            ok(json!({"result": "success"}))
        }
        ([ds, "documents", batch, "indexing-status"], &Method::GET) => {
            let docs = k.batch_status(ds, batch).await?;
            if docs.is_empty() {
                return Err(ApiError::NotFound("Documents not found.".into()));
            }
            ok(json!({"data": docs.iter().map(wire::document_status_json).collect::<Vec<_>>()}))
        }
        ([ds, "documents", doc], &Method::GET) => {
            let view = wire::metadata_view(&query(&req))?;
            ok(wire::document_detail_json(&k.document(ds, doc).await?, view))
        }
        ([ds, "documents", doc], &Method::DELETE) => {
            k.delete_document(ds, doc).await?;
            Ok(body::empty(StatusCode::NO_CONTENT))
        }
        ([ds, "documents", doc, "update-by-text" | "update_by_text"], &Method::POST) => {
            let updated = match wire::update_by_text(&read_json(state, req).await?)? {
                wire::TextUpdate::Rename(name) => k.rename_document(ds, doc, name).await?,
                wire::TextUpdate::Replace { name, text, process_rule } => {
                    k.add_document(ds, DocumentContent::Text { name, text }, process_rule, Some(doc)).await?
                }
            };
            ok(wire::document_and_batch_json(&updated))
        }
        ([ds, "documents", doc, "update-by-file" | "update_by_file"], &Method::POST) => {
            let form = read_file_form(state, req).await?;
            let opts = wire::document_options(&wire::Fields::of(&form.data, "data")?)?;
            checked_retrieval_model(opts.retrieval_model.as_ref())?;
            let (name, bytes) = form.file.ok_or(ApiError::NoFileUploaded)?;
            let updated = k.add_document(ds, DocumentContent::File { name, bytes }, opts.process_rule, Some(doc)).await?;
            ok(wire::document_and_batch_json(&updated))
        }
        ([ds, "documents", doc, "segments"], &Method::GET) => {
            let q = query(&req);
            let page = k.list_segments(ds, doc, wire::page(&q)?, wire::keyword(&q)?).await?;
            ok(wire::segment_page_json(&page))
        }
        ([ds, "documents", doc, "segments"], &Method::POST) => {
            let segments = wire::new_segments(&read_json(state, req).await?)?;
            let written = k.add_segments(ds, doc, segments).await?;
            ok(wire::segment_data_json(written.iter().map(wire::segment_json).collect()))
        }
        ([ds, "documents", doc, "segments", seg], &Method::GET) => {
            ok(wire::segment_data_json(wire::segment_json(&k.segment(ds, doc, seg).await?)))
        }
        ([ds, "documents", doc, "segments", seg], &Method::POST) => {
            let input = wire::segment_update(&read_json(state, req).await?)?;
            let updated = k.update_segment(ds, doc, seg, input).await?;
            ok(wire::segment_data_json(wire::segment_json(&updated)))
        }
        ([ds, "documents", doc, "segments", seg], &Method::DELETE) => {
            k.delete_segment(ds, doc, seg).await?;
            Ok(body::empty(StatusCode::NO_CONTENT))
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

async fn read_json(state: &ApiState, req: Request<Incoming>) -> Result<Value, ApiError> {
    body::read_json(req.into_body(), state.limits.max_body_bytes).await
}

/// A `retrieval_model` object, checked by the knowledge service, as the
/// JSON text a dataset keeps.
fn checked_retrieval_model(v: Option<&Value>) -> Result<Option<String>, ApiError> {
    match v {
        None => Ok(None),
        Some(v) => {
            Knowledge::retrieval_settings(v)?;
            Ok(Some(v.to_string()))
        }
    }
}

/// The settings of one `retrieve`: the request's `retrieval_model`, else
/// the dataset's, else Dify's hit-testing default. An `economy` dataset
/// has no vectors, so it searches by keyword whatever was asked, as in Dify.
fn retrieval_settings(given: Option<&Value>, stored: Option<&str>, technique: IndexingTechnique) -> Result<RetrievalSettings, ApiError> {
    let stored = stored.and_then(|t| serde_json::from_str::<Value>(t).ok());
    let default = wire::default_retrieval_model(technique, RETRIEVE_TOP_K);
    let mut settings = Knowledge::retrieval_settings(given.or(stored.as_ref()).unwrap_or(&default))?;
    if technique == IndexingTechnique::Economy {
        settings.method = SearchMethod::KeywordSearch;
    }
    Ok(settings)
}

async fn retrieve(state: &ApiState, k: &Knowledge, ds: &str, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let (q, given) = wire::retrieve(&read_json(state, req).await?)?;
    let dataset = k.dataset(ds).await?;
    let settings = retrieval_settings(given.as_ref(), dataset.retrieval_model.as_deref(), dataset.indexing_technique)?;
    let hits = k.retrieve(std::slice::from_ref(&dataset.id), &q, &settings).await?;
    let records: Vec<Value> = hits.iter().map(wire::hit_json).collect();
    Ok(body::json(StatusCode::OK, &json!({"query": {"content": q}, "records": records})))
}

/// A `create-by-file` / `update-by-file` form after reading.
struct FileForm {
    /// The `file` part: its kept name and bytes.
    file: Option<(String, Bytes)>,
    /// The `data` part as a JSON object (`{}` when absent).
    data: Value,
}

fn multipart_error(e: multer::Error, limit: u64) -> ApiError {
    match e {
        multer::Error::FieldSizeExceeded { field_name: Some(name), .. } if name == "data" => {
            ApiError::InvalidParam(format!("data is longer than {MAX_DATA_FIELD_BYTES} bytes"))
        }
        multer::Error::FieldSizeExceeded { .. } | multer::Error::StreamSizeExceeded { .. } => FeatureError::FileTooLarge { limit }.into(),
        other => ApiError::BodyRead(format!("malformed multipart/form-data: {other}")),
    }
}

/// Reads a document form: one file part named `file` (at most
/// `knowledge.max_file_bytes`, kept in memory for the ingestion queue) and an
/// optional `data` part. Checks in Dify's order after the whole body is
/// read (so the client sees the answer, not a reset): no `file` part 400
/// `no_file_uploaded`, a second file part 400 `too_many_files`, a file
/// without a usable name 400.
async fn read_file_form(state: &ApiState, req: Request<Incoming>) -> Result<FileForm, ApiError> {
    let (parts, body) = req.into_parts();
    let limit = state.knowledge.as_ref().map_or(state.files.max_file_bytes, |k| k.max_file_bytes());
    read_form(&parts.headers, body, limit).await
}

async fn read_form<B>(headers: &http::HeaderMap, body: B, limit: u64) -> Result<FileForm, ApiError>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok())
        // Not a multipart body: there is no file in it.
        .ok_or(ApiError::NoFileUploaded)?;
    let sizes = multer::SizeLimit::new()
        .whole_stream(limit + FORM_OVERHEAD_BYTES + MAX_DATA_FIELD_BYTES)
        .per_field(limit + 1)
        .for_field("data", MAX_DATA_FIELD_BYTES);
    let stream = http_body_util::BodyExt::into_data_stream(body);
    let mut form = multer::Multipart::with_constraints(stream, boundary, multer::Constraints::new().size_limit(sizes));

    let mut data: Option<String> = None;
    let mut file: Option<(String, Bytes)> = None;
    let mut file_parts = 0usize;
    while let Some(mut field) = form.next_field().await.map_err(|e| multipart_error(e, limit))? {
        let name = field.name().unwrap_or("").to_owned();
        match field.file_name().map(str::to_owned) {
            Some(raw) => {
                file_parts += 1;
                if name == "file" && file.is_none() {
                    let mut buf = BytesMut::new();
                    while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, limit))? {
                        if (buf.len() + chunk.len()) as u64 > limit {
                            return Err(FeatureError::FileTooLarge { limit }.into());
                        }
                        buf.extend_from_slice(&chunk);
                    }
                    file = Some((raw, buf.freeze()));
                    continue;
                }
            }
            // The first `data` counts, as with Flask's `request.form["data"]`.
            None if name == "data" && data.is_none() => {
                data = Some(field.text().await.map_err(|e| multipart_error(e, limit))?);
                continue;
            }
            None => {}
        }
        // Any other part is read and dropped.
        while field.chunk().await.map_err(|e| multipart_error(e, limit))?.is_some() {}
    }
    let data = wire::form_data(data.as_deref())?;
    let file = match file {
        None => None,
        Some(_) if file_parts > 1 => return Err(ApiError::TooManyFiles),
        Some((raw, bytes)) => {
            if raw.is_empty() {
                return Err(FeatureError::FilenameMissing.into());
            }
            let name = wire::upload_name(&raw)?.ok_or(FeatureError::FilenameInvalid)?;
            Some((name, bytes))
        }
    };
    Ok(FileForm { file, data })
}
