//! A bounded least-recently-used cache of images' shoeboxes, read from disk on a miss (and the
//! [`Lru`] map behind it, which also bounds the spot templates built per image).
//!
//! In: a capacity (images; the planner sets it to the image plate's batch: `subsample B`, or
//! every image without one) and, on each lookup, the image's index and a loader. Out: shared
//! [`ImageShoeboxes`]. Guarantees: at most `capacity` images are held (plus those a caller still
//! holds an `Arc` of); a lookup never changes the values returned (a reloaded image is checked
//! against its load-time checksum by the loader), so results do not depend on the capacity,
//! the order of lookups or the number of threads; the lock is not held while reading.

use crate::formats::image_index::ImageShoeboxes;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// A least-recently-used map of at most `capacity` entries (at least one).
#[derive(Debug)]
pub struct Lru<K, V> {
    capacity: usize,
    tick: u64,
    /// Key → (value, last use).
    entries: HashMap<K, (V, u64)>,
    /// Last use → key (the smallest is evicted first).
    by_use: BTreeMap<u64, K>,
}

impl<K, V> Default for Lru<K, V> {
    fn default() -> Self {
        Lru {
            capacity: 1,
            tick: 0,
            entries: HashMap::new(),
            by_use: BTreeMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Lru<K, V> {
    /// Entries held at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Raises the capacity to `n` (it never shrinks: the largest batch asked for wins).
    pub fn grow_to(&mut self, n: usize) {
        self.capacity = self.capacity.max(n);
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value of `key`, marked as just used.
    pub fn get(&mut self, key: &K) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        let (value, last) = self.entries.get_mut(key)?;
        self.by_use.remove(last);
        *last = tick;
        self.by_use.insert(tick, key.clone());
        Some(value.clone())
    }

    /// Puts `value` under `key` (replacing any), evicting the least recently used entries.
    pub fn insert(&mut self, key: K, value: V) {
        self.tick += 1;
        if let Some((_, last)) = self.entries.remove(&key) {
            self.by_use.remove(&last);
        }
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.by_use.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        self.entries.insert(key.clone(), (value, self.tick));
        self.by_use.insert(self.tick, key);
    }
}

/// The images' shoeboxes (interior mutability: shared by the threads evaluating images).
#[derive(Debug, Default)]
pub struct ShoeboxCache {
    inner: Mutex<(Lru<usize, Arc<ImageShoeboxes>>, u64)>,
}

impl Clone for ShoeboxCache {
    /// An empty cache of the same capacity.
    fn clone(&self) -> Self {
        let cache = ShoeboxCache::default();
        cache.set_capacity(self.capacity());
        cache
    }
}

impl ShoeboxCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Lru<usize, Arc<ImageShoeboxes>>, u64)> {
        // The map is consistent between statements, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Images held at most.
    pub fn capacity(&self) -> usize {
        self.lock().0.capacity()
    }

    /// Holds at least `images` images from now on (the largest capacity asked for wins).
    pub fn set_capacity(&self, images: usize) {
        self.lock().0.grow_to(images);
    }

    /// Images currently held.
    pub fn len(&self) -> usize {
        self.lock().0.len()
    }

    /// True when no image is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Images read from disk so far.
    pub fn reads(&self) -> u64 {
        self.lock().1
    }

    /// Image `image`'s shoeboxes, from the cache or from `load` (called without the lock).
    pub fn get<E>(
        &self,
        image: usize,
        load: impl FnOnce() -> Result<ImageShoeboxes, E>,
    ) -> Result<Arc<ImageShoeboxes>, E> {
        if let Some(hit) = self.lock().0.get(&image) {
            return Ok(hit);
        }
        let loaded = Arc::new(load()?);
        let mut guard = self.lock();
        guard.1 += 1;
        // Another thread may have read it meanwhile: keep one copy.
        if let Some(hit) = guard.0.get(&image) {
            return Ok(hit);
        }
        guard.0.insert(image, loaded.clone());
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(n: usize) -> ImageShoeboxes {
        ImageShoeboxes {
            counts: vec![n as f32],
            ..ImageShoeboxes::default()
        }
    }

    #[test]
    fn evicts_the_least_recently_used_image() {
        let cache = ShoeboxCache::default();
        cache.set_capacity(2);
        let get = |i: usize| {
            cache
                .get(i, || Ok::<_, ()>(image(i)))
                .map(|v| v.counts[0])
                .unwrap_or(-1.0)
        };
        assert_eq!((get(0), get(1), get(0)), (0.0, 1.0, 0.0));
        assert_eq!(cache.reads(), 2);
        assert_eq!(get(2), 2.0); // evicts 1, the least recently used
        assert_eq!(cache.len(), 2);
        assert_eq!(get(0), 0.0);
        assert_eq!(cache.reads(), 3);
        assert_eq!(get(1), 1.0);
        assert_eq!(cache.reads(), 4);
    }

    #[test]
    fn a_failed_load_is_returned_and_not_cached() {
        let cache = ShoeboxCache::default();
        assert_eq!(
            cache.get(3, || Err::<ImageShoeboxes, _>("gone")),
            Err("gone")
        );
        assert!(cache.is_empty());
        cache.set_capacity(4);
        cache.set_capacity(1);
        assert_eq!(cache.capacity(), 4);
    }

    #[test]
    fn insert_replaces_and_counts_as_a_use() {
        let mut lru: Lru<&str, u32> = Lru::default();
        lru.grow_to(2);
        lru.insert("a", 1);
        lru.insert("b", 2);
        lru.insert("a", 3); // replaces a, now the most recent
        lru.insert("c", 4); // evicts b
        assert_eq!(
            (lru.get(&"a"), lru.get(&"b"), lru.get(&"c")),
            (Some(3), None, Some(4))
        );
        assert_eq!(lru.len(), 2);
    }
}
