//! `edgeaictl export logs` against the real daemon: messages made by real
//! chats on the local model (short answers) with feedback, and workflow runs
//! of a DSL workflow app, exported in both formats and both tables, read
//! back with arrow-ipc's FileReader and parquet's arrow reader and checked
//! row by row against what the Service API says (`/v1/messages`,
//! `/v1/conversations`, `/v1/workflows/logs`, the chat answers' usage);
//! `--since`/`--until`/`--app` filtering; every bad input (ctl and HTTP);
//! an export that breaks off after its head, and unwritable files, leave
//! nothing behind; a client that hangs up mid-export stops it.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use edgeai_common::ClientError;
use edgeai_tests::{paths, Client, Daemon, DaemonBuilder};
use serde_json::{json, Value};

type Row = BTreeMap<String, Value>;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `edgeaictl ARGS`, which must exit `code`; its stdout and stderr.
#[track_caller]
fn ctl(d: &Daemon, args: &[&str], code: i32) -> (String, String) {
    let out = d.ctl(args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(code), "edgeaictl {args:?}\nstdout: {stdout}\nstderr: {stderr}");
    (stdout, stderr)
}

/// Every row of every batch, as column name → JSON (timestamps as unix ms).
fn table_rows(batches: &[RecordBatch]) -> Vec<Row> {
    let mut out = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            let mut row = Row::new();
            for (field, col) in b.schema().fields().iter().zip(b.columns()) {
                let v = if col.is_null(i) {
                    Value::Null
                } else {
                    match field.data_type() {
                        DataType::Utf8 => json!(col.as_string::<i32>().value(i)),
                        DataType::Int64 => json!(col.as_primitive::<Int64Type>().value(i)),
                        DataType::Float64 => json!(col.as_primitive::<Float64Type>().value(i)),
                        DataType::Timestamp(TimeUnit::Millisecond, Some(tz)) if &**tz == "UTC" => {
                            json!(col.as_primitive::<TimestampMillisecondType>().value(i))
                        }
                        other => panic!("column {} has the unexpected type {other}", field.name()),
                    }
                };
                row.insert(field.name().clone(), v);
            }
            out.push(row);
        }
    }
    out
}

fn read_arrow(path: &Path) -> Vec<RecordBatch> {
    let reader = arrow_ipc::reader::FileReader::try_new(std::fs::File::open(path).unwrap(), None).unwrap();
    reader.collect::<Result<Vec<_>, _>>().unwrap()
}

fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap()).unwrap();
    builder.build().unwrap().collect::<Result<Vec<_>, _>>().unwrap()
}

/// Exports with `args` into `dir/name` in both formats; the rows, equal in both.
#[track_caller]
fn export(d: &Daemon, dir: &Path, name: &str, args: &[&str]) -> Vec<Row> {
    let mut both = Vec::new();
    for format in ["arrow", "parquet"] {
        let file = dir.join(format!("{name}.{format}"));
        let mut all = vec!["export", "logs", "--format", format];
        all.extend_from_slice(args);
        all.push(file.to_str().unwrap());
        let (stdout, _) = ctl(d, &all, 0);
        let batches = if format == "arrow" { read_arrow(&file) } else { read_parquet(&file) };
        let rows = table_rows(&batches);
        assert!(stdout.starts_with(&format!("wrote {} ", rows.len())), "{stdout}");
        both.push(rows);
    }
    let parquet = both.pop().unwrap();
    let arrow = both.pop().unwrap();
    assert_eq!(arrow, parquet, "the Arrow and Parquet files of {name} differ");
    arrow
}

/// Files in `dir` (names), to show that a failed export left nothing.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Waits until the clock shows a new second, so rows made after it have a
/// larger `created_at` than rows made before.
fn next_second() {
    let start = now_secs();
    while now_secs() == start {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One blocking chat turn; (message id, conversation id, the whole answer).
fn chat(c: &Client, query: &str, user: &str, conversation: Option<&str>) -> (String, String, Value) {
    let a = c.chat_blocking(query, user, conversation);
    (a["message_id"].as_str().unwrap().to_owned(), a["conversation_id"].as_str().unwrap().to_owned(), a)
}

fn import_workflow(d: &Daemon, id: &str) -> Client {
    let fixture = paths::repo_root().join("tests/fixtures/dsl/workflow-branches.yml");
    ctl(d, &["apps", "import", fixture.to_str().unwrap(), "--id", id], 0);
    let (_, key) = d.admin().create_key(id);
    d.client().with_key(&key)
}

fn run_workflow(c: &Client, user: &str) -> String {
    let body = json!({"inputs": {"text": "hello world", "count": 5, "flag": "yes"}, "response_mode": "blocking", "user": user});
    let r = c.post_json("/v1/workflows/run", &body).expect_json(200);
    assert_eq!(r["data"]["status"], "succeeded", "{r}");
    r["workflow_run_id"].as_str().unwrap().to_owned()
}

#[test]
fn exports_messages_and_workflow_runs_row_by_row_in_both_formats() {
    let d = DaemonBuilder::new().max_tokens(4).start();
    let out = tempfile::tempdir().unwrap();
    let c = d.client();

    // Messages: two turns of one conversation, then (a second later) a second user's.
    let (m1, conv1, a1) = chat(&c, "Hi", "ann", None);
    let (m2, _, a2) = chat(&c, "And then?", "ann", Some(&conv1));
    next_second();
    let (m3, conv2, a3) = chat(&c, "Hello", "bob", None);
    c.post_json(&format!("/v1/messages/{m2}/feedbacks"), &json!({"rating": "like", "user": "ann", "content": "short and right"}))
        .expect_json(200);
    c.post_json(&format!("/v1/messages/{m3}/feedbacks"), &json!({"rating": "dislike", "user": "bob"})).expect_json(200);

    // Workflow runs: two of one app, one of another.
    let wf = import_workflow(&d, "branches");
    let r1 = run_workflow(&wf, "wf-ann");
    let r2 = run_workflow(&wf, "wf-bob");
    let other = import_workflow(&d, "branches-2");
    let r3 = run_workflow(&other, "wf-ann");

    // ---- messages, row by row against the Service API ----------------------
    let rows = export(&d, out.path(), "messages", &[]);
    assert_eq!(rows.len(), 3, "{rows:#?}");
    let names: BTreeMap<String, String> = ["ann", "bob"]
        .iter()
        .flat_map(|u| c.conversations(u))
        .map(|c| (c["id"].as_str().unwrap().to_owned(), c["name"].as_str().unwrap().to_owned()))
        .collect();
    let api: Vec<(Value, &str, &Value)> = c
        .messages("ann", &conv1)
        .into_iter()
        .map(|m| (m, "ann"))
        .chain(c.messages("bob", &conv2).into_iter().map(|m| (m, "bob")))
        .zip([&a1, &a2, &a3])
        .map(|((m, user), answer)| (m, user, answer))
        .collect();
    assert_eq!(api.len(), 3);
    for ((m, user, answer), row) in api.iter().zip(&rows) {
        let id = m["id"].as_str().unwrap();
        assert_eq!(row["message_id"], m["id"], "rows come in the order they were written");
        assert_eq!(row["conversation_id"], m["conversation_id"], "{id}");
        assert_eq!(row["conversation_name"].as_str(), names.get(m["conversation_id"].as_str().unwrap()).map(String::as_str), "{id}");
        assert_eq!(row["app_id"], "demo", "{id}");
        assert_eq!(row["user"], *user, "{id}");
        assert_eq!(row["query"], m["query"], "{id}");
        assert_eq!(row["answer"], m["answer"], "{id}");
        assert_eq!(row["answer"], answer["answer"], "{id}");
        assert_eq!(row["status"], m["status"], "{id}");
        assert_eq!(row["error"], m["error"], "{id}");
        assert_eq!(row["created_at"], json!(m["created_at"].as_i64().unwrap() * 1000), "{id}");
        let usage = &answer["metadata"]["usage"];
        assert_eq!(row["prompt_tokens"], usage["prompt_tokens"], "{id}");
        assert_eq!(row["completion_tokens"], usage["completion_tokens"], "{id}");
        assert_eq!(row["total_tokens"], usage["total_tokens"], "{id}");
        let latency_ms = row["latency_ms"].as_i64().unwrap();
        assert!(latency_ms > 0 && (latency_ms as f64 / 1000.0 - usage["latency"].as_f64().unwrap()).abs() < 1.0, "{id}: {row:?}");
        assert_eq!(row["feedback_rating"], m["feedback"].get("rating").cloned().unwrap_or(Value::Null), "{id}");
    }
    assert_eq!((rows[0]["message_id"].as_str(), rows[1]["message_id"].as_str()), (Some(m1.as_str()), Some(m2.as_str())));
    assert_eq!((&rows[1]["feedback_rating"], &rows[1]["feedback_content"]), (&json!("like"), &json!("short and right")));
    assert_eq!((&rows[2]["feedback_rating"], &rows[2]["feedback_content"]), (&json!("dislike"), &Value::Null));
    assert_eq!((&rows[0]["feedback_rating"], &rows[0]["feedback_content"]), (&Value::Null, &Value::Null));

    // The schema says what analytics tools need: a UTC timestamp, nullable ids.
    let batches = read_parquet(&out.path().join("messages.parquet"));
    let schema = batches[0].schema();
    let created = schema.field_with_name("created_at").unwrap();
    assert_eq!(created.data_type(), &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())));
    assert!(schema.field_with_name("conversation_id").unwrap().is_nullable());

    // ---- workflow runs against /v1/workflows/logs --------------------------
    let runs = export(&d, out.path(), "runs", &["--table", "workflow-runs"]);
    assert_eq!(runs.iter().map(|r| r["run_id"].as_str().unwrap()).collect::<Vec<_>>(), [&r1, &r2, &r3]);
    for (client, app) in [(&wf, "branches"), (&other, "branches-2")] {
        let logs = client.get("/v1/workflows/logs?limit=100").expect_json(200);
        for log in logs["data"].as_array().unwrap() {
            let w = &log["workflow_run"];
            let row = runs.iter().find(|r| r["run_id"] == w["id"]).unwrap_or_else(|| panic!("run {w} not exported"));
            assert_eq!(row["app_id"], app);
            assert_eq!(row["app_version"].to_string(), w["version"].as_str().unwrap());
            assert_eq!(row["status"], w["status"]);
            assert_eq!(row["error"], w["error"]);
            assert_eq!(row["elapsed_secs"].as_f64(), w["elapsed_time"].as_f64());
            assert_eq!(row["total_tokens"], w["total_tokens"]);
            assert_eq!(row["total_steps"], w["total_steps"]);
            assert_eq!(row["created_at"].as_i64().unwrap() / 1000, w["created_at"].as_i64().unwrap());
            assert_eq!(row["finished_at"], json!(w["finished_at"].as_i64().unwrap() * 1000));
            assert_eq!(row["user"], log["created_by_end_user"]["id"]);
            assert_eq!(row["triggered_from"], "app-run");
            assert_eq!((&row["conversation_id"], &row["message_id"]), (&Value::Null, &Value::Null));
            assert!(!row["workflow_id"].as_str().unwrap().is_empty());
        }
    }

    // ---- filters -----------------------------------------------------------
    let t3 = rows[2]["created_at"].as_i64().unwrap() / 1000;
    let t2 = rows[1]["created_at"].as_i64().unwrap() / 1000;
    assert!(t2 < t3);
    // RFC 3339 with an offset and unix seconds mean the same instants.
    let since = humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(t3 as u64 + 3600)).to_string();
    let since = format!("{}+01:00", since.trim_end_matches('Z'));
    let later = export(&d, out.path(), "since", &["--since", &since]);
    assert_eq!(later.iter().map(|r| r["message_id"].as_str().unwrap()).collect::<Vec<_>>(), [m3.as_str()]);
    let earlier = export(&d, out.path(), "until", &["--until", &t2.to_string()]);
    assert_eq!(earlier.iter().map(|r| r["message_id"].as_str().unwrap()).collect::<Vec<_>>(), [m1.as_str(), m2.as_str()]);
    let none = export(&d, out.path(), "future", &["--since", &(now_secs() + 3600).to_string()]);
    assert!(none.is_empty());
    let one_app = export(&d, out.path(), "app-runs", &["--table", "workflow-runs", "--app", "branches-2"]);
    assert_eq!(one_app.iter().map(|r| r["run_id"].as_str().unwrap()).collect::<Vec<_>>(), [r3.as_str()]);
    assert!(export(&d, out.path(), "app-messages", &["--app", "branches"]).is_empty(), "a workflow app has no messages");

    // --json says what was written; a second export replaces the file whole.
    let file = out.path().join("messages.parquet");
    let (stdout, _) = ctl(&d, &["--json", "export", "logs", "--format", "parquet", "--app", "demo", file.to_str().unwrap()], 0);
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!((summary["rows"].as_u64(), summary["table"].as_str()), (Some(3), Some("messages")), "{summary}");
    assert_eq!(summary["bytes"].as_u64(), Some(std::fs::metadata(&file).unwrap().len()));
    assert_eq!(table_rows(&read_parquet(&file)).len(), 3);

    also_read_by_python(&file);
}

/// pyarrow or duckdb of the test venv reads the Parquet file, when one is installed.
fn also_read_by_python(file: &Path) {
    let python = paths::repo_root().join(".cache/venv/bin/python");
    let script = "import sys\n\
        try:\n    import pyarrow.parquet as pq\n    t = pq.read_table(sys.argv[1]); print(t.num_rows, t.schema.field('created_at').type)\n\
        except ImportError:\n    import duckdb\n    print(duckdb.sql(f\"SELECT count(*) FROM '{sys.argv[1]}'\").fetchone()[0], 'duckdb')\n";
    let Ok(out) = std::process::Command::new(&python).arg("-c").arg(script).arg(file).output() else {
        eprintln!("SKIP reading the Parquet file with Python: {} cannot run", python.display());
        return;
    };
    if !out.status.success() {
        let why = text(&out.stderr).lines().last().unwrap_or_default().to_owned();
        eprintln!("SKIP reading the Parquet file with Python: neither pyarrow nor duckdb in {} ({why})", python.display());
        return;
    }
    assert!(text(&out.stdout).starts_with("3 "), "{}", text(&out.stdout));
}

#[test]
fn bad_export_requests_fail_with_their_own_error_and_leave_nothing() {
    let d = DaemonBuilder::new().wait_for_model(false).start();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("logs.parquet");
    let f = file.to_str().unwrap();
    let stderr_of = |args: &[&str], code: i32| ctl(&d, args, code).1;

    // Usage errors: edgeaictl refuses them itself (exit 2).
    for (args, says) in [
        (&["export", "logs", "--format", "csv", f][..], "csv"),
        (&["export", "logs", "--format", "arrow", "--table", "conversations", f], "conversations"),
        (&["export", "logs", "--format", "arrow", "--since", "last tuesday", f], "neither unix seconds nor an RFC 3339 time"),
        (&["export", "logs", "--format", "arrow", "--until", "2024-06-01T12:00:00", f], "RFC 3339"),
        (&["export", "logs", f], "--format"),
    ] {
        let stderr = stderr_of(args, 2);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    // The daemon's refusals (exit 1, its code and message).
    let stderr = stderr_of(&["export", "logs", "--format", "arrow", "--app", "nope", f], 1);
    assert!(stderr.contains("not_found") && stderr.contains("nope"), "{stderr}");
    let stderr = stderr_of(&["export", "logs", "--format", "arrow", "--since", "2000", "--until", "1000", f], 1);
    assert!(stderr.contains("invalid_param") && stderr.contains("after until"), "{stderr}");
    // Unwritable: a missing directory, and a FILE that is a directory (exit 73).
    let missing = out.path().join("no/such/dir/logs.arrow");
    let stderr = stderr_of(&["export", "logs", "--format", "arrow", missing.to_str().unwrap()], 73);
    assert!(stderr.contains("cannot write the export"), "{stderr}");
    let dir_file = out.path().join("a-directory");
    std::fs::create_dir(&dir_file).unwrap();
    stderr_of(&["export", "logs", "--format", "arrow", dir_file.to_str().unwrap()], 73);
    assert_eq!(listing(out.path()), ["a-directory"], "a failed export left files behind");
    assert_eq!(listing(&dir_file), Vec::<String>::new());

    // The route itself, for other clients: Dify-style errors with their status.
    let admin = d.admin();
    for (query, status, code) in [
        ("format=arrow&table=conversations", 400, "invalid_param"),
        ("format=csv", 400, "invalid_param"),
        ("table=messages", 400, "invalid_param"),
        ("format=arrow&since=yesterday", 400, "invalid_param"),
        ("format=arrow&until=1.5", 400, "invalid_param"),
        ("format=parquet&since=9&until=8", 400, "invalid_param"),
        ("format=parquet&app=nope", 404, "not_found"),
    ] {
        match admin.get(&format!("/admin/v1/export/logs?{query}")) {
            Err(ClientError::Api { status: s, code: c, .. }) => assert_eq!((s, c.as_str()), (status, code), "{query}"),
            other => panic!("{query}: {other:?}"),
        }
    }
    match admin.post("/admin/v1/export/logs?format=arrow", &json!({})) {
        Err(ClientError::Api { status: 405, .. }) => {}
        other => panic!("POST: {other:?}"),
    }
}

#[test]
fn an_export_that_breaks_off_after_its_head_leaves_the_old_file() {
    // Fails after the first batch: the head (200) and that batch went out
    // already. `return`: the daemon's trailer says `failed`; `panic`: its
    // export task dies and the body ends without any trailer.
    for (action, says) in [("return", "internal_server_error"), ("panic", "without saying it is complete")] {
        let d = DaemonBuilder::new().wait_for_model(false).failpoint("export-batch", action).start();
        let wf = import_workflow(&d, "branches");
        run_workflow(&wf, "u");
        let out = tempfile::tempdir().unwrap();
        let file: PathBuf = out.path().join("runs.arrow");
        std::fs::write(&file, b"the previous export").unwrap();
        let (_, stderr) = ctl(&d, &["export", "logs", "--table", "workflow-runs", "--format", "arrow", file.to_str().unwrap()], 1);
        assert!(stderr.contains("broke off") && stderr.contains(says), "{action}: {stderr}");
        assert_eq!(std::fs::read(&file).unwrap(), b"the previous export", "{action}");
        assert_eq!(listing(out.path()), ["runs.arrow"], "{action}");
        if action == "return" {
            d.wait_log_message("log export failed after it started", Duration::from_secs(5));
        }
        // The daemon goes on serving.
        assert!(d.admin().status()["state"].is_string());
    }
}

#[test]
fn a_client_that_hangs_up_stops_the_export_without_holding_the_daemon() {
    let d = DaemonBuilder::new().wait_for_model(false).start();
    // Far more than the daemon buffers for one client (32 chunks of 64 KiB).
    let mut db = rusqlite::Connection::open(d.dir().join("edgeai.db")).unwrap();
    let tx = db.transaction().unwrap();
    let answer = "The relief valve opens at 6 bar; check it before restarting pump 3. ".repeat(4);
    for i in 0..30_000 {
        tx.execute(
            "INSERT INTO messages (id, app_id, user, task_id, query, inputs, answer, status, created_at, updated_at)
             VALUES (?1, 'demo', 'u', 't', 'q', '{}', ?2, 'normal', 1, 1)",
            rusqlite::params![format!("m{i}"), answer],
        )
        .unwrap();
    }
    tx.commit().unwrap();

    let c = d.unix_client().without_key();
    let mut s = c.open("GET", "/admin/v1/export/logs?format=arrow", &[("TE", "trailers")], None);
    assert_eq!((s.status, s.header("content-type")), (200, Some("application/vnd.apache.arrow.file")));
    assert!(!s.next_chunk().unwrap().unwrap().is_empty());
    s.close();
    d.wait_log_message("log export stopped: the client went away", Duration::from_secs(10));
    assert!(d.logs_with_message("log export written").is_empty(), "the export ran to its end without a reader");

    // The next export is whole: nothing was left holding the store.
    let out = tempfile::tempdir().unwrap();
    let rows = export(&d, out.path(), "all", &[]);
    assert_eq!(rows.len(), 30_000);
}
