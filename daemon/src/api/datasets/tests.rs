//! Request checks and JSON shapes of the Knowledge API, without a daemon:
//! every bad input's status, Dify code and message, and each record's
//! JSON against Dify's field lists.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue};
use http_body_util::Full;
use serde_json::{json, Value};

use super::wire::{self, MetadataView, TextUpdate};
use super::*;
use crate::knowledge::{DatasetRecord, DocumentRecord, DocumentSource, Hit, IndexingStatus, IndexingTechnique, SegmentRecord};
use crate::service::knowledge::{KnowledgeError, Paged};

const DS: &str = "3f0e8a52-9a5c-4c1e-8f43-2f3b8d3c9e11";
const DOC: &str = "7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f";
const SEG: &str = "0b5c8d2e-1f3a-4b6c-9d7e-8f0a1b2c3d4e";

/// Status, Dify code and message of an error.
fn mapped(e: ApiError) -> (u16, &'static str, String) {
    let m = e.mapped();
    (m.status.as_u16(), m.code, m.message)
}

fn invalid_param<T: std::fmt::Debug>(r: Result<T, ApiError>) -> String {
    match r {
        Err(e) => {
            let (status, code, message) = mapped(e);
            assert_eq!((status, code), (400, "invalid_param"), "{message}");
            message
        }
        Ok(v) => panic!("accepted: {v:?}"),
    }
}

fn route(p: &str) -> bool {
    let rest: Vec<String> = if p.is_empty() { vec![] } else { p.split('/').map(str::to_owned).collect() };
    is_route(&rest)
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().expect("object").keys().cloned().collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

fn dataset() -> DatasetRecord {
    DatasetRecord {
        id: DS.into(),
        name: "Manuals".into(),
        description: "PLC manuals".into(),
        indexing_technique: IndexingTechnique::HighQuality,
        embedding_model: Some("local:multilingual-e5-small@0123abcd".into()),
        embedding_dims: Some(384),
        retrieval_model: Some(r#"{"search_method":"hybrid_search","top_k":5,"weights":{"weight_type":"customized"},"extra":1}"#.into()),
        document_count: 2,
        word_count: 1200,
        created_at: 1_796_000_000,
        updated_at: 1_796_000_100,
    }
}

fn document() -> DocumentRecord {
    DocumentRecord {
        id: DOC.into(),
        dataset_id: DS.into(),
        position: 1,
        name: "alarm.pdf".into(),
        source: DocumentSource::File { name: "alarm.pdf".into(), kind: "pdf".into(), size: 4096 },
        batch: "20261130005300123456".into(),
        process_rule: r#"{"mode":"automatic"}"#.into(),
        status: IndexingStatus::Completed,
        error: None,
        enabled: true,
        word_count: 600,
        tokens: 300,
        completed_segments: 3,
        total_segments: 3,
        created_at: 1_796_000_000,
        processing_started_at: Some(1_796_000_001),
        parsing_completed_at: Some(1_796_000_002),
        splitting_completed_at: Some(1_796_000_003),
        completed_at: Some(1_796_000_005),
        updated_at: 1_796_000_005,
    }
}

fn segment() -> SegmentRecord {
    SegmentRecord {
        rowid: 7,
        id: SEG.into(),
        document_id: DOC.into(),
        dataset_id: DS.into(),
        position: 2,
        content: "清除PLC报警: press RESET".into(),
        answer: String::new(),
        keywords: vec!["PLC".into()],
        word_count: 20,
        tokens: 12,
        hash: "ab".repeat(32),
        hit_count: 4,
        enabled: true,
        status: IndexingStatus::Completed,
        created_at: 1_796_000_003,
        updated_at: 1_796_000_004,
    }
}

// ---- routes -----------------------------------------------------------------

#[test]
fn routes_need_uuids_where_dify_has_them() {
    for p in [
        "".to_owned(),
        DS.to_owned(),
        format!("{DS}/retrieve"),
        format!("{DS}/hit-testing"),
        format!("{DS}/document/create-by-text"),
        format!("{DS}/document/create_by_text"),
        format!("{DS}/document/create-by-file"),
        format!("{DS}/document/create_by_file"),
        format!("{DS}/documents"),
        format!("{DS}/documents/status/enable"),
        format!("{DS}/documents/20261130005300123456/indexing-status"),
        format!("{DS}/documents/{DOC}"),
        format!("{DS}/documents/{DOC}/update-by-text"),
        format!("{DS}/documents/{DOC}/update_by_file"),
        format!("{DS}/documents/{DOC}/segments"),
        format!("{DS}/documents/{DOC}/segments/{SEG}"),
    ] {
        assert!(route(&p), "{p}");
    }
    for p in [
        "x".to_owned(),
        "not-a-uuid/documents".to_owned(),
        format!("{DS}/document"),
        format!("{DS}/document/create"),
        format!("{DS}/documents/x"),
        format!("{DS}/documents/{DOC}/segments/x"),
        format!("{DS}/documents/{DOC}/segments/{SEG}/more"),
        format!("{DS}/documents/{DOC}/update"),
        format!("{DS}/tags"),
    ] {
        assert!(!route(&p), "{p}");
    }
}

// ---- request checks ---------------------------------------------------------

#[test]
fn dataset_bodies_are_checked_with_difys_messages() {
    let b = wire::create_dataset(&json!({"name": " Manuals ", "indexing_technique": "economy", "permission": "only_me"})).expect("ok");
    assert_eq!(b.name.as_deref(), Some("Manuals"));
    assert_eq!(b.indexing_technique, Some(IndexingTechnique::Economy));
    assert_eq!(invalid_param(wire::create_dataset(&json!("x"))), "the body must be a JSON object");
    assert_eq!(invalid_param(wire::create_dataset(&json!({}))), "name is required");
    assert_eq!(invalid_param(wire::create_dataset(&json!({"name": 5}))), "name must be a string");
    assert_eq!(invalid_param(wire::create_dataset(&json!({"name": "  "}))), "Name must be between 1 to 40 characters.");
    // 41 CJK characters are 41, not 123 bytes' worth.
    assert!(wire::create_dataset(&json!({"name": "字".repeat(40)})).is_ok());
    assert_eq!(invalid_param(wire::create_dataset(&json!({"name": "字".repeat(41)}))), "Name must be between 1 to 40 characters.");
    assert_eq!(
        invalid_param(wire::create_dataset(&json!({"name": "a", "description": "d".repeat(401)}))),
        "Description cannot exceed 400 characters."
    );
    assert_eq!(invalid_param(wire::create_dataset(&json!({"name": "a", "indexing_technique": "best"}))), "Invalid indexing technique.");
    assert_eq!(invalid_param(wire::create_dataset(&json!({"name": "a", "permission": "everyone"}))), "Invalid permission.");
    assert_eq!(
        invalid_param(wire::create_dataset(&json!({"name": "a", "provider": "external"}))),
        "External knowledge bases are not supported."
    );
    assert_eq!(
        invalid_param(wire::create_dataset(&json!({"name": "a", "retrieval_model": "semantic"}))),
        "retrieval_model must be a JSON object"
    );
    // PATCH: every field optional, same checks.
    assert_eq!(wire::patch_dataset(&json!({})).expect("empty patch"), wire::DatasetBody::default());
    assert_eq!(invalid_param(wire::patch_dataset(&json!({"name": ""}))), "Name must be between 1 to 40 characters.");
}

#[test]
fn text_documents_need_a_name_and_text() {
    let (name, text, opts) =
        wire::create_by_text(&json!({"name": "sop", "text": "步骤一", "process_rule": {"mode": "automatic"}, "doc_language": "Chinese"}))
            .expect("ok");
    assert_eq!((name.as_str(), text.as_str()), ("sop", "步骤一"));
    assert_eq!(opts.process_rule, Some(json!({"mode": "automatic"})));
    assert_eq!(invalid_param(wire::create_by_text(&json!({"text": "t"}))), "name is required");
    assert_eq!(invalid_param(wire::create_by_text(&json!({"name": "n"}))), "text is required");
    assert_eq!(invalid_param(wire::create_by_text(&json!({"name": "n", "text": null}))), "text is required");
    assert_eq!(invalid_param(wire::create_by_text(&json!({"name": " ", "text": "t"}))), "name must not be empty");
    assert_eq!(invalid_param(wire::create_by_text(&json!({"name": "n", "text": " \n"}))), "text must not be empty");
    assert_eq!(invalid_param(wire::create_by_text(&json!({"name": "n".repeat(256), "text": "t"}))), "name must be at most 255 characters");
    assert_eq!(
        invalid_param(wire::create_by_text(&json!({"name": "n", "text": "t", "process_rule": "auto"}))),
        "process_rule must be a JSON object"
    );
    assert_eq!(
        invalid_param(wire::create_by_text(&json!({"name": "n", "text": "t", "doc_form": "qa_model"}))),
        "doc_form \"qa_model\" is not supported; only text_model is"
    );
    assert_eq!(
        invalid_param(wire::create_by_text(&json!({"name": "n", "text": "t", "original_document_id": "../x"}))),
        "original_document_id must be a document id (UUID)"
    );
    assert_eq!(
        invalid_param(wire::create_by_text(&json!({"name": "n", "text": "t", "indexing_technique": "x"}))),
        "Invalid indexing technique."
    );
}

#[test]
fn text_updates_rename_or_replace() {
    assert_eq!(wire::update_by_text(&json!({"name": "new"})).expect("rename"), TextUpdate::Rename("new".into()));
    assert_eq!(
        wire::update_by_text(&json!({"name": "n", "text": "t"})).expect("replace"),
        TextUpdate::Replace { name: "n".into(), text: "t".into(), process_rule: None }
    );
    assert_eq!(invalid_param(wire::update_by_text(&json!({"text": "t"}))), "Both text and name must be strings.");
    assert_eq!(invalid_param(wire::update_by_text(&json!({}))), "text is required to change the document's content or process_rule");
    assert_eq!(
        invalid_param(wire::update_by_text(&json!({"name": "n", "process_rule": {"mode": "automatic"}}))),
        "text is required to change the document's content or process_rule"
    );
}

#[test]
fn status_actions_are_enable_or_disable() {
    assert_eq!(wire::status_action("enable", &json!({"document_ids": [DOC]})).expect("enable"), (true, vec![DOC.to_owned()]));
    assert_eq!(wire::status_action("disable", &json!({})).expect("disable"), (false, vec![]));
    assert_eq!(mapped(wire::status_action("archive", &json!({})).unwrap_err()).1, "invalid_action");
    let (status, code, message) = mapped(wire::status_action("explode", &json!({})).unwrap_err());
    assert_eq!((status, code, message.as_str()), (400, "invalid_action", "Invalid action: explode"));
    assert_eq!(invalid_param(wire::status_action("enable", &json!({"document_ids": DOC}))), "document_ids must be a list of strings");
    assert_eq!(invalid_param(wire::status_action("enable", &json!({"document_ids": [1]}))), "document_ids[0] must be a string");
}

#[test]
fn segment_bodies_are_checked_with_difys_messages() {
    let s = wire::new_segments(&json!({"segments": [{"content": "c", "answer": "a", "keywords": ["k"]}]})).expect("ok");
    assert_eq!(
        (s[0].content.as_deref(), s[0].answer.as_deref(), s[0].keywords.clone()),
        (Some("c"), Some("a"), Some(vec!["k".to_owned()]))
    );
    assert_eq!(invalid_param(wire::new_segments(&json!({}))), "Segments is required");
    assert_eq!(invalid_param(wire::new_segments(&json!({"segments": []}))), "Segments is required");
    assert_eq!(invalid_param(wire::new_segments(&json!({"segments": {"content": "c"}}))), "segments must be a list");
    let many = vec![json!({"content": "c"}); wire::MAX_SEGMENTS_PER_REQUEST + 1];
    assert_eq!(invalid_param(wire::new_segments(&json!({ "segments": many }))), "Exceeded maximum segments limit of 1000.");
    assert_eq!(invalid_param(wire::new_segments(&json!({"segments": ["c"]}))), "segments[0] must be a JSON object");
    assert_eq!(invalid_param(wire::new_segments(&json!({"segments": [{"answer": "a"}]}))), "Content is empty");
    assert_eq!(invalid_param(wire::new_segments(&json!({"segments": [{"content": "  "}]}))), "Content is empty");
    assert_eq!(
        invalid_param(wire::new_segments(&json!({"segments": [{"content": "c", "keywords": "k"}]}))),
        "keywords must be a list of strings"
    );
    let u = wire::segment_update(&json!({"segment": {"enabled": false}})).expect("enabled only");
    assert_eq!((u.content, u.enabled), (None, Some(false)));
    assert_eq!(invalid_param(wire::segment_update(&json!({}))), "segment is required");
    assert_eq!(invalid_param(wire::segment_update(&json!({"segment": {"content": ""}}))), "Content is empty");
    assert_eq!(invalid_param(wire::segment_update(&json!({"segment": {"enabled": "no"}}))), "enabled must be a boolean");
}

#[test]
fn retrieve_queries_are_1_to_250_characters() {
    let (q, model) = wire::retrieve(&json!({"query": "如何清除PLC报警", "retrieval_model": {"top_k": 3}})).expect("ok");
    assert_eq!((q.as_str(), model), ("如何清除PLC报警", Some(json!({"top_k": 3}))));
    assert!(wire::retrieve(&json!({"query": "字".repeat(250)})).is_ok());
    let msg = "Query is required and cannot exceed 250 characters";
    assert_eq!(invalid_param(wire::retrieve(&json!({}))), msg);
    assert_eq!(invalid_param(wire::retrieve(&json!({"query": ""}))), msg);
    assert_eq!(invalid_param(wire::retrieve(&json!({"query": "字".repeat(251)}))), msg);
    assert_eq!(invalid_param(wire::retrieve(&json!({"query": 1}))), "query must be a string");
    assert_eq!(invalid_param(wire::retrieve(&json!({"query": "q", "retrieval_model": []}))), "retrieval_model must be a JSON object");
}

#[test]
fn pages_keywords_and_metadata_views() {
    let q = |pairs: &[(&str, &str)]| -> HashMap<String, String> { pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect() };
    let p = wire::page(&q(&[])).expect("defaults");
    assert_eq!((p.page, p.limit), (1, 20));
    let p = wire::page(&q(&[("page", "3"), ("limit", "500")])).expect("clamped");
    assert_eq!((p.page, p.limit), (3, 100));
    assert_eq!(invalid_param(wire::page(&q(&[("page", "0")]))), "page must be a positive integer, not \"0\"");
    assert_eq!(invalid_param(wire::page(&q(&[("limit", "-1")]))), "limit must be a positive integer, not \"-1\"");
    assert_eq!(invalid_param(wire::page(&q(&[("limit", "ten")]))), "limit must be a positive integer, not \"ten\"");
    assert_eq!(wire::keyword(&q(&[("keyword", " ")])).expect("blank"), None);
    assert_eq!(wire::keyword(&q(&[("keyword", "报警")])).expect("kw"), Some("报警".into()));
    assert_eq!(invalid_param(wire::keyword(&q(&[("keyword", &"k".repeat(256))]))), "keyword must be at most 255 characters");
    assert_eq!(wire::metadata_view(&q(&[])).expect("default"), MetadataView::All);
    assert_eq!(wire::metadata_view(&q(&[("metadata", "only")])).expect("only"), MetadataView::Only);
    let (status, code, message) = mapped(wire::metadata_view(&q(&[("metadata", "some")])).unwrap_err());
    assert_eq!((status, code, message.as_str()), (400, "invalid_metadata", "Invalid metadata value: some"));
}

#[test]
fn uploaded_file_names_keep_only_their_last_component() {
    assert_eq!(wire::upload_name("manual.pdf").expect("plain"), Some("manual.pdf".into()));
    assert_eq!(wire::upload_name("../../etc/passwd").expect("traversal"), Some("passwd".into()));
    assert_eq!(wire::upload_name("C:\\Users\\op\\SOP 1.docx").expect("windows"), Some("SOP 1.docx".into()));
    assert_eq!(wire::upload_name("/abs/报警表.csv").expect("cjk"), Some("报警表.csv".into()));
    for nothing in ["dir/", "..", "a/..", ".", "  ", "x/ "] {
        assert_eq!(wire::upload_name(nothing).expect("no name"), None, "{nothing:?}");
    }
    assert_eq!(invalid_param(wire::upload_name("a\u{0}b.txt")), "the file name contains control characters");
    assert_eq!(invalid_param(wire::upload_name(&format!("{}.txt", "n".repeat(252)))), "the file name must be at most 255 characters");
}

#[test]
fn form_data_is_a_json_object() {
    assert_eq!(wire::form_data(None).expect("absent"), json!({}));
    assert_eq!(wire::form_data(Some(r#"{"process_rule": {"mode": "automatic"}}"#)).expect("ok")["process_rule"]["mode"], "automatic");
    assert_eq!(invalid_param(wire::form_data(Some("[1]"))), "data must be a JSON object");
    assert!(invalid_param(wire::form_data(Some("{"))).starts_with("data is not valid JSON: "));
}

// ---- multipart forms --------------------------------------------------------

const BOUNDARY: &str = "XyZ";

/// A multipart body of `(field name, file name, content)` parts.
fn form(parts: &[(&str, Option<&str>, &[u8])]) -> (HeaderMap, Full<Bytes>) {
    let mut body = Vec::new();
    for (name, file, content) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match file {
            Some(f) => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: text/plain\r\n\r\n").as_bytes(),
            ),
            None => body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
        }
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(&format!("multipart/form-data; boundary={BOUNDARY}")).expect("header"));
    (headers, Full::new(Bytes::from(body)))
}

fn read(parts: &[(&str, Option<&str>, &[u8])], limit: u64) -> Result<FileForm, ApiError> {
    let (headers, body) = form(parts);
    tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(read_form(&headers, body, limit))
}

fn refused(parts: &[(&str, Option<&str>, &[u8])], limit: u64) -> (u16, &'static str, String) {
    match read(parts, limit) {
        Err(e) => mapped(e),
        Ok(f) => panic!("accepted a form with file {:?}", f.file.map(|(n, _)| n)),
    }
}

#[test]
fn a_file_form_yields_the_file_and_its_data() {
    let f = read(&[("data", None, br#"{"doc_form": "text_model"}"#), ("file", Some("../../secret/manual.txt"), b"hello")], 10).expect("ok");
    let (name, bytes) = f.file.expect("file");
    assert_eq!((name.as_str(), &bytes[..]), ("manual.txt", &b"hello"[..]));
    assert_eq!(f.data, json!({"doc_form": "text_model"}));
    // Exactly at the cap is allowed.
    assert!(read(&[("file", Some("a.txt"), b"0123456789")], 10).is_ok());
    // No file: the route answers no_file_uploaded.
    assert!(read(&[("data", None, b"{}")], 10).expect("no file").file.is_none());
}

#[test]
fn bad_file_forms_get_difys_errors() {
    assert_eq!(refused(&[("file", Some("a.txt"), b"0123456789X")], 10).0, 413);
    assert_eq!(refused(&[("file", Some("a.txt"), b"0123456789X")], 10).1, "file_too_large");
    assert_eq!(refused(&[("file", Some("a.txt"), b"a"), ("file", Some("b.txt"), b"b")], 10).1, "too_many_files");
    assert_eq!(refused(&[("file", Some("a.txt"), b"a"), ("other", Some("b.txt"), b"b")], 10).1, "too_many_files");
    assert_eq!(refused(&[("file", Some(""), b"a")], 10).1, "filename_not_exists_error");
    let (status, code, _) = refused(&[("file", Some("../.."), b"a")], 10);
    assert_eq!((status, code), (400, "invalid_param"));
    assert_eq!(refused(&[("file", Some("a.txt"), b"a"), ("data", None, b"[]")], 10).2, "data must be a JSON object");
    let big = vec![b' '; (MAX_DATA_FIELD_BYTES + 1) as usize];
    assert_eq!(
        refused(&[("data", None, &big), ("file", Some("a.txt"), b"a")], 10).2,
        format!("data is longer than {MAX_DATA_FIELD_BYTES} bytes")
    );
    // Not multipart at all: there is no file.
    let no_form = tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(read_form(
        &HeaderMap::new(),
        Full::new(Bytes::from_static(b"{}")),
        10,
    ));
    assert_eq!(mapped(no_form.err().expect("refused")).1, "no_file_uploaded");
}

// ---- errors -----------------------------------------------------------------

#[test]
fn knowledge_errors_map_to_difys_status_and_code() {
    let code = |e: ApiError| {
        let m = e.mapped();
        (m.status.as_u16(), m.code, m.retry_after)
    };
    assert_eq!(code(ApiError::KnowledgeUnavailable), (503, "provider_not_initialize", Some(5)));
    assert_eq!(mapped(ApiError::KnowledgeUnavailable).2, "Knowledge base is not available");
    assert_eq!(code(KnowledgeError::InvalidParam("x".into()).into()), (400, "invalid_param", None));
    assert_eq!(code(KnowledgeError::DatasetNotFound.into()), (404, "not_found", None));
    assert_eq!(mapped(KnowledgeError::DatasetNotFound.into()).2, "Dataset not found.");
    assert_eq!(code(KnowledgeError::DocumentNotFound.into()), (404, "not_found", None));
    assert_eq!(code(KnowledgeError::SegmentNotFound.into()), (404, "not_found", None));
    assert_eq!(code(KnowledgeError::DatasetNameDuplicate.into()), (409, "dataset_name_duplicate", None));
    assert_eq!(code(KnowledgeError::UnsupportedFileType("exe".into()).into()), (415, "unsupported_file_type", None));
    assert_eq!(code(KnowledgeError::FileTooLarge { size: 2, limit: 1 }.into()), (413, "file_too_large", None));
    assert_eq!(code(KnowledgeError::EmptyFile.into()), (400, "empty_file", None));
    assert_eq!(code(KnowledgeError::DocumentIndexing.into()), (400, "document_indexing", None));
    assert_eq!(code(KnowledgeError::DatasetInUse.into()), (409, "dataset_in_use", None));
    assert_eq!(code(KnowledgeError::EmbeddingUnavailable("loading".into()).into()), (503, "provider_not_initialize", Some(5)));
    let mismatch = KnowledgeError::EmbeddingModelMismatch { dataset: DS.into(), stored: "a".into(), loaded: "b".into() };
    assert_eq!(code(mismatch.into()), (409, "embedding_model_mismatch", None));
    assert_eq!(code(KnowledgeError::QueueFull(64).into()), (429, "too_many_requests", Some(5)));
    assert_eq!(code(KnowledgeError::Store(crate::store::StoreError::Busy).into()), (503, "service_unavailable", Some(1)));
    let internal = mapped(KnowledgeError::Internal("/var/lib/edgeai/knowledge/x.arrow: EIO".into()).into());
    assert_eq!((internal.0, internal.1), (500, "internal_server_error"));
    assert!(!internal.2.contains("/var/lib"), "{}", internal.2);
}

// ---- response shapes --------------------------------------------------------

#[test]
fn a_dataset_has_difys_detail_fields() {
    let v = wire::dataset_json(&dataset());
    // api/fields/dataset_fields.py DatasetDetailResponse.
    let dify = set(&[
        "id",
        "name",
        "description",
        "provider",
        "permission",
        "data_source_type",
        "indexing_technique",
        "app_count",
        "document_count",
        "word_count",
        "created_by",
        "author_name",
        "created_at",
        "updated_by",
        "updated_at",
        "embedding_model",
        "embedding_model_provider",
        "embedding_available",
        "retrieval_model_dict",
        "summary_index_setting",
        "tags",
        "doc_form",
        "external_knowledge_info",
        "external_retrieval_model",
        "doc_metadata",
        "built_in_field_enabled",
        "pipeline_id",
        "runtime_mode",
        "chunk_structure",
        "icon_info",
        "is_published",
        "total_documents",
        "total_available_documents",
        "enable_api",
        "is_multimodal",
    ]);
    assert_eq!(keys(&v), dify);
    assert_eq!(v["created_at"], json!(1_796_000_000));
    assert_eq!(v["indexing_technique"], "high_quality");
    assert_eq!(v["embedding_model"], "local:multilingual-e5-small@0123abcd");
    // The stored retrieval model over Dify's defaults, Dify's keys only.
    assert_eq!(
        v["retrieval_model_dict"],
        json!({"search_method": "hybrid_search", "reranking_enable": false, "reranking_mode": null,
               "reranking_model": {"reranking_provider_name": "", "reranking_model_name": ""},
               "weights": {"weight_type": "customized"}, "top_k": 5, "score_threshold_enabled": false, "score_threshold": null})
    );
    let mut economy = dataset();
    economy.indexing_technique = IndexingTechnique::Economy;
    economy.retrieval_model = None;
    economy.embedding_model = None;
    economy.document_count = 0;
    let v = wire::dataset_json(&economy);
    assert_eq!(v["retrieval_model_dict"]["search_method"], "keyword_search");
    assert_eq!(v["retrieval_model_dict"]["top_k"], 2);
    assert_eq!((v["embedding_model_provider"].clone(), v["data_source_type"].clone()), (Value::Null, Value::Null));
    let page = Paged { data: vec![dataset()], total: 21, has_more: true, page: 1, limit: 20 };
    let v = wire::paged_json(&page, wire::dataset_json);
    assert_eq!(keys(&v), set(&["data", "has_more", "limit", "total", "page"]));
    assert_eq!((v["total"].clone(), v["has_more"].clone(), v["data"][0]["id"].clone()), (json!(21), json!(true), json!(DS)));
}

#[test]
fn a_document_has_difys_fields() {
    let d = document();
    let v = wire::document_json(&d);
    // api/fields/document_fields.py DocumentResponse.
    let dify = set(&[
        "id",
        "position",
        "data_source_type",
        "data_source_info",
        "data_source_detail_dict",
        "dataset_process_rule_id",
        "name",
        "created_from",
        "created_by",
        "created_at",
        "tokens",
        "indexing_status",
        "error",
        "enabled",
        "disabled_at",
        "disabled_by",
        "archived",
        "display_status",
        "word_count",
        "hit_count",
        "doc_form",
        "doc_metadata",
        "summary_index_status",
        "need_summary",
    ]);
    assert_eq!(keys(&v), dify);
    assert_eq!((v["indexing_status"].clone(), v["display_status"].clone()), (json!("completed"), json!("available")));
    assert_eq!(v["data_source_detail_dict"], json!({"upload_file": {"name": "alarm.pdf", "size": 4096, "extension": "pdf"}}));
    let created = wire::document_and_batch_json(&d);
    assert_eq!(keys(&created), set(&["document", "batch"]));
    assert_eq!(created["batch"], "20261130005300123456");
    for (status, enabled, display) in [
        (IndexingStatus::Waiting, true, "queuing"),
        (IndexingStatus::Parsing, true, "indexing"),
        (IndexingStatus::Splitting, true, "indexing"),
        (IndexingStatus::Indexing, true, "indexing"),
        (IndexingStatus::Paused, true, "paused"),
        (IndexingStatus::Error, true, "error"),
        (IndexingStatus::Completed, false, "disabled"),
    ] {
        let d = DocumentRecord { status, enabled, ..document() };
        assert_eq!(wire::document_json(&d)["display_status"], display, "{status:?}");
    }
}

#[test]
fn a_document_detail_follows_the_metadata_view() {
    let d = document();
    let all = wire::document_detail_json(&d, MetadataView::All);
    let without = set(&[
        "id",
        "position",
        "data_source_type",
        "data_source_info",
        "dataset_process_rule_id",
        "dataset_process_rule",
        "document_process_rule",
        "name",
        "created_from",
        "created_by",
        "created_at",
        "tokens",
        "indexing_status",
        "completed_at",
        "updated_at",
        "indexing_latency",
        "error",
        "enabled",
        "disabled_at",
        "disabled_by",
        "archived",
        "segment_count",
        "average_segment_length",
        "hit_count",
        "display_status",
        "doc_form",
        "doc_language",
    ]);
    let mut with = without.clone();
    with.extend(set(&["doc_type", "doc_metadata"]));
    assert_eq!(keys(&all), with);
    assert_eq!(keys(&wire::document_detail_json(&d, MetadataView::Without)), without);
    assert_eq!(wire::document_detail_json(&d, MetadataView::Only), json!({"id": DOC, "doc_type": null, "doc_metadata": []}));
    assert_eq!((all["indexing_latency"].clone(), all["segment_count"].clone()), (json!(4.0), json!(3)));
    assert_eq!(all["average_segment_length"], json!(200.0));
    assert_eq!(all["document_process_rule"], json!({"mode": "automatic"}));
}

#[test]
fn indexing_status_has_difys_fields() {
    let v = wire::document_status_json(&DocumentRecord { status: IndexingStatus::Indexing, completed_at: None, ..document() });
    assert_eq!(
        v,
        json!({"id": DOC, "indexing_status": "indexing", "processing_started_at": 1_796_000_001,
               "parsing_completed_at": 1_796_000_002, "cleaning_completed_at": 1_796_000_002,
               "splitting_completed_at": 1_796_000_003, "completed_at": null, "paused_at": null, "error": null,
               "stopped_at": null, "completed_segments": 3, "total_segments": 3})
    );
}

#[test]
fn a_segment_has_difys_fields() {
    let v = wire::segment_json(&segment());
    // api/fields/segment_fields.py SegmentResponse.
    let dify = set(&[
        "id",
        "position",
        "document_id",
        "content",
        "sign_content",
        "answer",
        "word_count",
        "tokens",
        "keywords",
        "index_node_id",
        "index_node_hash",
        "hit_count",
        "enabled",
        "disabled_at",
        "disabled_by",
        "status",
        "created_by",
        "created_at",
        "updated_at",
        "updated_by",
        "indexing_at",
        "completed_at",
        "error",
        "stopped_at",
        "child_chunks",
        "attachments",
        "summary",
    ]);
    assert_eq!(keys(&v), dify);
    assert_eq!(v["answer"], Value::Null);
    assert_eq!((v["index_node_id"].clone(), v["completed_at"].clone()), (json!(SEG), json!(1_796_000_004)));
    let page = Paged { data: vec![segment()], total: 1, has_more: false, page: 1, limit: 20 };
    assert_eq!(keys(&wire::segment_page_json(&page)), set(&["data", "doc_form", "has_more", "limit", "total", "page"]));
    let written = wire::segment_data_json(json!([]));
    assert_eq!(written, json!({"data": [], "doc_form": "text_model"}));
}

#[test]
fn a_retrieve_record_is_difys_hit_testing_record() {
    let hit = Hit { segment: segment(), document_name: "alarm.pdf".into(), dataset_name: "Manuals".into(), score: 0.75 };
    // api/fields/hit_testing_fields.py HitTestingRecord, field for field.
    assert_eq!(
        wire::hit_json(&hit),
        json!({
            "segment": {
                "id": SEG, "position": 2, "document_id": DOC, "content": "清除PLC报警: press RESET",
                "sign_content": "清除PLC报警: press RESET", "answer": null, "word_count": 20, "tokens": 12,
                "keywords": ["PLC"], "index_node_id": SEG, "index_node_hash": "ab".repeat(32), "hit_count": 4,
                "enabled": true, "disabled_at": null, "disabled_by": null, "status": "completed", "created_by": "edgeai",
                "created_at": 1_796_000_003, "indexing_at": 1_796_000_003, "completed_at": 1_796_000_004, "error": null,
                "stopped_at": null,
                "document": {"id": DOC, "data_source_type": "upload_file", "name": "alarm.pdf", "doc_type": null, "doc_metadata": null},
            },
            "child_chunks": [], "score": 0.75, "tsne_position": null, "files": [], "summary": null,
        })
    );
}
