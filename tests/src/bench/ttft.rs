//! The time-to-first-token-under-load phase (`bench --only ttft`): four
//! streams generate, one ~2k-token prompt is being read, and short requests
//! arrive one after another; how long each short one waits for its first
//! token, with prompt chunks bounded by the batch size only
//! (`model.step_budget_ms = 0`, the old way) and by the time budget (the
//! default). Rounds alternate between the two, each on a fresh daemon.
//! Owns only the daemons it starts and its client connections.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use serde_json::{json, Value};

use super::client::{self, ChunkRun};
use super::daemon::{Daemon, Launch};
use super::kv::long_prompt;

/// One way of reading prompts to compare.
#[derive(Debug, Clone, Copy)]
pub struct Mode {
    pub label: &'static str,
    /// `model.step_budget_ms`.
    pub step_budget_ms: u32,
}

pub const MODES: [Mode; 2] = [
    Mode { label: "batch_size chunks (step_budget_ms = 0)", step_budget_ms: 0 },
    Mode { label: "time-bounded chunks (step_budget_ms = 60)", step_budget_ms: 60 },
];
/// Rounds per mode, alternating modes.
pub const ROUNDS: usize = 3;
/// Streaming clients generating throughout.
pub const STREAMS: usize = 4;
/// More than the streams can produce while the long prompt is read; they
/// are cut off (the connection dropped) once the round is over.
const STREAM_TOKENS: u32 = 1024;
/// Plant logs joined into the long prompt (~700 tokens each).
const LONG_PARTS: usize = 3;
/// A new short request this often while the long prompt is read.
const SHORT_EVERY: Duration = Duration::from_millis(300);
/// Short requests per round, at most.
const SHORT_MAX: usize = 16;
/// Tokens a short request asks for.
const SHORT_TOKENS: u32 = 4;
/// Streams run this long before the long prompt is sent.
const STREAMS_HEAD_START: Duration = Duration::from_secs(1);
const TOPICS: [&str; STREAMS] = [
    "Write a long story about a lighthouse keeper who finds a mysterious map.",
    "Write a long story about a robot that learns to paint.",
    "Write a long story about two friends who build a boat and sail around the world.",
    "Write a long story about an engineer who repairs an old steam train.",
];
const QUESTIONS: [&str; 8] = [
    "Name one kind of industrial sensor.",
    "What does a PLC do?",
    "What is a relay?",
    "Name a common fieldbus.",
    "What does a VFD control?",
    "What is a pressure switch?",
    "What is lockout tagout?",
    "What does SCADA stand for?",
];

/// What one round measured.
#[derive(Debug, Clone)]
pub struct RoundRun {
    pub mode: Mode,
    /// Time to first token of every short request, seconds.
    pub short_ttft_s: Vec<f64>,
    /// Time to first token of the long prompt (its reading time), seconds.
    pub long_ttft_s: f64,
    /// Text chunks the streams got while the long prompt was read, per second.
    pub streams_tok_s: f64,
}

/// The long prompt of `round`: `LONG_PARTS` different plant logs.
pub fn long_text(round: usize) -> String {
    (0..LONG_PARTS).map(|p| long_prompt(1000 + round * LONG_PARTS + p)).collect::<Vec<_>>().join("\n")
}

fn chat(content: &str, max_tokens: u32) -> Value {
    json!({"model": "local", "messages": [{"role": "user", "content": content}], "temperature": 0, "max_tokens": max_tokens})
}

/// One round on a fresh daemon started with `launch` (which sets the mode).
pub async fn measure(launch: &Launch<'_>, mode: Mode, round: usize) -> Result<RoundRun> {
    let mut d = Daemon::start(launch).await?;
    d.wait_model_ready(Duration::from_secs(120)).await?;
    let (addr, key) = (d.addr, d.key.clone());
    // Not counted: the first request after a load pays for cold pages.
    client::openai_stream(addr, &key, chat("Hello.", 4), None).await.context("warm-up request")?;

    let chunks = Arc::new(Mutex::new(Vec::new()));
    let streams: Vec<_> = TOPICS
        .iter()
        .map(|t| {
            let (key, seen, body) = (key.clone(), Arc::clone(&chunks), chat(t, STREAM_TOKENS));
            tokio::spawn(async move { client::openai_stream(addr, &key, body, Some(seen)).await })
        })
        .collect();
    tokio::time::sleep(STREAMS_HEAD_START).await;

    let long_body = chat(&long_text(round), SHORT_TOKENS);
    let long_key = key.clone();
    let long = tokio::spawn(async move { client::openai_stream(addr, &long_key, long_body, None).await });
    let mut shorts = Vec::new();
    while !long.is_finished() && shorts.len() < SHORT_MAX {
        tokio::time::sleep(SHORT_EVERY).await;
        let body = chat(QUESTIONS[shorts.len() % QUESTIONS.len()], SHORT_TOKENS);
        let key = key.clone();
        shorts.push(tokio::spawn(async move { client::openai_stream(addr, &key, body, None).await }));
    }
    let long: ChunkRun = long.await.context("long prompt task")??;
    let long_ttft_s = long.ttft_s().ok_or_else(|| anyhow!("the long prompt got no text"))?;
    let mut short_ttft_s = Vec::new();
    for s in shorts {
        let run = s.await.context("short request task")??;
        short_ttft_s.push(run.ttft_s().ok_or_else(|| anyhow!("a short request got no text"))?);
    }
    let window = long_ttft_s.max(1e-9);
    let read_end = long.sent + Duration::from_secs_f64(long_ttft_s);
    let streamed = chunks.lock().map_err(|_| anyhow!("poisoned"))?.iter().filter(|t| **t >= long.sent && **t <= read_end).count();
    for s in &streams {
        if s.is_finished() {
            // A stream that ended before the long prompt was read makes the
            // round lighter than described: say so rather than hide it.
            eprintln!("bench: ttft round {round}: a stream ended early (end of generation before {STREAM_TOKENS} tokens)");
        }
        s.abort();
    }
    d.stop().await?;
    Ok(RoundRun { mode, short_ttft_s, long_ttft_s, streams_tok_s: streamed as f64 / window })
}

/// The `q`-quantile (0..=1) of `values` by nearest rank; `None` when empty.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.99), Some(3.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn the_long_prompt_joins_different_logs() {
        let t = long_text(0);
        assert_eq!(t.matches("Shift report number").count(), LONG_PARTS);
        assert_ne!(long_text(0), long_text(1));
    }
}
