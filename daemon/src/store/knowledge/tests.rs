//! Tests of the knowledge store: datasets, documents, segments, the
//! full-text index (Chinese by substring, bm25 order, escaping) and when
//! segments become visible.

use super::*;
use crate::store::testutil::{open_store, TestStore};

fn new_dataset(name: &str) -> NewDatasetRow {
    NewDatasetRow {
        name: name.into(),
        description: format!("about {name}"),
        indexing_technique: IndexingTechnique::HighQuality,
        retrieval_model: None,
    }
}

fn text_doc(name: &str, batch: &str) -> NewDocumentRow {
    NewDocumentRow { name: name.into(), source: DocumentSource::Text, batch: batch.into(), process_rule: r#"{"mode":"automatic"}"#.into() }
}

fn seg(content: &str) -> NewSegment {
    NewSegment {
        content: content.into(),
        answer: String::new(),
        keywords: Vec::new(),
        word_count: content.chars().count() as i64,
        tokens: 3,
    }
}

/// A document of `dataset_id` taken through every step, its segments completed.
async fn indexed(store: &Store, dataset_id: &str, name: &str, contents: &[&str]) -> (DocumentRecord, Vec<SegmentRecord>) {
    let document = store.insert_document(dataset_id, text_doc(name, "b0")).await.expect("insert document");
    for step in [DocumentStep::Parsing, DocumentStep::Splitting, DocumentStep::Indexing] {
        store.set_document_step(&document.id, step).await.expect("step");
    }
    let segments = store.insert_segments(&document.id, contents.iter().map(|c| seg(c)).collect()).await.expect("insert segments");
    let rowids: Vec<SegmentId> = segments.iter().map(|s| s.rowid).collect();
    let document = store.complete_document(&document.id, &rowids).await.expect("complete");
    let segments = store.list_segments(dataset_id, &document.id, 1, 100, None).await.expect("list").0;
    (document, segments)
}

async fn search(store: &Store, dataset_id: &str, query: &str) -> Vec<SegmentId> {
    store.fulltext_search(&[dataset_id.to_owned()], query, 10).await.expect("search").into_iter().map(|h| h.segment).collect()
}

async fn fts_rows(store: &Store) -> i64 {
    store
        .read("test: count fts rows", |conn| conn.query_row("SELECT count(*) FROM segments_fts", [], |r| r.get(0)).map_err(sql("count")))
        .await
        .expect("count")
}

// ---- query building and derived text -----------------------------------

#[test]
fn cjk_characters_and_their_pairs_are_tokens_in_the_index() {
    assert_eq!(fts_text("如何清除PLC报警", "", &[]), " 如 何 清 除 如何 何清 清除 PLC 报 警 报警 \n\n");
    assert_eq!(fts_text("pump", "ok", &["泵".into()]), "pump\nok\n 泵 \n");
    assert_eq!(fts_text("ポンプ 펌프", "", &[]), " ポ ン プ ポン ンプ   펌 프 펌프 \n\n");
}

#[test]
fn queries_quote_every_term_and_pair_cjk_characters() {
    assert_eq!(fts_query("报警").as_deref(), Some(r#""报警""#));
    assert_eq!(fts_query("警").as_deref(), Some(r#""警""#));
    assert_eq!(fts_query("清除PLC报警").as_deref(), Some(r#""清除" OR "PLC" OR "报警""#));
    assert_eq!(fts_query("如何清除").as_deref(), Some(r#""如何" OR "何清" OR "清除""#));
    // FTS5 syntax is never passed through: operators become plain words,
    // quotes, stars, parentheses and colons separate.
    assert_eq!(fts_query(r#"pump" OR "x"#).as_deref(), Some(r#""pump" OR "OR" OR "x""#));
    assert_eq!(
        fts_query("a* AND NEAR(b, c) NOT d:e ^f").as_deref(),
        Some(r#""a" OR "AND" OR "NEAR" OR "b" OR "c" OR "NOT" OR "d" OR "e" OR "f""#)
    );
    // Repeated terms count once (case-insensitively, as the tokenizer folds).
    assert_eq!(fts_query("Pump pump PUMP").as_deref(), Some(r#""Pump""#));
    for nothing in ["", "   ", "\"", "*", "()", "!!! ... *** \"\" --", "。，、"] {
        assert_eq!(fts_query(nothing), None, "{nothing:?}");
    }
    let long: String = (0..100).map(|i| format!("w{i} ")).collect();
    assert_eq!(fts_query(&long).expect("terms").matches(" OR ").count(), MAX_QUERY_TERMS - 1);
}

// ---- full-text search ----------------------------------------------------

#[tokio::test]
async fn chinese_is_found_by_substring_and_latin_by_word_in_any_case() {
    let TestStore { store, _dir } = open_store();
    let ds = store.create_dataset(new_dataset("manuals")).await.expect("dataset");
    let (_, segments) =
        indexed(&store, &ds.id, "plc.txt", &["如何清除PLC报警", "更换电机轴承的步骤", "Reset the pump after an alarm"]).await;
    let (alarm, motor, pump) = (segments[0].rowid, segments[1].rowid, segments[2].rowid);
    for query in ["报警", "清除", "PLC", "plc", "如何清除PLC报警", "警", "怎么清除报警", "PLC报警?"] {
        let hits = search(&store, &ds.id, query).await;
        assert_eq!(hits.first(), Some(&alarm), "query {query:?}: {hits:?}");
    }
    assert_eq!(search(&store, &ds.id, "电机").await, [motor]);
    assert_eq!(search(&store, &ds.id, "PUMP").await, [pump]);
    // "alarm" is a word of the English segment; 报错 shares no pair of characters.
    assert_eq!(search(&store, &ds.id, "alarm").await, [pump]);
    assert_eq!(search(&store, &ds.id, "报错").await, Vec::<SegmentId>::new());
    // "PL" is not a word of any segment (no prefix matching).
    assert_eq!(search(&store, &ds.id, "PL").await, Vec::<SegmentId>::new());
    store.close().await.expect("close");
}

#[tokio::test]
async fn hits_are_ordered_by_bm25_with_scores_in_the_unit_interval() {
    let TestStore { store, _dir } = open_store();
    let ds = store.create_dataset(new_dataset("d")).await.expect("dataset");
    // bm25's idf is about zero for a term in half the segments: filler
    // segments make the corpus realistic.
    let (_, s) = indexed(
        &store,
        &ds.id,
        "doc",
        &[
            "valve check list for the line",
            "pump pump pump seal",
            "pump valve bearing",
            "motor",
            "gearbox oil",
            "conveyor belt",
            "sensor cable",
            "light curtain",
            "touch screen",
            "emergency stop",
        ],
    )
    .await;
    let hits = store.fulltext_search(std::slice::from_ref(&ds.id), "pump", 10).await.expect("search");
    let ids: Vec<_> = hits.iter().map(|h| h.segment).collect();
    assert_eq!(ids, [s[1].rowid, s[2].rowid], "more occurrences ranks first");
    assert!(hits.iter().all(|h| h.score > 0.0 && h.score < 1.0), "{hits:?}");
    assert!(hits[0].score > hits[1].score, "{hits:?}");
    // Several terms: the segment matching both ranks above those matching one.
    let ids = search(&store, &ds.id, "pump valve").await;
    assert_eq!(ids, [s[2].rowid, s[1].rowid, s[0].rowid]);
    // The limit is honoured.
    assert_eq!(store.fulltext_search(std::slice::from_ref(&ds.id), "pump valve", 1).await.expect("search").len(), 1);
    store.close().await.expect("close");
}

#[tokio::test]
async fn fts_syntax_in_a_query_is_text_not_an_error() {
    let TestStore { store, _dir } = open_store();
    let ds = store.create_dataset(new_dataset("d")).await.expect("dataset");
    let (_, s) = indexed(&store, &ds.id, "doc", &["press start and stop", "pump near the tank"]).await;
    assert_eq!(search(&store, &ds.id, "AND").await, [s[0].rowid]);
    assert_eq!(search(&store, &ds.id, "NEAR(").await, [s[1].rowid]);
    assert_eq!(search(&store, &ds.id, "NEAR(pump tank, 2)").await.first(), Some(&s[1].rowid));
    assert_eq!(search(&store, &ds.id, r#"pump" OR "x"#).await.first(), Some(&s[1].rowid));
    assert_eq!(search(&store, &ds.id, "pum*").await, Vec::<SegmentId>::new(), "a star is not a prefix query");
    for nothing in ["\"", "*", "\"\"", "NOT", "(", ")", "-", ":", "^", "{}", "!!! ... ***"] {
        let hits = store.fulltext_search(std::slice::from_ref(&ds.id), nothing, 10).await.expect("never an SQL error");
        assert!(hits.is_empty(), "{nothing:?}: {hits:?}");
    }
    store.close().await.expect("close");
}

#[tokio::test]
async fn search_is_limited_to_the_datasets_asked() {
    let TestStore { store, _dir } = open_store();
    let a = store.create_dataset(new_dataset("a")).await.expect("a");
    let b = store.create_dataset(new_dataset("b")).await.expect("b");
    let (_, sa) = indexed(&store, &a.id, "doc", &["pump alarm"]).await;
    let (_, sb) = indexed(&store, &b.id, "doc", &["pump seal"]).await;
    assert_eq!(search(&store, &a.id, "pump").await, [sa[0].rowid]);
    assert_eq!(search(&store, &b.id, "pump").await, [sb[0].rowid]);
    let both = store.fulltext_search(&[a.id.clone(), b.id.clone()], "pump", 10).await.expect("search");
    assert_eq!(both.len(), 2);
    assert!(store.fulltext_search(&[], "pump", 10).await.expect("search").is_empty());
    assert!(store.fulltext_search(&["nope".into()], "pump", 10).await.expect("search").is_empty());
    store.close().await.expect("close");
}

/// Search ranks the index first and checks the best candidates; hits
/// below more than a candidate list of better-ranked segments of another
/// dataset, or of invisible ones, are still found.
#[tokio::test]
async fn hits_ranked_below_many_others_datasets_or_invisible_matches_are_found() {
    let TestStore { store, _dir } = open_store();
    let a = store.create_dataset(new_dataset("a")).await.expect("a");
    let b = store.create_dataset(new_dataset("b")).await.expect("b");
    let many = usize::try_from(FULLTEXT_MIN_CANDIDATES).expect("small") + 6;
    let better = vec!["pump pump"; many];
    indexed(&store, &b.id, "better elsewhere", &better).await;
    let (_, weak) = indexed(&store, &a.id, "weak", &["pump with a long tail of other words about the line"]).await;
    // Better matches in the same dataset, still indexing (invisible).
    let hidden = store.insert_document(&a.id, text_doc("hidden", "b")).await.expect("hidden");
    store.insert_segments(&hidden.id, better.iter().map(|c| seg(c)).collect()).await.expect("indexing segments");

    let hits = store.fulltext_search(std::slice::from_ref(&a.id), "pump", 3).await.expect("search");
    assert_eq!(hits.iter().map(|h| h.segment).collect::<Vec<_>>(), [weak[0].rowid]);
    assert!(hits[0].score > 0.0);
    // Asked across both datasets, the better ones come first, up to the limit.
    let both = store.fulltext_search(&[a.id.clone(), b.id.clone()], "pump", 100).await.expect("search");
    assert_eq!(both.len(), many + 1);
    assert_eq!(both.last().map(|h| h.segment), Some(weak[0].rowid));
    store.close().await.expect("close");
}

// ---- visibility ------------------------------------------------------------

#[tokio::test]
async fn segments_are_invisible_until_their_document_completes() {
    let TestStore { store, _dir } = open_store();
    let ds = store.create_dataset(new_dataset("d")).await.expect("dataset");
    let document = store.insert_document(&ds.id, text_doc("doc", "b1")).await.expect("document");
    store.set_document_step(&document.id, DocumentStep::Indexing).await.expect("indexing");
    let segments = store.insert_segments(&document.id, vec![seg("如何清除PLC报警"), seg("pump seal")]).await.expect("segments");
    assert!(segments.iter().all(|s| s.status == IndexingStatus::Indexing));
    let rowids: Vec<SegmentId> = segments.iter().map(|s| s.rowid).collect();

    assert!(search(&store, &ds.id, "报警").await.is_empty());
    assert!(store.segments_by_rowids(&rowids).await.expect("by rowids").is_empty());
    let document = store.get_document(&ds.id, &document.id).await.expect("get");
    assert_eq!((document.status, document.total_segments, document.completed_segments), (IndexingStatus::Indexing, 2, 0));

    store.set_document_progress(&document.id, 1).await.expect("progress");
    assert_eq!(store.get_document(&ds.id, &document.id).await.expect("get").completed_segments, 1);
    assert!(search(&store, &ds.id, "报警").await.is_empty(), "progress is not visibility");
    store.set_document_progress(&document.id, 99).await.expect("progress is capped");
    assert_eq!(store.get_document(&ds.id, &document.id).await.expect("get").completed_segments, 2);

    let document = store.complete_document(&document.id, &rowids).await.expect("complete");
    assert_eq!(document.status, IndexingStatus::Completed);
    let err = store.set_document_progress(&document.id, 1).await.expect_err("completed");
    assert!(matches!(err, StoreError::NotPending { .. }), "{err:?}");
    assert_eq!((document.total_segments, document.completed_segments), (2, 2));
    assert!(document.completed_at.is_some());
    assert_eq!(search(&store, &ds.id, "报警").await, [rowids[0]]);
    let visible = store.segments_by_rowids(&[rowids[1], 999_999, rowids[0]]).await.expect("by rowids");
    let order: Vec<_> = visible.iter().map(|v| v.segment.rowid).collect();
    assert_eq!(order, [rowids[1], rowids[0]], "in the order asked, unknown left out");
    assert_eq!((visible[0].document_name.as_str(), visible[0].dataset_name.as_str()), ("doc", "d"));
    assert_eq!(visible[0].segment.status, IndexingStatus::Completed);

    // A disabled document hides its segments; enabled again, they are back.
    store.set_documents_enabled(&ds.id, std::slice::from_ref(&document.id), false).await.expect("disable");
    assert!(search(&store, &ds.id, "报警").await.is_empty());
    assert!(store.segments_by_rowids(&rowids).await.expect("by rowids").is_empty());
    store.set_documents_enabled(&ds.id, std::slice::from_ref(&document.id), true).await.expect("enable");
    assert_eq!(search(&store, &ds.id, "报警").await, [rowids[0]]);
    // So does a disabled segment.
    let changes = SegmentChanges { enabled: Some(false), ..SegmentChanges::default() };
    store.update_segment(&ds.id, &document.id, &segments[0].id, changes).await.expect("disable segment");
    assert!(search(&store, &ds.id, "报警").await.is_empty());
    assert_eq!(store.segments_by_rowids(&rowids).await.expect("by rowids").len(), 1);
    store.close().await.expect("close");
}

#[tokio::test]
async fn a_document_left_mid_index_is_reported_at_open_and_stays_invisible() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edgeai.db");
    let (store, _) = Store::open(&path).expect("open");
    let ds = store.create_dataset(new_dataset("d")).await.expect("dataset");
    let (done, _) = indexed(&store, &ds.id, "done", &["pump seal"]).await;
    let waiting = store.insert_document(&ds.id, text_doc("waiting", "b1")).await.expect("waiting");
    let half = store.insert_document(&ds.id, text_doc("half", "b1")).await.expect("half");
    store.set_document_step(&half.id, DocumentStep::Indexing).await.expect("indexing");
    let stray = store.insert_segments(&half.id, vec![seg("pump alarm")]).await.expect("segments");
    // The daemon dies here: no complete_document.
    store.close().await.expect("close");

    let (store, report) = Store::open(&path).expect("reopen");
    assert_eq!(report.unfinished_documents, 2);
    let resume: Vec<_> = store.documents_to_resume().await.expect("resume").into_iter().map(|d| d.id).collect();
    assert_eq!(resume, [waiting.id, half.id.clone()]);
    assert_eq!(store.get_document(&ds.id, &done.id).await.expect("done").status, IndexingStatus::Completed);
    assert_eq!(search(&store, &ds.id, "pump").await.len(), 1, "only the completed document's segment");
    assert!(store.segments_by_rowids(&[stray[0].rowid]).await.expect("by rowids").is_empty());
    // The service re-indexes it from scratch.
    assert_eq!(store.reset_document_segments(&half.id).await.expect("reset"), [stray[0].rowid]);
    let half = store.set_document_step(&half.id, DocumentStep::Parsing).await.expect("parsing again");
    assert_eq!((half.total_segments, half.splitting_completed_at), (0, None));
    store.close().await.expect("close");
}

#[tokio::test]
async fn complete_document_checks_its_rowids_and_the_document_state() {
    let TestStore { store, _dir } = open_store();
    let ds = store.create_dataset(new_dataset("d")).await.expect("dataset");
    let (other, other_segments) = indexed(&store, &ds.id, "other", &["other text"]).await;
    let document = store.insert_document(&ds.id, text_doc("doc", "b1")).await.expect("document");
    let segments = store.insert_segments(&document.id, vec![seg("pump")]).await.expect("segments");

    // Still waiting: not yet indexing.
    let err = store.complete_document(&document.id, &[segments[0].rowid]).await.expect_err("waiting");
    assert!(matches!(err, StoreError::NotPending { what: "document", ref status, .. } if status == "waiting"), "{err:?}");
    store.set_document_step(&document.id, DocumentStep::Indexing).await.expect("indexing");
    // A rowid of another document (or unknown) changes nothing.
    for bad in [other_segments[0].rowid, 424_242] {
        let err = store.complete_document(&document.id, &[segments[0].rowid, bad]).await.expect_err("foreign rowid");
        assert!(matches!(err, StoreError::InvalidArgument { field: "rowids", .. }), "{err:?}");
    }
    let still = store.get_segment(&ds.id, &document.id, &segments[0].id).await.expect("segment");
    assert_eq!(still.status, IndexingStatus::Indexing);
    assert_eq!(store.get_document(&ds.id, &document.id).await.expect("doc").status, IndexingStatus::Indexing);
    assert_eq!(store.get_document(&ds.id, &other.id).await.expect("other").completed_segments, 1);

    store.complete_document(&document.id, &[segments[0].rowid]).await.expect("complete");
    // Completing the same rowids twice is refused (they are no longer indexing).
    let err = store.complete_document(&document.id, &[segments[0].rowid]).await.expect_err("twice");
    assert!(matches!(err, StoreError::InvalidArgument { .. }), "{err:?}");
    // Segments added to a completed document complete it again.
    let more = store.insert_segments(&document.id, vec![seg("valve")]).await.expect("more");
    assert_eq!(more[0].position, 2);
    let document = store.complete_document(&document.id, &[more[0].rowid]).await.expect("complete more");
    assert_eq!((document.total_segments, document.completed_segments), (2, 2));
    let err = store.complete_document("ghost", &[]).await.expect_err("unknown");
    assert!(matches!(err, StoreError::NotFound { what: "document", .. }), "{err:?}");
    store.close().await.expect("close");
}

// ---- datasets ------------------------------------------------------------

#[tokio::test]
async fn dataset_crud_and_duplicate_names() {
    let TestStore { store, _dir } = open_store();
    let mut new = new_dataset("Manuals");
    new.retrieval_model = Some(r#"{"search_method":"hybrid_search"}"#.into());
    let a = store.create_dataset(new).await.expect("create");
    assert_eq!((a.name.as_str(), a.description.as_str(), a.document_count, a.word_count), ("Manuals", "about Manuals", 0, 0));
    assert_eq!((a.embedding_model.as_deref(), a.embedding_dims), (None, None));
    assert_eq!(store.get_dataset(&a.id).await.expect("get"), a);

    let err = store.create_dataset(new_dataset("Manuals")).await.expect_err("duplicate");
    assert!(matches!(err, StoreError::DuplicateName { what: "dataset", ref name } if name == "Manuals"), "{err:?}");
    // Exact comparison, as in Dify.
    let b = store.create_dataset(new_dataset("manuals")).await.expect("other case");
    let err = store.update_dataset(&b.id, DatasetChanges { name: Some("Manuals".into()), ..Default::default() }).await.expect_err("dup");
    assert!(matches!(err, StoreError::DuplicateName { .. }), "{err:?}");
    assert_eq!(store.get_dataset(&b.id).await.expect("get").name, "manuals", "untouched");
    // Renaming to its own name is fine; None keeps a field.
    let changes = DatasetChanges {
        name: Some("manuals".into()),
        description: Some("new".into()),
        indexing_technique: Some(IndexingTechnique::Economy),
        retrieval_model: None,
    };
    let b2 = store.update_dataset(&b.id, changes).await.expect("update");
    assert_eq!((b2.description.as_str(), b2.indexing_technique, b2.retrieval_model.as_deref()), ("new", IndexingTechnique::Economy, None));
    let err =
        store.update_dataset(&b.id, DatasetChanges { retrieval_model: Some("{".into()), ..Default::default() }).await.expect_err("json");
    assert!(matches!(err, StoreError::InvalidArgument { field: "retrieval_model", .. }), "{err:?}");
    let err = store.create_dataset(new_dataset("")).await.expect_err("empty name");
    assert!(matches!(err, StoreError::InvalidArgument { field: "name", .. }), "{err:?}");

    let a = store.set_embedding_model(&a.id, "local:e5-small@abc", 384).await.expect("model");
    assert_eq!((a.embedding_model.as_deref(), a.embedding_dims), (Some("local:e5-small@abc"), Some(384)));
    for err in [
        store.get_dataset("ghost").await.expect_err("get"),
        store.update_dataset("ghost", DatasetChanges::default()).await.expect_err("update"),
        store.set_embedding_model("ghost", "m", 1).await.expect_err("model"),
        store.delete_dataset("ghost").await.expect_err("delete"),
    ] {
        assert!(matches!(err, StoreError::NotFound { what: "dataset", .. }), "{err:?}");
    }
    store.close().await.expect("close");
}

#[tokio::test]
async fn datasets_are_listed_newest_first_with_totals_and_keyword() {
    let TestStore { store, _dir } = open_store();
    for name in ["pumps", "valves", "100% pumps", "motors"] {
        store.create_dataset(new_dataset(name)).await.expect("create");
    }
    let (page, total) = store.list_datasets(1, 3, None).await.expect("page 1");
    assert_eq!(total, 4);
    assert_eq!(page.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["motors", "100% pumps", "valves"]);
    let (page, total) = store.list_datasets(2, 3, None).await.expect("page 2");
    assert_eq!((page.len(), total), (1, 4));
    let (page, total) = store.list_datasets(1, 10, Some("PUMP")).await.expect("keyword");
    assert_eq!((page.len(), total), (2, 2));
    let (page, _) = store.list_datasets(1, 10, Some("%")).await.expect("literal percent");
    assert_eq!(page.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["100% pumps"]);
    assert_eq!(store.list_datasets(1, 10, Some("")).await.expect("empty keyword").1, 4);
    for (p, l) in [(0, 10), (1, 0), (1, 101)] {
        assert!(matches!(store.list_datasets(p, l, None).await, Err(StoreError::InvalidArgument { .. })), "{p} {l}");
    }
    store.close().await.expect("close");
}

#[tokio::test]
async fn deleting_a_dataset_cascades_to_documents_segments_and_the_index() {
    let TestStore { store, _dir } = open_store();
    let a = store.create_dataset(new_dataset("a")).await.expect("a");
    let b = store.create_dataset(new_dataset("b")).await.expect("b");
    indexed(&store, &a.id, "one", &["pump one", "pump two"]).await;
    indexed(&store, &a.id, "two", &["pump three"]).await;
    let (_, kept) = indexed(&store, &b.id, "kept", &["pump kept"]).await;
    let a = store.get_dataset(&a.id).await.expect("counts");
    assert_eq!((a.document_count, a.word_count), (2, 8 + 8 + 10));
    assert_eq!(fts_rows(&store).await, 4);

    let deleted = store.delete_dataset(&a.id).await.expect("delete");
    assert_eq!(deleted.document_count, 2);
    assert_eq!(fts_rows(&store).await, 1);
    assert!(matches!(store.get_dataset(&a.id).await, Err(StoreError::NotFound { .. })));
    let left: i64 = store
        .read("test", |conn| conn.query_row("SELECT count(*) FROM documents", [], |r| r.get(0)).map_err(sql("count")))
        .await
        .expect("count");
    assert_eq!(left, 1);
    assert_eq!(search(&store, &b.id, "pump").await, [kept[0].rowid]);
    store.close().await.expect("close");
}

// ---- documents -----------------------------------------------------------

#[tokio::test]
async fn documents_positions_listing_batches_and_renames() {
    let TestStore { store, _dir } = open_store();
    let ds = store.create_dataset(new_dataset("d")).await.expect("dataset");
    let file = DocumentSource::File { name: "manual.pdf".into(), kind: "pdf".into(), size: 1234 };
    let one =
        store.insert_document(&ds.id, NewDocumentRow { source: file.clone(), ..text_doc("manual.pdf", "batch-1") }).await.expect("one");
    let two = store.insert_document(&ds.id, text_doc("notes_2", "batch-1")).await.expect("two");
    let three = store.insert_document(&ds.id, text_doc("sop", "batch-2")).await.expect("three");
    assert_eq!((one.position, two.position, three.position), (1, 2, 3));
    assert_eq!((one.status, one.enabled, one.source.clone()), (IndexingStatus::Waiting, true, file));
    assert_eq!(one.processing_started_at, None);
    assert_eq!(store.get_document(&ds.id, &one.id).await.expect("get"), one);

    let (page, total) = store.list_documents(&ds.id, 1, 2, None).await.expect("list");
    assert_eq!((page.iter().map(|d| d.position).collect::<Vec<_>>(), total), (vec![3, 2], 3));
    let (page, total) = store.list_documents(&ds.id, 1, 10, Some("_2")).await.expect("keyword");
    assert_eq!((page.len(), total, page[0].id.clone()), (1, 1, two.id.clone()));
    let batch: Vec<_> = store.documents_by_batch(&ds.id, "batch-1").await.expect("batch").into_iter().map(|d| d.id).collect();
    assert_eq!(batch, [one.id.clone(), two.id.clone()]);
    assert!(store.documents_by_batch(&ds.id, "nope").await.expect("batch").is_empty());

    let renamed = store.rename_document(&ds.id, &two.id, "notes.md").await.expect("rename");
    assert_eq!(renamed.name, "notes.md");

    // Positions continue after the highest, even after a deletion.
    store.delete_document(&ds.id, &three.id).await.expect("delete");
    assert_eq!(store.insert_document(&ds.id, text_doc("four", "b3")).await.expect("four").position, 3);

    let other = store.create_dataset(new_dataset("other")).await.expect("other");
    let err = store.get_document(&other.id, &one.id).await.expect_err("another dataset's document");
    assert!(matches!(err, StoreError::NotFound { what: "document", .. }), "{err:?}");
    let err = store.get_document("ghost", &one.id).await.expect_err("unknown dataset");
    assert!(matches!(err, StoreError::NotFound { what: "dataset", .. }), "{err:?}");
    let err = store.insert_document("ghost", text_doc("x", "b")).await.expect_err("unknown dataset");
    assert!(matches!(err, StoreError::NotFound { what: "dataset", .. }), "{err:?}");
    let err = store.rename_document(&other.id, &one.id, "x").await.expect_err("wrong dataset");
    assert!(matches!(err, StoreError::NotFound { what: "document", .. }), "{err:?}");
    let err = store.insert_document(&ds.id, NewDocumentRow { process_rule: "nope".into(), ..text_doc("x", "b") }).await.expect_err("rule");
    assert!(matches!(err, StoreError::InvalidArgument { field: "process_rule", .. }), "{err:?}");
    store.close().await.expect("close");
}

#[tokio::test]
async fn document_steps_set_dify_timestamps_and_finished_documents_refuse_them() {
    let TestStore { store, _dir } = open_store();
    let ds = store.create_dataset(new_dataset("d")).await.expect("dataset");
    let doc = store.insert_document(&ds.id, text_doc("doc", "b")).await.expect("doc");
    let parsing = store.set_document_step(&doc.id, DocumentStep::Parsing).await.expect("parsing");
    assert_eq!(parsing.status, IndexingStatus::Parsing);
    assert!(parsing.processing_started_at.is_some() && parsing.parsing_completed_at.is_none());
    let splitting = store.set_document_step(&doc.id, DocumentStep::Splitting).await.expect("splitting");
    assert!(splitting.parsing_completed_at.is_some() && splitting.splitting_completed_at.is_none());
    let indexing = store.set_document_step(&doc.id, DocumentStep::Indexing).await.expect("indexing");
    assert!(indexing.splitting_completed_at.is_some() && indexing.completed_at.is_none());
    let failed = store.set_document_step(&doc.id, DocumentStep::Error("the PDF has no text layer".into())).await.expect("error");
    assert_eq!((failed.status, failed.error.as_deref()), (IndexingStatus::Error, Some("the PDF has no text layer")));
    let err = store.set_document_step(&doc.id, DocumentStep::Parsing).await.expect_err("finished");
    assert!(matches!(err, StoreError::NotPending { what: "document", ref status, .. } if status == "error"), "{err:?}");
    assert!(store.documents_to_resume().await.expect("resume").is_empty());
    let err = store.set_document_step("ghost", DocumentStep::Parsing).await.expect_err("unknown");
    assert!(matches!(err, StoreError::NotFound { what: "document", .. }), "{err:?}");
    store.close().await.expect("close");
}

#[tokio::test]
async fn enabling_documents_is_all_or_nothing() {
    let TestStore { store, _dir } = open_store();
    let ds = store.create_dataset(new_dataset("d")).await.expect("dataset");
    let a = store.insert_document(&ds.id, text_doc("a", "b")).await.expect("a");
    let b = store.insert_document(&ds.id, text_doc("b", "b")).await.expect("b");
    let err = store.set_documents_enabled(&ds.id, &[a.id.clone(), "ghost".into()], false).await.expect_err("unknown id");
    assert!(matches!(err, StoreError::NotFound { what: "document", ref id } if id == "ghost"), "{err:?}");
    assert!(store.get_document(&ds.id, &a.id).await.expect("a").enabled, "nothing changed");
    store.set_documents_enabled(&ds.id, &[a.id.clone(), b.id.clone()], false).await.expect("disable");
    assert!(!store.get_document(&ds.id, &b.id).await.expect("b").enabled);
    store.close().await.expect("close");
}

#[tokio::test]
async fn deleting_or_replacing_a_document_returns_its_segment_rowids() {
    let TestStore { store, _dir } = open_store();
    let ds = store.create_dataset(new_dataset("d")).await.expect("dataset");
    let (doc, segments) = indexed(&store, &ds.id, "doc", &["pump one", "pump two"]).await;
    let (other, other_segments) = indexed(&store, &ds.id, "other", &["pump other"]).await;
    let rowids: Vec<SegmentId> = segments.iter().map(|s| s.rowid).collect();

    let new = NewDocumentRow {
        source: DocumentSource::File { name: "v2.txt".into(), kind: "txt".into(), size: 9 },
        ..text_doc("v2.txt", "batch-2")
    };
    let (replaced, gone) = store.replace_document(&ds.id, &doc.id, new).await.expect("replace");
    assert_eq!(gone, rowids);
    assert_eq!((replaced.id.as_str(), replaced.position, replaced.status), (doc.id.as_str(), doc.position, IndexingStatus::Waiting));
    assert_eq!(
        (replaced.name.as_str(), replaced.batch.as_str(), replaced.total_segments, replaced.word_count),
        ("v2.txt", "batch-2", 0, 0)
    );
    assert_eq!((replaced.completed_at, replaced.processing_started_at), (None, None));
    assert_eq!(search(&store, &ds.id, "pump").await, [other_segments[0].rowid]);
    assert_eq!(store.documents_to_resume().await.expect("resume").len(), 1);

    let again = store.insert_segments(&doc.id, vec![seg("pump again")]).await.expect("segments");
    assert_eq!(store.delete_document(&ds.id, &doc.id).await.expect("delete"), [again[0].rowid]);
    assert_eq!(fts_rows(&store).await, 1);
    let err = store.delete_document(&ds.id, &doc.id).await.expect_err("gone");
    assert!(matches!(err, StoreError::NotFound { what: "document", .. }), "{err:?}");
    assert_eq!(store.get_document(&ds.id, &other.id).await.expect("other").total_segments, 1);
    store.close().await.expect("close");
}

// ---- segments ------------------------------------------------------------

#[tokio::test]
async fn segment_listing_updates_and_deletes_keep_the_index_in_step() {
    let TestStore { store, _dir } = open_store();
    let ds = store.create_dataset(new_dataset("d")).await.expect("dataset");
    let (doc, s) = indexed(&store, &ds.id, "doc", &["pump seal", "valve 100% open", "motor bearing"]).await;
    assert_eq!(s.iter().map(|s| s.position).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(s[0].hash, content_hash("pump seal"));
    assert_eq!(s[0].hash.len(), 64);
    assert_eq!(doc.word_count, 9 + 15 + 13);

    let (page, total) = store.list_segments(&ds.id, &doc.id, 2, 2, None).await.expect("page 2");
    assert_eq!((page.len(), total, page[0].position), (1, 3, 3));
    let (page, total) = store.list_segments(&ds.id, &doc.id, 1, 10, Some("0%")).await.expect("keyword");
    assert_eq!((page.len(), total), (1, 1));

    let changes = SegmentChanges {
        content: Some("gearbox oil 报警".into()),
        answer: Some("drain it".into()),
        keywords: Some(vec!["润滑".into()]),
        word_count: Some(14),
        tokens: Some(6),
        enabled: None,
    };
    let updated = store.update_segment(&ds.id, &doc.id, &s[0].id, changes).await.expect("update");
    assert_eq!((updated.rowid, updated.content.as_str(), updated.answer.as_str()), (s[0].rowid, "gearbox oil 报警", "drain it"));
    assert_eq!((updated.keywords.clone(), updated.word_count, updated.tokens), (vec!["润滑".to_owned()], 14, 6));
    assert_ne!(updated.hash, s[0].hash);
    assert_eq!(updated.status, IndexingStatus::Completed);
    assert!(search(&store, &ds.id, "seal").await.is_empty(), "the old text left the index");
    for query in ["gearbox", "报警", "drain", "润滑"] {
        assert_eq!(search(&store, &ds.id, query).await, [s[0].rowid], "{query}");
    }
    assert_eq!(store.get_segment(&ds.id, &doc.id, &s[0].id).await.expect("get"), updated);
    assert_eq!(store.get_document(&ds.id, &doc.id).await.expect("doc").word_count, 14 + 15 + 13);

    assert_eq!(store.delete_segment(&ds.id, &doc.id, &s[2].id).await.expect("delete"), s[2].rowid);
    assert!(search(&store, &ds.id, "motor").await.is_empty());
    assert_eq!(fts_rows(&store).await, 2);
    let doc = store.get_document(&ds.id, &doc.id).await.expect("doc");
    assert_eq!((doc.total_segments, doc.completed_segments), (2, 2));

    // The highest rowid deleted is never handed out again (it keys vectors).
    let next = store.insert_segments(&doc.id, vec![seg("new")]).await.expect("insert");
    assert!(next[0].rowid > s[2].rowid, "{} reused", next[0].rowid);
    assert_eq!(next[0].position, 3, "after the highest position left");

    let err = store.get_segment(&ds.id, &doc.id, "ghost").await.expect_err("unknown");
    assert!(matches!(err, StoreError::NotFound { what: "segment", .. }), "{err:?}");
    let err = store.delete_segment(&ds.id, "ghost-doc", &s[1].id).await.expect_err("wrong document");
    assert!(matches!(err, StoreError::NotFound { what: "document", .. }), "{err:?}");
    let err = store.insert_segments(&doc.id, vec![seg("")]).await.expect_err("empty");
    assert!(matches!(err, StoreError::InvalidArgument { field: "content", .. }), "{err:?}");
    let err = store.insert_segments("ghost", vec![seg("x")]).await.expect_err("unknown document");
    assert!(matches!(err, StoreError::NotFound { what: "document", .. }), "{err:?}");
    store.close().await.expect("close");
}

#[tokio::test]
async fn hit_counts_and_completed_rowids() {
    let TestStore { store, _dir } = open_store();
    let ds = store.create_dataset(new_dataset("d")).await.expect("dataset");
    let (doc, s) = indexed(&store, &ds.id, "doc", &["a", "b"]).await;
    let pending = store.insert_document(&ds.id, text_doc("p", "b")).await.expect("pending");
    store.insert_segments(&pending.id, vec![seg("c")]).await.expect("indexing segment");
    store.increment_hit_count(&[s[0].rowid, s[1].rowid]).await.expect("hit");
    store.increment_hit_count(&[s[0].rowid, 777_777]).await.expect("hit");
    let s0 = store.get_segment(&ds.id, &doc.id, &s[0].id).await.expect("s0");
    let s1 = store.get_segment(&ds.id, &doc.id, &s[1].id).await.expect("s1");
    assert_eq!((s0.hit_count, s1.hit_count), (2, 1));
    assert_eq!(store.completed_segment_rowids(&ds.id).await.expect("rowids"), [s[0].rowid, s[1].rowid]);
    store.close().await.expect("close");
}
