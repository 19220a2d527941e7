//! Wire shapes of Dify's Knowledge API, with no I/O: request bodies and
//! query strings checked field by field (400 `invalid_param` naming the
//! field, in Dify's words where Dify has them), and the JSON of datasets,
//! documents, segments and retrieval records with exactly the fields of
//! Dify's `fields/{dataset,document,segment,hit_testing}_fields.py`.
//! Timestamps are unix seconds, as Dify sends them.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use crate::api::error::ApiError;
use crate::knowledge::{DatasetRecord, DocumentRecord, DocumentSource, Hit, IndexingStatus, IndexingTechnique, SegmentRecord};
use crate::service::knowledge::{Page, Paged, SegmentInput};

/// Dify's limits on names and texts (characters, as Python counts them).
pub const DATASET_NAME_MAX: usize = 40;
pub const DESCRIPTION_MAX: usize = 400;
/// Dify's `documents.name` column is 255 wide.
pub const DOCUMENT_NAME_MAX: usize = 255;
pub const QUERY_MAX: usize = 250;
pub const KEYWORD_MAX: usize = 255;
/// Most segments one `POST .../segments` may add (Dify's
/// `DATASET_MAX_SEGMENTS_PER_REQUEST`, unlimited there by default).
pub const MAX_SEGMENTS_PER_REQUEST: usize = 1000;
/// Dify caps a page at 100 items (it clamps larger limits).
pub const PAGE_LIMIT_MAX: u32 = 100;
const PAGE_MAX: u32 = 1_000_000;

/// Who created a record, where Dify names an account: there are no accounts here.
const CREATED_BY: &str = "edgeai";
/// The only `doc_form` kept (Dify's plain-text chunks).
const DOC_FORM: &str = "text_model";

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::InvalidParam(msg.into())
}

/// The fields of a JSON object body, each read with an error naming it.
/// Absent and `null` are the same (Dify's `nullable` fields); unknown
/// fields are ignored, as Dify's parsers do.
pub struct Fields<'a>(&'a Map<String, Value>);

impl<'a> Fields<'a> {
    pub fn of(v: &'a Value, what: &str) -> Result<Self, ApiError> {
        v.as_object().map(Fields).ok_or_else(|| invalid(format!("{what} must be a JSON object")))
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    pub fn str(&self, key: &str) -> Result<Option<&'a str>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(invalid(format!("{key} must be a string"))),
        }
    }

    pub fn object(&self, key: &str) -> Result<Option<&'a Value>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(v @ Value::Object(_)) => Ok(Some(v)),
            Some(_) => Err(invalid(format!("{key} must be a JSON object"))),
        }
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(invalid(format!("{key} must be a boolean"))),
        }
    }

    pub fn str_list(&self, key: &str) -> Result<Option<Vec<String>>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| v.as_str().map(str::to_owned).ok_or_else(|| invalid(format!("{key}[{i}] must be a string"))))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(invalid(format!("{key} must be a list of strings"))),
        }
    }
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

fn technique(f: &Fields, key: &str) -> Result<Option<IndexingTechnique>, ApiError> {
    match f.str(key)? {
        None => Ok(None),
        Some("high_quality") => Ok(Some(IndexingTechnique::HighQuality)),
        Some("economy") => Ok(Some(IndexingTechnique::Economy)),
        Some(_) => Err(invalid("Invalid indexing technique.")),
    }
}

fn technique_str(t: IndexingTechnique) -> &'static str {
    match t {
        IndexingTechnique::HighQuality => "high_quality",
        IndexingTechnique::Economy => "economy",
    }
}

fn dataset_name(s: &str) -> Result<String, ApiError> {
    let n = chars(s.trim());
    if n == 0 || n > DATASET_NAME_MAX {
        return Err(invalid(format!("Name must be between 1 to {DATASET_NAME_MAX} characters.")));
    }
    Ok(s.trim().to_owned())
}

fn description(s: &str) -> Result<String, ApiError> {
    if chars(s) > DESCRIPTION_MAX {
        return Err(invalid(format!("Description cannot exceed {DESCRIPTION_MAX} characters.")));
    }
    Ok(s.to_owned())
}

/// Dify's `permission`: checked, then ignored (one operator owns every dataset).
fn permission(f: &Fields) -> Result<(), ApiError> {
    match f.str("permission")? {
        None | Some("only_me" | "all_team_members" | "partial_members") => Ok(()),
        Some(_) => Err(invalid("Invalid permission.")),
    }
}

/// `POST /datasets` or `PATCH /datasets/{id}` after checks; the
/// `retrieval_model` object is checked by the knowledge service.
#[derive(Debug, Default, PartialEq)]
pub struct DatasetBody {
    pub name: Option<String>,
    pub description: Option<String>,
    pub indexing_technique: Option<IndexingTechnique>,
    pub retrieval_model: Option<Value>,
}

/// `POST /datasets`: `name` is required.
pub fn create_dataset(body: &Value) -> Result<DatasetBody, ApiError> {
    let f = Fields::of(body, "the body")?;
    let name = f.str("name")?.ok_or_else(|| invalid("name is required"))?;
    let mut b = dataset_fields(&f)?;
    b.name = Some(dataset_name(name)?);
    match f.str("provider")? {
        None | Some("vendor") => {}
        Some("external") => return Err(invalid("External knowledge bases are not supported.")),
        Some(_) => return Err(invalid("Invalid provider.")),
    }
    Ok(b)
}

/// `PATCH /datasets/{id}`: every field optional.
pub fn patch_dataset(body: &Value) -> Result<DatasetBody, ApiError> {
    let f = Fields::of(body, "the body")?;
    let mut b = dataset_fields(&f)?;
    b.name = f.str("name")?.map(dataset_name).transpose()?;
    Ok(b)
}

fn dataset_fields(f: &Fields) -> Result<DatasetBody, ApiError> {
    permission(f)?;
    Ok(DatasetBody {
        name: None,
        description: f.str("description")?.map(description).transpose()?,
        indexing_technique: technique(f, "indexing_technique")?,
        retrieval_model: f.object("retrieval_model")?.cloned(),
    })
}

/// The options a `create-by-*`/`update-by-*` request carries besides its
/// content (the JSON body, or the `data` part of the form).
#[derive(Debug, Default, PartialEq)]
pub struct DocumentOptions {
    pub process_rule: Option<Value>,
    /// `original_document_id`: the document this one replaces.
    pub replace: Option<String>,
    pub retrieval_model: Option<Value>,
}

pub fn document_options(f: &Fields) -> Result<DocumentOptions, ApiError> {
    match f.str("doc_form")? {
        None | Some("text_model") => {}
        Some(other) => return Err(invalid(format!("doc_form {other:?} is not supported; only text_model is"))),
    }
    f.str("doc_language")?;
    // Checked only: the dataset's own technique wins, as in Dify.
    technique(f, "indexing_technique")?;
    let replace = match f.str("original_document_id")? {
        None => None,
        Some(id) if uuid::Uuid::parse_str(id).is_ok() => Some(id.to_owned()),
        Some(_) => return Err(invalid("original_document_id must be a document id (UUID)")),
    };
    Ok(DocumentOptions {
        process_rule: f.object("process_rule")?.cloned(),
        replace,
        retrieval_model: f.object("retrieval_model")?.cloned(),
    })
}

/// A document name given by the client: trimmed, non-empty, at most 255 characters.
pub fn document_name(s: &str) -> Result<String, ApiError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(invalid("name must not be empty"));
    }
    if chars(t) > DOCUMENT_NAME_MAX {
        return Err(invalid(format!("name must be at most {DOCUMENT_NAME_MAX} characters")));
    }
    Ok(t.to_owned())
}

/// `create-by-text`: `name` and `text`, both required.
pub fn create_by_text(body: &Value) -> Result<(String, String, DocumentOptions), ApiError> {
    let f = Fields::of(body, "the body")?;
    let name = f.str("name")?.ok_or_else(|| invalid("name is required"))?;
    let text = f.str("text")?.ok_or_else(|| invalid("text is required"))?;
    let opts = document_options(&f)?;
    let name = document_name(name)?;
    if text.trim().is_empty() {
        return Err(invalid("text must not be empty"));
    }
    Ok((name, text.to_owned(), opts))
}

/// What an `update-by-text` asks for.
#[derive(Debug, PartialEq)]
pub enum TextUpdate {
    /// A new name only: no re-indexing.
    Rename(String),
    /// New content (and name), re-indexed.
    Replace { name: String, text: String, process_rule: Option<Value> },
}

/// `update-by-text`: a new `text` needs its `name` (Dify: "Both text and
/// name must be strings."); a `name` alone renames.
pub fn update_by_text(body: &Value) -> Result<TextUpdate, ApiError> {
    let f = Fields::of(body, "the body")?;
    let name = f.str("name")?;
    let text = f.str("text")?.filter(|t| !t.is_empty());
    let opts = document_options(&f)?;
    match (name, text) {
        (Some(name), Some(text)) => {
            if text.trim().is_empty() {
                return Err(invalid("text must not be empty"));
            }
            Ok(TextUpdate::Replace { name: document_name(name)?, text: text.to_owned(), process_rule: opts.process_rule })
        }
        (None, Some(_)) => Err(invalid("Both text and name must be strings.")),
        (Some(name), None) if opts.process_rule.is_none() => Ok(TextUpdate::Rename(document_name(name)?)),
        (_, None) => Err(invalid("text is required to change the document's content or process_rule")),
    }
}

/// The `data` part of a file form: a JSON object, or `{}` when absent.
pub fn form_data(text: Option<&str>) -> Result<Value, ApiError> {
    match text {
        None => Ok(Value::Object(Map::new())),
        Some(t) if t.trim().is_empty() => Ok(Value::Object(Map::new())),
        Some(t) => match serde_json::from_str::<Value>(t) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(_) => Err(invalid("data must be a JSON object")),
            Err(e) => Err(invalid(format!("data is not valid JSON: {e}"))),
        },
    }
}

/// An uploaded file's name as kept: its last path component only (so
/// `../../etc/passwd` is `passwd`), trimmed. `None` when nothing usable is
/// left, `Err` for control characters or an over-long name.
pub fn upload_name(raw: &str) -> Result<Option<String>, ApiError> {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("").trim();
    if last.is_empty() || last == "." || last == ".." {
        return Ok(None);
    }
    if last.chars().any(char::is_control) {
        return Err(invalid("the file name contains control characters"));
    }
    if chars(last) > DOCUMENT_NAME_MAX {
        return Err(invalid(format!("the file name must be at most {DOCUMENT_NAME_MAX} characters")));
    }
    Ok(Some(last.to_owned()))
}

/// `PATCH .../documents/status/{action}`: whether to enable, and the ids.
pub fn status_action(action: &str, body: &Value) -> Result<(bool, Vec<String>), ApiError> {
    let enabled = match action {
        "enable" => true,
        "disable" => false,
        "archive" | "un_archive" => return Err(ApiError::InvalidAction("Archiving documents is not supported.".into())),
        other => return Err(ApiError::InvalidAction(format!("Invalid action: {other}"))),
    };
    let f = Fields::of(body, "the body")?;
    Ok((enabled, f.str_list("document_ids")?.unwrap_or_default()))
}

fn segment_input(v: &Value, at: &str, content_required: bool) -> Result<SegmentInput, ApiError> {
    let f = Fields::of(v, at)?;
    let content = f.str("content")?;
    if (content.is_none() && content_required) || content.is_some_and(|c| c.trim().is_empty()) {
        return Err(invalid("Content is empty"));
    }
    Ok(SegmentInput {
        content: content.map(str::to_owned),
        answer: f.str("answer")?.map(str::to_owned),
        keywords: f.str_list("keywords")?,
        enabled: f.bool("enabled")?,
    })
}

/// `POST .../segments`: `{"segments": [{content, answer?, keywords?}]}`.
pub fn new_segments(body: &Value) -> Result<Vec<SegmentInput>, ApiError> {
    let f = Fields::of(body, "the body")?;
    let Some(items) = f.get("segments") else { return Err(invalid("Segments is required")) };
    let Value::Array(items) = items else { return Err(invalid("segments must be a list")) };
    if items.is_empty() {
        return Err(invalid("Segments is required"));
    }
    if items.len() > MAX_SEGMENTS_PER_REQUEST {
        return Err(invalid(format!("Exceeded maximum segments limit of {MAX_SEGMENTS_PER_REQUEST}.")));
    }
    items.iter().enumerate().map(|(i, v)| segment_input(v, &format!("segments[{i}]"), true)).collect()
}

/// `POST .../segments/{id}`: `{"segment": {content?, answer?, keywords?, enabled?}}`.
pub fn segment_update(body: &Value) -> Result<SegmentInput, ApiError> {
    let f = Fields::of(body, "the body")?;
    let seg = f.object("segment")?.ok_or_else(|| invalid("segment is required"))?;
    segment_input(seg, "segment", false)
}

/// `POST .../retrieve`: the query (1..=250 characters) and an optional `retrieval_model`.
pub fn retrieve(body: &Value) -> Result<(String, Option<Value>), ApiError> {
    let f = Fields::of(body, "the body")?;
    let query = f.str("query")?.unwrap_or("");
    if query.trim().is_empty() || chars(query) > QUERY_MAX {
        return Err(invalid(format!("Query is required and cannot exceed {QUERY_MAX} characters")));
    }
    Ok((query.to_owned(), f.object("retrieval_model")?.cloned()))
}

/// `page` and `limit` of a list: positive integers; a limit over 100 is
/// 100, as Dify clamps it.
pub fn page(q: &HashMap<String, String>) -> Result<Page, ApiError> {
    let page = positive(q, "page", 1)?.min(PAGE_MAX);
    let limit = positive(q, "limit", 20)?.min(PAGE_LIMIT_MAX);
    Ok(Page { page, limit })
}

fn positive(q: &HashMap<String, String>, name: &str, default: u32) -> Result<u32, ApiError> {
    match q.get(name).map(|s| s.trim()) {
        None | Some("") => Ok(default),
        Some(s) => match s.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(invalid(format!("{name} must be a positive integer, not {s:?}"))),
        },
    }
}

/// The `keyword` filter of a list; empty is none.
pub fn keyword(q: &HashMap<String, String>) -> Result<Option<String>, ApiError> {
    match q.get("keyword").map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(k) if chars(k) > KEYWORD_MAX => Err(invalid(format!("keyword must be at most {KEYWORD_MAX} characters"))),
        Some(k) => Ok(Some(k.to_owned())),
    }
}

/// `metadata` of `GET .../documents/{id}`: `all` (default), `only`, `without`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataView {
    All,
    Only,
    Without,
}

pub fn metadata_view(q: &HashMap<String, String>) -> Result<MetadataView, ApiError> {
    match q.get("metadata").map(String::as_str) {
        None | Some("all") => Ok(MetadataView::All),
        Some("only") => Ok(MetadataView::Only),
        Some("without") => Ok(MetadataView::Without),
        Some(other) => Err(ApiError::InvalidMetadata(format!("Invalid metadata value: {other}"))),
    }
}

// ---- responses -----------------------------------------------------------

/// Dify's `retrieval_model_dict` when a dataset has none, and the fields
/// an incomplete one is filled with.
pub fn default_retrieval_model(t: IndexingTechnique, top_k: u32) -> Value {
    let method = match t {
        IndexingTechnique::HighQuality => "semantic_search",
        IndexingTechnique::Economy => "keyword_search",
    };
    json!({
        "search_method": method, "reranking_enable": false, "reranking_mode": null,
        "reranking_model": {"reranking_provider_name": "", "reranking_model_name": ""},
        "weights": null, "top_k": top_k, "score_threshold_enabled": false, "score_threshold": null,
    })
}

/// The dataset's stored `retrieval_model` over Dify's defaults (only
/// Dify's keys); an `economy` dataset searches by keyword, as Dify shows it.
pub fn retrieval_model_dict(d: &DatasetRecord) -> Value {
    let mut dict = default_retrieval_model(d.indexing_technique, 2);
    if let (Some(Value::Object(given)), Value::Object(m)) =
        (d.retrieval_model.as_deref().and_then(|t| serde_json::from_str::<Value>(t).ok()), &mut dict)
    {
        for (k, v) in given {
            if m.contains_key(&k) {
                m.insert(k, v);
            }
        }
        if d.indexing_technique == IndexingTechnique::Economy {
            m.insert("search_method".into(), json!("keyword_search"));
        }
    }
    dict
}

/// Dify's `DatasetDetailResponse`.
pub fn dataset_json(d: &DatasetRecord) -> Value {
    let has_docs = d.document_count > 0;
    json!({
        "id": d.id, "name": d.name, "description": d.description, "provider": "vendor", "permission": "only_me",
        "data_source_type": has_docs.then_some("upload_file"), "indexing_technique": technique_str(d.indexing_technique),
        "app_count": 0, "document_count": d.document_count, "word_count": d.word_count,
        "created_by": CREATED_BY, "author_name": null, "created_at": d.created_at, "updated_by": null, "updated_at": d.updated_at,
        "embedding_model": d.embedding_model, "embedding_model_provider": d.embedding_model.as_ref().map(|_| "edgeai"),
        "embedding_available": true, "retrieval_model_dict": retrieval_model_dict(d), "summary_index_setting": null,
        "tags": [], "doc_form": has_docs.then_some(DOC_FORM), "external_knowledge_info": null, "external_retrieval_model": null,
        "doc_metadata": [], "built_in_field_enabled": false, "pipeline_id": null, "runtime_mode": "general",
        "chunk_structure": null, "icon_info": null, "is_published": false, "total_documents": d.document_count,
        "total_available_documents": d.document_count, "enable_api": true, "is_multimodal": false,
    })
}

fn status_str(s: IndexingStatus) -> &'static str {
    match s {
        IndexingStatus::Waiting => "waiting",
        IndexingStatus::Parsing => "parsing",
        IndexingStatus::Splitting => "splitting",
        IndexingStatus::Indexing => "indexing",
        IndexingStatus::Completed => "completed",
        IndexingStatus::Error => "error",
        IndexingStatus::Paused => "paused",
    }
}

/// Dify's `Document.display_status`.
fn display_status(d: &DocumentRecord) -> &'static str {
    match d.status {
        IndexingStatus::Waiting => "queuing",
        IndexingStatus::Paused => "paused",
        IndexingStatus::Parsing | IndexingStatus::Splitting | IndexingStatus::Indexing => "indexing",
        IndexingStatus::Error => "error",
        IndexingStatus::Completed if d.enabled => "available",
        IndexingStatus::Completed => "disabled",
    }
}

/// Dify's `data_source_detail_dict` of an uploaded file (text documents
/// are stored by Dify as `.txt` uploads too).
fn data_source_detail(d: &DocumentRecord) -> Value {
    match &d.source {
        DocumentSource::Text => json!({"upload_file": {"name": d.name, "size": null, "extension": "txt"}}),
        DocumentSource::File { name, kind, size } => json!({"upload_file": {"name": name, "size": size, "extension": kind}}),
    }
}

fn process_rule_value(d: &DocumentRecord) -> Value {
    serde_json::from_str(&d.process_rule).unwrap_or_else(|_| json!({}))
}

/// Dify's `DocumentResponse` (lists, and `create-by-*` answers).
pub fn document_json(d: &DocumentRecord) -> Value {
    json!({
        "id": d.id, "position": d.position, "data_source_type": "upload_file", "data_source_info": null,
        "data_source_detail_dict": data_source_detail(d), "dataset_process_rule_id": null, "name": d.name,
        "created_from": "api", "created_by": CREATED_BY, "created_at": d.created_at, "tokens": d.tokens,
        "indexing_status": status_str(d.status), "error": d.error, "enabled": d.enabled, "disabled_at": null,
        "disabled_by": null, "archived": false, "display_status": display_status(d), "word_count": d.word_count,
        "hit_count": 0, "doc_form": DOC_FORM, "doc_metadata": [], "summary_index_status": null, "need_summary": false,
    })
}

/// `GET .../documents/{id}` as Dify answers it for each `metadata` view.
pub fn document_detail_json(d: &DocumentRecord, view: MetadataView) -> Value {
    if view == MetadataView::Only {
        return json!({"id": d.id, "doc_type": null, "doc_metadata": []});
    }
    let latency = match (d.processing_started_at, d.completed_at) {
        (Some(s), Some(c)) => json!((c - s) as f64),
        _ => Value::Null,
    };
    let average = if d.total_segments > 0 { d.word_count as f64 / d.total_segments as f64 } else { 0.0 };
    let rule = process_rule_value(d);
    let mut v = json!({
        "id": d.id, "position": d.position, "data_source_type": "upload_file", "data_source_info": data_source_detail(d),
        "dataset_process_rule_id": null, "dataset_process_rule": rule, "document_process_rule": rule, "name": d.name,
        "created_from": "api", "created_by": CREATED_BY, "created_at": d.created_at, "tokens": d.tokens,
        "indexing_status": status_str(d.status), "completed_at": d.completed_at, "updated_at": d.updated_at,
        "indexing_latency": latency, "error": d.error, "enabled": d.enabled, "disabled_at": null, "disabled_by": null,
        "archived": false, "segment_count": d.total_segments, "average_segment_length": average, "hit_count": 0,
        "display_status": display_status(d), "doc_form": DOC_FORM, "doc_language": "English",
    });
    if let (MetadataView::All, Value::Object(m)) = (view, &mut v) {
        m.insert("doc_type".into(), Value::Null);
        m.insert("doc_metadata".into(), json!([]));
    }
    v
}

/// Dify's `DocumentStatusResponse` (`indexing-status`).
pub fn document_status_json(d: &DocumentRecord) -> Value {
    json!({
        "id": d.id, "indexing_status": status_str(d.status), "processing_started_at": d.processing_started_at,
        "parsing_completed_at": d.parsing_completed_at, "cleaning_completed_at": d.parsing_completed_at,
        "splitting_completed_at": d.splitting_completed_at, "completed_at": d.completed_at, "paused_at": null,
        "error": d.error, "stopped_at": null, "completed_segments": d.completed_segments, "total_segments": d.total_segments,
    })
}

/// Dify keeps no answer on a text segment.
fn answer(s: &SegmentRecord) -> Option<&str> {
    Some(s.answer.as_str()).filter(|a| !a.is_empty())
}

fn completed_at(s: &SegmentRecord) -> Option<i64> {
    (s.status == IndexingStatus::Completed).then_some(s.updated_at)
}

/// Dify's `SegmentResponse`.
pub fn segment_json(s: &SegmentRecord) -> Value {
    json!({
        "id": s.id, "position": s.position, "document_id": s.document_id, "content": s.content, "sign_content": s.content,
        "answer": answer(s), "word_count": s.word_count, "tokens": s.tokens, "keywords": s.keywords,
        "index_node_id": s.id, "index_node_hash": s.hash, "hit_count": s.hit_count, "enabled": s.enabled,
        "disabled_at": null, "disabled_by": null, "status": status_str(s.status), "created_by": CREATED_BY,
        "created_at": s.created_at, "updated_at": s.updated_at, "updated_by": null, "indexing_at": s.created_at,
        "completed_at": completed_at(s), "error": null, "stopped_at": null, "child_chunks": [], "attachments": [],
        "summary": null,
    })
}

/// Dify's `HitTestingRecord`: the segment with its document, and the score.
pub fn hit_json(h: &Hit) -> Value {
    let s = &h.segment;
    json!({
        "segment": {
            "id": s.id, "position": s.position, "document_id": s.document_id, "content": s.content,
            "sign_content": s.content, "answer": answer(s), "word_count": s.word_count, "tokens": s.tokens,
            "keywords": s.keywords, "index_node_id": s.id, "index_node_hash": s.hash, "hit_count": s.hit_count,
            "enabled": s.enabled, "disabled_at": null, "disabled_by": null, "status": status_str(s.status),
            "created_by": CREATED_BY, "created_at": s.created_at, "indexing_at": s.created_at,
            "completed_at": completed_at(s), "error": null, "stopped_at": null,
            "document": {"id": s.document_id, "data_source_type": "upload_file", "name": h.document_name,
                         "doc_type": null, "doc_metadata": null},
        },
        "child_chunks": [], "score": h.score, "tsne_position": null, "files": [], "summary": null,
    })
}

/// A page as Dify lists it: `{data, has_more, limit, total, page}`.
pub fn paged_json<T>(p: &Paged<T>, item: impl Fn(&T) -> Value) -> Value {
    json!({"data": p.data.iter().map(item).collect::<Vec<_>>(), "has_more": p.has_more, "limit": p.limit, "total": p.total, "page": p.page})
}

/// A segment page: Dify adds the document's `doc_form`.
pub fn segment_page_json(p: &Paged<SegmentRecord>) -> Value {
    let mut v = paged_json(p, segment_json);
    if let Value::Object(m) = &mut v {
        m.insert("doc_form".into(), json!(DOC_FORM));
    }
    v
}

/// `{"data": …, "doc_form": "text_model"}` of one segment or of segments written.
pub fn segment_data_json(data: Value) -> Value {
    json!({"data": data, "doc_form": DOC_FORM})
}

/// `create-by-*`/`update-by-*`: `{"document": …, "batch": …}`.
pub fn document_and_batch_json(d: &DocumentRecord) -> Value {
    json!({"document": document_json(d), "batch": d.batch})
}
