//! The contract between the memory governor and what holds memory it can
//! take back: the response cache, the idle KV prefixes. Under pressure the
//! governor asks every registered [`Shrink`] to give memory back before it
//! refuses new work.

/// Something that can give memory back when asked. From the first
/// [`Shrink::shrink`] until [`Shrink::relax`] it should not grow again.
pub trait Shrink: Send + Sync {
    /// A short name for logs and metrics labels (`response_cache`, `kv_prefixes`).
    fn name(&self) -> &'static str;
    /// Gives memory back, keeping about `keep` (0.0..=1.0) of what it holds
    /// now; `0.0` empties it. Returns the bytes freed (an estimate is fine).
    /// Never blocks for long: the governor calls it from its own task.
    fn shrink(&self, keep: f64) -> u64;
    /// The pressure is over: it may grow again.
    fn relax(&self);
}
