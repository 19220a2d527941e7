//! A dataset's vector index: the embeddings of its segments, kept in
//! immutable Arrow IPC files in one directory, memory-mapped and scanned in
//! place (no copy into the heap), with exact top-k search by dot product.
//!
//! On disk, `<dir>/` holds:
//! - `seg-<seq>.arrow`: one file per append (or per compaction), schema
//!   `{id: Int64, vector: FixedSizeList<Float32, dims>,
//!   q8: FixedSizeList<Int8, dims>, scale: Float32}` (`q8 * scale` is the
//!   vector quantised to int8, per row), in record batches of at most
//!   `BATCH_ROWS` (16384) rows. Written once, never changed.
//! - `tomb-<seq>.bin`: the ids deleted since the last compaction
//!   (`EVTOMB01`, a little-endian u64 count, then the i64 ids).
//! - `MANIFEST`: JSON naming the dims, the live segment files in order and
//!   the current tombstone file. It is the commit point: every change writes
//!   its new files, fsyncs them and the directory, then replaces the
//!   manifest atomically (temp file, fsync, rename, fsync directory). A file
//!   the manifest does not name is garbage of an interrupted change and is
//!   removed at open, so a crash at any point leaves the index as it was
//!   before or after the change, never between.
//!
//! A search of a large index scans the int8 column (a quarter of the
//! memory traffic of f32, which bounds a scan) for a few times `k`
//! candidates and ranks those by their exact f32 dot product; a small index
//! is scanned in f32 directly.
//!
//! An id appended again replaces its older vector (the latest file wins); a
//! deleted id is a tombstone until [`VectorIndex::compact`] rewrites the live
//! vectors into one file. In memory: per record batch a bitmap of the rows
//! that are live (not replaced, not deleted), and an id → row map to update
//! those bitmaps.
//!
//! Owns nothing but its directory: which ids should exist (segments that
//! are `completed` in SQLite) is the caller's business, told through
//! `compact`'s `keep` filter.

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, FixedSizeListArray, Float32Array, Int64Array, Int8Array, RecordBatch};
use arrow_buffer::{Buffer, ScalarBuffer};
use arrow_ipc::reader::{read_footer_length, FileDecoder};
use arrow_ipc::writer::FileWriter;
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

/// Rows per record batch in a written file: bounds the heap a compaction
/// of a large index needs.
const BATCH_ROWS: usize = 16_384;
/// The manifest's `format` value.
const FORMAT: &str = "edgeai-vectors/1";
const MANIFEST: &str = "MANIFEST";
const MANIFEST_TMP: &str = "MANIFEST.tmp";
const TOMB_MAGIC: &[u8; 8] = b"EVTOMB01";
/// More segment files than this and `should_compact` says so.
const COMPACT_FILES: usize = 16;
/// Below this many rows a search runs on the calling thread alone.
const PARALLEL_MIN_ROWS: usize = 32_768;
/// Below this many rows a search scans the f32 vectors (no int8 pass).
const QUANTISED_MIN_ROWS: usize = 4096;
/// Candidates the int8 pass keeps for the exact ranking: `k * 4 + 64`.
const OVERSAMPLE: usize = 4;
const OVERSAMPLE_EXTRA: usize = 64;
/// Largest dims: the int8 dot product sums in i32 (127² · dims must fit).
const MAX_DIMS: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: corrupt vector index file: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("{}: the index holds {found}-dimensional vectors, not {expected} (re-index the dataset)", path.display())]
    DimsMismatch { path: PathBuf, found: usize, expected: usize },
    #[error("{}: vectors of {dims} dimensions are not supported (1 to {MAX_DIMS})", path.display())]
    UnsupportedDims { path: PathBuf, dims: usize },
    #[error("vector of id {id} has {got} dimensions, the index takes {expected}")]
    WrongLength { id: i64, got: usize, expected: usize },
    #[error("vector of id {id} has a non-finite value")]
    NonFinite { id: i64 },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> VectorError + '_ {
    move |source| VectorError::Io { path: path.to_path_buf(), source }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> VectorError {
    VectorError::Corrupt { path: path.to_path_buf(), reason: reason.into() }
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactStats {
    /// Segment files before (after: 0 or 1).
    pub files_before: usize,
    /// Rows in those files, dead ones included.
    pub rows_before: usize,
    /// Live vectors written to the new file.
    pub kept: usize,
    /// Live vectors that `keep` refused.
    pub dropped: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    format: String,
    dims: usize,
    /// The sequence number of the next file written.
    next_seq: u64,
    files: Vec<String>,
    tombstones: Option<String>,
}

/// One record batch of a mapped file: slices of the mapping.
struct Chunk {
    ids: ScalarBuffer<i64>,
    /// `ids.len() * dims` values, row-major.
    vectors: ScalarBuffer<f32>,
    /// The same quantised: `q8[r*dims + i] as f32 * scales[r]`.
    q8: ScalarBuffer<i8>,
    scales: ScalarBuffer<f32>,
    /// Bit `r` set: row `r` is the live vector of its id.
    live: Vec<u64>,
    /// Index of the chunk's first row among all rows (search splits by it).
    start: usize,
}

impl Chunk {
    fn rows(&self) -> usize {
        self.ids.len()
    }

    fn set_live(&mut self, row: usize, on: bool) {
        let (w, b) = (row / 64, 1u64 << (row % 64));
        if let Some(word) = self.live.get_mut(w) {
            if on {
                *word |= b;
            } else {
                *word &= !b;
            }
        }
    }
}

/// Where an id's live vector is.
#[derive(Debug, Clone, Copy)]
struct Loc {
    chunk: u32,
    row: u32,
}

/// The vector index of one dataset. `search` takes `&self` and runs
/// concurrently; changes take `&mut self`.
pub struct VectorIndex {
    dir: PathBuf,
    dims: usize,
    manifest: Manifest,
    /// Size of each file the manifest names, segments in order.
    file_bytes: Vec<u64>,
    tomb_bytes: u64,
    chunks: Vec<Chunk>,
    live: HashMap<i64, Loc>,
    tombstones: HashSet<i64>,
    total_rows: usize,
    /// Threads a search of [`PARALLEL_MIN_ROWS`] rows or more runs on.
    threads: usize,
}

impl std::fmt::Debug for VectorIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorIndex")
            .field("dir", &self.dir)
            .field("dims", &self.dims)
            .field("files", &self.manifest.files.len())
            .field("rows", &self.total_rows)
            .field("live", &self.live.len())
            .field("tombstones", &self.tombstones.len())
            .finish()
    }
}

impl VectorIndex {
    /// Opens the index in `dir` (created, with an empty manifest, if it has
    /// none), removing files of interrupted changes. A directory of
    /// `dims` other than asked is refused with [`VectorError::DimsMismatch`].
    pub fn open(dir: &Path, dims: usize) -> Result<Self, VectorError> {
        if dims == 0 || dims > MAX_DIMS {
            return Err(VectorError::UnsupportedDims { path: dir.to_path_buf(), dims });
        }
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let manifest_path = dir.join(MANIFEST);
        let manifest = match fs::read(&manifest_path) {
            Ok(bytes) => {
                let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| corrupt(&manifest_path, e.to_string()))?;
                if m.format != FORMAT {
                    return Err(corrupt(&manifest_path, format!("format {:?}, expected {FORMAT:?}", m.format)));
                }
                if m.dims != dims {
                    return Err(VectorError::DimsMismatch { path: dir.to_path_buf(), found: m.dims, expected: dims });
                }
                for name in m.files.iter().chain(&m.tombstones) {
                    if !is_our_file(name) {
                        return Err(corrupt(&manifest_path, format!("names an unexpected file {name:?}")));
                    }
                }
                m
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let m = Manifest { format: FORMAT.into(), dims, next_seq: 1, files: Vec::new(), tombstones: None };
                write_manifest(dir, &m)?;
                m
            }
            Err(e) => return Err(io_err(&manifest_path)(e)),
        };
        remove_garbage(dir, &manifest)?;

        let mut index = VectorIndex {
            dir: dir.to_path_buf(),
            dims,
            manifest: manifest.clone(),
            file_bytes: Vec::new(),
            tomb_bytes: 0,
            chunks: Vec::new(),
            live: HashMap::new(),
            tombstones: HashSet::new(),
            total_rows: 0,
            threads: 1,
        };
        for name in &manifest.files {
            let path = dir.join(name);
            let (chunks, bytes) = map_segment(&path, dims)?;
            index.file_bytes.push(bytes);
            for m in chunks {
                index.add_chunk(m);
            }
        }
        if let Some(name) = &manifest.tombstones {
            let path = dir.join(name);
            let ids = read_tombstones(&path)?;
            index.tomb_bytes = tomb_file_len(ids.len());
            for id in ids {
                index.kill(id);
                index.tombstones.insert(id);
            }
        }
        Ok(index)
    }

    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Live vectors: appended, not replaced, not deleted.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Appends vectors durably (fsynced when this returns). An id already
    /// present, or deleted, gets this vector as its live one; within
    /// `items`, the last vector of an id wins. Every vector must have
    /// `dims` finite values; nothing is written otherwise.
    pub fn append(&mut self, items: &[(i64, Vec<f32>)]) -> Result<(), VectorError> {
        for (id, v) in items {
            if v.len() != self.dims {
                return Err(VectorError::WrongLength { id: *id, got: v.len(), expected: self.dims });
            }
            if !v.iter().all(|x| x.is_finite()) {
                return Err(VectorError::NonFinite { id: *id });
            }
        }
        // The last occurrence of each id, in order.
        let mut last: HashMap<i64, usize> = HashMap::with_capacity(items.len());
        for (i, (id, _)) in items.iter().enumerate() {
            last.insert(*id, i);
        }
        let rows: Vec<&(i64, Vec<f32>)> = items.iter().enumerate().filter(|(i, (id, _))| last.get(id) == Some(i)).map(|(_, r)| r).collect();
        if rows.is_empty() {
            return Ok(());
        }
        let mut next = self.manifest.clone();
        let name = format!("seg-{:08}.arrow", next.next_seq);
        next.next_seq += 1;
        let path = self.dir.join(&name);
        write_segment(
            &path,
            self.dims,
            rows.chunks(BATCH_ROWS).map(|part| {
                let ids: Vec<i64> = part.iter().map(|(id, _)| *id).collect();
                let mut values = Vec::with_capacity(part.len() * self.dims);
                for (_, v) in part {
                    values.extend_from_slice(v);
                }
                (ids, values)
            }),
        )?;
        let mapped = map_segment(&path, self.dims).inspect_err(|_| remove_quietly(&path))?;
        next.files.push(name);
        // Re-appended ids stop being tombstones, in the same commit.
        let revived: Vec<i64> = rows.iter().map(|(id, _)| *id).filter(|id| self.tombstones.contains(id)).collect();
        let mut new_tombs = None;
        if !revived.is_empty() {
            let mut remaining = self.tombstones.clone();
            for id in &revived {
                remaining.remove(id);
            }
            match self.stage_tombstones(&mut next, &remaining) {
                Ok(t) => new_tombs = Some(t),
                Err(e) => {
                    remove_quietly(&path);
                    return Err(e);
                }
            }
        }
        let old_tomb = self.manifest.tombstones.clone();
        self.commit(next)?;
        // Committed: now the in-memory view follows.
        let (chunks, bytes) = mapped;
        self.file_bytes.push(bytes);
        for m in chunks {
            self.add_chunk(m);
        }
        if let Some((remaining, bytes)) = new_tombs {
            self.tombstones = remaining;
            self.tomb_bytes = bytes;
            if let Some(old) = old_tomb {
                remove_quietly(&self.dir.join(old));
            }
        }
        Ok(())
    }

    /// Deletes ids durably (tombstones until the next compaction). Ids
    /// that are not live are ignored.
    pub fn delete(&mut self, ids: &[i64]) -> Result<(), VectorError> {
        let fresh: Vec<i64> = ids.iter().copied().filter(|id| self.live.contains_key(id)).collect();
        if fresh.is_empty() {
            return Ok(());
        }
        let mut all = self.tombstones.clone();
        all.extend(fresh.iter().copied());
        let mut next = self.manifest.clone();
        let old_tomb = self.manifest.tombstones.clone();
        let (all, bytes) = self.stage_tombstones(&mut next, &all)?;
        self.commit(next)?;
        for id in fresh {
            self.kill(id);
        }
        self.tombstones = all;
        self.tomb_bytes = bytes;
        if let Some(old) = old_tomb {
            remove_quietly(&self.dir.join(old));
        }
        Ok(())
    }

    /// The `k` live vectors of highest dot product with `query` (cosine
    /// similarity for L2-normalised vectors), best first; ties by id. A
    /// query of other length than `dims` finds nothing.
    pub fn search(&self, query: &[f32], k: usize) -> Vec<(i64, f32)> {
        let k = k.min(self.live.len());
        let candidates = k * OVERSAMPLE + OVERSAMPLE_EXTRA;
        let small = self.total_rows < QUANTISED_MIN_ROWS || candidates >= self.live.len();
        if small || query.len() != self.dims || !query.iter().all(|x| x.is_finite()) {
            return self.search_exact(query, k);
        }
        let (q8, scale) = quantise(query);
        let mut top = TopK::new(k);
        for (id, _) in self.top_k(&Query::I8(&q8, scale), candidates) {
            if let Some(loc) = self.live.get(&id) {
                let chunk = &self.chunks[loc.chunk as usize];
                let r = loc.row as usize;
                top.push(dot::<false>(query, &chunk.vectors[r * self.dims..(r + 1) * self.dims]), id);
            }
        }
        top.into_sorted()
    }

    /// [`search`](Self::search) by a full scan of the f32 vectors, without
    /// the int8 pass: exact whatever the data (the int8 pass could miss a
    /// hit whose int8 score falls out of the candidates, which random and
    /// real embeddings do not show), at four times the memory traffic.
    pub fn search_exact(&self, query: &[f32], k: usize) -> Vec<(i64, f32)> {
        if query.len() != self.dims {
            tracing::warn!(dir = %self.dir.display(), got = query.len(), dims = self.dims, "vector query of wrong length");
            return Vec::new();
        }
        self.top_k(&Query::F32(query), k)
    }

    /// The `k` best live rows by `query`'s score, on `threads` threads for a
    /// large index.
    fn top_k(&self, query: &Query<'_>, k: usize) -> Vec<(i64, f32)> {
        let k = k.min(self.live.len());
        if k == 0 {
            return Vec::new();
        }
        let total = self.total_rows;
        let threads = if total >= PARALLEL_MIN_ROWS { self.threads } else { 1 };
        let top = if threads > 1 {
            let step = total.div_ceil(threads);
            std::thread::scope(|s| {
                let others: Vec<_> =
                    (1..threads).map(|t| s.spawn(move || self.scan(query, k, t * step, ((t + 1) * step).min(total)))).collect();
                let mut top = self.scan(query, k, 0, step);
                for other in others {
                    let part = other.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                    for h in part.heap {
                        top.push(h.0.score, h.0.id);
                    }
                }
                top
            })
        } else {
            self.scan(query, k, 0, total)
        };
        let mut hits = top.into_sorted();
        hits.truncate(k);
        hits
    }

    /// Threads one search of a large index uses (default 1). Measured on
    /// the 2-core box (bench `--only vectors`), a second thread made the
    /// int8 pass over 100k × 384 slower (its ~38 MB scan takes about
    /// 1.4 ms on one core, and the second core is rarely idle), and the full
    /// f32 scan no faster.
    pub fn set_search_threads(&mut self, threads: usize) {
        self.threads = threads.clamp(1, 64);
    }

    /// Rewrites the live vectors that `keep` accepts into one new file
    /// and drops every other file and the tombstones.
    pub fn compact(&mut self, keep: &dyn Fn(i64) -> bool) -> Result<CompactStats, VectorError> {
        let files_before = self.manifest.files.len();
        let rows_before = self.total_rows;
        let bytes_before = self.bytes();
        let mut next = self.manifest.clone();
        let mut kept_locs: Vec<(i64, Loc)> = self.live.iter().filter(|(id, _)| keep(**id)).map(|(id, loc)| (*id, *loc)).collect();
        let dropped = self.live.len() - kept_locs.len();
        // File order, so the new file reads the old ones sequentially.
        kept_locs.sort_unstable_by_key(|(_, l)| (l.chunk, l.row));
        let kept = kept_locs.len();
        let mut new_map = None;
        next.files.clear();
        next.tombstones = None;
        if kept > 0 {
            let name = format!("seg-{:08}.arrow", next.next_seq);
            next.next_seq += 1;
            let path = self.dir.join(&name);
            let dims = self.dims;
            let chunks = &self.chunks;
            write_segment(
                &path,
                dims,
                kept_locs.chunks(BATCH_ROWS).map(|part| {
                    let ids: Vec<i64> = part.iter().map(|(id, _)| *id).collect();
                    let mut values = Vec::with_capacity(part.len() * dims);
                    for (_, l) in part {
                        let (c, r) = (l.chunk as usize, l.row as usize);
                        values.extend_from_slice(&chunks[c].vectors[r * dims..(r + 1) * dims]);
                    }
                    (ids, values)
                }),
            )?;
            next.files.push(name);
            new_map = Some(map_segment(&path, self.dims).inspect_err(|_| remove_quietly(&path))?);
        }
        let old: Vec<String> = self.manifest.files.iter().chain(&self.manifest.tombstones).cloned().collect();
        self.commit(next)?;
        self.chunks.clear();
        self.live.clear();
        self.tombstones.clear();
        self.file_bytes.clear();
        self.tomb_bytes = 0;
        self.total_rows = 0;
        if let Some((chunks, bytes)) = new_map {
            self.file_bytes.push(bytes);
            for m in chunks {
                self.add_chunk(m);
            }
        }
        for name in old {
            remove_quietly(&self.dir.join(name));
        }
        let stats = CompactStats { files_before, rows_before, kept, dropped, bytes_before, bytes_after: self.bytes() };
        tracing::info!(dir = %self.dir.display(), files_before, rows_before, kept, dropped, bytes_before, bytes_after = stats.bytes_after, "vector index compacted");
        Ok(stats)
    }

    /// Whether a compaction would pay: many files, or more than a fifth of
    /// the rows dead (replaced or deleted).
    pub fn should_compact(&self) -> bool {
        let dead = self.total_rows - self.live.len();
        self.manifest.files.len() > COMPACT_FILES || (dead > 0 && dead * 5 > self.total_rows)
    }

    /// Bytes on disk: segment files, tombstones (manifest not counted).
    pub fn bytes(&self) -> u64 {
        self.file_bytes.iter().sum::<u64>() + self.tomb_bytes
    }

    fn add_chunk(&mut self, m: Mapped) {
        let c = u32::try_from(self.chunks.len()).unwrap_or(u32::MAX);
        let ids = m.ids.clone();
        let rows = ids.len();
        let mut chunk =
            Chunk { live: vec![0; rows.div_ceil(64)], ids: m.ids, vectors: m.vectors, q8: m.q8, scales: m.scales, start: self.total_rows };
        for (row, id) in ids.iter().copied().enumerate() {
            chunk.set_live(row, true);
            let loc = Loc { chunk: c, row: row as u32 };
            if let Some(old) = self.live.insert(id, loc) {
                // Replaced: the older row (in this chunk or an earlier one) dies.
                if old.chunk == c {
                    chunk.set_live(old.row as usize, false);
                } else if let Some(oc) = self.chunks.get_mut(old.chunk as usize) {
                    oc.set_live(old.row as usize, false);
                }
            }
        }
        self.total_rows += rows;
        self.chunks.push(chunk);
    }

    /// Makes `id` not live in memory.
    fn kill(&mut self, id: i64) {
        if let Some(loc) = self.live.remove(&id) {
            if let Some(c) = self.chunks.get_mut(loc.chunk as usize) {
                c.set_live(loc.row as usize, false);
            }
        }
    }

    /// Writes `ids` as a new tombstone file named in `next` (or none when
    /// empty); returns the set and the file's size.
    fn stage_tombstones(&self, next: &mut Manifest, ids: &HashSet<i64>) -> Result<(HashSet<i64>, u64), VectorError> {
        if ids.is_empty() {
            next.tombstones = None;
            return Ok((HashSet::new(), 0));
        }
        let name = format!("tomb-{:08}.bin", next.next_seq);
        next.next_seq += 1;
        let path = self.dir.join(&name);
        let mut sorted: Vec<i64> = ids.iter().copied().collect();
        sorted.sort_unstable();
        let mut bytes = Vec::with_capacity(16 + 8 * sorted.len());
        bytes.extend_from_slice(TOMB_MAGIC);
        bytes.extend_from_slice(&(sorted.len() as u64).to_le_bytes());
        for id in &sorted {
            bytes.extend_from_slice(&id.to_le_bytes());
        }
        write_durably(&path, &bytes)?;
        next.tombstones = Some(name);
        Ok((ids.clone(), bytes.len() as u64))
    }

    /// Makes `next` the index on disk: its new files are already durable.
    ///
    /// On an error the change may or may not be on disk (a failed fsync of
    /// the directory after the rename): its files stay, garbage that the
    /// next open removes if the manifest does not name them, and their
    /// sequence numbers are never used again, so a later change cannot
    /// overwrite a file that the manifest on disk names.
    fn commit(&mut self, next: Manifest) -> Result<(), VectorError> {
        self.manifest.next_seq = next.next_seq;
        sync_dir(&self.dir)?;
        // Tests: a crash after the new files, before the manifest (the
        // argument names the index directory it applies to).
        fail::fail_point!("vectors-before-manifest", |dir: Option<String>| {
            if dir.as_deref().is_some_and(|d| Path::new(d) == self.dir) {
                let e = std::io::Error::other("failpoint vectors-before-manifest");
                return Err(io_err(&self.dir.join(MANIFEST))(e));
            }
            Ok(())
        });
        write_manifest(&self.dir, &next)?;
        self.manifest = next;
        Ok(())
    }

    /// Top-k of the live rows whose global index is in `from..to`.
    fn scan(&self, query: &Query<'_>, k: usize, from: usize, to: usize) -> TopK {
        let mut top = TopK::new(k);
        for chunk in &self.chunks {
            let (lo, hi) = (from.max(chunk.start), to.min(chunk.start + chunk.rows()));
            if lo >= hi {
                continue;
            }
            scan_rows(chunk, self.dims, query, lo - chunk.start, hi - chunk.start, &mut top);
        }
        top
    }
}

/// A scored row in the top-k heap; ordered so that the heap's top is the
/// worst hit kept (lowest score, then highest id).
#[derive(Debug, Clone, Copy)]
struct Scored {
    score: f32,
    id: i64,
}

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    /// Better is greater: higher score, then lower id.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.score.total_cmp(&other.score).then_with(|| other.id.cmp(&self.id))
    }
}

/// A bounded min-heap of the best `k` hits.
struct TopK {
    k: usize,
    heap: BinaryHeap<std::cmp::Reverse<Scored>>,
    /// The worst kept score once full (a row must beat it), else -inf.
    floor: f32,
}

impl TopK {
    fn new(k: usize) -> Self {
        TopK { k, heap: BinaryHeap::with_capacity(k + 1), floor: f32::NEG_INFINITY }
    }

    #[inline]
    fn push(&mut self, score: f32, id: i64) {
        if self.heap.len() == self.k && score < self.floor {
            return;
        }
        let s = Scored { score, id };
        if self.heap.len() < self.k {
            self.heap.push(std::cmp::Reverse(s));
        } else if let Some(mut worst) = self.heap.peek_mut() {
            if s > worst.0 {
                *worst = std::cmp::Reverse(s);
            }
        }
        if self.heap.len() == self.k {
            if let Some(w) = self.heap.peek() {
                self.floor = w.0.score;
            }
        }
    }

    fn into_sorted(self) -> Vec<(i64, f32)> {
        // Ascending `Reverse` is descending `Scored`: best first.
        self.heap.into_sorted_vec().into_iter().map(|r| (r.0.id, r.0.score)).collect()
    }
}

/// What a scan scores rows by.
enum Query<'a> {
    F32(&'a [f32]),
    /// Quantised query and its scale.
    I8(&'a [i8], f32),
}

/// Symmetric int8 quantisation of one vector: values and scale.
fn quantise(v: &[f32]) -> (Vec<i8>, f32) {
    let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        return (vec![0; v.len()], 1.0);
    }
    let scale = max / 127.0;
    (v.iter().map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8).collect(), scale)
}

/// Scores rows `lo..hi` of `chunk` into `top`, with the AVX2+FMA kernel
/// when the CPU has it (our code is built for the x86-64 baseline).
fn scan_rows(chunk: &Chunk, dims: usize, query: &Query<'_>, lo: usize, hi: usize, top: &mut TopK) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        unsafe { scan_rows_avx2(chunk, dims, query, lo, hi, top) };
        return;
    }
    scan_rows_with::<false>(chunk, dims, query, lo, hi, top);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn scan_rows_avx2(chunk: &Chunk, dims: usize, query: &Query<'_>, lo: usize, hi: usize, top: &mut TopK) {
    scan_rows_with::<true>(chunk, dims, query, lo, hi, top);
}

#[inline(always)]
fn scan_rows_with<const FMA: bool>(chunk: &Chunk, dims: usize, query: &Query<'_>, lo: usize, hi: usize, top: &mut TopK) {
    match *query {
        Query::F32(q) => {
            let vectors: &[f32] = &chunk.vectors;
            live_rows(chunk, lo, hi, top, |r| dot::<FMA>(q, &vectors[r * dims..(r + 1) * dims]));
        }
        Query::I8(q, scale) => {
            let (q8, scales): (&[i8], &[f32]) = (&chunk.q8, &chunk.scales);
            live_rows(chunk, lo, hi, top, |r| dot_i8(q, &q8[r * dims..(r + 1) * dims]) as f32 * scale * scales[r]);
        }
    }
}

/// Pushes `score(row)` of the live rows `lo..hi` into `top`.
#[inline(always)]
fn live_rows(chunk: &Chunk, lo: usize, hi: usize, top: &mut TopK, score: impl Fn(usize) -> f32) {
    let ids: &[i64] = &chunk.ids;
    let mut row = lo;
    while row < hi {
        let word = chunk.live[row / 64];
        let end = hi.min((row / 64 + 1) * 64);
        if word == 0 {
            row = end;
            continue;
        }
        for (r, id) in ids.iter().enumerate().take(end).skip(row) {
            if word & (1u64 << (r % 64)) != 0 {
                top.push(score(r), *id);
            }
        }
        row = end;
    }
}

/// Dot product in 32 independent lanes (four AVX registers), so LLVM
/// vectorises it and the additions do not wait on each other.
#[inline(always)]
fn dot<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 32;
    let mut acc = [0.0f32; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..LANES {
            acc[i] = if FMA { x[i].mul_add(y[i], acc[i]) } else { acc[i] + x[i] * y[i] };
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ar.iter().zip(br) {
        tail += x * y;
    }
    // Pairwise reduction of the lanes.
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            acc[i] += acc[i + width];
        }
        width /= 2;
    }
    acc[0] + tail
}

/// Int8 dot product summed in i32 lanes (vpmaddwd under AVX2).
#[inline(always)]
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    const LANES: usize = 32;
    let mut acc = [0i32; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..LANES {
            // Cannot overflow (|x·y| <= 127², dims <= MAX_DIMS); wrapping
            // keeps overflow checks of a debug build out of the loop.
            acc[i] = acc[i].wrapping_add(i32::from(i16::from(x[i]).wrapping_mul(i16::from(y[i]))));
        }
    }
    let tail: i32 = ar.iter().zip(br).map(|(x, y)| i32::from(*x) * i32::from(*y)).sum();
    acc.iter().fold(tail, |s, x| s.wrapping_add(*x))
}

fn is_our_file(name: &str) -> bool {
    let seq_ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    name.strip_prefix("seg-").and_then(|r| r.strip_suffix(".arrow")).is_some_and(seq_ok)
        || name.strip_prefix("tomb-").and_then(|r| r.strip_suffix(".bin")).is_some_and(seq_ok)
}

/// Removes the files of interrupted changes: ours by name, not in the manifest.
fn remove_garbage(dir: &Path, m: &Manifest) -> Result<(), VectorError> {
    let listed: HashSet<&str> = m.files.iter().chain(&m.tombstones).map(String::as_str).collect();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if (is_our_file(name) && !listed.contains(name)) || name == MANIFEST_TMP {
            let path = entry.path();
            tracing::warn!(file = %path.display(), "removing a vector file of an interrupted change");
            fs::remove_file(&path).map_err(io_err(&path))?;
        }
    }
    Ok(())
}

fn remove_quietly(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(file = %path.display(), error = %e, "could not remove a vector file (removed at next open)");
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), VectorError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

/// What a backup copies of an index: its manifest as it is now and the
/// files it names. The named files never change once written; a change
/// names new ones, so a copy of exactly these (opened before a later change
/// removes them) is the index at one moment.
pub struct LiveFiles {
    /// The manifest file's bytes.
    pub manifest: Vec<u8>,
    /// The segment files and the tombstone file it names.
    pub files: Vec<String>,
}

/// The [`LiveFiles`] of the index in `dir`; `None` when it holds no index.
pub fn live_files(dir: &Path) -> Result<Option<LiveFiles>, VectorError> {
    let path = dir.join(MANIFEST);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| corrupt(&path, e.to_string()))?;
    let files = m.files.into_iter().chain(m.tombstones).collect();
    Ok(Some(LiveFiles { manifest: bytes, files }))
}

fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), VectorError> {
    let mut f = File::create(path).map_err(io_err(path))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(io_err(path))
}

fn write_manifest(dir: &Path, m: &Manifest) -> Result<(), VectorError> {
    let tmp = dir.join(MANIFEST_TMP);
    let json = serde_json::to_vec_pretty(m).map_err(|e| corrupt(&tmp, e.to_string()))?;
    write_durably(&tmp, &json)?;
    let path = dir.join(MANIFEST);
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir)
}

fn f32_item() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Float32, false))
}

fn i8_item() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Int8, false))
}

fn schema(dims: usize) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("vector", DataType::FixedSizeList(f32_item(), dims as i32), false),
        Field::new("q8", DataType::FixedSizeList(i8_item(), dims as i32), false),
        Field::new("scale", DataType::Float32, false),
    ]))
}

/// Writes one segment file of record batches `(ids, row-major values)`,
/// fsynced; removes what it wrote when it fails.
fn write_segment(path: &Path, dims: usize, batches: impl Iterator<Item = (Vec<i64>, Vec<f32>)>) -> Result<(), VectorError> {
    write_segment_file(path, dims, batches).inspect_err(|_| remove_quietly(path))
}

fn write_segment_file(path: &Path, dims: usize, batches: impl Iterator<Item = (Vec<i64>, Vec<f32>)>) -> Result<(), VectorError> {
    let arrow = |e: ArrowError| corrupt(path, format!("writing: {e}"));
    let schema = schema(dims);
    let file = File::create(path).map_err(io_err(path))?;
    let mut w = FileWriter::try_new(BufWriter::with_capacity(1 << 20, file), &schema).map_err(arrow)?;
    for (ids, values) in batches {
        let mut q8 = Vec::with_capacity(values.len());
        let mut scales = Vec::with_capacity(ids.len());
        for row in values.chunks_exact(dims) {
            let (q, s) = quantise(row);
            q8.extend_from_slice(&q);
            scales.push(s);
        }
        let d = dims as i32;
        let vectors = FixedSizeListArray::try_new(f32_item(), d, Arc::new(Float32Array::from(values)), None).map_err(arrow)?;
        let q8 = FixedSizeListArray::try_new(i8_item(), d, Arc::new(Int8Array::from(q8)), None).map_err(arrow)?;
        let columns: Vec<ArrayRef> =
            vec![Arc::new(Int64Array::from(ids)), Arc::new(vectors), Arc::new(q8), Arc::new(Float32Array::from(scales))];
        let batch = RecordBatch::try_new(schema.clone(), columns).map_err(arrow)?;
        w.write(&batch).map_err(arrow)?;
    }
    w.finish().map_err(arrow)?;
    let file = w.into_inner().map_err(arrow)?.into_inner().map_err(|e| io_err(path)(e.into_error()))?;
    file.sync_all().map_err(io_err(path))
}

/// The columns of one record batch, slices of the mapping.
struct Mapped {
    ids: ScalarBuffer<i64>,
    vectors: ScalarBuffer<f32>,
    q8: ScalarBuffer<i8>,
    scales: ScalarBuffer<f32>,
}

/// Maps a segment file and decodes its record batches in place; returns
/// them and the file's size.
fn map_segment(path: &Path, dims: usize) -> Result<(Vec<Mapped>, u64), VectorError> {
    let file = File::open(path).map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    if len < 10 {
        return Err(corrupt(path, format!("{len} bytes, too short for an Arrow IPC file")));
    }
    // SAFETY: segment files are written once, before the manifest names
    // them, and never modified after; this process and its successors
    // only create, read and unlink them, so the mapping does not change
    // under us.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err(path))?;
    let buffer = Buffer::from(bytes::Bytes::from_owner(map));
    // arrow's validation panics on some damaged lengths (an `expect` on an
    // overflow) instead of returning an error: a damaged file must be an
    // error naming it, not a dead daemon.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode(&buffer, dims)))
        .unwrap_or_else(|_| Err("the Arrow decoder panicked on it".to_owned()));
    let chunks = decoded.map_err(|reason| corrupt(path, reason))?;
    Ok((chunks, len))
}

fn decode(buffer: &Buffer, dims: usize) -> Result<Vec<Mapped>, String> {
    let trailer_start = buffer.len() - 10;
    let trailer: [u8; 10] = buffer[trailer_start..].try_into().map_err(|_| "short trailer".to_owned())?;
    let footer_len = read_footer_length(trailer).map_err(|e| e.to_string())?;
    let footer_start = trailer_start.checked_sub(footer_len).ok_or("footer length beyond the file")?;
    let footer = arrow_ipc::root_as_footer(&buffer[footer_start..trailer_start]).map_err(|e| format!("footer: {e}"))?;
    let fb_schema = footer.schema().ok_or("footer has no schema")?;
    let found = arrow_ipc::convert::try_fb_to_schema(fb_schema).map_err(|e| format!("schema: {e}"))?;
    check_schema(&found, dims)?;
    let decoder = FileDecoder::new(Arc::new(found), footer.version()).with_require_alignment(true);
    let mut chunks = Vec::new();
    for block in footer.recordBatches().ok_or("footer lists no record batches")?.iter() {
        let offset = usize::try_from(block.offset()).map_err(|_| "negative block offset")?;
        let body = usize::try_from(block.bodyLength()).map_err(|_| "negative block length")?;
        let meta = usize::try_from(block.metaDataLength()).map_err(|_| "negative metadata length")?;
        let end = offset
            .checked_add(body)
            .and_then(|e| e.checked_add(meta))
            .filter(|e| *e <= footer_start)
            .ok_or("record batch beyond the file")?;
        let data = buffer.slice_with_length(offset, end - offset);
        let batch =
            decoder.read_record_batch(block, &data).map_err(|e| format!("record batch: {e}"))?.ok_or("empty record batch message")?;
        chunks.push(columns(&batch, dims)?);
    }
    Ok(chunks)
}

fn check_schema(s: &Schema, dims: usize) -> Result<(), String> {
    let fields = s.fields();
    let list_of = |i: usize, t: DataType| matches!(fields[i].data_type(), DataType::FixedSizeList(item, _) if item.data_type() == &t);
    let ok = fields.len() == 4
        && (fields[0].name(), fields[0].data_type()) == (&"id".to_owned(), &DataType::Int64)
        && fields[1].name() == "vector"
        && list_of(1, DataType::Float32)
        && fields[2].name() == "q8"
        && list_of(2, DataType::Int8)
        && (fields[3].name(), fields[3].data_type()) == (&"scale".to_owned(), &DataType::Float32);
    if !ok {
        return Err(format!(
            "schema is {s}, expected {{id: Int64, vector: FixedSizeList<Float32, {dims}>, q8: FixedSizeList<Int8, {dims}>, scale: Float32}}"
        ));
    }
    for f in &fields[1..3] {
        match f.data_type() {
            DataType::FixedSizeList(_, n) if usize::try_from(*n).ok() == Some(dims) => {}
            other => return Err(format!("{} is {other}, the index has {dims} dims", f.name())),
        }
    }
    Ok(())
}

fn columns(batch: &RecordBatch, dims: usize) -> Result<Mapped, String> {
    let ids = batch.column(0).as_any().downcast_ref::<Int64Array>().ok_or("id column is not Int64")?;
    let scales = batch.column(3).as_any().downcast_ref::<Float32Array>().ok_or("scale column is not Float32")?;
    let rows = ids.len();
    if ids.null_count() > 0 || scales.null_count() > 0 || scales.len() != rows {
        return Err(format!("{rows} ids, {} scales, or nulls", scales.len()));
    }
    Ok(Mapped {
        ids: ids.values().clone(),
        vectors: list_values::<Float32Array>(batch, 1, rows, dims)?.values().slice(0, rows * dims),
        q8: list_values::<Int8Array>(batch, 2, rows, dims)?.values().slice(0, rows * dims),
        scales: scales.values().clone(),
    })
}

/// Column `i`'s list values, checked: `rows` lists of `dims`, no nulls, no offset.
fn list_values<A: Array + 'static>(batch: &RecordBatch, i: usize, rows: usize, dims: usize) -> Result<&A, String> {
    let name = batch.schema_ref().field(i).name().clone();
    let list = batch.column(i).as_any().downcast_ref::<FixedSizeListArray>().ok_or(format!("{name} is not a fixed-size list"))?;
    let values = list.values().as_any().downcast_ref::<A>().ok_or(format!("{name} has values of another type"))?;
    if list.null_count() > 0 || values.null_count() > 0 || list.offset() != 0 {
        return Err(format!("nulls or an offset in {name}"));
    }
    if list.len() != rows || values.len() < rows * dims {
        return Err(format!("{rows} ids but {} {name} lists of {dims}", list.len()));
    }
    Ok(values)
}

fn tomb_file_len(n: usize) -> u64 {
    16 + 8 * n as u64
}

fn read_tombstones(path: &Path) -> Result<Vec<i64>, VectorError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    if bytes.len() < 16 || &bytes[..8] != TOMB_MAGIC {
        return Err(corrupt(path, "not a tombstone file"));
    }
    let mut count = [0u8; 8];
    count.copy_from_slice(&bytes[8..16]);
    let count = u64::from_le_bytes(count);
    if (bytes.len() as u64 - 16) / 8 != count || (bytes.len() - 16) % 8 != 0 {
        return Err(corrupt(path, format!("says {count} ids in {} bytes", bytes.len())));
    }
    Ok(bytes[16..]
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            i64::from_le_bytes(b)
        })
        .collect())
}

#[cfg(test)]
mod tests;
