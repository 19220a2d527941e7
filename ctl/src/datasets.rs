//! `edgeaictl datasets list|create|show|delete|docs|rm-doc|search`: Dify's
//! Knowledge API under `/admin/v1/datasets` (no dataset key on the admin
//! socket), and the resolution of a DATASET or DOC argument (an id, or an
//! exact name looked up through the list's `keyword` filter).
//!
//! Owns: what these commands print. Must not: choose exit codes (see
//! [`crate::error`]); `ingest` lives in [`crate::ingest`].

use crate::cli::SearchMethod;
use crate::commands::print;
use crate::error::CtlError;
use crate::{paths, render};
use edgeai_common::datasets::{CreateDataset, Dataset, Document, DocumentDetail, Page, RetrieveRequest, RetrieveResponse};
use edgeai_common::{ClientError, UnixClient};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// Most pages read of one list (100 items each), against a daemon that
/// would say `has_more` for ever.
const MAX_PAGES: u32 = 10_000;

pub async fn list(client: &UnixClient, json: bool) -> Result<(), CtlError> {
    if json {
        let all: Vec<Value> = all_pages(client, |page| paths::datasets_page(None, page)).await?;
        return print_json(&json!({"data": all, "total": all.len()}));
    }
    let all: Vec<Dataset> = all_pages(client, |page| paths::datasets_page(None, page)).await?;
    print(&render::datasets(&all))
}

/// Prints only the new dataset's id on stdout (for `DS=$(…)`).
pub async fn create(client: &UnixClient, name: String, description: Option<String>, economy: bool, json: bool) -> Result<(), CtlError> {
    let technique = if economy { "economy" } else { "high_quality" };
    let request = CreateDataset { name, description, indexing_technique: technique.to_owned() };
    if json {
        return print_json(&client.post_json::<_, Value>(&paths::datasets(), &request).await?);
    }
    let d: Dataset = client.post_json(&paths::datasets(), &request).await?;
    eprintln!("created dataset {:?} ({technique})", d.name);
    print(&format!("{}\n", d.id))
}

pub async fn show(client: &UnixClient, dataset: &str, json: bool) -> Result<(), CtlError> {
    let d = resolve_dataset(client, dataset).await?;
    if json {
        return print_json(&client.get::<Value>(&paths::dataset(&d.id)).await?);
    }
    print(&render::dataset(&d))
}

pub async fn delete(client: &UnixClient, dataset: &str, json: bool) -> Result<(), CtlError> {
    let d = resolve_dataset(client, dataset).await?;
    client.delete(&paths::dataset(&d.id)).await?;
    if json {
        return print_json(&json!({"id": d.id, "name": d.name, "deleted": true}));
    }
    print(&format!("deleted dataset {:?} ({})\n", d.name, d.id))
}

/// Queues every document of a dataset for indexing again (admin route).
pub async fn reindex(client: &UnixClient, dataset: &str, json: bool) -> Result<(), CtlError> {
    let d = resolve_dataset(client, dataset).await?;
    let answer: Value = client.post_json(&format!("{}/reindex", paths::dataset(&d.id)), &json!({})).await?;
    if json {
        return print_json(&answer);
    }
    let n = answer["documents"].as_array().map_or(0, Vec::len);
    print(&format!("re-indexing {n} documents of {:?} ({}); follow with `edgeaictl datasets docs {}`\n", d.name, d.id, d.id))
}

/// Each document with its segment count, which only a document's detail says.
pub async fn docs(client: &UnixClient, dataset: &str, json: bool) -> Result<(), CtlError> {
    let d = resolve_dataset(client, dataset).await?;
    let listed: Vec<Value> = all_pages(client, |page| paths::documents_page(&d.id, None, page)).await?;
    let mut rows = Vec::with_capacity(listed.len());
    for mut raw in listed {
        let doc: Document = decode(&paths::documents_page(&d.id, None, 1), raw.clone())?;
        let detail: DocumentDetail = client.get(&paths::document(&d.id, &doc.id)).await?;
        if let Value::Object(m) = &mut raw {
            m.insert("segment_count".into(), json!(detail.segment_count));
        }
        rows.push((raw, doc, detail.segment_count));
    }
    if json {
        let data: Vec<&Value> = rows.iter().map(|(raw, _, _)| raw).collect();
        return print_json(&json!({"dataset": {"id": d.id, "name": d.name}, "data": data, "total": data.len()}));
    }
    let table: Vec<(Document, u64)> = rows.into_iter().map(|(_, doc, n)| (doc, n)).collect();
    print(&render::documents(&table))
}

pub async fn rm_doc(client: &UnixClient, dataset: &str, doc: &str, json: bool) -> Result<(), CtlError> {
    let d = resolve_dataset(client, dataset).await?;
    let document = resolve_document(client, &d.id, doc).await?;
    client.delete(&paths::document(&d.id, &document.id)).await?;
    if json {
        return print_json(&json!({"id": document.id, "name": document.name, "dataset": d.id, "deleted": true}));
    }
    print(&format!("deleted document {:?} ({}) of dataset {:?}\n", document.name, document.id, d.name))
}

pub async fn search(
    client: &UnixClient,
    dataset: &str,
    query: String,
    method: Option<SearchMethod>,
    top_k: Option<u32>,
    json: bool,
) -> Result<(), CtlError> {
    let d = resolve_dataset(client, dataset).await?;
    let request = RetrieveRequest { query, retrieval_model: retrieval_model(&d, method, top_k) };
    if json {
        return print_json(&client.post_json::<_, Value>(&paths::retrieve(&d.id), &request).await?);
    }
    let answer: RetrieveResponse = client.post_json(&paths::retrieve(&d.id), &request).await?;
    if answer.records.is_empty() {
        eprintln!("no segment of {:?} matches", d.name);
        return Ok(());
    }
    print(&render::hits(&answer.records))
}

/// The dataset's own retrieval settings with `--method`/`--top-k` over
/// them; `None` (the dataset's settings apply) when neither is given.
fn retrieval_model(d: &Dataset, method: Option<SearchMethod>, top_k: Option<u32>) -> Option<Value> {
    if method.is_none() && top_k.is_none() {
        return None;
    }
    let mut model = match &d.retrieval_model_dict {
        Some(Value::Object(m)) => m.clone(),
        _ => serde_json::Map::new(),
    };
    if let Some(m) = method {
        model.insert("search_method".into(), json!(m.wire_name()));
    }
    if let Some(k) = top_k {
        model.insert("top_k".into(), json!(k));
    }
    Some(Value::Object(model))
}

/// A dataset by id, else by exact name.
pub async fn resolve_dataset(client: &UnixClient, arg: &str) -> Result<Dataset, CtlError> {
    if looks_like_id(arg) {
        match client.get::<Dataset>(&paths::dataset(arg)).await {
            Ok(d) => return Ok(d),
            Err(ClientError::Api { status: 404, .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let named: Vec<Dataset> = all_pages(client, |page| paths::datasets_page(Some(arg.trim()), page)).await?;
    pick("dataset", arg, named, |d| (&d.name, &d.id))
}

/// A document of `dataset` by id, else by exact name.
pub async fn resolve_document(client: &UnixClient, dataset: &str, arg: &str) -> Result<Document, CtlError> {
    if looks_like_id(arg) {
        match client.get::<Document>(&paths::document(dataset, arg)).await {
            Ok(d) => return Ok(d),
            Err(ClientError::Api { status: 404, .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let named: Vec<Document> = all_pages(client, |page| paths::documents_page(dataset, Some(arg.trim()), page)).await?;
    pick("document", arg, named, |d| (&d.name, &d.id))
}

/// The one item whose name is `arg` (trimmed, as the daemon keeps names).
fn pick<T>(what: &'static str, arg: &str, items: Vec<T>, name_id: impl Fn(&T) -> (&String, &String)) -> Result<T, CtlError> {
    let wanted = arg.trim();
    let mut exact: Vec<T> = items.into_iter().filter(|i| name_id(i).0 == wanted).collect();
    match exact.len() {
        0 => Err(CtlError::NotFound { what, name: arg.to_owned() }),
        1 => Ok(exact.remove(0)),
        _ => Err(CtlError::Ambiguous { what, name: arg.to_owned(), ids: exact.iter().map(|i| name_id(i).1.clone()).collect() }),
    }
}

/// Dify's ids are UUIDs: 36 characters, hex digits and four dashes.
fn looks_like_id(s: &str) -> bool {
    s.len() == 36 && s.char_indices().all(|(i, c)| if matches!(i, 8 | 13 | 18 | 23) { c == '-' } else { c.is_ascii_hexdigit() })
}

/// Every item of a paged list, following `has_more`.
async fn all_pages<T: DeserializeOwned>(client: &UnixClient, path: impl Fn(u32) -> String) -> Result<Vec<T>, CtlError> {
    let mut items = Vec::new();
    for page in 1..=MAX_PAGES {
        let p: Page<T> = client.get(&path(page)).await?;
        let more = p.has_more && !p.data.is_empty();
        items.extend(p.data);
        if !more {
            break;
        }
    }
    Ok(items)
}

fn decode<T: DeserializeOwned>(request: &str, v: Value) -> Result<T, CtlError> {
    serde_json::from_value(v).map_err(|source| ClientError::Decode { request: format!("GET {request}"), source }.into())
}

pub fn print_json(value: &Value) -> Result<(), CtlError> {
    print(&format!("{value:#}\n"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;

    fn ds(id: &str, name: &str) -> Dataset {
        serde_json::from_value(json!({"id": id, "name": name, "indexing_technique": "high_quality", "document_count": 0,
            "word_count": 0, "created_at": 0, "retrieval_model_dict": {"search_method": "semantic_search", "top_k": 2,
            "weights": {"vector_setting": {"vector_weight": 0.6}}}}))
        .unwrap()
    }

    #[test]
    fn pick_wants_exactly_one_exact_name() {
        let items = vec![ds("a", "manuals"), ds("b", "manuals-old"), ds("c", "Manuals")];
        assert_eq!(pick("dataset", " manuals ", items.clone(), |d| (&d.name, &d.id)).unwrap().id, "a");
        let err = pick("dataset", "manual", items.clone(), |d| (&d.name, &d.id)).unwrap_err();
        assert_eq!(err.to_string(), "no dataset is named \"manual\" or has that id");
        let twice = vec![ds("a", "m"), ds("b", "m")];
        let err = pick("dataset", "m", twice, |d| (&d.name, &d.id)).unwrap_err();
        assert_eq!(err.to_string(), "2 datasets are named \"m\" (a, b): give the id");
    }

    #[test]
    fn ids_are_uuids() {
        assert!(looks_like_id("1f0c2a9e-4b7d-4c1e-9a3f-0123456789ab"));
        assert!(!looks_like_id("plant-manuals"));
        assert!(!looks_like_id("1f0c2a9e-4b7d-4c1e-9a3f-0123456789aZ"));
        assert!(!looks_like_id("1f0c2a9e04b7d-4c1e-9a3f-0123456789ab"));
    }

    #[test]
    fn search_options_go_over_the_datasets_settings() {
        let d = ds("a", "m");
        assert_eq!(retrieval_model(&d, None, None), None);
        let m = retrieval_model(&d, Some(SearchMethod::Hybrid), None).unwrap();
        assert_eq!(m["search_method"], "hybrid_search");
        assert_eq!(m["top_k"], 2);
        assert_eq!(m["weights"]["vector_setting"]["vector_weight"], 0.6);
        let m = retrieval_model(&d, None, Some(9)).unwrap();
        assert_eq!((m["search_method"].as_str(), m["top_k"].as_u64()), (Some("semantic_search"), Some(9)));
    }
}
