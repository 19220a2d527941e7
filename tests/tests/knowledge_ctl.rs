//! `edgeaictl datasets` against the real daemon, the real embedding model
//! and the demo manuals (configs/knowledge/plant-manuals): create, ingest
//! (waiting for the indexing), docs, search, rm-doc, delete; and the admin
//! socket's `/admin/v1/datasets` answering exactly what `/v1/datasets`
//! answers a dataset key, while over TCP it does not exist.
//!
//! Needs the embedding model (scripts/setup.sh builds it into .cache/models).

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use edgeai_tests::{paths, Daemon, DaemonBuilder};
use serde_json::{json, Value};

/// Indexing the six demo manuals on 2 busy cores stays well under this.
const INGEST_LIMIT: Duration = Duration::from_secs(300);

fn daemon() -> Daemon {
    DaemonBuilder::new().with_embedder().start()
}

/// `edgeaictl --socket … args`, killed (and the test failed) after `limit`.
fn ctl(d: &Daemon, args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(paths::edgeaictl())
        .arg("--socket")
        .arg(d.socket_path())
        .args(args)
        .current_dir(d.dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running edgeaictl");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "edgeaictl {args:?} still running after {limit:?}\nstdout: {}\nstderr: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                d.dump_logs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn ok(d: &Daemon, args: &[&str]) -> String {
    let out = ctl(d, args, INGEST_LIMIT);
    assert!(
        out.status.success(),
        "edgeaictl {args:?} failed: {:?}\nstdout: {}\nstderr: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        d.dump_logs()
    );
    String::from_utf8(out.stdout).unwrap()
}

fn ok_json(d: &Daemon, args: &[&str]) -> Value {
    let text = ok(d, &[&["--json"], args].concat());
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("edgeaictl --json {args:?} printed no JSON ({e}):\n{text}"))
}

/// The documents of the best `n` records of a search.
fn top_documents(answer: &Value, n: usize) -> Vec<String> {
    answer["records"].as_array().unwrap().iter().take(n).map(|r| r["segment"]["document"]["name"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn datasets_ingest_demo_manuals_then_search_and_remove() {
    let d = daemon();
    let manuals = paths::repo_root().join("configs/knowledge/plant-manuals");
    let files = std::fs::read_dir(&manuals).unwrap().count();

    let id = ok(&d, &["datasets", "create", "plant-manuals", "--description", "Maintenance manuals"]).trim().to_owned();
    assert_eq!(id.len(), 36, "datasets create prints the id: {id:?}");

    // Not a terminal: a line per document, then the summary; exit 0 once all are indexed.
    let text = ok(&d, &["datasets", "ingest", manuals.to_str().unwrap(), "--dataset", "plant-manuals"]);
    assert!(text.contains("indexed plc-alarms.md: "), "{text}");
    assert!(text.contains(&format!("indexed {files} of {files} files into \"plant-manuals\"")), "{text}");

    let docs = ok_json(&d, &["datasets", "docs", "plant-manuals"]);
    let data = docs["data"].as_array().unwrap();
    assert_eq!(data.len(), files, "{docs:#}");
    for doc in data {
        assert_eq!(doc["indexing_status"], "completed", "{doc:#}");
        assert!(doc["segment_count"].as_u64().unwrap() > 0, "{doc:#}");
    }

    let hits = ok_json(&d, &["datasets", "search", "plant-manuals", "how do I clear the PLC alarm"]);
    let top = top_documents(&hits, 3);
    assert!(top.iter().any(|n| n == "plc-alarms.md"), "plc-alarms.md is not in the top 3: {top:?}\n{hits:#}");
    let table = ok(&d, &["datasets", "search", "plant-manuals", "how do I clear the PLC alarm", "--method", "full-text", "--top-k", "2"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["SCORE", "DOCUMENT", "EXCERPT"], "{table}");
    assert!((2..=3).contains(&lines.len()), "at most --top-k 2 hits:\n{table}");

    // The admin socket's /admin/v1/datasets is the Knowledge API itself:
    // the same answer a dataset key gets over TCP ...
    let key = ok(&d, &["keys", "create", "--dataset"]).trim().to_owned();
    let over_tcp = d.client().with_key(&key).get(&format!("/v1/datasets/{id}")).expect_json(200);
    assert_eq!(ok_json(&d, &["datasets", "show", &id]), over_tcp);
    let listed = d.client().with_key(&key).get(&format!("/v1/datasets/{id}/documents?limit=100")).expect_json(200);
    let mut admin_docs: Vec<Value> = data.to_vec();
    for doc in &mut admin_docs {
        doc.as_object_mut().unwrap().remove("segment_count");
    }
    assert_eq!(admin_docs, *listed["data"].as_array().unwrap());
    // ... with the same errors, and no admin route over TCP.
    let missing = "00000000-0000-4000-8000-000000000000";
    d.unix_client().without_key().get(&format!("/admin/v1/datasets/{missing}")).expect_dify_error(404, "not_found");
    d.client().with_key(&key).get(&format!("/v1/datasets/{missing}")).expect_dify_error(404, "not_found");
    d.client().with_key(&key).get("/admin/v1/datasets").expect_dify_error(404, "not_found");

    // rm-doc by name: its segments leave the search.
    ok(&d, &["datasets", "rm-doc", "plant-manuals", "plc-alarms.md"]);
    let hits = ok_json(&d, &["datasets", "search", "plant-manuals", "how do I clear the PLC alarm", "--top-k", "10"]);
    assert!(!top_documents(&hits, 10).iter().any(|n| n == "plc-alarms.md"), "{hits:#}");

    ok(&d, &["datasets", "delete", "plant-manuals"]);
    assert_eq!(ok_json(&d, &["datasets", "list"]), json!({"data": [], "total": 0}));
    let gone = ctl(&d, &["datasets", "show", "plant-manuals"], Duration::from_secs(30));
    assert_eq!(gone.status.code(), Some(1), "{}", String::from_utf8_lossy(&gone.stderr));
}

#[test]
fn datasets_ingest_reports_a_refused_file_and_an_error_document() {
    let d = daemon();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.md"), "# Pump P-3\n\nGrease the bearings every 500 hours.\n").unwrap();
    // Refused at upload: empty.
    std::fs::write(dir.path().join("empty.txt"), "").unwrap();
    // Accepted, then `error`: a PDF without a text layer.
    std::fs::write(dir.path().join("scan.pdf"), b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")
        .unwrap();
    std::fs::write(dir.path().join("photo.jpg"), b"\xff\xd8\xff").unwrap();

    let out = ctl(&d, &["datasets", "ingest", dir.path().to_str().unwrap(), "--dataset", "pumps", "--create"], INGEST_LIMIT);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("indexed good.md: "), "{stdout}");
    assert!(stderr.contains("photo.jpg: not a supported type"), "{stderr}");
    assert!(stderr.contains("empty.txt: not uploaded: "), "{stderr}");
    assert!(stderr.contains("scan.pdf: indexing failed: "), "{stderr}");
    assert!(stderr.ends_with("edgeaictl: 2 of 3 files were not indexed\n"), "{stderr}");
}
