//! [`ShardedMap`]: a hash map that is cheap to copy and to change one entry in the copy.
//!
//! The directory is a snapshot that packets read while a change is built in a copy of it.
//! A plain `HashMap` would make every change copy every entry; a persistent map (a HAMT such
//! as `imbl`'s) copies little but costs about 1 KB per entry when it holds 100,000 entries,
//! since its deepest nodes are mostly empty slots. This map splits the entries over
//! [`SHARDS`] ordinary `HashMap`s behind `Arc`s: a copy clones the `Arc`s, and a change
//! copies the one shard it touches (1/64 of the entries) unless nobody else holds it.
//! Memory is that of `HashMap`s: the entries, plus about one eighth of empty slots.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::Arc;

/// Shards per map: a change copies about 1/`SHARDS` of the entries.
pub const SHARDS: usize = 64;

/// A hash map split over [`SHARDS`] shared `HashMap`s.
#[derive(Debug, Clone)]
pub struct ShardedMap<K, V> {
    hasher: RandomState,
    shards: Arc<[Arc<HashMap<K, V>>; SHARDS]>,
    len: usize,
}

impl<K, V> Default for ShardedMap<K, V> {
    fn default() -> Self {
        ShardedMap {
            hasher: RandomState::new(),
            shards: Arc::new(std::array::from_fn(|_| Arc::new(HashMap::new()))),
            len: 0,
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> ShardedMap<K, V> {
    fn shard_of<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        // The top bits: the inner maps use the low ones of their own hash.
        (self.hasher.hash_one(key) >> (64 - SHARDS.trailing_zeros())) as usize
    }

    /// The shard `index`, made this map's own first (copied when another copy shares it).
    fn shard_mut(&mut self, index: usize) -> &mut HashMap<K, V> {
        Arc::make_mut(&mut Arc::make_mut(&mut self.shards)[index])
    }

    /// The value for `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[self.shard_of(key)].get(key)
    }

    /// The value for `key`, to change in place (its shard made this map's own first).
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let index = self.shard_of(key);
        if !self.shards[index].contains_key(key) {
            return None;
        }
        self.shard_mut(index).get_mut(key)
    }

    /// True when `key` has a value.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(key).is_some()
    }

    /// Sets `key` to `value`, returning the value it had.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let index = self.shard_of(&key);
        let old = self.shard_mut(index).insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Takes `key` out, returning its value.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let index = self.shard_of(key);
        // Do not copy a shared shard just to find the key is not there.
        if !self.shards[index].contains_key(key) {
            return None;
        }
        let old = self.shard_mut(index).remove(key);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|shard| shard.iter())
    }
}

impl<K: Hash + Eq + Clone, V: Clone + PartialEq> PartialEq for ShardedMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl<K: Hash + Eq + Clone, V: Clone + Eq> Eq for ShardedMap<K, V> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_keeps_its_entries_while_the_original_changes() {
        // Proves copies are independent: changes to one never show in the other, and the
        // shards nobody changed stay shared.
        let mut map = ShardedMap::default();
        for i in 0..1000u32 {
            map.insert(i, i * 2);
        }
        let copy = map.clone();
        map.insert(5, 0);
        map.insert(2000, 1);
        assert_eq!(map.remove(&7), Some(14));
        assert_eq!(map.remove(&7), None);
        assert_eq!(map.remove(&5000), None);

        assert_eq!((map.len(), copy.len()), (1000, 1000));
        assert_eq!((map.get(&5), copy.get(&5)), (Some(&0), Some(&10)));
        assert_eq!((map.get(&7), copy.get(&7)), (None, Some(&14)));
        assert_eq!((map.get(&2000), copy.get(&2000)), (Some(&1), None));
        let shared = (0..SHARDS)
            .filter(|&i| Arc::ptr_eq(&map.shards[i], &copy.shards[i]))
            .count();
        assert!(shared >= SHARDS - 3, "only {shared} shards still shared");
        assert_ne!(map, copy);
        assert_eq!(copy.iter().count(), 1000);
    }

    #[test]
    fn string_keys_are_found_by_str() {
        // Proves a lookup by &str picks the same shard as the String key it was stored by.
        let mut map = ShardedMap::default();
        for i in 0..200 {
            map.insert(format!("g.customer{i}"), i);
        }
        assert!((0..200).all(|i| map.get(format!("g.customer{i}").as_str()) == Some(&i)));
        assert!(!map.contains_key("g.customer200"));
    }
}
