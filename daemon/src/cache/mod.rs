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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

pub use key::{CacheKey, DifyParts};

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
    /// When the answer was cached (unix seconds).
    pub created_at: i64,
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
    created_at: i64,
    /// Position in the recency list.
    tick: u64,
    bytes: u64,
}

#[derive(Default)]
struct Lru {
    entries: HashMap<String, Entry>,
    /// tick -> hash, oldest use first.
    order: BTreeMap<u64, String>,
    next_tick: u64,
    bytes: u64,
}

impl Lru {
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
        Some(e)
    }

    /// Removes least recently used entries until at most `budget` bytes are
    /// held; returns their hashes.
    fn evict_to(&mut self, budget: u64) -> Vec<String> {
        let mut gone = Vec::new();
        while self.bytes > budget {
            let Some((_, hash)) = self.order.pop_first() else { break };
            if let Some(e) = self.entries.remove(&hash) {
                self.bytes = self.bytes.saturating_sub(e.bytes);
            }
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
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl ResponseCache {
    /// A cache with `settings`; `memory_max` (the cgroup limit) sizes it
    /// when `cache.max_bytes` is 0.
    pub fn new(settings: CacheSettings, memory_max: Option<u64>, store: Store) -> Arc<ResponseCache> {
        let max_bytes = if settings.max_bytes == 0 { derived_max_bytes(memory_max) } else { settings.max_bytes };
        Arc::new(ResponseCache {
            settings,
            max_bytes,
            store,
            lru: Mutex::new(Lru::default()),
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
            for row in rows {
                let bytes = entry_bytes(&row.hash, &row.cache_key, &row.app_id, &row.answer);
                if served(&row.app_id) != Some(row.app_version) || lru.bytes + bytes > self.max_bytes {
                    stale.push(row.hash);
                    continue;
                }
                let tick = u64::MAX / 2 - loaded as u64;
                lru.order.insert(tick, row.hash.clone());
                lru.bytes += bytes;
                lru.entries.insert(
                    row.hash,
                    Entry {
                        key_text: row.cache_key,
                        app_id: row.app_id,
                        app_version: row.app_version,
                        answer: row.answer,
                        created_at: row.created_at,
                        tick,
                        bytes,
                    },
                );
                loaded += 1;
            }
            lru.next_tick = u64::MAX / 2 + 1;
        }
        self.forget_on_disk(stale);
        Ok(loaded)
    }

    /// The cached answer for `key`, if any (counting a hit or a miss).
    pub fn get(&self, key: &CacheKey) -> Option<Hit> {
        let now = now_secs();
        let mut lru = self.lru();
        let found = match lru.entries.get(&key.hash) {
            Some(e) if e.key_text != key.text => None,
            Some(e) if now.saturating_sub(e.created_at) >= self.ttl_secs() => {
                drop(lru.remove(&key.hash));
                drop(lru);
                self.forget_on_disk(vec![key.hash.clone()]);
                self.misses.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            Some(e) => Some(Hit { answer: e.answer.clone(), created_at: e.created_at }),
            None => None,
        };
        match found {
            Some(hit) => {
                lru.touch(&key.hash);
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(hit)
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Keeps an answer (a run that finished normally). Evicts the least
    /// recently used entries beyond the budget; an answer larger than the
    /// whole budget is not kept. The store is written in the background.
    pub fn insert(&self, key: &CacheKey, answer: &str) {
        if !self.settings.enabled || answer.is_empty() {
            return;
        }
        let bytes = entry_bytes(&key.hash, &key.text, &key.app_id, answer);
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
            lru.order.insert(tick, key.hash.clone());
            lru.bytes += bytes;
            let e = Entry {
                key_text: key.text.clone(),
                app_id: key.app_id.clone(),
                app_version: key.app_version,
                answer: answer.to_owned(),
                created_at,
                tick,
                bytes,
            };
            lru.entries.insert(key.hash.clone(), e);
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
                created_at,
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

    /// Evicts least recently used answers down to `keep` of the bytes held.
    fn shrink(&self, keep: f64) -> u64 {
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
}

fn entry_bytes(hash: &str, key: &str, app_id: &str, answer: &str) -> u64 {
    (hash.len() + key.len() + app_id.len() + answer.len()) as u64 + ENTRY_OVERHEAD
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
        c.insert(&key("a", 1, "q0"), &"x".repeat(100));
        c.insert(&key("a", 1, "q1"), &"x".repeat(100));
        assert!(c.get(&key("a", 1, "q0")).is_some(), "q0 is now the most recent");
        c.insert(&key("a", 1, "q2"), &"x".repeat(100));
        assert!(c.get(&key("a", 1, "q1")).is_none(), "q1 was the least recently used");
        assert!(c.get(&key("a", 1, "q0")).is_some());
        let st = c.stats();
        assert_eq!((st.entries, st.evictions, st.hits, st.misses), (2, 1, 2, 1));
        assert!(st.bytes <= st.max_bytes);
        // An answer larger than the whole cache is not kept and evicts nothing.
        c.insert(&key("a", 1, "big"), &"x".repeat(10_000));
        assert_eq!(c.stats().entries, 2);
    }

    #[tokio::test]
    async fn a_colliding_hash_never_serves_another_answer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, _s) = cache(dir.path(), 1 << 20, 3600);
        let k = key("a", 1, "q");
        c.insert(&k, "answer");
        let forged = CacheKey { text: format!("{}x", k.text), ..k.clone() };
        assert_eq!(c.get(&forged), None);
        assert_eq!(c.get(&k).map(|h| h.answer).as_deref(), Some("answer"));
    }

    #[tokio::test]
    async fn flush_version_change_shrink_and_policy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, _s) = cache(dir.path(), 1 << 20, 3600);
        for (app, v, q) in [("a", 1, "q"), ("a", 2, "q"), ("b", 1, "q"), ("b", 1, "r")] {
            c.insert(&key(app, v, q), "answer");
        }
        c.app_version_changed("a", 2);
        assert!(c.get(&key("a", 1, "q")).is_none());
        assert!(c.get(&key("a", 2, "q")).is_some());
        assert_eq!(c.flush(Some("b")).await.expect("flush"), 2);
        assert_eq!(c.stats().entries, 1);
        c.insert(&key("b", 1, "q"), "answer");
        let held = c.stats().bytes;
        assert!(c.shrink(0.5) >= held / 2 - 1);
        assert!(c.stats().bytes <= held / 2);
        let rest = c.stats().bytes;
        assert_eq!(c.shrink(0.0), rest);
        assert_eq!(c.stats().entries, 0);
        assert_eq!(c.name(), "response_cache");

        let mut s = CacheSettings::default();
        s.apps.insert("warm".into(), AppCacheSettings { always: true });
        let c = ResponseCache::new(s, None, c.store.clone());
        assert!(c.policy("x", &params(0.0)));
        assert!(!c.policy("x", &params(0.7)));
        assert!(c.policy("warm", &params(0.7)));
    }

    #[tokio::test]
    async fn entries_survive_a_restart_and_expire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, store) = cache(dir.path(), 1 << 20, 3600);
        c.insert(&key("a", 1, "q"), "kept");
        c.insert(&key("a", 0, "q"), "dropped at load: not the served version");
        c.insert(&key("b", 1, "q"), "flushed");
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

        // An expired entry is neither served nor loaded.
        let (c, store) = cache(dir.path(), 1 << 20, 1);
        c.insert(&key("a", 1, "q"), "short-lived");
        assert!(c.get(&key("a", 1, "q")).is_some());
        std::thread::sleep(Duration::from_millis(2100));
        assert!(c.get(&key("a", 1, "q")).is_none(), "expired");
        c.insert(&key("a", 1, "r"), "short-lived");
        store.close().await.expect("close");
        std::thread::sleep(Duration::from_millis(2100));
        let (c, _store) = cache(dir.path(), 1 << 20, 1);
        assert_eq!(c.load(|_| Some(1)).await.expect("load"), 0);
    }

    #[tokio::test]
    async fn loading_keeps_the_newest_within_the_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, store) = cache(dir.path(), 1 << 20, 3600);
        for i in 0..10 {
            c.insert(&key("a", 1, &format!("q{i}")), &"x".repeat(100));
        }
        store.close().await.expect("close");
        let one = entry_bytes(&"h".repeat(64), &key("a", 1, "q0").text, "a", &"x".repeat(100));
        let (c, _store) = cache(dir.path(), one * 3, 3600);
        assert_eq!(c.load(|_| Some(1)).await.expect("load"), 3);
        assert!(c.stats().bytes <= one * 3);
    }
}
