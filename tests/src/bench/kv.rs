//! The KV cache types phase (`bench --only kv`): edgeaid started once per
//! mix of `model.kv_type_k` / `model.kv_type_v` (and one mix with fewer
//! cells), each measured the same way: reading a new ~700-token prompt
//! (time to first token, three rounds with different texts so no prefix is
//! reused), one stream's decode rate, and RSS idle after the load and after
//! the runs. Owns only the daemons it starts.

use std::time::Duration;

use anyhow::{Context as _, Result};

use super::client::{self, StreamRun};
use super::daemon::{Daemon, Launch, Rss};

/// One KV configuration to measure.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    pub k: &'static str,
    pub v: &'static str,
    /// `model.context_size`: KV cells.
    pub n_ctx: u32,
}

impl Mix {
    pub fn label(&self, default_ctx: u32) -> String {
        if self.n_ctx == default_ctx {
            format!("{}/{}", self.k, self.v)
        } else {
            format!("{}/{}, {} cells", self.k, self.v, self.n_ctx)
        }
    }
}

/// The mixes, the daemon's default first (the ratios' reference). The last
/// one has half the cells, to set f16's memory against fewer cells.
pub fn mixes(n_ctx: u32) -> [Mix; 5] {
    [
        Mix { k: "q8_0", v: "q8_0", n_ctx },
        Mix { k: "f16", v: "q8_0", n_ctx },
        Mix { k: "f16", v: "f16", n_ctx },
        Mix { k: "q4_0", v: "q4_0", n_ctx },
        Mix { k: "f16", v: "f16", n_ctx: n_ctx / 2 },
    ]
}

/// Passes over the mixes, the second in reverse order, so a change in the
/// machine's other load does not favour the mixes measured first.
pub const PASSES: usize = 2;
/// Reading rounds per mix and pass (each a different prompt).
pub const READ_ROUNDS: usize = 3;
/// Decode runs per mix and pass (short prompts, `max_tokens` tokens each).
pub const DECODE_RUNS: usize = 2;
const DECODE_TOPICS: [&str; DECODE_RUNS] =
    ["Write a long story about a lighthouse keeper who finds a mysterious map.", "Write a long story about a robot that learns to paint."];
/// Sentences in a reading prompt: about 700 tokens with SmolLM2's tokenizer
/// (the runs report the exact count, template and system prompt included).
const SENTENCES: usize = 20;
const SETTLE: Duration = Duration::from_millis(250);
const RSS_SETTLE: Duration = Duration::from_secs(1);

/// A plant log of `SENTENCES` lines, different for every `round` from its
/// first words on, then a question about it.
pub fn long_prompt(round: usize) -> String {
    const MACHINES: [&str; 6] = ["pump", "valve", "compressor", "conveyor", "boiler", "mixer"];
    const STATES: [&str; 4] = ["running normally", "waiting for maintenance", "in alarm", "stopped by the operator"];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ (round as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D);
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut text = format!("Shift report number {} from plant {}.\n", 1000 + round * 37, round + 3);
    for _ in 0..SENTENCES {
        let m = MACHINES[next(6) as usize];
        let s = STATES[next(4) as usize];
        text.push_str(&format!(
            "At {:02}:{:02} the {m} on line {} was {s}, pressure {}.{} bar, temperature {} degrees.\n",
            next(24),
            next(60),
            next(9) + 1,
            next(12),
            next(10),
            next(90) + 10
        ));
    }
    text.push_str("Which machines were in alarm?");
    text
}

/// What one mix measured.
#[derive(Debug, Clone)]
pub struct MixRun {
    pub mix: Mix,
    /// 1 s after /ready answered 200.
    pub idle: Rss,
    /// 1 s after the last run.
    pub after: Rss,
    /// The `model loaded` log line's `kv_cache` field (what the daemon built).
    pub kv_cache: String,
    pub reads: Vec<StreamRun>,
    pub decodes: Vec<StreamRun>,
}

impl MixRun {
    /// Another pass of the same mix: its runs join these, the RSS is the
    /// larger of the two.
    pub fn merge(&mut self, other: MixRun) {
        let larger = |a: Rss, b: Rss| if b.vm_rss_kb > a.vm_rss_kb { b } else { a };
        self.idle = larger(self.idle, other.idle);
        self.after = larger(self.after, other.after);
        self.reads.extend(other.reads);
        self.decodes.extend(other.decodes);
    }

    /// Prompt tokens / time to first token, per reading round.
    pub fn read_tok_s(&self) -> Vec<f64> {
        self.reads.iter().map(|r| r.prompt_tokens as f64 / r.ttft_s().max(1e-9)).collect()
    }
}

/// Starts edgeaid with `launch` (its `kv_types` and `n_ctx` set to the
/// mix), warms it with one short request, then measures.
/// `pass` picks the reading prompts, new ones in every pass.
pub async fn measure(launch: &Launch<'_>, mix: Mix, pass: usize) -> Result<MixRun> {
    let mut d = Daemon::start(launch).await?;
    d.wait_model_ready(Duration::from_secs(120)).await?;
    tokio::time::sleep(RSS_SETTLE).await;
    let idle = d.rss()?;
    let kv_cache = d
        .event("model loaded")
        .and_then(|e| e.pointer("/fields/kv_cache").and_then(|v| v.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "(not logged)".into());
    let stream = |q: String| {
        let (addr, key) = (d.addr, d.key.clone());
        async move { client::chat_stream(addr, &key, "bench", &q).await }
    };
    // Not counted: the first request after a load pays for cold pages.
    stream("Hello.".into()).await.context("warm-up request")?;
    tokio::time::sleep(SETTLE).await;
    let mut reads = Vec::new();
    for round in 0..READ_ROUNDS {
        reads.push(stream(long_prompt(round + pass * READ_ROUNDS)).await.with_context(|| format!("reading round {round}"))?);
        tokio::time::sleep(SETTLE).await;
    }
    let mut decodes = Vec::new();
    for topic in DECODE_TOPICS {
        decodes.push(stream(topic.into()).await.context("decode run")?);
        tokio::time::sleep(SETTLE).await;
    }
    tokio::time::sleep(RSS_SETTLE).await;
    let after = d.rss()?;
    d.stop().await?;
    Ok(MixRun { mix, idle, after, kv_cache, reads, decodes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_prompts_differ_from_their_first_line() {
        let (a, b) = (long_prompt(0), long_prompt(1));
        assert_ne!(a.lines().next(), b.lines().next());
        assert_eq!(a.lines().count(), SENTENCES + 2);
    }

    #[test]
    fn the_default_mix_comes_first_and_labels_name_fewer_cells() {
        let m = mixes(4096);
        assert_eq!((m[0].k, m[0].v, m[0].n_ctx), ("q8_0", "q8_0", 4096));
        assert_eq!(m[4].label(4096), "f16/f16, 2048 cells");
        assert_eq!(m[1].label(4096), "f16/q8_0");
    }
}
