//! Label sets resolved once: a [`Family`] maps a key (a topic, a topic and group) to the
//! caller's series (its attribute list and [`crate::ShardedCounter`]s), created on first use
//! and cached. The hot path looks a series up once per request and adds to its counters;
//! collection walks the family under a read lock.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use parking_lot::RwLock;

/// Series of type `S` keyed by `K`, each built once.
#[derive(Debug)]
pub struct Family<K, S> {
    series: RwLock<HashMap<K, Arc<S>>>,
}

impl<K, S> Default for Family<K, S> {
    fn default() -> Self {
        Family {
            series: RwLock::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq, S> Family<K, S> {
    /// The series of `key`, made by `make` (which returns the owned key and the series) the
    /// first time.
    pub fn get_or_insert_with<Q>(&self, key: &Q, make: impl FnOnce() -> (K, S)) -> Arc<S>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(s) = self.series.read().get(key) {
            return Arc::clone(s);
        }
        let (owned, series) = make();
        let mut map = self.series.write();
        Arc::clone(map.entry(owned).or_insert_with(|| Arc::new(series)))
    }

    /// Calls `f` with every series (under a read lock: `f` must not call back into the family).
    pub fn for_each(&self, mut f: impl FnMut(&K, &S)) {
        for (k, s) in self.series.read().iter() {
            f(k, s);
        }
    }

    /// How many series exist.
    pub fn len(&self) -> usize {
        self.series.read().len()
    }

    /// Whether no series exists yet.
    pub fn is_empty(&self) -> bool {
        self.series.read().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_the_same_key_twice_should_build_the_series_once() {
        let family: Family<String, u32> = Family::default();
        let mut built = 0;
        let a = family.get_or_insert_with("t", || {
            built += 1;
            ("t".to_owned(), 7)
        });
        let b = family.get_or_insert_with("t", || {
            built += 1;
            ("t".to_owned(), 8)
        });
        assert_eq!((*a, *b, built, family.len()), (7, 7, 1, 1));
    }
}
