//! The response cache: final answers of deterministic chat, completion and
//! OpenAI chat requests, keyed by everything the answer depends on
//! ([`key`]), so a repeated question is answered without the model.
//!
//! Owns: the in-memory entries (a byte-bounded LRU with a TTL), the hit,
//! miss and eviction counts, and mirroring entries to the store's
//! `response_cache` table (written in the background, loaded at start) so
//! the hit rate survives a restart. Also the governor's [`Shrink`] handle.
//! Must not: decide what a request is (the service builds keys and asks
//! [`ResponseCache::policy`]), or answer requests (the service does).
//! Workflow and advanced-chat apps are never cached (their nodes have side
//! effects). An app with knowledge bases is searched before the cache is
//! asked: the segments found are part of the key, so a dataset change that
//! changes what the question finds is a miss.

pub mod key;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

pub use key::{CacheKey, DifyParts, QueryEmbedding};

use crate::config::CacheSettings;
use crate::governor::shrink::Shrink;
use crate::store::{CacheRow, Store, StoreError};

/// What can go wrong in the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Reading or changing the persisted entries failed.
    #[error("response cache: {op}: {source}")]
    Store {
        op: &'static str,
        #[source]
        source: StoreError,
    },
}

/// Bytes an entry costs besides its key and answer (map and list nodes).
const ENTRY_OVERHEAD: u64 = 160;

/// The byte budget when `cache.max_bytes` is 0: a 32nd of the memory limit,
/// else 64 MiB, within 4 MiB ..= 256 MiB.
pub fn derived_max_bytes(memory_max: Option<u64>) -> u64 {
    memory_max.map_or(64 << 20, |m| m / 32).clamp(4 << 20, 256 << 20)
}

/// How a request met the cache.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Mark {
    /// Not cacheable (cache off, a non-deterministic request, an app kind
    /// that is never cached).
    #[default]
    Off,
    /// Cacheable, not found: the model answers and the answer is kept.
    Miss,
    Hit(Hit),
}

/// A cached answer given to a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub answer: String,
    /// The answer stopped at `max_tokens`: replayed with finish reason length.
    pub truncated: bool,
    /// When the answer was cached (unix seconds).
    pub created_at: i64,
    /// The cosine similarity of the cached question, for a semantic hit.
    pub similarity: Option<f32>,
}

/// Counters and sizes, for the admin API and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub enabled: bool,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub entries: u64,
    pub bytes: u64,
    pub max_bytes: u64,
}

struct Entry {
    key_text: String,
    app_id: String,
    app_version: u32,
    answer: String,
    truncated: bool,
    created_at: i64,
    scope: Option<String>,
    embedding: Option<QueryEmbedding>,
    /// Position in the recency list.
    tick: u64,
    bytes: u64,
}

#[derive(Default)]
struct Lru {
    entries: HashMap<String, Entry>,
    /// tick -> hash, oldest use first.
    order: BTreeMap<u64, String>,
    /// scope -> hashes of the entries with a query embedding (semantic lookups).
    scopes: HashMap<String, std::collections::HashSet<String>>,
    next_tick: u64,
    bytes: u64,
}

impl Lru {
    /// Adds an entry (its tick already set) to every index.
    fn put(&mut self, hash: String, e: Entry) {
        self.order.insert(e.tick, hash.clone());
        self.bytes += e.bytes;
        if let (Some(scope), Some(_)) = (&e.scope, &e.embedding) {
            self.scopes.entry(scope.clone()).or_default().insert(hash.clone());
        }
        self.entries.insert(hash, e);
    }

    fn touch(&mut self, hash: &str) {
        let tick = self.next_tick;
        if let Some(e) = self.entries.get_mut(hash) {
            self.order.remove(&e.tick);
            e.tick = tick;
            self.order.insert(tick, hash.to_owned());
            self.next_tick += 1;
        }
    }

    fn remove(&mut self, hash: &str) -> Option<Entry> {
        let e = self.entries.remove(hash)?;
        self.order.remove(&e.tick);
        self.bytes = self.bytes.saturating_sub(e.bytes);
        if let Some(scope) = &e.scope {
            if let Some(set) = self.scopes.get_mut(scope) {
                set.remove(hash);
                if set.is_empty() {
                    self.scopes.remove(scope);
                }
            }
        }
        Some(e)
    }

    /// Removes least recently used entries until at most `budget` bytes are
    /// held; returns their hashes.
    fn evict_to(&mut self, budget: u64) -> Vec<String> {
        let mut gone = Vec::new();
        while self.bytes > budget {
            let Some((_, hash)) = self.order.first_key_value().map(|(t, h)| (*t, h.clone())) else { break };
            drop(self.remove(&hash));
            gone.push(hash);
        }
        gone
    }
}

/// The response cache of one daemon.
pub struct ResponseCache {
    settings: CacheSettings,
    max_bytes: u64,
    store: Store,
    lru: Mutex<Lru>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    /// Set while the memory governor holds the cache from growing (from a
    /// shrink until the pressure is over).
    held: AtomicBool,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl ResponseCache {
    /// A cache with `settings`; `memory_max` (the cgroup limit) sizes it
    /// when `cache.max_bytes` is 0.
    /// The byte budget `settings` give under a memory limit of `memory_max`.
    pub fn max_bytes_for(settings: &CacheSettings, memory_max: Option<u64>) -> u64 {
        if settings.max_bytes == 0 {
            derived_max_bytes(memory_max)
        } else {
            settings.max_bytes
        }
    }

    pub fn new(settings: CacheSettings, memory_max: Option<u64>, store: Store) -> Arc<ResponseCache> {
        let max_bytes = Self::max_bytes_for(&settings, memory_max);
        Arc::new(ResponseCache {
            settings,
            max_bytes,
            store,
            lru: Mutex::new(Lru::default()),
            held: AtomicBool::new(false),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        })
    }

    fn lru(&self) -> MutexGuard<'_, Lru> {
        self.lru.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ttl_secs(&self) -> i64 {
        i64::try_from(self.settings.ttl.as_secs()).unwrap_or(i64::MAX)
    }

    /// Whether a request of `app_id` with these sampling parameters may be
    /// cached: the cache is on, and the request is deterministic or the app
    /// opted in with `always`.
    pub fn policy(&self, app_id: &str, params: &crate::model::SamplingParams) -> bool {
        self.settings.enabled && (key::deterministic(params) || self.settings.apps.get(app_id).is_some_and(|a| a.always))
    }

    /// Loads the persisted entries that have not expired, newest first, up
    /// to the byte budget; those of apps whose served version is not theirs
    /// (`served(app) != Some(version)`) are dropped, in memory and on disk.
    pub async fn load(&self, served: impl Fn(&str) -> Option<u32>) -> Result<usize, CacheError> {
        if !self.settings.enabled || !self.settings.persist {
            return Ok(0);
        }
        let oldest = now_secs().saturating_sub(self.ttl_secs());
        let rows = self.store.cache_load(oldest).await.map_err(|source| CacheError::Store { op: "load", source })?;
        let mut stale = Vec::new();
        let mut loaded = 0;
        {
            let mut lru = self.lru();
            // Newest first: each row goes to the front of the list's older end.
            for mut row in rows {
                let embedding =
                    row.embedding.take().map(|vector| QueryEmbedding { model: row.embed_model.clone().unwrap_or_default(), vector });
                let bytes = entry_bytes(&row.hash, &row.cache_key, &row.app_id, &row.answer) + embedding_bytes(embedding.as_ref());
                if served(&row.app_id) != Some(row.app_version) || lru.bytes + bytes > self.max_bytes {
                    stale.push(row.hash);
                    continue;
                }
                let tick = u64::MAX / 2 - loaded as u64;
                let e = Entry {
                    key_text: row.cache_key,
                    app_id: row.app_id,
                    app_version: row.app_version,
                    answer: row.answer,
                    truncated: row.truncated,
                    created_at: row.created_at,
                    scope: row.scope,
                    embedding,
                    tick,
                    bytes,
                };
                lru.put(row.hash, e);
                loaded += 1;
            }
            lru.next_tick = u64::MAX / 2 + 1;
        }
        self.forget_on_disk(stale);
        Ok(loaded)
    }

    /// The cached answer for `key`, if any (counting a hit; a request no
    /// lookup answered is counted with [`ResponseCache::missed`]).
    pub fn get(&self, key: &CacheKey) -> Option<Hit> {
        let now = now_secs();
        let mut lru = self.lru();
        let found = match lru.entries.get(&key.hash) {
            Some(e) if e.key_text != key.text => None,
            Some(e) if now.saturating_sub(e.created_at) >= self.ttl_secs() => {
                drop(lru.remove(&key.hash));
                drop(lru);
                self.forget_on_disk(vec![key.hash.clone()]);
                return None;
            }
            Some(e) => Some(Hit { answer: e.answer.clone(), truncated: e.truncated, created_at: e.created_at, similarity: None }),
            None => None,
        };
        if found.is_some() {
            lru.touch(&key.hash);
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// The cached answer whose question is most similar to `key`'s (same
    /// scope: everything but the query equal, embedded by the same model),
    /// if its cosine similarity reaches `threshold`. Counts a hit.
    pub fn get_similar(&self, key: &CacheKey, threshold: f32) -> Option<Hit> {
        let (Some(scope), Some(q)) = (&key.scope, &key.embedding) else { return None };
        let now = now_secs();
        let mut lru = self.lru();
        let best = lru
            .scopes
            .get(scope)?
            .iter()
            .filter_map(|h| {
                let e = lru.entries.get(h)?;
                let v = e.embedding.as_ref().filter(|v| v.model == q.model && v.vector.len() == q.vector.len())?;
                let fresh = now.saturating_sub(e.created_at) < self.ttl_secs();
                let similarity: f32 = v.vector.iter().zip(&q.vector).map(|(a, b)| a * b).sum();
                (fresh && similarity >= threshold).then_some((similarity, h.clone()))
            })
            .max_by(|a, b| a.0.total_cmp(&b.0))?;
        let (similarity, hash) = best;
        let hit = lru.entries.get(&hash).map(|e| Hit {
            answer: e.answer.clone(),
            truncated: e.truncated,
            created_at: e.created_at,
            similarity: Some(similarity),
        })?;
        lru.touch(&hash);
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(hit)
    }

    /// Counts a cacheable request that no lookup answered.
    pub fn missed(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// The semantic threshold of an app, when it has a semantic cache.
    pub fn semantic_threshold(&self, app_id: &str) -> Option<f32> {
        self.settings.apps.get(app_id).and_then(|a| a.semantic_threshold)
    }

    /// Keeps an answer (a run that finished normally). Evicts the least
    /// recently used entries beyond the budget; an answer larger than the
    /// whole budget is not kept. The store is written in the background.
    pub fn insert(&self, key: &CacheKey, answer: &str, truncated: bool) {
        if !self.settings.enabled || answer.is_empty() {
            return;
        }
        if self.held.load(Ordering::Acquire) {
            tracing::debug!(app = %key.app_id, "memory pressure: answer not cached");
            return;
        }
        let bytes = entry_bytes(&key.hash, &key.text, &key.app_id, answer) + embedding_bytes(key.embedding.as_ref());
        if bytes > self.max_bytes {
            tracing::debug!(app = %key.app_id, bytes, max_bytes = self.max_bytes, "answer larger than the whole response cache; not cached");
            return;
        }
        let created_at = now_secs();
        let evicted = {
            let mut lru = self.lru();
            drop(lru.remove(&key.hash));
            let tick = lru.next_tick;
            lru.next_tick += 1;
            let e = Entry {
                key_text: key.text.clone(),
                app_id: key.app_id.clone(),
                app_version: key.app_version,
                answer: answer.to_owned(),
                truncated,
                created_at,
                scope: key.scope.clone(),
                embedding: key.embedding.clone(),
                tick,
                bytes,
            };
            lru.put(key.hash.clone(), e);
            lru.evict_to(self.max_bytes)
        };
        self.evictions.fetch_add(evicted.len() as u64, Ordering::Relaxed);
        if !evicted.is_empty() {
            tracing::debug!(evicted = evicted.len(), "response cache evicted the least recently used answers");
        }
        if self.settings.persist {
            let row = CacheRow {
                hash: key.hash.clone(),
                app_id: key.app_id.clone(),
                app_version: key.app_version,
                cache_key: key.text.clone(),
                answer: answer.to_owned(),
                truncated,
                created_at,
                scope: key.scope.clone(),
                embed_model: key.embedding.as_ref().map(|e| e.model.clone()),
                embedding: key.embedding.as_ref().map(|e| e.vector.clone()),
            };
            if let Err(e) = self.store.cache_put(row, evicted) {
                tracing::warn!(app = %key.app_id, error = %crate::telemetry::chain(&e), "could not queue the cached answer for the store; kept in memory only");
            }
        }
    }

    /// Drops every entry, or those of one app; returns how many went.
    pub async fn flush(&self, app_id: Option<&str>) -> Result<u64, CacheError> {
        let n = {
            let mut lru = self.lru();
            let hashes: Vec<String> =
                lru.entries.iter().filter(|(_, e)| app_id.is_none_or(|a| e.app_id == a)).map(|(h, _)| h.clone()).collect();
            hashes.iter().for_each(|h| drop(lru.remove(h)));
            hashes.len() as u64
        };
        if self.settings.persist {
            self.store.cache_delete(app_id.map(str::to_owned)).await.map_err(|source| CacheError::Store { op: "flush", source })?;
        }
        tracing::info!(app = app_id.unwrap_or("*"), entries = n, "response cache flushed");
        Ok(n)
    }

    /// The app now serves `version`: its entries of other versions go.
    pub fn app_version_changed(&self, app_id: &str, version: u32) {
        let stale: Vec<String> = {
            let mut lru = self.lru();
            let hashes: Vec<String> =
                lru.entries.iter().filter(|(_, e)| e.app_id == app_id && e.app_version != version).map(|(h, _)| h.clone()).collect();
            hashes.iter().for_each(|h| drop(lru.remove(h)));
            hashes
        };
        if !stale.is_empty() {
            tracing::info!(app = app_id, version, entries = stale.len(), "app version changed; its cached answers dropped");
        }
        if self.settings.persist {
            if let Err(e) = self.store.cache_delete_other_versions(app_id, version) {
                tracing::warn!(app = app_id, error = %crate::telemetry::chain(&e), "could not queue dropping the stale cached answers on disk");
            }
        }
    }

    /// Queues deleting these entries on disk (errors are logged).
    fn forget_on_disk(&self, hashes: Vec<String>) {
        if !self.settings.persist || hashes.is_empty() {
            return;
        }
        if let Err(e) = self.store.cache_put_many(Vec::new(), hashes) {
            tracing::warn!(error = %crate::telemetry::chain(&e), "could not queue deleting cached answers on disk");
        }
    }

    pub fn stats(&self) -> Stats {
        let lru = self.lru();
        Stats {
            enabled: self.settings.enabled,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            entries: lru.entries.len() as u64,
            bytes: lru.bytes,
            max_bytes: self.max_bytes,
        }
    }

    /// The TTL, for logs.
    pub fn ttl(&self) -> Duration {
        self.settings.ttl
    }
}

impl Shrink for ResponseCache {
    fn name(&self) -> &'static str {
        "response_cache"
    }

    /// Evicts least recently used answers down to `keep` of the bytes held,
    /// and takes no new answer until [`Shrink::relax`].
    fn shrink(&self, keep: f64) -> u64 {
        self.held.store(true, Ordering::Release);
        let (freed, gone) = {
            let mut lru = self.lru();
            let before = lru.bytes;
            let target = (before as f64 * keep.clamp(0.0, 1.0)) as u64;
            let gone = lru.evict_to(target);
            (before - lru.bytes, gone)
        };
        self.evictions.fetch_add(gone.len() as u64, Ordering::Relaxed);
        self.forget_on_disk(gone);
        freed
    }

    fn relax(&self) {
        self.held.store(false, Ordering::Release);
    }
}

fn entry_bytes(hash: &str, key: &str, app_id: &str, answer: &str) -> u64 {
    (hash.len() + key.len() + app_id.len() + answer.len()) as u64 + ENTRY_OVERHEAD
}

/// What a query embedding adds to an entry (its vector, model id and scope).
fn embedding_bytes(e: Option<&QueryEmbedding>) -> u64 {
    e.map_or(0, |e| (e.vector.len() * 4 + e.model.len() + 64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AppCacheSettings, CacheSettings};
    use crate::model::SamplingParams;

    fn params(temperature: f32) -> SamplingParams {
        SamplingParams { temperature, top_p: 1.0, top_k: 40, max_tokens: 64, seed: None, stop: Vec::new(), grammar: None }
    }

    fn key(app: &str, version: u32, q: &str) -> CacheKey {
        let p = params(0.0);
        CacheKey::dify(&DifyParts {
            app_id: app,
            app_version: version,
            model: "m",
            params: &p,
            query: q,
            inputs: &serde_json::Map::new(),
            history: &[],
            context: None,
        })
        .expect("key")
    }

    fn cache(dir: &std::path::Path, max_bytes: u64, ttl_secs: u64) -> (Arc<ResponseCache>, Store) {
        let (store, _) = Store::open(&dir.join("s.db")).expect("store");
        let s = CacheSettings { max_bytes, ttl: Duration::from_secs(ttl_secs), ..CacheSettings::default() };
        (ResponseCache::new(s, None, store.clone()), store)
    }

    #[test]
    fn the_budget_derives_from_the_memory_limit() {
        assert_eq!(derived_max_bytes(None), 64 << 20);
        assert_eq!(derived_max_bytes(Some(512 << 20)), 16 << 20);
        assert_eq!(derived_max_bytes(Some(64 << 20)), 4 << 20, "at least 4 MiB");
        assert_eq!(derived_max_bytes(Some(64 << 30)), 256 << 20, "at most 256 MiB");
    }

    #[tokio::test]
    async fn least_recently_used_answers_go_first_and_are_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let one = entry_bytes(&"h".repeat(64), &key("a", 1, "q0").text, "a", &"x".repeat(100));
        let (c, _s) = cache(dir.path(), one * 2 + one / 2, 3600);
        c.insert(&key("a", 1, "q0"), &"x".repeat(100), false);
        c.insert(&key("a", 1, "q1"), &"x".repeat(100), false);
        assert!(c.get(&key("a", 1, "q0")).is_some(), "q0 is now the most recent");
        c.insert(&key("a", 1, "q2"), &"x".repeat(100), false);
        assert!(c.get(&key("a", 1, "q1")).is_none(), "q1 was the least recently used");
        assert!(c.get(&key("a", 1, "q0")).is_some());
        let st = c.stats();
        assert_eq!((st.entries, st.evictions, st.hits), (2, 1, 2));
        c.missed();
        assert_eq!(c.stats().misses, 1, "the service counts a request no lookup answered");
        assert!(st.bytes <= st.max_bytes);
        // An answer larger than the whole cache is not kept and evicts nothing.
        c.insert(&key("a", 1, "big"), &"x".repeat(10_000), false);
        assert_eq!(c.stats().entries, 2);
    }

    #[tokio::test]
    async fn a_colliding_hash_never_serves_another_answer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, _s) = cache(dir.path(), 1 << 20, 3600);
        let k = key("a", 1, "q");
        c.insert(&k, "answer", false);
        let forged = CacheKey { text: format!("{}x", k.text), ..k.clone() };
        assert_eq!(c.get(&forged), None);
        assert_eq!(c.get(&k).map(|h| h.answer).as_deref(), Some("answer"));
    }

    #[tokio::test]
    async fn flush_version_change_shrink_and_policy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, _s) = cache(dir.path(), 1 << 20, 3600);
        for (app, v, q) in [("a", 1, "q"), ("a", 2, "q"), ("b", 1, "q"), ("b", 1, "r")] {
            c.insert(&key(app, v, q), "answer", false);
        }
        c.app_version_changed("a", 2);
        assert!(c.get(&key("a", 1, "q")).is_none());
        assert!(c.get(&key("a", 2, "q")).is_some());
        assert_eq!(c.flush(Some("b")).await.expect("flush"), 2);
        assert_eq!(c.stats().entries, 1);
        c.insert(&key("b", 1, "q"), "answer", false);
        let held = c.stats().bytes;
        assert!(c.shrink(0.5) >= held / 2 - 1);
        assert!(c.stats().bytes <= held / 2);
        let rest = c.stats().bytes;
        assert_eq!(c.shrink(0.0), rest);
        assert_eq!(c.stats().entries, 0);
        assert_eq!(c.name(), "response_cache");
        // Under pressure it takes nothing new until the governor relaxes it.
        c.insert(&key("b", 1, "q"), "answer", false);
        assert_eq!(c.stats().entries, 0, "an answer was cached while the governor held the cache");
        c.relax();
        c.insert(&key("b", 1, "q"), "answer", false);
        assert_eq!(c.stats().entries, 1);

        let mut s = CacheSettings::default();
        s.apps.insert("warm".into(), AppCacheSettings { always: true, semantic_threshold: Some(0.9) });
        let c = ResponseCache::new(s, None, c.store.clone());
        assert!(c.policy("x", &params(0.0)));
        assert!(!c.policy("x", &params(0.7)));
        assert!(c.policy("warm", &params(0.7)));
        assert_eq!((c.semantic_threshold("warm"), c.semantic_threshold("x")), (Some(0.9), None));
    }

    fn embedded(q: &str, vector: Vec<f32>) -> CacheKey {
        CacheKey { embedding: Some(QueryEmbedding { model: "e5".into(), vector }), ..key("a", 1, q) }
    }

    #[tokio::test]
    async fn a_similar_question_of_the_same_scope_finds_the_answer_and_its_similarity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, store) = cache(dir.path(), 1 << 20, 3600);
        c.insert(&embedded("what is a plc", vec![1.0, 0.0]), "a controller", false);
        c.insert(&embedded("what is modbus", vec![0.0, 1.0]), "a protocol", false);
        let near = embedded("what's a PLC", vec![0.96, 0.28]);
        assert_eq!(c.get(&near), None, "not the same question");
        let hit = c.get_similar(&near, 0.9).expect("similar enough");
        assert_eq!(hit.answer, "a controller");
        assert!((hit.similarity.expect("semantic") - 0.96).abs() < 1e-6);
        assert_eq!(c.get_similar(&near, 0.97), None, "below the threshold");
        let other_model = CacheKey { embedding: Some(QueryEmbedding { model: "other".into(), vector: vec![1.0, 0.0] }), ..near.clone() };
        assert_eq!(c.get_similar(&other_model, 0.5), None, "vectors of another model are not comparable");
        let other_scope = CacheKey { scope: Some("elsewhere".into()), ..near.clone() };
        assert_eq!(c.get_similar(&other_scope, 0.5), None, "another app, version, inputs or history");
        // Survives a restart with its vector; gone with its entry.
        store.close().await.expect("close");
        let (c, _store) = cache(dir.path(), 1 << 20, 3600);
        assert_eq!(c.load(|_| Some(1)).await.expect("load"), 2);
        assert_eq!(c.get_similar(&near, 0.9).map(|h| h.answer).as_deref(), Some("a controller"));
        c.flush(Some("a")).await.expect("flush");
        assert_eq!(c.get_similar(&near, 0.5), None);
    }

    #[tokio::test]
    async fn entries_survive_a_restart_and_expire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, store) = cache(dir.path(), 1 << 20, 3600);
        c.insert(&key("a", 1, "q"), "kept", false);
        c.insert(&key("a", 0, "q"), "dropped at load: not the served version", false);
        c.insert(&key("b", 1, "q"), "flushed", false);
        c.flush(Some("b")).await.expect("flush");
        store.close().await.expect("close flushes the queued writes");

        let (c, store) = cache(dir.path(), 1 << 20, 3600);
        let loaded = c.load(|app| (app == "a").then_some(1)).await.expect("load");
        assert_eq!(loaded, 1);
        assert_eq!(c.get(&key("a", 1, "q")).map(|h| h.answer).as_deref(), Some("kept"));
        c.app_version_changed("a", 2);
        store.close().await.expect("close");

        let (c, store) = cache(dir.path(), 1 << 20, 3600);
        assert_eq!(c.load(|_| Some(1)).await.expect("load"), 0, "the version change deleted the rows too");
        store.close().await.expect("close");

        // An expired entry is neither served nor loaded (TTL 2 s: a read
        // within the same or the next second is still fresh).
        let (c, store) = cache(dir.path(), 1 << 20, 2);
        c.insert(&key("a", 1, "q"), "short-lived", false);
        assert!(c.get(&key("a", 1, "q")).is_some());
        std::thread::sleep(Duration::from_millis(3100));
        assert!(c.get(&key("a", 1, "q")).is_none(), "expired");
        c.insert(&key("a", 1, "r"), "short-lived", false);
        store.close().await.expect("close");
        std::thread::sleep(Duration::from_millis(3100));
        let (c, _store) = cache(dir.path(), 1 << 20, 2);
        assert_eq!(c.load(|_| Some(1)).await.expect("load"), 0);
    }

    #[tokio::test]
    async fn without_persist_nothing_reaches_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = Store::open(&dir.path().join("s.db")).expect("store");
        let s = CacheSettings { persist: false, ..CacheSettings::default() };
        let c = ResponseCache::new(s.clone(), None, store.clone());
        c.insert(&key("a", 1, "q"), "memory only", false);
        assert!(c.get(&key("a", 1, "q")).is_some());
        assert!(store.cache_load(0).await.expect("load").is_empty());
        assert_eq!(ResponseCache::new(s, None, store).load(|_| Some(1)).await.expect("load"), 0);
    }

    #[tokio::test]
    async fn loading_keeps_the_newest_within_the_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, store) = cache(dir.path(), 1 << 20, 3600);
        for i in 0..10 {
            c.insert(&key("a", 1, &format!("q{i}")), &"x".repeat(100), false);
        }
        store.close().await.expect("close");
        let one = entry_bytes(&"h".repeat(64), &key("a", 1, "q0").text, "a", &"x".repeat(100));
        let (c, _store) = cache(dir.path(), one * 3, 3600);
        assert_eq!(c.load(|_| Some(1)).await.expect("load"), 3);
        assert!(c.stats().bytes <= one * 3);
    }
}
