//! Store-level tests: open, migrate, recover, the writer queue, close.

use std::sync::mpsc;
use std::time::Duration;

use super::migrations::{backup_path, Migration, MIGRATIONS};
use super::testutil::{hold_writer, open_store, TestStore};
use super::*;

fn message(id: &str, conversation_id: &str) -> NewMessage {
    NewMessage {
        id: id.into(),
        app_id: "a1".into(),
        conversation_id: Some(conversation_id.into()),
        user: "u1".into(),
        task_id: "t".into(),
        query: "q".into(),
        inputs_json: "{}".into(),
    }
}

fn wal_path(db: &Path) -> PathBuf {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

#[tokio::test]
async fn open_creates_migrates_and_reopens_idempotently() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edgeai.db");
    let (store, report) = Store::open(&path).expect("open");
    assert_eq!(
        report,
        OpenReport {
            schema_version: supported_schema_version(),
            recovered_messages: 0,
            recovered_workflow_runs: 0,
            unfinished_documents: 0
        }
    );
    assert!(path.exists());
    store.put_app("a1", "A", "chat", "{}", "config").await.expect("app");
    store.close().await.expect("close");

    let (store, report) = Store::open(&path).expect("reopen");
    assert_eq!(
        report,
        OpenReport {
            schema_version: supported_schema_version(),
            recovered_messages: 0,
            recovered_workflow_runs: 0,
            unfinished_documents: 0
        }
    );
    assert_eq!(store.list_apps().await.expect("list").len(), 1);
    store.close().await.expect("close");
    assert!(!backup_path(&path, 1).exists(), "no backup for a migration of an empty file");
}

#[test]
fn open_names_the_missing_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-dir");
    let err = Store::open(&missing.join("edgeai.db")).expect_err("missing dir");
    assert!(matches!(err, StoreError::MissingDir { ref dir } if *dir == missing), "{err:?}");
    assert!(err.to_string().contains("no-such-dir"), "{err}");
}

#[test]
fn open_rejects_a_file_that_is_not_a_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edgeai.db");
    std::fs::write(&path, vec![b'x'; 4096]).expect("junk");
    let err = Store::open(&path).expect_err("junk");
    assert!(matches!(err, StoreError::Open { path: ref p, .. } if *p == path), "{err:?}");
}

#[test]
fn open_rejects_empty_pools() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edgeai.db");
    let err = Store::open_with(&path, StoreOptions { write_queue: 0, ..StoreOptions::default() }).expect_err("queue");
    assert!(matches!(err, StoreError::InvalidArgument { field: "write_queue", .. }), "{err:?}");
    let err = Store::open_with(&path, StoreOptions { readers: 0, ..StoreOptions::default() }).expect_err("readers");
    assert!(matches!(err, StoreError::InvalidArgument { field: "readers", .. }), "{err:?}");
}

#[tokio::test]
async fn migrating_a_non_empty_older_store_writes_a_backup_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edgeai.db");
    let (store, _) = Store::open(&path).expect("open v1");
    store.put_app("a1", "A", "chat", "{}", "config").await.expect("app");
    store.close().await.expect("close");

    let mut with_next: Vec<Migration> = MIGRATIONS.iter().map(|m| Migration { version: m.version, sql: m.sql }).collect();
    let current = with_next.len() as u32;
    let next = current + 1;
    with_next.push(Migration { version: next, sql: "CREATE TABLE extra (x INTEGER);" });
    let (store, report) = Store::open_migrating(&path, StoreOptions::default(), &with_next).expect("open next");
    assert_eq!(report.schema_version, next);
    assert_eq!(store.list_apps().await.expect("list").len(), 1);
    store.close().await.expect("close");
    let backup = backup_path(&path, next);
    assert!(backup.exists());
    let (old, report) = Store::open(&backup).expect("the backup is a current store");
    assert_eq!(report.schema_version, current);
    assert_eq!(old.list_apps().await.expect("list")[0].id, "a1");
    old.close().await.expect("close");

    // This daemon refuses the migrated file instead of misreading it.
    let err = Store::open(&path).expect_err("too new");
    assert!(matches!(err, StoreError::SchemaTooNew { found, supported } if found == next && supported == current), "{err:?}");
}

#[tokio::test]
async fn pending_messages_are_recovered_after_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edgeai.db");
    let (store, _) = Store::open(&path).expect("open");
    store.put_app("a1", "A", "chat", "{}", "config").await.expect("app");
    let c = store.create_conversation("a1", "u1", "c", "{}").await.expect("conversation").id;
    store.begin_message(message("done", &c)).await.expect("begin");
    let finished = MessageOutcome {
        answer: "complete".into(),
        prompt_tokens: 1,
        completion_tokens: 1,
        latency_ms: 1,
        status: MessageStatus::Normal,
        error: None,
    };
    store.finish_message("done", finished.clone()).await.expect("finish");
    store.begin_message(message("cut-1", &c)).await.expect("begin");
    store.begin_message(message("cut-2", &c)).await.expect("begin");
    // The crash: no close, no finish; connections and thread are leaked as
    // a killed process would leave them.
    std::mem::forget(store);

    let (store, report) = Store::open(&path).expect("reopen");
    assert_eq!(report.recovered_messages, 2);
    for id in ["cut-1", "cut-2"] {
        let m = store.get_message("a1", "u1", id).await.expect("get");
        assert_eq!(m.status, MessageStatus::Error);
        assert_eq!(m.error.as_deref(), Some(INTERRUPTED_ERROR));
        assert_eq!(m.answer, "");
        // The interrupted generation cannot finish it later.
        let err = store.finish_message(id, finished.clone()).await.expect_err("late finish");
        assert!(matches!(err, StoreError::NotPending { ref status, .. } if status == "error"), "{err:?}");
    }
    let m = store.get_message("a1", "u1", "done").await.expect("get");
    assert_eq!((m.status, m.answer.as_str()), (MessageStatus::Normal, "complete"));
    assert!(store.history(&c, 10).await.expect("history").len() == 1);
    // Every message counts for sys.dialogue_count, interrupted ones too.
    assert_eq!(store.count_messages(&c).await.expect("count"), 3);
    assert_eq!(store.count_messages("no-such-conversation").await.expect("count"), 0);
    store.close().await.expect("close");

    // Recovery happens once.
    let (store, report) = Store::open(&path).expect("third open");
    assert_eq!(report.recovered_messages, 0);
    store.close().await.expect("close");
}

fn workflow_run(id: &str, workflow_id: &str) -> NewWorkflowRun {
    NewWorkflowRun {
        id: id.into(),
        app_id: "w".into(),
        app_version: 1,
        workflow_id: workflow_id.into(),
        task_id: format!("task-{id}"),
        user: "u1".into(),
        conversation_id: None,
        message_id: None,
        inputs_json: "{}".into(),
        triggered_from: "app-run".into(),
    }
}

fn run_outcome(status: WorkflowRunStatus) -> WorkflowRunOutcome {
    WorkflowRunOutcome {
        status,
        outputs_json: "{}".into(),
        error: None,
        elapsed_secs: 0.5,
        total_tokens: 1,
        total_steps: 1,
        finished_at: 1,
    }
}

#[tokio::test]
async fn running_workflow_runs_are_recovered_after_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edgeai.db");
    let (store, _) = Store::open(&path).expect("open");
    let workflow_id = store.put_app("w", "W", "workflow", "{}", "import").await.expect("app").workflow_id;
    store.put_app("a1", "A", "chat", "{}", "config").await.expect("chat app");
    let c = store.create_conversation("a1", "u1", "c", "{}").await.expect("conversation").id;
    store.begin_message(message("cut", &c)).await.expect("pending message");
    store.begin_workflow_run(workflow_run("done", &workflow_id)).await.expect("begin");
    store.finish_workflow_run("done", run_outcome(WorkflowRunStatus::Succeeded), vec![]).await.expect("finish");
    for id in ["cut-1", "cut-2", "cut-3"] {
        store.begin_workflow_run(workflow_run(id, &workflow_id)).await.expect("begin");
    }
    // The crash.
    std::mem::forget(store);

    let (store, report) = Store::open(&path).expect("reopen");
    assert_eq!(
        report,
        OpenReport {
            schema_version: supported_schema_version(),
            recovered_messages: 1,
            recovered_workflow_runs: 3,
            unfinished_documents: 0
        }
    );
    for id in ["cut-1", "cut-2", "cut-3"] {
        let run = store.get_workflow_run("w", id).await.expect("get");
        assert_eq!(run.status, WorkflowRunStatus::Failed);
        assert_eq!(run.error.as_deref(), Some(INTERRUPTED_RUN_ERROR));
        assert!(run.finished_at.is_some_and(|t| t >= run.created_at), "{run:?}");
        // The interrupted run cannot finish it later.
        let err = store.finish_workflow_run(id, run_outcome(WorkflowRunStatus::Succeeded), vec![]).await.expect_err("late finish");
        assert!(matches!(err, StoreError::NotPending { what: "workflow run", ref status, .. } if status == "failed"), "{err:?}");
    }
    let done = store.get_workflow_run("w", "done").await.expect("get");
    assert_eq!((done.status, done.error), (WorkflowRunStatus::Succeeded, None));
    store.close().await.expect("close");

    let (store, report) = Store::open(&path).expect("third open");
    assert_eq!((report.recovered_messages, report.recovered_workflow_runs), (0, 0));
    store.close().await.expect("close");
}

/// A store written by the previous release (schema v2) opens with its apps
/// whole: each version gets a workflow id a run can use.
#[tokio::test]
async fn a_v2_store_opens_with_its_apps_and_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edgeai.db");
    let mut conn = rusqlite::Connection::open(&path).expect("open v2");
    assert_eq!(super::migrations::migrate(&mut conn, &path, &MIGRATIONS[..2]).expect("v2"), 2);
    conn.execute_batch(
        r#"INSERT INTO apps VALUES ('w', 'Old', 'completion', 2, 10, 20);
           INSERT INTO app_versions VALUES ('w', 1, '{"v":1}', 'config', 10);
           INSERT INTO app_versions VALUES ('w', 2, '{"v":2}', 'import', 20);"#,
    )
    .expect("seed");
    drop(conn);

    let (store, report) = Store::open(&path).expect("open v4");
    assert_eq!(report.schema_version, supported_schema_version());
    assert!(backup_path(&path, 3).exists());
    let app = store.get_app("w").await.expect("get").expect("kept");
    assert_eq!((app.name.as_str(), app.mode.as_str(), app.version, app.definition_json.as_str()), ("Old", "completion", 2, r#"{"v":2}"#));
    let versions = store.list_app_versions("w").await.expect("versions");
    assert_eq!(
        versions.iter().map(|v| (v.version, v.active, v.mode.as_str())).collect::<Vec<_>>(),
        [(2, true, "completion"), (1, false, "completion")]
    );
    assert_eq!(versions[0].workflow_id, app.workflow_id);
    assert_ne!(versions[0].workflow_id, versions[1].workflow_id);
    let v1 = store.find_app_version_by_workflow_id("w", &versions[1].workflow_id).await.expect("by workflow id");
    assert_eq!((v1.version, v1.definition_json.as_str(), v1.source.as_str(), v1.created_at), (1, r#"{"v":1}"#, "config", 10));
    store.begin_workflow_run(workflow_run("r1", &v1.workflow_id)).await.expect("a run of the backfilled version");
    // New versions continue the numbering.
    let v3 = store.put_app("w", "Old", "workflow", r#"{"v":3}"#, "import").await.expect("v3");
    assert_eq!(v3.version, 3);
    store.close().await.expect("close");
}

#[tokio::test]
async fn dropping_every_handle_without_close_is_recoverable_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edgeai.db");
    let (store, _) = Store::open(&path).expect("open");
    store.put_app("a1", "A", "chat", "{}", "config").await.expect("app");
    let c = store.create_conversation("a1", "u1", "c", "{}").await.expect("conversation").id;
    store.begin_message(message("cut", &c)).await.expect("begin");
    drop(store);
    let (store, report) = Store::open(&path).expect("reopen");
    assert_eq!(report.recovered_messages, 1);
    store.close().await.expect("close");
}

#[tokio::test]
async fn a_full_write_queue_is_busy_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions { write_queue: 2, ..StoreOptions::default() };
    let (store, _) = Store::open_with(&dir.path().join("edgeai.db"), options).expect("open");

    // Hold the writer inside a job until released.
    let release = hold_writer(&store).await;

    // Two queued jobs fill the queue; the next caller is refused at once.
    let (ran_tx, ran) = mpsc::channel();
    for n in 0..2 {
        let ran_tx = ran_tx.clone();
        store
            .submit(Box::new(move |_conn| {
                ran_tx.send(n).expect("report");
                writer::Done::unanswered(true)
            }))
            .expect("queued");
    }
    let busy = store.ping_writer().await.expect_err("queue full");
    assert!(matches!(busy, StoreError::Busy), "{busy:?}");
    let busy = store.put_app("a1", "A", "chat", "{}", "config").await.expect_err("queue full");
    assert!(matches!(busy, StoreError::Busy), "{busy:?}");
    // Reads do not go through the writer: still served.
    assert!(store.list_apps().await.expect("reads still work").is_empty());

    release.send(()).expect("release");
    let order = tokio::task::spawn_blocking(move || {
        let timeout = Duration::from_secs(5);
        [ran.recv_timeout(timeout), ran.recv_timeout(timeout)]
    })
    .await
    .expect("join");
    assert_eq!(order, [Ok(0), Ok(1)], "queued jobs ran in order");
    store.ping_writer().await.expect("queue drained");
    store.put_app("a1", "A", "chat", "{}", "config").await.expect("accepted again");
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_all_land() {
    let TestStore { store, _dir } = open_store();
    store.put_app("a1", "A", "chat", "{}", "config").await.expect("app");
    let mut tasks = Vec::new();
    for i in 0..64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let user = format!("u{}", i % 4);
            let c = store.create_conversation("a1", &user, "c", "{}").await?;
            let mut m = message(&format!("m{i}"), &c.id);
            m.user = user;
            store.begin_message(m).await?;
            store
                .finish_message(
                    &format!("m{i}"),
                    MessageOutcome {
                        answer: format!("answer {i}"),
                        prompt_tokens: 1,
                        completion_tokens: 2,
                        latency_ms: 3,
                        status: MessageStatus::Normal,
                        error: None,
                    },
                )
                .await?;
            store.touch_conversation(&c.id).await?;
            Ok::<_, StoreError>(c.id)
        }));
    }
    for task in tasks {
        task.await.expect("join").expect("every write lands");
    }
    let mut total = 0;
    for u in 0..4 {
        let (page, more) = store.list_conversations("a1", &format!("u{u}"), None, 100, ConversationSort::default()).await.expect("list");
        assert!(!more);
        total += page.len();
    }
    assert_eq!(total, 64);
    let normal: i64 = store
        .read("test: count", |conn| {
            conn.query_row("SELECT count(*) FROM messages WHERE status = 'normal'", [], |r| r.get(0)).map_err(sql("count"))
        })
        .await
        .expect("count");
    assert_eq!(normal, 64);
    store.close().await.expect("close");
}

#[tokio::test]
async fn close_checkpoints_the_wal_and_ends_every_clone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edgeai.db");
    let (store, _) = Store::open(&path).expect("open");
    store.put_app("a1", "A", "chat", r#"{"big":"definition"}"#, "config").await.expect("app");
    let wal = wal_path(&path);
    assert!(std::fs::metadata(&wal).expect("wal exists while open").len() > 0);

    let other = store.clone();
    // Another process's idle connection keeps SQLite from deleting the WAL
    // on close, so only the explicit TRUNCATE checkpoint can empty it.
    let bystander = rusqlite::Connection::open(&path).expect("bystander");
    let apps: i64 = bystander.query_row("SELECT count(*) FROM apps", [], |r| r.get(0)).expect("attach to the WAL");
    assert_eq!(apps, 1);
    // A write queued before close still lands (close flushes the queue).
    let queued = tokio::spawn({
        let store = store.clone();
        async move { store.put_app("a2", "B", "chat", "{}", "config").await }
    });
    tokio::task::yield_now().await;
    store.close().await.expect("close");
    queued.await.expect("join").expect("queued write landed");

    let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal_len, 0, "WAL not checkpointed");
    let apps: i64 = bystander.query_row("SELECT count(*) FROM apps", [], |r| r.get(0)).expect("bystander reads");
    assert_eq!(apps, 2);
    drop(bystander);
    assert!(matches!(other.ping_writer().await, Err(StoreError::Closed)));
    assert!(matches!(other.list_apps().await, Err(StoreError::Closed)));
    assert!(matches!(other.put_app("x", "X", "chat", "{}", "config").await, Err(StoreError::Closed)));
    assert!(matches!(other.clone().close().await, Err(StoreError::Closed)));
    drop(other);

    // Everything committed is in the main file.
    let (store, _) = Store::open(&path).expect("reopen");
    assert!(store.get_app("a1").await.expect("get").is_some());
    store.close().await.expect("close");
}

#[test]
fn store_is_clone_send_sync() {
    fn check<T: Clone + Send + Sync + 'static>() {}
    fn error<T: std::error::Error + Send + Sync + 'static>() {}
    check::<Store>();
    error::<StoreError>();
}

#[tokio::test]
async fn ping_writer_round_trips() {
    let TestStore { store, _dir } = open_store();
    store.ping_writer().await.expect("ping");
    store.close().await.expect("close");
}

#[tokio::test]
async fn a_panicking_job_does_not_kill_the_writer() {
    let TestStore { store, _dir } = open_store();
    let err = store.write("test: panic", |_conn| -> Result<(), StoreError> { panic!("test panic") }).await.expect_err("panicked");
    assert!(matches!(err, StoreError::Panicked { op: "test: panic" }), "{err:?}");
    store.ping_writer().await.expect("writer alive");
    let err = store.read("test: panic read", |_conn| -> Result<(), StoreError> { panic!("test panic") }).await.expect_err("panicked");
    assert!(matches!(err, StoreError::Panicked { .. }), "{err:?}");
    // The reader connection went back to the pool.
    for _ in 0..4 {
        store.list_apps().await.expect("reads still work");
    }
    store.close().await.expect("close");
}

#[tokio::test]
async fn reads_beyond_the_read_queue_are_busy_and_the_place_comes_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions { readers: 1, read_queue: 0, ..StoreOptions::default() };
    let (store, _) = Store::open_with(&dir.path().join("edgeai.db"), options).expect("open");
    // Both reads are polled before either finishes: the first holds the only
    // place while it runs, the second is refused at once instead of waiting.
    let (a, b) = tokio::join!(store.list_apps(), store.list_apps());
    assert!(a.is_ok(), "{a:?}");
    assert!(matches!(b, Err(StoreError::Busy)), "{b:?}");
    // The first read's place is free again.
    store.list_apps().await.expect("a read after the others finished");
    store.list_apps().await.expect("and another");
}

/// A cached answer: conversation and finished message in one write, or
/// nothing when the conversation is not the user's.
#[tokio::test]
async fn an_answered_message_is_recorded_whole_or_not_at_all() {
    let t = open_store();
    let store = &t.store;
    store.put_app("a1", "A", "chat", "{}", "config").await.expect("app");
    let done = |answer: &str| MessageOutcome {
        answer: answer.into(),
        prompt_tokens: 0,
        completion_tokens: 0,
        latency_ms: 1,
        status: MessageStatus::Normal,
        error: None,
    };
    store.record_answered(message("m1", "c1"), Some("first".into()), done("cached")).await.expect("new conversation");
    let (msgs, _) = store.list_messages("a1", "u1", "c1", None, 20).await.expect("messages");
    assert_eq!((msgs.len(), msgs[0].answer.as_str(), msgs[0].status), (1, "cached", MessageStatus::Normal));
    assert_eq!(store.get_conversation("a1", "u1", "c1").await.expect("conversation").name, "first");
    store.record_answered(message("m2", "c1"), None, done("again")).await.expect("existing conversation");
    assert_eq!(store.list_messages("a1", "u1", "c1", None, 20).await.expect("messages").0.len(), 2);
    let other_user = NewMessage { user: "u2".into(), ..message("m3", "c1") };
    let err = store.record_answered(other_user, None, done("x")).await.expect_err("not u2's conversation");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    let err = store.record_answered(message("m1", "c2"), Some("dup".into()), done("x")).await.expect_err("duplicate id");
    assert!(matches!(err, StoreError::Sqlite { .. }), "{err:?}");
    assert!(store.get_conversation("a1", "u1", "c2").await.is_err(), "the failed write left no conversation");
}

/// `store.synchronous` reaches SQLite's writer connection (FULL = 2, NORMAL = 1).
#[tokio::test]
async fn the_writer_commits_with_the_configured_synchronous() {
    for (sync, want) in [(crate::config::Synchronous::Full, 2), (crate::config::Synchronous::Normal, 1)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) =
            Store::open_with(&dir.path().join("edgeai.db"), StoreOptions { synchronous: sync, ..StoreOptions::default() }).expect("open");
        let got: i64 = store
            .write("test: synchronous", |conn| conn.query_row("PRAGMA synchronous", [], |r| r.get(0)).map_err(sql("synchronous")))
            .await
            .expect("pragma");
        assert_eq!(got, want, "{sync:?}");
        store.close().await.expect("close");
    }
}

/// The writer keeps its statement journal (one savepoint per job, for a
/// whole group) in memory: at SQLite's default it spilled to a temporary
/// file created and deleted for every group.
#[tokio::test]
async fn the_writer_keeps_savepoint_journals_in_memory() {
    let TestStore { store, _dir } = open_store();
    let got: i64 = store
        .write("test: temp_store", |conn| conn.query_row("PRAGMA temp_store", [], |r| r.get(0)).map_err(sql("temp_store")))
        .await
        .expect("pragma");
    assert_eq!(got, 2, "temp_store is MEMORY (2)");
    store.close().await.expect("close");
}

/// Writes waiting together share one transaction; when SQLite ends it under
/// a job (as an I/O error or a full disk does), the writes before that job
/// in the group are answered with an error, never `Ok`, and the writes after
/// it commit in a new transaction.
#[tokio::test]
async fn a_group_rolled_back_under_a_job_fails_its_earlier_writes_and_the_later_ones_commit() {
    let TestStore { store, _dir } = open_store();
    // Everything below is queued while the writer sleeps: one group.
    store.occupy_writer(Duration::from_millis(300)).expect("occupy");
    let (before, failing, after) = tokio::join!(
        store.put_app("a1", "A", "chat", "{}", "config"),
        store.write("test: SQLite ends the transaction", |conn| conn.execute_batch("ROLLBACK").map_err(sql("rollback"))),
        store.put_app("a2", "B", "chat", "{}", "config"),
    );
    assert!(matches!(before, Err(StoreError::Sqlite { .. })), "{before:?}");
    assert!(matches!(failing, Err(StoreError::Sqlite { .. })), "{failing:?}");
    after.expect("the write after the rollback commits");
    let ids: Vec<String> = store.list_apps().await.expect("list").into_iter().map(|a| a.id).collect();
    assert_eq!(ids, ["a2"], "a1 was rolled back with its group");
    store.close().await.expect("close");
}
