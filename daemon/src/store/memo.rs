//! Small in-memory copies of rows read on every request (verified API keys,
//! apps' annotation settings), so the hot path costs no store read: at tens
//! of thousands of requests a second, the hop to a blocking reader thread
//! and back was most of a request's cost.
//!
//! Owns: the memo type and its one rule, that a copy is never older than
//! the store. Every change of the rows goes through the store's own write
//! methods, which update the memo after their commit; a read that started
//! before such a change does not fill the memo after it (`generation`).

use std::collections::HashMap;
use std::hash::Hash;

/// Rows by key, at most `max` (emptied when full, so no flood of distinct
/// keys grows it).
pub(super) struct Memo<K, V> {
    rows: HashMap<K, V>,
    generation: u64,
    max: usize,
}

impl<K: Hash + Eq, V: Clone> Memo<K, V> {
    pub(super) fn new(max: usize) -> Self {
        Self { rows: HashMap::new(), generation: 0, max }
    }

    /// The copy of `key`'s row, and the generation a read of the store
    /// must pass to [`Memo::fill`] when there is none.
    pub(super) fn get(&self, key: &K) -> (Option<V>, u64) {
        (self.rows.get(key).cloned(), self.generation)
    }

    /// Keeps what a read that began at `generation` found, unless the rows
    /// changed since.
    pub(super) fn fill(&mut self, generation: u64, key: K, value: V) {
        if generation == self.generation {
            self.insert(key, value);
        }
    }

    /// A committed change of `key`'s row.
    pub(super) fn set(&mut self, key: K, value: V) {
        self.generation += 1;
        self.insert(key, value);
    }

    /// A committed change that may touch any row.
    pub(super) fn invalidate(&mut self) {
        self.generation += 1;
        self.rows.clear();
    }

    fn insert(&mut self, key: K, value: V) {
        if self.rows.len() >= self.max && !self.rows.contains_key(&key) {
            self.rows.clear();
        }
        self.rows.insert(key, value);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.rows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_older_than_a_change_is_not_kept() {
        let mut m: Memo<&str, u32> = Memo::new(8);
        let (none, generation) = m.get(&"a");
        assert_eq!(none, None);
        m.set("a", 2);
        m.fill(generation, "a", 1);
        assert_eq!(m.get(&"a").0, Some(2), "the stale read did not overwrite the change");
        m.invalidate();
        m.fill(generation, "a", 1);
        assert_eq!(m.get(&"a").0, None, "nor fill after an invalidation");
        let (_, now) = m.get(&"a");
        m.fill(now, "a", 3);
        assert_eq!(m.get(&"a").0, Some(3));
    }

    #[test]
    fn it_is_bounded() {
        let mut m: Memo<u32, u32> = Memo::new(4);
        for k in 0..=4 {
            let (_, g) = m.get(&k);
            m.fill(g, k, k);
        }
        assert_eq!(m.len(), 1, "full: emptied before the fifth key");
        m.set(4, 5);
        assert_eq!(m.len(), 1, "a key already kept replaces its row");
    }
}
