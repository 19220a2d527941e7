//! Knowledge bases' metadata and full-text index (schema v4): datasets,
//! their documents, the documents' segments and `segments_fts`.
//!
//! Owns: those tables, the derived text the full-text index holds (every
//! CJK character and every pair of neighbouring CJK characters is a token,
//! so Chinese is found by substring) and the FTS5 query built from a
//! user's words (every term quoted: no user text is ever FTS5 syntax).
//! Must not touch: vectors (`knowledge::vectors` keeps them in files, keyed
//! by a segment's rowid), extraction, chunking, embedding.
//!
//! Visibility: a segment is inserted `indexing` and is searchable (through
//! [`Store::fulltext_search`] and [`Store::segments_by_rowids`]) only once
//! [`Store::complete_document`] flips it to `completed`, in the same
//! transaction that completes its document. A crash before that leaves the
//! segment invisible and its document unfinished, reported by
//! [`Store::documents_to_resume`] so the service can queue it again. Every
//! write of a segment writes its `segments_fts` row in the same transaction.

use rusqlite::{params, Connection, OptionalExtension, Row};
use sha2::{Digest, Sha256};

use super::error::{sql, StoreError};
use super::workflows::like_pattern;
use super::{now, require_json, require_limit, require_non_empty, Store};
use crate::knowledge::{DatasetRecord, DocumentRecord, DocumentSource, IndexingStatus, IndexingTechnique, SegmentId, SegmentRecord};

stored_as_text!(IndexingTechnique, "indexing technique", HighQuality => "high_quality", Economy => "economy");

stored_as_text!(
    IndexingStatus,
    "indexing status",
    Waiting => "waiting",
    Parsing => "parsing",
    Splitting => "splitting",
    Indexing => "indexing",
    Completed => "completed",
    Error => "error",
    Paused => "paused",
);

/// The statuses of a document whose indexing has not finished.
const UNFINISHED: &str = "('waiting', 'parsing', 'splitting', 'indexing')";

/// At most this many terms of a full-text query are searched for.
const MAX_QUERY_TERMS: usize = 32;

/// Full-text search ranks this many index matches per hit asked for (at
/// least [`FULLTEXT_MIN_CANDIDATES`]) before checking which are visible.
const FULLTEXT_CANDIDATES_PER_HIT: i64 = 8;
const FULLTEXT_MIN_CANDIDATES: i64 = 64;

/// A dataset to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDatasetRow {
    pub name: String,
    pub description: String,
    pub indexing_technique: IndexingTechnique,
    /// Dify's `retrieval_model` object (JSON text).
    pub retrieval_model: Option<String>,
}

/// Changes to a dataset; `None` keeps a field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatasetChanges {
    pub name: Option<String>,
    pub description: Option<String>,
    pub indexing_technique: Option<IndexingTechnique>,
    /// Dify's `retrieval_model` object (JSON text).
    pub retrieval_model: Option<String>,
}

/// A document to add to a dataset (it starts `waiting`), or the new
/// content of one being replaced.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDocumentRow {
    pub name: String,
    pub source: DocumentSource,
    /// The batch id `create-by-*` / `update-by-*` returns.
    pub batch: String,
    /// Dify's `process_rule` (JSON text).
    pub process_rule: String,
}

/// A step of a document's indexing; each sets Dify's timestamp of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentStep {
    /// Extraction starts (`processing_started_at`; later steps' times and
    /// any error are cleared, so a resumed document starts clean).
    Parsing,
    /// Text extracted, being cut into segments (`parsing_completed_at`).
    Splitting,
    /// Segments written, being embedded (`splitting_completed_at`).
    Indexing,
    /// Indexing failed, for this reason.
    Error(String),
}

/// A segment to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSegment {
    pub content: String,
    /// Q&A answer, empty for text segments.
    pub answer: String,
    pub keywords: Vec<String>,
    pub word_count: i64,
    pub tokens: i64,
}

/// Changes to a segment; `None` keeps a field. A new content should come
/// with its new `word_count` and `tokens`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SegmentChanges {
    pub content: Option<String>,
    pub answer: Option<String>,
    pub keywords: Option<Vec<String>>,
    pub enabled: Option<bool>,
    pub word_count: Option<i64>,
    pub tokens: Option<i64>,
}

/// A search hit before the service loads it: a visible segment and its
/// search score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FulltextHit {
    pub segment: SegmentId,
    /// `x / (1 + x)` of `x = -bm25()`: in [0, 1), higher is better,
    /// ordered as bm25 orders.
    pub score: f32,
}

/// A visible segment with the names of its document and dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct VisibleSegment {
    pub segment: SegmentRecord,
    pub document_name: String,
    pub dataset_name: String,
}

const DATASET_COLUMNS: &str = "d.id, d.name, d.description, d.indexing_technique, d.embedding_model, d.embedding_dims, d.retrieval_model,
    (SELECT count(*) FROM documents x WHERE x.dataset_id = d.id),
    (SELECT coalesce(sum(x.word_count), 0) FROM documents x WHERE x.dataset_id = d.id),
    d.created_at, d.updated_at";

fn dataset_from_row(row: &Row<'_>) -> rusqlite::Result<DatasetRecord> {
    Ok(DatasetRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        description: row.get(2)?,
        indexing_technique: row.get(3)?,
        embedding_model: row.get(4)?,
        embedding_dims: row.get(5)?,
        retrieval_model: row.get(6)?,
        document_count: row.get(7)?,
        word_count: row.get(8)?,
        created_at: row.get(9)?,
        updated_at: row.get(10)?,
    })
}

const DOCUMENT_COLUMNS: &str = "id, dataset_id, position, name, source_kind, file_name, file_kind, file_size, batch, process_rule,
    status, error, enabled, word_count, tokens, completed_segments, total_segments, created_at,
    processing_started_at, parsing_completed_at, splitting_completed_at, completed_at, updated_at";

fn document_from_row(row: &Row<'_>) -> rusqlite::Result<DocumentRecord> {
    let kind: String = row.get(4)?;
    let source = match (kind.as_str(), row.get::<_, Option<String>>(5)?, row.get::<_, Option<String>>(6)?, row.get::<_, Option<i64>>(7)?) {
        ("text", None, None, None) => DocumentSource::Text,
        ("file", Some(name), Some(kind), Some(size)) => DocumentSource::File { name, kind, size },
        (kind, ..) => {
            let reason = format!("inconsistent document source of kind {kind:?}");
            return Err(rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, reason.into()));
        }
    };
    Ok(DocumentRecord {
        id: row.get(0)?,
        dataset_id: row.get(1)?,
        position: row.get(2)?,
        name: row.get(3)?,
        source,
        batch: row.get(8)?,
        process_rule: row.get(9)?,
        status: row.get(10)?,
        error: row.get(11)?,
        enabled: row.get(12)?,
        word_count: row.get(13)?,
        tokens: row.get(14)?,
        completed_segments: row.get(15)?,
        total_segments: row.get(16)?,
        created_at: row.get(17)?,
        processing_started_at: row.get(18)?,
        parsing_completed_at: row.get(19)?,
        splitting_completed_at: row.get(20)?,
        completed_at: row.get(21)?,
        updated_at: row.get(22)?,
    })
}

/// `source_kind, file_name, file_kind, file_size` of a source.
fn source_columns(source: &DocumentSource) -> (&'static str, Option<&str>, Option<&str>, Option<i64>) {
    match source {
        DocumentSource::Text => ("text", None, None, None),
        DocumentSource::File { name, kind, size } => ("file", Some(name), Some(kind), Some(*size)),
    }
}

const SEGMENT_COLUMNS: &str = "s.rowid, s.id, s.document_id, s.dataset_id, s.position, s.content, s.answer, s.keywords, s.word_count,
    s.tokens, s.hash, s.hit_count, s.enabled, s.status, s.created_at, s.updated_at";

fn segment_from_row(row: &Row<'_>) -> rusqlite::Result<SegmentRecord> {
    let keywords: String = row.get(7)?;
    let keywords = serde_json::from_str(&keywords)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(7, rusqlite::types::Type::Text, Box::new(e)))?;
    Ok(SegmentRecord {
        rowid: row.get(0)?,
        id: row.get(1)?,
        document_id: row.get(2)?,
        dataset_id: row.get(3)?,
        position: row.get(4)?,
        content: row.get(5)?,
        answer: row.get(6)?,
        keywords,
        word_count: row.get(8)?,
        tokens: row.get(9)?,
        hash: row.get(10)?,
        hit_count: row.get(11)?,
        enabled: row.get(12)?,
        status: row.get(13)?,
        created_at: row.get(14)?,
        updated_at: row.get(15)?,
    })
}

/// The condition that makes a segment `s` of document `d` visible to search.
const VISIBLE: &str = "s.status = 'completed' AND s.enabled AND d.enabled";

fn dataset_not_found(id: &str) -> StoreError {
    StoreError::NotFound { what: "dataset", id: id.to_owned() }
}

fn document_not_found(id: &str) -> StoreError {
    StoreError::NotFound { what: "document", id: id.to_owned() }
}

fn segment_not_found(id: &str) -> StoreError {
    StoreError::NotFound { what: "segment", id: id.to_owned() }
}

/// Checks a 1-based page number and a page size, and returns the offset.
fn page_offset(page: u32, limit: u32) -> Result<i64, StoreError> {
    require_limit(limit)?;
    if page == 0 {
        return Err(StoreError::InvalidArgument { field: "page", reason: "must be at least 1".into() });
    }
    Ok(i64::from(page - 1) * i64::from(limit))
}

/// A keyword as a `LIKE` pattern; empty means no filter.
fn keyword_pattern(keyword: Option<&str>) -> Option<String> {
    keyword.filter(|k| !k.is_empty()).map(like_pattern)
}

/// Rowids as the JSON array `json_each` reads.
fn rowid_list(rowids: &[SegmentId]) -> String {
    let mut text = String::from("[");
    for (i, id) in rowids.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&id.to_string());
    }
    text.push(']');
    text
}

fn content_hash(content: &str) -> String {
    format!("{:x}", Sha256::digest(content.as_bytes()))
}

/// Han, Hiragana, Katakana and Hangul: scripts written without spaces
/// between words, indexed one character per token.
fn is_cjk(c: char) -> bool {
    matches!(
        u32::from(c),
        0x1100..=0x11FF       // Hangul Jamo
            | 0x3040..=0x30FF // Hiragana, Katakana
            | 0x3130..=0x318F // Hangul compatibility Jamo
            | 0x31F0..=0x31FF // Katakana phonetic extensions
            | 0x3400..=0x4DBF // CJK extension A
            | 0x4E00..=0x9FFF // CJK unified ideographs
            | 0xA960..=0xA97F // Hangul Jamo extended A
            | 0xAC00..=0xD7FF // Hangul syllables, Jamo extended B
            | 0xF900..=0xFAFF // CJK compatibility ideographs
            | 0xFF66..=0xFF9F // half-width Katakana
            | 0x20000..=0x323AF // CJK extensions B and later
    )
}

/// The text the full-text index holds for a segment: content, answer and
/// keywords, where each run of CJK characters is written as its characters
/// and then its pairs of neighbouring characters, every one a token of its
/// own (`报警灯` → `报 警 灯 报警 警灯`): a query finds a Chinese substring
/// through single tokens, never a slower phrase match.
fn fts_text(content: &str, answer: &str, keywords: &[String]) -> String {
    let mut text = String::with_capacity(content.len() * 3 + answer.len() * 3);
    let mut run = Vec::new();
    for part in [content, answer].into_iter().chain(keywords.iter().map(String::as_str)) {
        for c in part.chars() {
            if is_cjk(c) {
                run.push(c);
            } else {
                push_cjk_run(&mut text, &mut run);
                text.push(c);
            }
        }
        push_cjk_run(&mut text, &mut run);
        text.push('\n');
    }
    text
}

/// Writes a CJK run's characters and pairs as tokens, and empties it.
fn push_cjk_run(text: &mut String, run: &mut Vec<char>) {
    if run.is_empty() {
        return;
    }
    for &c in run.iter() {
        text.push(' ');
        text.push(c);
    }
    for pair in run.windows(2) {
        text.push(' ');
        text.push(pair[0]);
        text.push(pair[1]);
    }
    text.push(' ');
    run.clear();
}

/// The FTS5 query for a user's words, `None` if it has no term.
///
/// Terms are runs of letters and digits (as the `unicode61` tokenizer cuts
/// them; it also folds case and diacritics) and, within a run of CJK
/// characters, each pair of neighbouring characters (`报警` is a token of
/// every text containing that substring), or the single character of a
/// one-character run. Every term is quoted, so nothing of the user's text
/// is FTS5 syntax (`AND`, `NEAR(`, `*`, `"` are plain words or
/// separators); terms are OR-ed and bm25 ranks the segments that match
/// more and rarer terms first.
fn fts_query(query: &str) -> Option<String> {
    fn flush_cjk(run: &mut Vec<char>, terms: &mut Vec<String>) {
        match run.len() {
            0 => {}
            1 => terms.push(run[0].to_string()),
            _ => terms.extend(run.windows(2).map(|w| w.iter().collect())),
        }
        run.clear();
    }
    fn flush_word(word: &mut String, terms: &mut Vec<String>) {
        if !word.is_empty() {
            terms.push(std::mem::take(word));
        }
    }
    let mut terms = Vec::new();
    let mut word = String::new();
    let mut run = Vec::new();
    for c in query.chars() {
        if is_cjk(c) {
            flush_word(&mut word, &mut terms);
            run.push(c);
        } else if c.is_alphanumeric() {
            flush_cjk(&mut run, &mut terms);
            word.push(c);
        } else {
            flush_word(&mut word, &mut terms);
            flush_cjk(&mut run, &mut terms);
        }
    }
    flush_word(&mut word, &mut terms);
    flush_cjk(&mut run, &mut terms);

    let mut seen = std::collections::HashSet::new();
    let quoted: Vec<String> =
        terms.into_iter().filter(|t| seen.insert(t.to_lowercase())).take(MAX_QUERY_TERMS).map(|t| format!("\"{t}\"")).collect();
    (!quoted.is_empty()).then(|| quoted.join(" OR "))
}

fn fts_insert(conn: &Connection, rowid: SegmentId, content: &str, answer: &str, keywords: &[String]) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT INTO segments_fts (rowid, text) VALUES (?1, ?2)")
        .and_then(|mut stmt| stmt.execute(params![rowid, fts_text(content, answer, keywords)]))
        .map(drop)
        .map_err(sql("index segment text"))
}

fn fts_delete(conn: &Connection, rowid: SegmentId) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM segments_fts WHERE rowid = ?1")
        .and_then(|mut stmt| stmt.execute([rowid]))
        .map(drop)
        .map_err(sql("unindex segment text"))
}

fn find_dataset(conn: &Connection, id: &str) -> Result<DatasetRecord, StoreError> {
    conn.prepare_cached(&format!("SELECT {DATASET_COLUMNS} FROM datasets d WHERE d.id = ?1"))
        .and_then(|mut stmt| stmt.query_row([id], dataset_from_row).optional())
        .map_err(sql("get dataset"))?
        .ok_or_else(|| dataset_not_found(id))
}

fn require_unique_name(conn: &Connection, name: &str, except: &str) -> Result<(), StoreError> {
    let taken = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM datasets WHERE name = ?1 AND id <> ?2)")
        .and_then(|mut stmt| stmt.query_row([name, except], |row| row.get::<_, bool>(0)))
        .map_err(sql("check dataset name"))?;
    if taken {
        return Err(StoreError::DuplicateName { what: "dataset", name: name.to_owned() });
    }
    Ok(())
}

/// A document by id alone (the ingestion worker's view).
fn find_document(conn: &Connection, id: &str) -> Result<DocumentRecord, StoreError> {
    conn.prepare_cached(&format!("SELECT {DOCUMENT_COLUMNS} FROM documents WHERE id = ?1"))
        .and_then(|mut stmt| stmt.query_row([id], document_from_row).optional())
        .map_err(sql("get document"))?
        .ok_or_else(|| document_not_found(id))
}

/// A document of a dataset (`NotFound` naming the dataset if it is unknown).
fn find_scoped_document(conn: &Connection, dataset_id: &str, id: &str) -> Result<DocumentRecord, StoreError> {
    let found = conn
        .prepare_cached(&format!("SELECT {DOCUMENT_COLUMNS} FROM documents WHERE id = ?1 AND dataset_id = ?2"))
        .and_then(|mut stmt| stmt.query_row([id, dataset_id], document_from_row).optional())
        .map_err(sql("get document"))?;
    match found {
        Some(document) => Ok(document),
        None => {
            find_dataset(conn, dataset_id)?;
            Err(document_not_found(id))
        }
    }
}

fn find_scoped_segment(conn: &Connection, dataset_id: &str, document_id: &str, id: &str) -> Result<SegmentRecord, StoreError> {
    let found = conn
        .prepare_cached(&format!("SELECT {SEGMENT_COLUMNS} FROM segments s WHERE s.id = ?1 AND s.document_id = ?2 AND s.dataset_id = ?3"))
        .and_then(|mut stmt| stmt.query_row([id, document_id, dataset_id], segment_from_row).optional())
        .map_err(sql("get segment"))?;
    match found {
        Some(segment) => Ok(segment),
        None => {
            find_scoped_document(conn, dataset_id, document_id)?;
            Err(segment_not_found(id))
        }
    }
}

/// Sets a document's segment counts, words and tokens from its segments.
fn refresh_document_counts(conn: &Connection, document_id: &str, now: i64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE documents SET
            total_segments = (SELECT count(*) FROM segments WHERE document_id = ?1),
            completed_segments = (SELECT count(*) FROM segments WHERE document_id = ?1 AND status = 'completed'),
            word_count = (SELECT coalesce(sum(word_count), 0) FROM segments WHERE document_id = ?1),
            tokens = (SELECT coalesce(sum(tokens), 0) FROM segments WHERE document_id = ?1),
            updated_at = ?2
          WHERE id = ?1",
    )
    .and_then(|mut stmt| stmt.execute(params![document_id, now]))
    .map(drop)
    .map_err(sql("count document segments"))
}

/// Deletes segments (and their index rows) chosen by `condition` on `s`
/// with `?1` bound to `key`; returns their rowids.
fn delete_segments_where(conn: &Connection, condition: &str, key: &str) -> Result<Vec<SegmentId>, StoreError> {
    let op = "delete segments";
    let rowids = conn
        .prepare(&format!("SELECT s.rowid FROM segments s WHERE {condition} ORDER BY s.rowid"))
        .and_then(|mut stmt| stmt.query_map([key], |row| row.get(0))?.collect::<Result<Vec<SegmentId>, _>>())
        .map_err(sql(op))?;
    for &rowid in &rowids {
        fts_delete(conn, rowid)?;
    }
    conn.execute(&format!("DELETE FROM segments AS s WHERE {condition}"), [key]).map_err(sql(op))?;
    Ok(rowids)
}

fn require_segment(segment: &NewSegment) -> Result<(), StoreError> {
    require_non_empty("content", &segment.content)?;
    if segment.word_count < 0 || segment.tokens < 0 {
        return Err(StoreError::InvalidArgument { field: "segment counts", reason: "word_count and tokens must not be negative".into() });
    }
    Ok(())
}

/// How many documents a previous run left mid-index (for [`Store::open`]).
pub(crate) fn count_unfinished(conn: &Connection) -> Result<u64, StoreError> {
    conn.query_row(&format!("SELECT count(*) FROM documents WHERE status IN {UNFINISHED}"), [], |row| row.get(0))
        .map_err(sql("count unfinished documents"))
}

impl Store {
    // ---- datasets ---------------------------------------------------------

    /// Creates a dataset; a name already taken is [`StoreError::DuplicateName`]
    /// (names are unique and compared exactly, as in Dify).
    pub async fn create_dataset(&self, new: NewDatasetRow) -> Result<DatasetRecord, StoreError> {
        require_non_empty("name", &new.name)?;
        if let Some(model) = &new.retrieval_model {
            require_json("retrieval_model", model)?;
        }
        let id = uuid::Uuid::new_v4().to_string();
        let dataset = self
            .write("create dataset", move |conn| {
                let op = "create dataset";
                let tx = conn.savepoint().map_err(sql(op))?;
                require_unique_name(&tx, &new.name, &id)?;
                let now = now();
                tx.execute(
                    "INSERT INTO datasets (id, name, description, indexing_technique, retrieval_model, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                    params![id, new.name, new.description, new.indexing_technique, new.retrieval_model, now],
                )
                .map_err(sql(op))?;
                let dataset = find_dataset(&tx, &id)?;
                tx.commit().map_err(sql(op))?;
                Ok(dataset)
            })
            .await?;
        tracing::info!(dataset_id = %dataset.id, name = %dataset.name, "created dataset");
        Ok(dataset)
    }

    /// One dataset with its document and word counts.
    pub async fn get_dataset(&self, id: &str) -> Result<DatasetRecord, StoreError> {
        let id = id.to_owned();
        self.read("get dataset", move |conn| find_dataset(conn, &id)).await
    }

    /// A page of datasets, newest first, whose name contains `keyword`
    /// (case-insensitive for ASCII), and how many match in all.
    pub async fn list_datasets(&self, page: u32, limit: u32, keyword: Option<&str>) -> Result<(Vec<DatasetRecord>, i64), StoreError> {
        let offset = page_offset(page, limit)?;
        let pattern = keyword_pattern(keyword);
        self.read("list datasets", move |conn| {
            let op = "list datasets";
            const WHERE: &str = "WHERE ?1 IS NULL OR d.name LIKE ?1 ESCAPE '\\'";
            let snapshot = conn.unchecked_transaction().map_err(sql(op))?;
            let total = snapshot
                .prepare_cached(&format!("SELECT count(*) FROM datasets d {WHERE}"))
                .and_then(|mut stmt| stmt.query_row([&pattern], |row| row.get(0)))
                .map_err(sql(op))?;
            let data = snapshot
                .prepare_cached(&format!(
                    "SELECT {DATASET_COLUMNS} FROM datasets d {WHERE} ORDER BY d.created_at DESC, d.rowid DESC LIMIT ?2 OFFSET ?3"
                ))
                .and_then(|mut stmt| stmt.query_map(params![pattern, limit, offset], dataset_from_row)?.collect::<Result<Vec<_>, _>>())
                .map_err(sql(op))?;
            Ok((data, total))
        })
        .await
    }

    /// Changes a dataset's name, description, indexing technique or
    /// default retrieval settings.
    pub async fn update_dataset(&self, id: &str, changes: DatasetChanges) -> Result<DatasetRecord, StoreError> {
        if let Some(name) = &changes.name {
            require_non_empty("name", name)?;
        }
        if let Some(model) = &changes.retrieval_model {
            require_json("retrieval_model", model)?;
        }
        let id = id.to_owned();
        self.write("update dataset", move |conn| {
            let op = "update dataset";
            let tx = conn.savepoint().map_err(sql(op))?;
            let old = find_dataset(&tx, &id)?;
            if let Some(name) = &changes.name {
                require_unique_name(&tx, name, &id)?;
            }
            tx.execute(
                "UPDATE datasets SET name = ?2, description = ?3, indexing_technique = ?4, retrieval_model = ?5, updated_at = ?6 WHERE id = ?1",
                params![
                    id,
                    changes.name.unwrap_or(old.name),
                    changes.description.unwrap_or(old.description),
                    changes.indexing_technique.unwrap_or(old.indexing_technique),
                    changes.retrieval_model.or(old.retrieval_model),
                    now()
                ],
            )
            .map_err(sql(op))?;
            let dataset = find_dataset(&tx, &id)?;
            tx.commit().map_err(sql(op))?;
            Ok(dataset)
        })
        .await
    }

    /// Records the embedding model (identity and dimensions) a dataset's
    /// vectors come from.
    pub async fn set_embedding_model(&self, id: &str, model: &str, dims: u32) -> Result<DatasetRecord, StoreError> {
        require_non_empty("embedding_model", model)?;
        let (id, model) = (id.to_owned(), model.to_owned());
        self.write("set embedding model", move |conn| {
            let changed = conn
                .execute(
                    "UPDATE datasets SET embedding_model = ?2, embedding_dims = ?3, updated_at = ?4 WHERE id = ?1",
                    params![id, model, dims, now()],
                )
                .map_err(sql("set embedding model"))?;
            if changed == 0 {
                return Err(dataset_not_found(&id));
            }
            find_dataset(conn, &id)
        })
        .await
    }

    /// Forgets the embedding model of a dataset (before a re-index with
    /// another model; its vector files are the caller's to remove).
    pub async fn clear_embedding_model(&self, id: &str) -> Result<DatasetRecord, StoreError> {
        let id = id.to_owned();
        self.write("clear embedding model", move |conn| {
            let changed = conn
                .execute(
                    "UPDATE datasets SET embedding_model = NULL, embedding_dims = NULL, updated_at = ?2 WHERE id = ?1",
                    params![id, now()],
                )
                .map_err(sql("clear embedding model"))?;
            if changed == 0 {
                return Err(dataset_not_found(&id));
            }
            find_dataset(conn, &id)
        })
        .await
    }

    /// Deletes a dataset with its documents, segments and their full-text
    /// rows; returns it as it was. Its vector files are the caller's.
    pub async fn delete_dataset(&self, id: &str) -> Result<DatasetRecord, StoreError> {
        let id = id.to_owned();
        let dataset = self
            .write("delete dataset", move |conn| {
                let op = "delete dataset";
                let tx = conn.savepoint().map_err(sql(op))?;
                let dataset = find_dataset(&tx, &id)?;
                delete_segments_where(&tx, "s.dataset_id = ?1", &id)?;
                tx.execute("DELETE FROM datasets WHERE id = ?1", [&id]).map_err(sql(op))?;
                tx.commit().map_err(sql(op))?;
                Ok(dataset)
            })
            .await?;
        tracing::info!(dataset_id = %dataset.id, name = %dataset.name, documents = dataset.document_count, "deleted dataset");
        Ok(dataset)
    }

    // ---- documents --------------------------------------------------------

    /// Adds a document to a dataset, `waiting`, at the next position.
    pub async fn insert_document(&self, dataset_id: &str, new: NewDocumentRow) -> Result<DocumentRecord, StoreError> {
        require_non_empty("name", &new.name)?;
        require_non_empty("batch", &new.batch)?;
        require_json("process_rule", &new.process_rule)?;
        let dataset_id = dataset_id.to_owned();
        let id = uuid::Uuid::new_v4().to_string();
        self.write("insert document", move |conn| {
            let op = "insert document";
            let tx = conn.savepoint().map_err(sql(op))?;
            find_dataset(&tx, &dataset_id)?;
            let (kind, file_name, file_kind, file_size) = source_columns(&new.source);
            let now = now();
            tx.execute(
                "INSERT INTO documents (id, dataset_id, position, name, source_kind, file_name, file_kind, file_size, batch, process_rule,
                                        status, created_at, updated_at)
                 VALUES (?1, ?2, (SELECT coalesce(max(position), 0) + 1 FROM documents WHERE dataset_id = ?2), ?3, ?4, ?5, ?6, ?7, ?8, ?9,
                         'waiting', ?10, ?10)",
                params![id, dataset_id, new.name, kind, file_name, file_kind, file_size, new.batch, new.process_rule, now],
            )
            .map_err(sql(op))?;
            let document = find_document(&tx, &id)?;
            tx.commit().map_err(sql(op))?;
            Ok(document)
        })
        .await
    }

    /// Replaces a document's content (`update-by-text`/`update-by-file`):
    /// its segments and their full-text rows go, it is `waiting` again with
    /// the new name, source, batch and rule, keeping its id, position and
    /// `enabled`. Returns it and the deleted segments' rowids (their vectors
    /// are to be tombstoned).
    pub async fn replace_document(
        &self,
        dataset_id: &str,
        id: &str,
        new: NewDocumentRow,
    ) -> Result<(DocumentRecord, Vec<SegmentId>), StoreError> {
        require_non_empty("name", &new.name)?;
        require_non_empty("batch", &new.batch)?;
        require_json("process_rule", &new.process_rule)?;
        let (dataset_id, id) = (dataset_id.to_owned(), id.to_owned());
        self.write("replace document", move |conn| {
            let op = "replace document";
            let tx = conn.savepoint().map_err(sql(op))?;
            find_scoped_document(&tx, &dataset_id, &id)?;
            let rowids = delete_segments_where(&tx, "s.document_id = ?1", &id)?;
            let (kind, file_name, file_kind, file_size) = source_columns(&new.source);
            tx.execute(
                "UPDATE documents SET name = ?2, source_kind = ?3, file_name = ?4, file_kind = ?5, file_size = ?6, batch = ?7,
                        process_rule = ?8, status = 'waiting', error = NULL, word_count = 0, tokens = 0, completed_segments = 0,
                        total_segments = 0, processing_started_at = NULL, parsing_completed_at = NULL,
                        splitting_completed_at = NULL, completed_at = NULL, updated_at = ?9
                  WHERE id = ?1",
                params![id, new.name, kind, file_name, file_kind, file_size, new.batch, new.process_rule, now()],
            )
            .map_err(sql(op))?;
            let document = find_document(&tx, &id)?;
            tx.commit().map_err(sql(op))?;
            Ok((document, rowids))
        })
        .await
    }

    /// One document of a dataset (`NotFound` names the dataset if it is
    /// unknown, else the document).
    pub async fn get_document(&self, dataset_id: &str, id: &str) -> Result<DocumentRecord, StoreError> {
        let (dataset_id, id) = (dataset_id.to_owned(), id.to_owned());
        self.read("get document", move |conn| find_scoped_document(conn, &dataset_id, &id)).await
    }

    /// A page of a dataset's documents, newest (highest position) first,
    /// whose name contains `keyword`, and how many match in all.
    pub async fn list_documents(
        &self,
        dataset_id: &str,
        page: u32,
        limit: u32,
        keyword: Option<&str>,
    ) -> Result<(Vec<DocumentRecord>, i64), StoreError> {
        let offset = page_offset(page, limit)?;
        let pattern = keyword_pattern(keyword);
        let dataset_id = dataset_id.to_owned();
        self.read("list documents", move |conn| {
            let op = "list documents";
            const WHERE: &str = "WHERE dataset_id = ?1 AND (?2 IS NULL OR name LIKE ?2 ESCAPE '\\')";
            let snapshot = conn.unchecked_transaction().map_err(sql(op))?;
            find_dataset(&snapshot, &dataset_id)?;
            let total = snapshot
                .prepare_cached(&format!("SELECT count(*) FROM documents {WHERE}"))
                .and_then(|mut stmt| stmt.query_row(params![dataset_id, pattern], |row| row.get(0)))
                .map_err(sql(op))?;
            let data = snapshot
                .prepare_cached(&format!("SELECT {DOCUMENT_COLUMNS} FROM documents {WHERE} ORDER BY position DESC LIMIT ?3 OFFSET ?4"))
                .and_then(|mut stmt| {
                    stmt.query_map(params![dataset_id, pattern, limit, offset], document_from_row)?.collect::<Result<Vec<_>, _>>()
                })
                .map_err(sql(op))?;
            Ok((data, total))
        })
        .await
    }

    /// The documents of one batch of a dataset, by position (empty if the
    /// batch is unknown; `NotFound` if the dataset is).
    pub async fn documents_by_batch(&self, dataset_id: &str, batch: &str) -> Result<Vec<DocumentRecord>, StoreError> {
        let (dataset_id, batch) = (dataset_id.to_owned(), batch.to_owned());
        self.read("documents by batch", move |conn| {
            let op = "documents by batch";
            let snapshot = conn.unchecked_transaction().map_err(sql(op))?;
            find_dataset(&snapshot, &dataset_id)?;
            snapshot
                .prepare_cached(&format!("SELECT {DOCUMENT_COLUMNS} FROM documents WHERE batch = ?1 AND dataset_id = ?2 ORDER BY position"))
                .and_then(|mut stmt| stmt.query_map([&batch, &dataset_id], document_from_row)?.collect::<Result<Vec<_>, _>>())
                .map_err(sql(op))
        })
        .await
    }

    /// Moves an unfinished document to its next indexing step. A document
    /// that is finished (`completed`, `error`, `paused`) is
    /// [`StoreError::NotPending`]; one deleted meanwhile is `NotFound`.
    pub async fn set_document_step(&self, id: &str, step: DocumentStep) -> Result<DocumentRecord, StoreError> {
        let id = id.to_owned();
        self.write("set document step", move |conn| {
            let op = "set document step";
            let now = now();
            // `error = ?3` in every step: only `Error` sets one, the others clear it.
            let (set, error) = match &step {
                DocumentStep::Parsing => (
                    "status = 'parsing', processing_started_at = ?2, parsing_completed_at = NULL,
                     splitting_completed_at = NULL, completed_at = NULL",
                    None,
                ),
                DocumentStep::Splitting => ("status = 'splitting', parsing_completed_at = ?2", None),
                DocumentStep::Indexing => ("status = 'indexing', splitting_completed_at = ?2", None),
                DocumentStep::Error(reason) => ("status = 'error'", Some(reason.as_str())),
            };
            let changed = conn
                .execute(
                    &format!("UPDATE documents SET {set}, error = ?3, updated_at = ?2 WHERE id = ?1 AND status IN {UNFINISHED}"),
                    params![id, now, error],
                )
                .map_err(sql(op))?;
            let document = find_document(conn, &id)?;
            if changed == 0 {
                return Err(StoreError::NotPending { what: "document", id, status: document.status.to_string() });
            }
            tracing::debug!(document_id = %id, status = %document.status, "document indexing step");
            Ok(document)
        })
        .await
    }

    /// Records how many of an indexing document's segments have their
    /// vectors written (`completed_segments`, for `indexing-status`); they
    /// stay invisible until [`Store::complete_document`].
    pub async fn set_document_progress(&self, id: &str, completed_segments: i64) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.write("set document progress", move |conn| {
            let changed = conn
                .execute(
                    "UPDATE documents SET completed_segments = min(max(?2, 0), total_segments), updated_at = ?3
                      WHERE id = ?1 AND status = 'indexing'",
                    params![id, completed_segments, now()],
                )
                .map_err(sql("set document progress"))?;
            if changed == 0 {
                let document = find_document(conn, &id)?;
                return Err(StoreError::NotPending { what: "document", id, status: document.status.to_string() });
            }
            Ok(())
        })
        .await
    }

    /// Enables or disables documents of a dataset. Every id must name one of
    /// its documents, else nothing changes (`NotFound` names the first
    /// unknown id).
    pub async fn set_documents_enabled(&self, dataset_id: &str, ids: &[String], enabled: bool) -> Result<(), StoreError> {
        let (dataset_id, ids) = (dataset_id.to_owned(), ids.to_vec());
        self.write("set documents enabled", move |conn| {
            let op = "set documents enabled";
            let tx = conn.savepoint().map_err(sql(op))?;
            find_dataset(&tx, &dataset_id)?;
            let now = now();
            for id in &ids {
                let changed = tx
                    .prepare_cached("UPDATE documents SET enabled = ?3, updated_at = ?4 WHERE id = ?1 AND dataset_id = ?2")
                    .and_then(|mut stmt| stmt.execute(params![id, dataset_id, enabled, now]))
                    .map_err(sql(op))?;
                if changed == 0 {
                    return Err(document_not_found(id));
                }
            }
            tx.commit().map_err(sql(op))
        })
        .await
    }

    /// Renames a document of a dataset.
    pub async fn rename_document(&self, dataset_id: &str, id: &str, name: &str) -> Result<DocumentRecord, StoreError> {
        require_non_empty("name", name)?;
        let (dataset_id, id, name) = (dataset_id.to_owned(), id.to_owned(), name.to_owned());
        self.write("rename document", move |conn| {
            let changed = conn
                .execute(
                    "UPDATE documents SET name = ?3, updated_at = ?4 WHERE id = ?1 AND dataset_id = ?2",
                    params![id, dataset_id, name, now()],
                )
                .map_err(sql("rename document"))?;
            if changed == 0 {
                find_dataset(conn, &dataset_id)?;
                return Err(document_not_found(&id));
            }
            find_document(conn, &id)
        })
        .await
    }

    /// Deletes a document of a dataset with its segments and their
    /// full-text rows; returns the segments' rowids (their vectors are to
    /// be tombstoned).
    pub async fn delete_document(&self, dataset_id: &str, id: &str) -> Result<Vec<SegmentId>, StoreError> {
        let (dataset_id, id) = (dataset_id.to_owned(), id.to_owned());
        self.write("delete document", move |conn| {
            let op = "delete document";
            let tx = conn.savepoint().map_err(sql(op))?;
            find_scoped_document(&tx, &dataset_id, &id)?;
            let rowids = delete_segments_where(&tx, "s.document_id = ?1", &id)?;
            tx.execute("DELETE FROM documents WHERE id = ?1", [&id]).map_err(sql(op))?;
            tx.commit().map_err(sql(op))?;
            tracing::debug!(document_id = %id, dataset_id = %dataset_id, segments = rowids.len(), "deleted document");
            Ok(rowids)
        })
        .await
    }

    /// Documents whose indexing had not finished (`waiting`, `parsing`,
    /// `splitting`, `indexing`), oldest first: after a crash, the ones to
    /// queue again. Their non-completed segments stay invisible meanwhile;
    /// [`Store::reset_document_segments`] clears them before the re-index.
    pub async fn documents_to_resume(&self) -> Result<Vec<DocumentRecord>, StoreError> {
        self.read("documents to resume", |conn| {
            conn.prepare_cached(&format!(
                "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE status IN {UNFINISHED} ORDER BY created_at, rowid"
            ))
            .and_then(|mut stmt| stmt.query_map([], document_from_row)?.collect::<Result<Vec<_>, _>>())
            .map_err(sql("documents to resume"))
        })
        .await
    }

    // ---- segments ---------------------------------------------------------

    /// Adds segments to a document after its last one, `indexing` (not yet
    /// searchable), with their full-text rows, in one transaction; returns
    /// them (their rowids are their vector keys).
    pub async fn insert_segments(&self, document_id: &str, segments: Vec<NewSegment>) -> Result<Vec<SegmentRecord>, StoreError> {
        segments.iter().try_for_each(require_segment)?;
        let document_id = document_id.to_owned();
        self.write("insert segments", move |conn| {
            let op = "insert segments";
            let tx = conn.savepoint().map_err(sql(op))?;
            let document = find_document(&tx, &document_id)?;
            let last: i64 = tx
                .query_row("SELECT coalesce(max(position), 0) FROM segments WHERE document_id = ?1", [&document_id], |row| row.get(0))
                .map_err(sql(op))?;
            let now = now();
            let mut rowids = Vec::with_capacity(segments.len());
            for (position, segment) in (last + 1..).zip(&segments) {
                let keywords = serde_json::to_string(&segment.keywords)
                    .map_err(|e| StoreError::InvalidArgument { field: "keywords", reason: e.to_string() })?;
                tx.prepare_cached(
                    "INSERT INTO segments (id, document_id, dataset_id, position, content, answer, keywords, word_count, tokens, hash,
                                           status, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'indexing', ?11, ?11)",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        uuid::Uuid::new_v4().to_string(),
                        document_id,
                        document.dataset_id,
                        position,
                        segment.content,
                        segment.answer,
                        keywords,
                        segment.word_count,
                        segment.tokens,
                        content_hash(&segment.content),
                        now
                    ])
                })
                .map_err(sql(op))?;
                let rowid = tx.last_insert_rowid();
                fts_insert(&tx, rowid, &segment.content, &segment.answer, &segment.keywords)?;
                rowids.push(rowid);
            }
            refresh_document_counts(&tx, &document_id, now)?;
            let records = tx
                .prepare(&format!(
                    "SELECT {SEGMENT_COLUMNS} FROM segments s WHERE s.rowid IN (SELECT value FROM json_each(?1)) ORDER BY s.position"
                ))
                .and_then(|mut stmt| stmt.query_map([rowid_list(&rowids)], segment_from_row)?.collect::<Result<Vec<_>, _>>())
                .map_err(sql(op))?;
            tx.commit().map_err(sql(op))?;
            Ok(records)
        })
        .await
    }

    /// The visibility point: flips `rowids` (segments of the document still
    /// `indexing`, else `InvalidArgument` and nothing changes) to
    /// `completed` and the document to `completed`, in ONE transaction. The
    /// document must be `indexing`, or `completed` (segments added to it
    /// later), else [`StoreError::NotPending`].
    pub async fn complete_document(&self, document_id: &str, rowids: &[SegmentId]) -> Result<DocumentRecord, StoreError> {
        let document_id = document_id.to_owned();
        let list = rowid_list(rowids);
        let expected = rowids.iter().collect::<std::collections::HashSet<_>>().len();
        self.write("complete document", move |conn| {
            let op = "complete document";
            let tx = conn.savepoint().map_err(sql(op))?;
            let document = find_document(&tx, &document_id)?;
            if !matches!(document.status, IndexingStatus::Indexing | IndexingStatus::Completed) {
                return Err(StoreError::NotPending { what: "document", id: document_id, status: document.status.to_string() });
            }
            let now = now();
            let flipped = tx
                .execute(
                    "UPDATE segments SET status = 'completed', updated_at = ?3
                      WHERE document_id = ?1 AND status = 'indexing' AND rowid IN (SELECT value FROM json_each(?2))",
                    params![document_id, list, now],
                )
                .map_err(sql(op))?;
            if flipped != expected {
                return Err(StoreError::InvalidArgument {
                    field: "rowids",
                    reason: format!(
                        "{} of {expected} are not indexing segments of document {document_id}",
                        expected - flipped.min(expected)
                    ),
                });
            }
            refresh_document_counts(&tx, &document_id, now)?;
            tx.execute(
                "UPDATE documents SET status = 'completed', error = NULL, completed_at = ?2 WHERE id = ?1",
                params![document_id, now],
            )
            .map_err(sql(op))?;
            let document = find_document(&tx, &document_id)?;
            tx.commit().map_err(sql(op))?;
            tracing::debug!(document_id = %document.id, segments = flipped, "document completed");
            Ok(document)
        })
        .await
    }

    /// Deletes every segment of a document (and their full-text rows) for a
    /// re-index; returns their rowids (their vectors are to be tombstoned).
    pub async fn reset_document_segments(&self, document_id: &str) -> Result<Vec<SegmentId>, StoreError> {
        let document_id = document_id.to_owned();
        self.write("reset document segments", move |conn| {
            let op = "reset document segments";
            let tx = conn.savepoint().map_err(sql(op))?;
            find_document(&tx, &document_id)?;
            let rowids = delete_segments_where(&tx, "s.document_id = ?1", &document_id)?;
            refresh_document_counts(&tx, &document_id, now())?;
            tx.commit().map_err(sql(op))?;
            Ok(rowids)
        })
        .await
    }

    /// A page of a document's segments by position, whose content or answer
    /// contains `keyword`, and how many match in all (every status).
    pub async fn list_segments(
        &self,
        dataset_id: &str,
        document_id: &str,
        page: u32,
        limit: u32,
        keyword: Option<&str>,
    ) -> Result<(Vec<SegmentRecord>, i64), StoreError> {
        let offset = page_offset(page, limit)?;
        let pattern = keyword_pattern(keyword);
        let (dataset_id, document_id) = (dataset_id.to_owned(), document_id.to_owned());
        self.read("list segments", move |conn| {
            let op = "list segments";
            const WHERE: &str =
                "WHERE s.document_id = ?1 AND (?2 IS NULL OR s.content LIKE ?2 ESCAPE '\\' OR s.answer LIKE ?2 ESCAPE '\\')";
            let snapshot = conn.unchecked_transaction().map_err(sql(op))?;
            find_scoped_document(&snapshot, &dataset_id, &document_id)?;
            let total = snapshot
                .prepare_cached(&format!("SELECT count(*) FROM segments s {WHERE}"))
                .and_then(|mut stmt| stmt.query_row(params![document_id, pattern], |row| row.get(0)))
                .map_err(sql(op))?;
            let data = snapshot
                .prepare_cached(&format!("SELECT {SEGMENT_COLUMNS} FROM segments s {WHERE} ORDER BY s.position LIMIT ?3 OFFSET ?4"))
                .and_then(|mut stmt| {
                    stmt.query_map(params![document_id, pattern, limit, offset], segment_from_row)?.collect::<Result<Vec<_>, _>>()
                })
                .map_err(sql(op))?;
            Ok((data, total))
        })
        .await
    }

    /// One segment (by its UUID) of a document of a dataset.
    pub async fn get_segment(&self, dataset_id: &str, document_id: &str, id: &str) -> Result<SegmentRecord, StoreError> {
        let (dataset_id, document_id, id) = (dataset_id.to_owned(), document_id.to_owned(), id.to_owned());
        self.read("get segment", move |conn| find_scoped_segment(conn, &dataset_id, &document_id, &id)).await
    }

    /// Changes a segment and its full-text row in one transaction; a new
    /// content gets a new hash. Its status is kept: a changed content keeps
    /// the old vector until the caller writes the new one under the same
    /// rowid.
    pub async fn update_segment(
        &self,
        dataset_id: &str,
        document_id: &str,
        id: &str,
        changes: SegmentChanges,
    ) -> Result<SegmentRecord, StoreError> {
        if let Some(content) = &changes.content {
            require_non_empty("content", content)?;
        }
        if changes.word_count.is_some_and(|n| n < 0) || changes.tokens.is_some_and(|n| n < 0) {
            return Err(StoreError::InvalidArgument {
                field: "segment counts",
                reason: "word_count and tokens must not be negative".into(),
            });
        }
        let (dataset_id, document_id, id) = (dataset_id.to_owned(), document_id.to_owned(), id.to_owned());
        self.write("update segment", move |conn| {
            let op = "update segment";
            let tx = conn.savepoint().map_err(sql(op))?;
            let old = find_scoped_segment(&tx, &dataset_id, &document_id, &id)?;
            let content = changes.content.unwrap_or(old.content);
            let answer = changes.answer.unwrap_or(old.answer);
            let keywords = changes.keywords.unwrap_or(old.keywords);
            let keywords_json =
                serde_json::to_string(&keywords).map_err(|e| StoreError::InvalidArgument { field: "keywords", reason: e.to_string() })?;
            let now = now();
            tx.execute(
                "UPDATE segments SET content = ?2, answer = ?3, keywords = ?4, enabled = ?5, word_count = ?6, tokens = ?7, hash = ?8,
                        updated_at = ?9
                  WHERE rowid = ?1",
                params![
                    old.rowid,
                    content,
                    answer,
                    keywords_json,
                    changes.enabled.unwrap_or(old.enabled),
                    changes.word_count.unwrap_or(old.word_count),
                    changes.tokens.unwrap_or(old.tokens),
                    content_hash(&content),
                    now
                ],
            )
            .map_err(sql(op))?;
            fts_delete(&tx, old.rowid)?;
            fts_insert(&tx, old.rowid, &content, &answer, &keywords)?;
            refresh_document_counts(&tx, &document_id, now)?;
            let segment = find_scoped_segment(&tx, &dataset_id, &document_id, &id)?;
            tx.commit().map_err(sql(op))?;
            Ok(segment)
        })
        .await
    }

    /// Deletes a segment and its full-text row; returns its rowid (its
    /// vector is to be tombstoned).
    pub async fn delete_segment(&self, dataset_id: &str, document_id: &str, id: &str) -> Result<SegmentId, StoreError> {
        let (dataset_id, document_id, id) = (dataset_id.to_owned(), document_id.to_owned(), id.to_owned());
        self.write("delete segment", move |conn| {
            let op = "delete segment";
            let tx = conn.savepoint().map_err(sql(op))?;
            let segment = find_scoped_segment(&tx, &dataset_id, &document_id, &id)?;
            fts_delete(&tx, segment.rowid)?;
            tx.execute("DELETE FROM segments WHERE rowid = ?1", [segment.rowid]).map_err(sql(op))?;
            refresh_document_counts(&tx, &document_id, now())?;
            tx.commit().map_err(sql(op))?;
            Ok(segment.rowid)
        })
        .await
    }

    /// The visible ones of `rowids` (completed, enabled, in an enabled
    /// document), in the order given, with their document's and dataset's
    /// names: turns vector hits into results. Unknown or invisible rowids
    /// (stray vectors of an unfinished ingest, deleted segments) are left out.
    pub async fn segments_by_rowids(&self, rowids: &[SegmentId]) -> Result<Vec<VisibleSegment>, StoreError> {
        if rowids.is_empty() {
            return Ok(Vec::new());
        }
        let order: Vec<SegmentId> = rowids.to_vec();
        self.read("segments by rowids", move |conn| {
            let mut found: std::collections::HashMap<SegmentId, VisibleSegment> = conn
                .prepare_cached(&format!(
                    "SELECT {SEGMENT_COLUMNS}, d.name, t.name FROM segments s
                       JOIN documents d ON d.id = s.document_id
                       JOIN datasets t ON t.id = s.dataset_id
                      WHERE s.rowid IN (SELECT value FROM json_each(?1)) AND {VISIBLE}"
                ))
                .and_then(|mut stmt| {
                    stmt.query_map([rowid_list(&order)], |row| {
                        let segment = segment_from_row(row)?;
                        Ok((segment.rowid, VisibleSegment { segment, document_name: row.get(16)?, dataset_name: row.get(17)? }))
                    })?
                    .collect()
                })
                .map_err(sql("segments by rowids"))?;
            Ok(order.iter().filter_map(|rowid| found.remove(rowid)).collect())
        })
        .await
    }

    /// Full-text search of the visible segments of `dataset_ids`: up to
    /// `limit` hits, best first. A query without a word or CJK character
    /// (only punctuation, empty) has no hits.
    ///
    /// The index is ranked alone first and only the best candidates are
    /// checked against `dataset_ids` and visibility (joining every match
    /// costs more than ranking it); when too few of them pass, the search
    /// runs again joined, so the answer is the same either way.
    pub async fn fulltext_search(&self, dataset_ids: &[String], query: &str, limit: usize) -> Result<Vec<FulltextHit>, StoreError> {
        let Some(expression) = fts_query(query) else {
            return Ok(Vec::new());
        };
        if dataset_ids.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let datasets =
            serde_json::to_string(dataset_ids).map_err(|e| StoreError::InvalidArgument { field: "dataset_ids", reason: e.to_string() })?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let candidates = limit.saturating_mul(FULLTEXT_CANDIDATES_PER_HIT).max(FULLTEXT_MIN_CANDIDATES);
        self.read("fulltext search", move |conn| {
            let op = "fulltext search";
            let hit = |row: &Row<'_>| {
                let bm25: f64 = row.get(1)?;
                let x = (-bm25).max(0.0);
                Ok(FulltextHit { segment: row.get(0)?, score: (x / (1.0 + x)) as f32 })
            };
            let snapshot = conn.unchecked_transaction().map_err(sql(op))?;
            let ranked = snapshot
                .prepare_cached(
                    "SELECT rowid, bm25(segments_fts) AS score FROM segments_fts WHERE segments_fts MATCH ?1 ORDER BY score LIMIT ?2",
                )
                .and_then(|mut stmt| stmt.query_map(params![expression, candidates], hit)?.collect::<Result<Vec<_>, _>>())
                .map_err(sql(op))?;
            let exhausted = (ranked.len() as i64) < candidates;
            let passing: std::collections::HashSet<SegmentId> = snapshot
                .prepare_cached(&format!(
                    "SELECT s.rowid FROM segments s JOIN documents d ON d.id = s.document_id
                      WHERE s.rowid IN (SELECT value FROM json_each(?1)) AND s.dataset_id IN (SELECT value FROM json_each(?2))
                        AND {VISIBLE}"
                ))
                .and_then(|mut stmt| {
                    let rowids: Vec<SegmentId> = ranked.iter().map(|h| h.segment).collect();
                    stmt.query_map(params![rowid_list(&rowids), datasets], |row| row.get(0))?.collect()
                })
                .map_err(sql(op))?;
            let mut hits: Vec<FulltextHit> = ranked.into_iter().filter(|h| passing.contains(&h.segment)).collect();
            if exhausted || hits.len() as i64 >= limit {
                hits.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
                return Ok(hits);
            }
            snapshot
                .prepare_cached(&format!(
                    "SELECT segments_fts.rowid, bm25(segments_fts) AS score FROM segments_fts
                       JOIN segments s ON s.rowid = segments_fts.rowid
                       JOIN documents d ON d.id = s.document_id
                      WHERE segments_fts MATCH ?1 AND s.dataset_id IN (SELECT value FROM json_each(?2)) AND {VISIBLE}
                      ORDER BY score LIMIT ?3"
                ))
                .and_then(|mut stmt| stmt.query_map(params![expression, datasets, limit], hit)?.collect::<Result<Vec<_>, _>>())
                .map_err(sql(op))
        })
        .await
    }

    /// The rowids of a dataset's completed segments (visible or disabled),
    /// ascending: what a vector file compaction keeps.
    pub async fn completed_segment_rowids(&self, dataset_id: &str) -> Result<Vec<SegmentId>, StoreError> {
        let dataset_id = dataset_id.to_owned();
        self.read("completed segment rowids", move |conn| {
            conn.prepare_cached("SELECT rowid FROM segments WHERE dataset_id = ?1 AND status = 'completed' ORDER BY rowid")
                .and_then(|mut stmt| stmt.query_map([&dataset_id], |row| row.get(0))?.collect::<Result<Vec<_>, _>>())
                .map_err(sql("completed segment rowids"))
        })
        .await
    }

    /// Counts one retrieval hit for each of `rowids` (unknown ones are ignored).
    pub async fn increment_hit_count(&self, rowids: &[SegmentId]) -> Result<(), StoreError> {
        if rowids.is_empty() {
            return Ok(());
        }
        let list = rowid_list(rowids);
        self.write("increment hit count", move |conn| {
            conn.execute("UPDATE segments SET hit_count = hit_count + 1 WHERE rowid IN (SELECT value FROM json_each(?1))", [list])
                .map(drop)
                .map_err(sql("increment hit count"))
        })
        .await
    }
}

#[cfg(test)]
mod tests;
