//! The governor end to end, against the real daemon and model: fair
//! admission between two apps over HTTP, 429 with Retry-After when one
//! app's share of the queue is full while another app still gets in, memory
//! pressure (forced by the `memory-pressure` failpoint) shedding new
//! generations with 503 + Retry-After while the running one finishes, then
//! recovering; and the acceptance run under a real 512 MiB cgroup memory
//! limit (root only, else a loud SKIP), flooded for `$EDGEAI_TEST_FLOOD_SECS`
//! (default 60) seconds.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgeai_tests::{dify, DaemonBuilder, LONG_APP, LONG_QUERY};

/// Reads events until the first `message` event.
fn first_message(r: &mut edgeai_tests::SseReader) {
    loop {
        let ev = r.next_event().unwrap().expect("the stream ended before its first message");
        assert_ne!(ev.name(), "message_end", "the generation ended before the test could act on it");
        if ev.name() == "message" {
            return;
        }
    }
}

/// Reads a stream to its end; true when it ended with `message_end` and no error event.
fn finished_cleanly(r: edgeai_tests::SseReader) -> bool {
    let out = dify::collect(r);
    out.end.is_some() && out.named("error").is_empty()
}

#[test]
fn one_apps_flood_does_not_starve_another_apps_request() {
    // One slot: every generation waits its turn; the long app floods the
    // queue, then the demo app sends one request.
    let d = DaemonBuilder::new()
        .set("model.slots", 1)
        .set("model.queue_depth", 16)
        .set("admission.max_queued_per_app", 8)
        .long_app(64)
        .app_set("demo", "completion_params.max_tokens", 8)
        .start();
    let (_, long_key) = d.admin().create_key(LONG_APP);
    let long = d.client().with_key(&long_key);
    let demo = d.client().with_key(d.key());
    let mut first = long.chat_stream_open(LONG_QUERY, "flood-0", None);
    first_message(&mut first);
    let mut flood = vec![first];
    for i in 1..5 {
        let r = long.chat_stream_open(LONG_QUERY, &format!("flood-{i}"), None);
        assert_eq!(r.status(), 200, "the flood's request {i} should wait in the queue");
        flood.push(r);
    }
    let finished: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let readers: Vec<_> = flood
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let finished = Arc::clone(&finished);
            std::thread::spawn(move || {
                assert!(finished_cleanly(r), "flood request {i} did not finish cleanly");
                finished.lock().unwrap().push((format!("flood-{i}"), Instant::now()));
            })
        })
        .collect();
    let answer = demo.chat_blocking("What is a PLC?", "single", None);
    finished.lock().unwrap().push(("single".into(), Instant::now()));
    assert!(answer["answer"].as_str().is_some_and(|a| !a.is_empty()), "{answer}");
    for r in readers {
        r.join().unwrap();
    }
    let mut order = finished.lock().unwrap().clone();
    order.sort_by_key(|(_, at)| *at);
    let names: Vec<&str> = order.iter().map(|(n, _)| n.as_str()).collect();
    let pos = names.iter().position(|n| *n == "single").unwrap();
    // FIFO would answer it after all five; round-robin right after the
    // running one (flood-0).
    assert!(pos <= 1, "the other app's request waited for the flood: finish order {names:?}");
}

#[test]
fn an_app_over_its_queue_share_gets_429_with_retry_after_and_another_app_gets_in() {
    let d = DaemonBuilder::new()
        .set("model.slots", 1)
        .set("model.queue_depth", 4)
        .set("admission.max_queued_per_app", 2)
        .long_app(400)
        .app_set("demo", "completion_params.max_tokens", 4)
        .start();
    let (_, long_key) = d.admin().create_key(LONG_APP);
    let long = d.client().with_key(&long_key);
    let mut running = long.chat_stream_open(LONG_QUERY, "u0", None);
    first_message(&mut running);
    let queued: Vec<_> = (1..=2).map(|i| long.chat_stream_open(LONG_QUERY, &format!("u{i}"), None)).collect();
    assert!(queued.iter().all(|r| r.status() == 200), "the app's two queue places");
    let refused = long.post_json("/v1/chat-messages", &dify::chat_body(LONG_QUERY, "u3", "blocking", None));
    let body = refused.expect_dify_error(429, "too_many_requests");
    assert_eq!(refused.header("retry-after"), Some("1"), "{body}");
    assert!(body["message"].as_str().unwrap().contains("its share"), "{body}");
    // The queue as a whole has room: the other app is admitted (it waits
    // behind the running generation, so streamed and closed here).
    let other = d.client().with_key(d.key()).chat_stream_open("What is a PLC?", "other", None);
    assert_eq!(other.status(), 200, "another app was refused while the queue had room");
    let metrics = d.unix_client().without_key().get("/metrics").text();
    assert!(metrics.contains("edgeai_shed_requests_total{reason=\"app_queue_full\"} 1"), "{metrics}");
    assert!(metrics.contains(&format!("edgeai_admission_queue_depth_by_app{{app=\"{LONG_APP}\"}} 2")), "{metrics}");
    other.close();
    for r in queued {
        r.close();
    }
    running.close();
}

#[test]
fn memory_pressure_sheds_new_generations_lets_running_ones_finish_and_recovers() {
    let builder = DaemonBuilder::new().long_app(300).app_set("demo", "completion_params.max_tokens", 4).set("cache.enabled", true);
    let flag = builder.dir().join("pressure");
    let d = builder.failpoint("memory-pressure", &format!("return({})", flag.display())).start();
    let (_, long_key) = d.admin().create_key(LONG_APP);
    let dsl = edgeai_tests::paths::repo_root().join("tests/fixtures/dsl/workflow-code-probe-js.yml");
    let out = d.ctl(&["apps", "import", dsl.to_str().unwrap(), "--id", "probe-js"]);
    assert!(out.status.success(), "import: {}", String::from_utf8_lossy(&out.stderr));
    let workflow = d.client().with_key(&d.admin().create_key("probe-js").1);
    let run = |w: &edgeai_tests::Client| {
        w.post_json("/v1/workflows/run", &serde_json::json!({"inputs": {"src": "function main() { return {result: 'fine'}; }"}, "response_mode": "blocking", "user": "gov"}))
    };
    assert_eq!(run(&workflow).status, 200, "a workflow runs before the pressure");
    let long = d.client().with_key(&long_key);
    let demo = d.client().with_key(d.key());
    assert_eq!(d.admin().status()["memory"]["pressure"], "normal");
    // A cached answer: the response cache is what pressure shrinks first.
    demo.post_json("/v1/chat-messages", &dify::chat_body("What is a gateway?", "cached", "blocking", None)).expect_json(200);
    let cache = d.admin().get("/admin/v1/cache").unwrap();
    assert_eq!(cache["entries"], 1, "{cache}");
    let mut running = long.chat_stream_open(LONG_QUERY, "in-flight", None);
    first_message(&mut running);

    std::fs::write(&flag, b"").unwrap();
    // A new question each time: a cache hit costs no generation and is
    // answered under pressure too (but nothing new is cached meanwhile).
    let mut n = 0;
    let shed = poll(Duration::from_secs(20), || {
        n += 1;
        let r = demo.post_json("/v1/chat-messages", &dify::chat_body(&format!("What is PLC number {n}?"), "new", "blocking", None));
        (r.status == 503).then_some(r)
    })
    .expect("new generations were never refused under forced memory pressure");
    let body = shed.expect_dify_error(503, "service_unavailable");
    assert_eq!(shed.header("retry-after"), Some("5"), "{body}");
    assert!(body["message"].as_str().unwrap().contains("memory pressure"), "{body}");
    // Workflow and OpenAI starts are refused too; a running generation is not.
    let openai = demo.post_json(
        "/v1/chat/completions",
        &serde_json::json!({"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
    );
    assert_eq!(openai.status, 503, "{}", openai.text());
    let refused = run(&workflow);
    let body = refused.expect_dify_error(503, "service_unavailable");
    assert_eq!(refused.header("retry-after"), Some("5"), "{body}");
    let status = d.admin().status();
    assert_eq!(status["memory"]["pressure"], "shedding", "{status}");
    assert!(status["memory"]["budget"]["kv_cache_bytes"].as_u64().is_some_and(|b| b > 0), "{status}");
    let log = d.wait_log_message(
        "memory pressure persists after shrinking: refusing new generations (503) while running ones finish",
        Duration::from_secs(5),
    );
    assert_eq!(log.field("forced"), Some(&serde_json::Value::Bool(true)));
    assert!(finished_cleanly(running), "the generation running when shedding began did not finish");
    // The governor asked the cache to give its memory back before shedding.
    let cache = d.admin().get("/admin/v1/cache").unwrap();
    assert_eq!((cache["entries"].as_u64(), cache["bytes"].as_u64()), (Some(0), Some(0)), "{cache}");
    assert!(cache["evictions"].as_u64().is_some_and(|e| e >= 1), "{cache}");

    std::fs::remove_file(&flag).unwrap();
    poll(Duration::from_secs(20), || {
        let r = demo.post_json("/v1/chat-messages", &dify::chat_body("What is a PLC?", "after", "blocking", None));
        (r.status == 200).then_some(())
    })
    .expect("the daemon did not admit again after the pressure went");
    d.wait_log_message("memory pressure over: admitting new generations", Duration::from_secs(5));
    let metrics = d.unix_client().without_key().get("/metrics").text();
    assert!(metrics.contains("edgeai_memory_pressure_stage 0"), "{metrics}");
    assert!(!metrics.contains("edgeai_shed_requests_total{reason=\"memory_pressure\"} 0"), "{metrics}");
}

/// Calls `f` every 250 ms until it gives something or `limit` passes.
fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A child memory cgroup of this test's own, removed on drop (the daemon
/// must have left it: declare the guard before the daemon).
struct Cgroup {
    dir: PathBuf,
    /// `cgroup.procs` of the parent, where stragglers are moved before removal.
    parent_procs: PathBuf,
    /// The file the OOM kills are counted in, and its key.
    oom_file: PathBuf,
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            if let Ok(procs) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
                for pid in procs.lines() {
                    let _ = std::fs::write(&self.parent_procs, pid);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("WARNING: could not remove the test cgroup {}", self.dir.display());
    }
}

/// Creates `edgeai-test-<pid>` under this process's memory cgroup with a
/// 512 MiB limit, or says why it cannot.
fn memory_cgroup() -> Result<Cgroup, String> {
    const LIMIT: u64 = 512 << 20;
    if !nix_is_root() {
        return Err("not root: cannot create a memory cgroup".into());
    }
    let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("/proc/self/cgroup: {e}"))?;
    let name = format!("edgeai-test-{}", std::process::id());
    let v1 = own.lines().find_map(|l| {
        let mut p = l.splitn(3, ':');
        let (_, ctrls, path) = (p.next()?, p.next()?, p.next()?);
        ctrls.split(',').any(|c| c == "memory").then(|| path.trim_start_matches('/').to_owned())
    });
    if let Some(rel) = v1 {
        let parent = Path::new("/sys/fs/cgroup/memory").join(rel);
        let dir = parent.join(&name);
        std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let cg = Cgroup { dir: dir.clone(), parent_procs: parent.join("cgroup.procs"), oom_file: dir.join("memory.oom_control") };
        std::fs::write(dir.join("memory.limit_in_bytes"), LIMIT.to_string()).map_err(|e| format!("setting the v1 limit: {e}"))?;
        return Ok(cg);
    }
    let rel = own.lines().find_map(|l| l.strip_prefix("0::")).ok_or("neither a v1 memory hierarchy nor cgroup v2")?;
    let parent = Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/'));
    if !parent.join("cgroup.subtree_control").exists() || !Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        return Err("neither a v1 memory hierarchy nor a writable cgroup v2".into());
    }
    let dir = parent.join(&name);
    std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let cg = Cgroup { dir: dir.clone(), parent_procs: parent.join("cgroup.procs"), oom_file: dir.join("memory.events") };
    std::fs::write(dir.join("memory.max"), LIMIT.to_string())
        .map_err(|e| format!("setting memory.max (is the memory controller enabled in the parent's subtree_control?): {e}"))?;
    Ok(cg)
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Uid:").map(|r| r.split_whitespace().nth(1) == Some("0"))))
        .unwrap_or(false)
}

fn oom_kills(cg: &Cgroup) -> u64 {
    let text = std::fs::read_to_string(&cg.oom_file).unwrap_or_else(|e| panic!("{}: {e}", cg.oom_file.display()));
    text.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|v| v.trim().parse().ok()).expect("an oom_kill line")
}

/// What the flood's clients saw.
#[derive(Default, Debug)]
struct Tally {
    ok: u64,
    too_many: u64,
    unavailable: u64,
    /// Anything else: status and body, or a stream that did not end cleanly.
    bad: Vec<String>,
}

impl Tally {
    fn record(&mut self, status: u16, clean: bool, detail: impl FnOnce() -> String) {
        match (status, clean) {
            (200, true) => self.ok += 1,
            (429, _) => self.too_many += 1,
            (503, _) => self.unavailable += 1,
            _ => self.bad.push(detail()),
        }
    }
}

#[test]
fn acceptance_a_flood_under_a_512_mib_cgroup_limit_is_never_oom_killed() {
    let cg = match memory_cgroup() {
        Ok(cg) => cg,
        Err(why) => {
            eprintln!("SKIP acceptance_a_flood_under_a_512_mib_cgroup_limit_is_never_oom_killed: {why}");
            return;
        }
    };
    let secs: u64 = std::env::var("EDGEAI_TEST_FLOOD_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let mut d = DaemonBuilder::new()
        .set("model.slots", 4)
        .set("model.context_size", 4096)
        .set("model.queue_depth", 16)
        .long_app(400)
        .app_set("demo", "completion_params.max_tokens", 8)
        .cgroup_procs(cg.dir.join("cgroup.procs"))
        .start();
    let pid = d.pid();
    let procs = std::fs::read_to_string(cg.dir.join("cgroup.procs")).unwrap();
    assert!(procs.lines().any(|l| l.trim() == pid.to_string()), "the daemon {pid} is not in the test cgroup: {procs:?}");
    assert_eq!(d.admin().status()["memory"]["limit_bytes"], 512u64 << 20, "the daemon does not see the cgroup's limit");
    let (_, long_key) = d.admin().create_key(LONG_APP);
    let long = d.client().with_key(&long_key);
    let demo = d.client().with_key(d.key());
    let tally: Arc<Mutex<Tally>> = Arc::default();
    let until = Instant::now() + Duration::from_secs(secs);
    let mut clients = Vec::new();
    for t in 0..4 {
        let (c, tally) = (long.clone(), Arc::clone(&tally));
        clients.push(std::thread::spawn(move || {
            let mut n = 0;
            while Instant::now() < until {
                let r = c.chat_stream_open(LONG_QUERY, &format!("long-{t}"), None);
                let status = r.status();
                let clean = status != 200 || finished_cleanly(r);
                tally.lock().unwrap().record(status, clean, || format!("long stream {t}/{n}: status {status}, clean {clean}"));
                n += 1;
                if status != 200 {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }));
    }
    // More short clients than queue places: some are refused (429).
    for t in 0..20 {
        let (c, tally) = (demo.clone(), Arc::clone(&tally));
        clients.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while Instant::now() < until {
                // Every question distinct: nothing can be answered from a cache.
                let q = format!("What is {t} plus {n}? Question {t}-{n}.");
                let r = c.post_json("/v1/chat-messages", &dify::chat_body(&q, &format!("short-{t}"), "blocking", None));
                let clean = r.status != 200 || r.json()["answer"].is_string();
                tally.lock().unwrap().record(r.status, clean, || format!("short {t}/{n}: {} {}", r.status, r.text()));
                n += 1;
                if r.status != 200 {
                    // A refused client backs off a little, as real ones do.
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }));
    }
    for c in clients {
        c.join().unwrap();
    }
    let tally = tally.lock().unwrap();
    let peak = ["memory.max_usage_in_bytes", "memory.peak"].iter().find_map(|f| std::fs::read_to_string(cg.dir.join(f)).ok());
    eprintln!("flood of {secs} s under 512 MiB: {tally:?}; peak cgroup usage {:?} bytes", peak.map(|p| p.trim().to_owned()));
    assert!(d.is_running(), "the daemon died during the flood");
    assert_eq!(d.pid(), pid, "the daemon was restarted");
    assert_eq!(oom_kills(&cg), 0, "the OOM killer acted in the daemon's cgroup");
    assert!(tally.bad.is_empty(), "requests answered neither 200 nor 429/503: {:?}", tally.bad);
    assert!(tally.ok > 0, "nothing was answered during the flood");
    let after = demo.chat_blocking("What is a PLC?", "after", None);
    assert!(after["answer"].as_str().is_some_and(|a| !a.is_empty()), "{after}");
    d.sigterm();
    d.wait_exit(Duration::from_secs(60));
    drop(d);
    drop(cg);
}
