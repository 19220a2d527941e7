//! The knowledge vector index (edgeaid's `knowledge::vectors`) in this
//! process, no daemon: random L2-normalised vectors appended in batches
//! into a fresh directory, then top-k searches (int8 pass then exact f32
//! ranking, and the full f32 scan), timed, next to a
//! naive single-threaded scan (an iterator dot product over a heap copy,
//! then a partial sort) of the same vectors; and the process's RSS before
//! and after opening and searching the index, split into anonymous memory
//! and mapped file pages (page cache the kernel may drop).
//! Owns this phase's measuring; knows nothing of tables or JSON.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use edgeaid::knowledge::vectors::VectorIndex;

use super::daemon::Rss;

/// What one index size measured.
#[derive(Debug, Clone)]
pub struct Figures {
    pub vectors: usize,
    pub dims: usize,
    pub batch: usize,
    /// Appends (one fsynced file each) of all vectors, wall time.
    pub append: Duration,
    pub files: usize,
    /// On disk before compaction, and after.
    pub bytes_files: u64,
    pub bytes: u64,
    /// Searches over the appended files as they are.
    pub search_files: Vec<Duration>,
    pub compact: Duration,
    /// Searches after compaction into one file (one thread, the default).
    pub search: Vec<Duration>,
    /// The same on two threads.
    pub search_two_threads: Vec<Duration>,
    /// `search_exact` (a full f32 scan, no int8 pass), one thread and two.
    pub search_exact: Vec<Duration>,
    pub search_exact_two_threads: Vec<Duration>,
    pub naive: Vec<Duration>,
    /// Queries whose top-k ids differ from the naive scan's.
    pub mismatches: usize,
    /// RSS before opening the index, and after opening it and searching.
    pub rss_before: Rss,
    pub rss_after: Rss,
    pub rss_after_open: Rss,
}

impl Figures {
    pub fn append_per_s(&self) -> f64 {
        self.vectors as f64 / self.append.as_secs_f64().max(1e-9)
    }
}

/// The `q` quantile (0..=1) of `d`, in milliseconds.
pub fn quantile_ms(d: &[Duration], q: f64) -> f64 {
    let mut v: Vec<f64> = d.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[(((v.len() - 1) as f64 * q).round() as usize).min(v.len() - 1)]
}

/// SplitMix64: deterministic vectors without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn unit(&mut self, dims: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dims).map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
        v.iter_mut().for_each(|x| *x /= n);
        v
    }
}

/// The naive top-k: a plain iterator dot product per vector, every score
/// kept, then a partial sort.
fn naive(all: &[f32], ids: &[i64], dims: usize, q: &[f32], k: usize) -> Vec<i64> {
    let mut scored: Vec<(f32, i64)> =
        all.chunks_exact(dims).zip(ids).map(|(v, id)| (v.iter().zip(q).map(|(a, b)| a * b).sum::<f32>(), *id)).collect();
    let k = k.min(scored.len());
    let by = |a: &(f32, i64), b: &(f32, i64)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if k > 0 && k < scored.len() {
        scored.select_nth_unstable_by(k - 1, by);
    }
    scored.truncate(k);
    scored.sort_by(by);
    scored.into_iter().map(|(_, id)| id).collect()
}

fn time_searches(queries: &[Vec<f32>], search: impl Fn(&[f32]) -> Vec<(i64, f32)>) -> Vec<Duration> {
    queries
        .iter()
        .map(|q| {
            let t = Instant::now();
            let hits = search(q);
            let d = t.elapsed();
            std::hint::black_box(hits);
            d
        })
        .collect()
}

/// Builds an index of `n` vectors under `dir` and measures it.
pub fn measure(dir: &Path, n: usize, dims: usize, batch: usize, queries: usize, k: usize) -> Result<Figures> {
    let mut rng = Rng(0x5eed ^ n as u64);
    let mut ix = VectorIndex::open(dir, dims).with_context(|| format!("opening {}", dir.display()))?;
    let mut ids = Vec::with_capacity(n);
    let mut flat = Vec::with_capacity(n * dims);
    let mut append = Duration::ZERO;
    let mut next_id = 1i64;
    while ids.len() < n {
        let items: Vec<(i64, Vec<f32>)> = (0..batch.min(n - ids.len()))
            .map(|_| {
                next_id += 1;
                (next_id, rng.unit(dims))
            })
            .collect();
        for (id, v) in &items {
            ids.push(*id);
            flat.extend_from_slice(v);
        }
        let t = Instant::now();
        ix.append(&items).context("appending")?;
        append += t.elapsed();
    }
    let bytes_files = ix.bytes();
    let qs: Vec<Vec<f32>> = (0..queries).map(|_| rng.unit(dims)).collect();
    time_searches(&qs[..queries.min(20)], |q| ix.search(q, k));
    let search_files = time_searches(&qs, |q| ix.search(q, k));
    let t = Instant::now();
    ix.compact(&|_| true).context("compacting")?;
    let compact = t.elapsed();
    let bytes = ix.bytes();
    drop(ix);

    // Naive baseline over the heap copy; its answers check the index's.
    naive(&flat, &ids, dims, &qs[0], k);
    let mut naive_d = Vec::with_capacity(queries);
    let mut want = Vec::with_capacity(queries);
    for q in &qs {
        let t = Instant::now();
        let top = naive(&flat, &ids, dims, q, k);
        naive_d.push(t.elapsed());
        want.push(top);
    }
    drop(flat);
    drop(ids);

    let rss_before = Rss::read(std::process::id())?;
    let mut ix = VectorIndex::open(dir, dims).context("reopening")?;
    let rss_after_open = Rss::read(std::process::id())?;
    if ix.len() != n {
        bail!("reopened index holds {} vectors, not {n}", ix.len());
    }
    time_searches(&qs[..queries.min(20)], |q| ix.search(q, k));
    let search = time_searches(&qs, |q| ix.search(q, k));
    let search_exact = time_searches(&qs, |q| ix.search_exact(q, k));
    let rss_after = Rss::read(std::process::id())?;
    let mismatches = qs.iter().zip(&want).filter(|(q, w)| ix.search(q, k).iter().map(|h| h.0).collect::<Vec<_>>() != **w).count();
    ix.set_search_threads(2);
    let search_two_threads = time_searches(&qs, |q| ix.search(q, k));
    let search_exact_two_threads = time_searches(&qs, |q| ix.search_exact(q, k));
    Ok(Figures {
        vectors: n,
        dims,
        batch,
        append,
        files: n.div_ceil(batch),
        bytes_files,
        bytes,
        search_files,
        compact,
        search,
        search_two_threads,
        search_exact,
        search_exact_two_threads,
        naive: naive_d,
        mismatches,
        rss_before,
        rss_after,
        rss_after_open,
    })
}
