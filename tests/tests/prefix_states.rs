//! Cached prompt prefixes survive what used to drop them: the context
//! rebuild a thread-count change needs (forced here by the `retune-threads`
//! fail point), and a restart (saved at a clean stop, or while idle, under `kv-prefixes/`
//! next to the store, loaded at start). The reuse is read from the
//! scheduler's debug line "sequence started" (`reused` prompt tokens).

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::time::{Duration, Instant};

use edgeai_tests::{Client, Daemon, DaemonBuilder, LogLine};
use serde_json::{json, Value};

/// Log filter that shows the scheduler's "sequence started/finished" lines.
const SCHEDULER_DEBUG: &str = "info,edgeaid::model=debug";
const LOG_WAIT: Duration = Duration::from_secs(20);

/// An app's long pre-prompt: worth keeping warm (~150 tokens).
fn system() -> Value {
    json!({"role": "system", "content": "You are the maintenance assistant of a bottling plant in Lyon. \
        The plant runs three filling lines, each with a rinser, a filler, a capper and a labeller, \
        controlled by Siemens S7-1500 PLCs over PROFINET. Operators work in three shifts. \
        Safety rules: lock out and tag out every machine before opening a guard; wear gloves \
        and eye protection near the rinser; never bypass a light curtain. Answer in short \
        sentences, name the machine concerned, and say when a technician must be called \
        instead of the operator fixing it alone."})
}

fn ask(c: &Client, question: &str) -> Value {
    let body = json!({"model": "local", "messages": [system(), {"role": "user", "content": question}],
        "temperature": 0, "max_tokens": 8});
    c.post_json("/v1/chat/completions", &body).expect_json(200)
}

fn prompt_tokens(r: &Value) -> u64 {
    r["usage"]["prompt_tokens"].as_u64().unwrap()
}

/// `(prompt_tokens, reused)` of this process's `n`-th (from 0) "sequence started" line.
fn nth_started(d: &Daemon, n: usize) -> (u64, u64) {
    let l = &d.wait_log_count("sequence started", n + 1, LOG_WAIT)[n];
    let field = |k: &str| l.field_u64(k).unwrap_or_else(|| panic!("no numeric {k} in {}", l.raw));
    (field("prompt_tokens"), field("reused"))
}

/// Waits for a context rebuild logged after the first finished sequence
/// (so with its prefix cached) and returns that line.
fn rebuild_after_first_answer(d: &Daemon) -> LogLine {
    let deadline = Instant::now() + LOG_WAIT;
    loop {
        let logs = d.logs();
        let finished = logs.iter().position(|l| l.message() == "sequence finished");
        let rebuilt =
            finished.and_then(|f| logs[f..].iter().find(|l| l.message() == "inference threads changed for the CPU load").cloned());
        if let Some(l) = rebuilt {
            return l;
        }
        assert!(Instant::now() < deadline, "no context rebuild after the first answer within {LOG_WAIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A thread-count change rebuilds the llama.cpp context; the prefix cached
/// in a slot is copied across, so the same prompt again is served from it.
#[test]
fn a_cached_prefix_survives_a_thread_count_change() {
    // q8_0 KV: the answers are compared, and with f16 KV a prompt read in a
    // batch and one found in a cached prefix may give different greedy
    // answers (README, KV cache types); the state copy is what is tested.
    let d = DaemonBuilder::new()
        .set("log.level", SCHEDULER_DEBUG)
        .set("model.kv_type_k", "q8_0")
        .set("model.kv_type_v", "q8_0")
        .failpoint("retune-threads", "return")
        .start();
    d.expect_failpoint("retune-threads");
    let c = d.client();
    let question = "The capper on line 2 jams every hour. What should I check?";
    let r1 = ask(&c, question);
    let p1 = prompt_tokens(&r1);
    assert_eq!(nth_started(&d, 0), (p1, 0), "a fresh daemon has nothing cached");

    let rebuilt = rebuild_after_first_answer(&d);
    assert_eq!(rebuilt.field_u64("kept_prefixes"), Some(1), "{}", rebuilt.raw);
    assert_eq!(rebuilt.field_u64("dropped_prefixes"), Some(0), "{}", rebuilt.raw);

    let r2 = ask(&c, question);
    assert_eq!(nth_started(&d, 1), (p1, p1 - 1), "the prefix cached before the rebuild was not reused");
    assert_eq!(r1["choices"][0]["message"]["content"], r2["choices"][0]["message"]["content"], "greedy answers differ across the rebuild");
}

/// Under sustained load the CPU load is followed between steps too: a
/// thread-count change (forced at every look here, every 250 ms) rebuilds
/// the context in the middle of a generation, and the running answer goes on
/// from the cells carried over, token for token the same as without one.
#[test]
fn a_running_generation_survives_a_thread_count_change() {
    let long = |c: &Client| {
        let body = json!({"model": "local", "messages": [system(), {"role": "user", "content":
            "List twenty safety rules for the filling lines, one per line, each with the machine it concerns."}],
            "temperature": 0, "max_tokens": 200});
        c.post_json("/v1/chat/completions", &body).expect_json(200)
    };
    // q8_0 KV: the answers are compared (see the test above).
    let q8 = || DaemonBuilder::new().set("model.kv_type_k", "q8_0").set("model.kv_type_v", "q8_0");
    let reference = long(&q8().start().client());
    let d = q8().failpoint("retune-threads", "return").start();
    d.expect_failpoint("retune-threads");
    let r = long(&d.client());
    assert_eq!(r["choices"][0]["finish_reason"], reference["choices"][0]["finish_reason"], "{r}");
    assert_eq!(
        r["choices"][0]["message"]["content"], reference["choices"][0]["message"]["content"],
        "the answer changed across rebuilds in the middle of its generation"
    );
    let rebuilds = d.logs_with_message("inference threads changed for the CPU load");
    let mid = rebuilds.iter().filter(|l| l.field_u64("running").is_some_and(|n| n >= 1)).count();
    assert!(
        mid >= 1,
        "no rebuild while the answer ({} tokens) was generated:\n{}",
        r["usage"]["completion_tokens"],
        rebuilds.iter().map(|l| l.raw.as_str()).collect::<Vec<_>>().join("\n")
    );
    for l in rebuilds.iter().filter(|l| l.field_u64("running").is_some_and(|n| n >= 1)) {
        assert_eq!(l.field_u64("dropped_prefixes"), Some(0), "{}", l.raw);
    }
}

/// Files in the daemon's `kv-prefixes/` directory (next to its store).
fn saved_files(d: &Daemon) -> Vec<String> {
    let dir = d.dir().join("kv-prefixes");
    let mut names: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// SIGTERM, a clean exit, and the log line of the save.
fn stop_cleanly(d: &mut Daemon) -> LogLine {
    d.sigterm();
    let status = d.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "edgeaid exited with {status} on SIGTERM");
    let saved = d.logs_with_message("cached prefixes saved");
    assert_eq!(saved.len(), 1, "one save at the clean stop:\n{}", d.dump_logs());
    saved[0].clone()
}

/// The slot a daemon's single saved prefix went to: `slot-N.state` and its
/// manifest `slot-N.json`, nothing else.
fn single_saved_slot(d: &Daemon) -> String {
    let files = saved_files(d);
    assert_eq!(files.len(), 2, "one state file and its manifest: {files:?}");
    let slot = files[0].strip_suffix(".json").unwrap_or_else(|| panic!("no manifest in {files:?}")).to_owned();
    assert_eq!(files[1], format!("{slot}.state"), "{files:?}");
    slot
}

/// A clean stop saves the cached prefix; the next start loads it, so a new
/// question under the same system prompt decodes only what follows it.
#[test]
fn the_first_request_after_a_restart_reuses_the_saved_prefix() {
    let mut d = DaemonBuilder::new().set("log.level", SCHEDULER_DEBUG).start();
    let r1 = ask(&d.client(), "The capper on line 2 jams every hour. What should I check?");
    let p1 = prompt_tokens(&r1);
    assert_eq!(nth_started(&d, 0), (p1, 0), "a fresh daemon has nothing cached");

    let saved = stop_cleanly(&mut d);
    assert_eq!(saved.field_u64("slots"), Some(1), "{}", saved.raw);
    single_saved_slot(&d);

    d.start_again();
    let restored = d.wait_log_message("cached prefixes restored", LOG_WAIT);
    assert_eq!(restored.field_u64("slots"), Some(1), "{}", restored.raw);
    assert!(restored.field_u64("tokens").unwrap() >= p1, "{}", restored.raw);
    assert_eq!(saved_files(&d), Vec::<String>::new(), "loaded states are deleted at start (an idle save writes them again)");

    let r2 = ask(&d.client(), "Which gloves do I need near the rinser?");
    let (p2, reused) = nth_started(&d, 0);
    assert_eq!(p2, prompt_tokens(&r2));
    // The system prompt alone is ~150 tokens; the questions differ.
    assert!(reused >= 100 && reused < p2, "the first request after the restart reused {reused} of {p2} tokens");
}

/// While idle the daemon saves a new app prefix on its own (at most every
/// `model.prefix_save_secs`), so even a start after a crash is warm; a
/// conversation growing in a slot does not make it save again.
#[test]
fn a_prefix_saved_while_idle_makes_the_start_after_a_crash_warm() {
    let mut d = DaemonBuilder::new().set("log.level", SCHEDULER_DEBUG).set("model.prefix_save_secs", 1).start();
    let r1 = ask(&d.client(), "The capper on line 2 jams every hour. What should I check?");
    let p1 = prompt_tokens(&r1);
    let saved = d.wait_log_message("cached prefixes saved while idle", LOG_WAIT);
    assert_eq!(saved.field_u64("slots"), Some(1), "{}", saved.raw);
    single_saved_slot(&d);
    // The same prefix again (a longer conversation in the same slot): the
    // head is unchanged, so nothing is written again.
    ask(&d.client(), "The capper on line 2 jams every hour. What should I check first?");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(d.logs_with_message("cached prefixes saved while idle").len(), 1, "{}", d.dump_logs());

    d.kill9();
    d.start_again();
    let restored = d.wait_log_message("cached prefixes restored", LOG_WAIT);
    assert_eq!(restored.field_u64("slots"), Some(1), "{}", restored.raw);
    assert!(restored.field_u64("tokens").unwrap() >= p1, "{}", restored.raw);
    let r2 = ask(&d.client(), "Which gloves do I need near the rinser?");
    let (p2, reused) = nth_started(&d, 0);
    assert_eq!(p2, prompt_tokens(&r2));
    assert!(reused >= 100 && reused < p2, "the first request after the crash reused {reused} of {p2} tokens");
}

/// A saved state whose bytes changed, or that another context produced, is
/// never given to llama.cpp: it is logged, deleted, and the slot starts cold
/// (the request still answers).
#[test]
fn a_corrupt_or_mismatched_saved_prefix_is_deleted_and_the_start_is_cold() {
    let mut d = DaemonBuilder::new().set("log.level", SCHEDULER_DEBUG).start();
    let question = "The capper on line 2 jams every hour. What should I check?";
    ask(&d.client(), question);
    stop_cleanly(&mut d);
    let slot = single_saved_slot(&d);

    // One byte in the middle of the KV data flipped.
    let state = d.dir().join("kv-prefixes").join(format!("{slot}.state"));
    let mut bytes = std::fs::read(&state).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&state, bytes).unwrap();

    d.start_again();
    let discarded = d.wait_log_message("discarded a saved prefix: this slot starts cold", LOG_WAIT);
    assert!(discarded.field_str("error").unwrap().contains("do not match its manifest"), "{}", discarded.raw);
    assert_eq!(d.wait_log_message("cached prefixes restored", LOG_WAIT).field_u64("slots"), Some(0));
    assert_eq!(saved_files(&d), Vec::<String>::new(), "the corrupt state was not deleted");
    let r = ask(&d.client(), question);
    assert_eq!(nth_started(&d, 0).1, 0, "a cold start reuses nothing");
    assert!(!r["choices"][0]["message"]["content"].as_str().unwrap().is_empty());

    // Saved again at this stop; then the context size changes: the state
    // no longer fits this KV layout and is refused.
    stop_cleanly(&mut d);
    single_saved_slot(&d);
    d.edit_config(|c| edgeai_tests::daemon::set_path(c, "model.context_size", 3072.into()));
    d.start_again();
    let discarded = d.wait_log_message("discarded a saved prefix: this slot starts cold", LOG_WAIT);
    assert!(discarded.field_str("error").unwrap().contains("context size differs"), "{}", discarded.raw);
    assert_eq!(saved_files(&d), Vec::<String>::new(), "the mismatched state was not deleted");
    ask(&d.client(), question);
    assert_eq!(nth_started(&d, 0).1, 0, "a mismatched state must not be reused");
}
