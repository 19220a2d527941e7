//! Cached prompt prefixes survive what used to drop them: the context
//! rebuild a thread-count change needs (forced here by the `retune-threads`
//! fail point), and a restart (saved at a clean stop under `kv-prefixes/`
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
    let d = DaemonBuilder::new().set("log.level", SCHEDULER_DEBUG).failpoint("retune-threads", "return").start();
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
