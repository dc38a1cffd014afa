//! A bounded least-recently-used cache of images' shoeboxes, read from disk on a miss.
//!
//! In: a capacity (images; the planner sets it to the image plate's batch: `subsample B`, or
//! every image without one) and, on each lookup, the image's index and a loader. Out: shared
//! [`ImageShoeboxes`]. Guarantees: at most `capacity` images are held (plus those a caller still
//! holds an `Arc` of); a lookup never changes the values returned (a reloaded image is checked
//! against its load-time checksum by the loader), so results do not depend on the capacity,
//! the order of lookups or the number of threads; the lock is not held while reading.

use crate::formats::image_index::ImageShoeboxes;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// The cache (interior mutability: shared by the threads evaluating images).
#[derive(Debug, Default)]
pub struct ShoeboxCache {
    inner: Mutex<Lru>,
}

#[derive(Debug, Default)]
struct Lru {
    capacity: usize,
    tick: u64,
    /// Image → (its shoeboxes, last use).
    entries: HashMap<usize, (Arc<ImageShoeboxes>, u64)>,
    /// Last use → image (the smallest key is evicted first).
    by_use: BTreeMap<u64, usize>,
    reads: u64,
}

impl Lru {
    fn touch(&mut self, image: usize) -> Option<Arc<ImageShoeboxes>> {
        self.tick += 1;
        let tick = self.tick;
        let (value, last) = self.entries.get_mut(&image)?;
        self.by_use.remove(last);
        *last = tick;
        self.by_use.insert(tick, image);
        Some(value.clone())
    }

    fn insert(&mut self, image: usize, value: Arc<ImageShoeboxes>) -> Arc<ImageShoeboxes> {
        if let Some(existing) = self.touch(image) {
            return existing;
        }
        while self.entries.len() >= self.capacity.max(1) {
            let Some((_, oldest)) = self.by_use.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        self.entries.insert(image, (value.clone(), self.tick));
        self.by_use.insert(self.tick, image);
        value
    }
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
    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        // A panic while holding the lock cannot leave the map inconsistent for readers.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Images held at most (at least one).
    pub fn capacity(&self) -> usize {
        self.lock().capacity.max(1)
    }

    /// Holds at most `images` images from now on (the largest capacity asked for wins).
    pub fn set_capacity(&self, images: usize) {
        let mut lru = self.lock();
        lru.capacity = lru.capacity.max(images);
    }

    /// Images currently held.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True when no image is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Images read from disk so far.
    pub fn reads(&self) -> u64 {
        self.lock().reads
    }

    /// Image `image`'s shoeboxes, from the cache or from `load`.
    pub fn get<E>(
        &self,
        image: usize,
        load: impl FnOnce() -> Result<ImageShoeboxes, E>,
    ) -> Result<Arc<ImageShoeboxes>, E> {
        if let Some(hit) = self.lock().touch(image) {
            return Ok(hit);
        }
        let loaded = Arc::new(load()?);
        let mut lru = self.lock();
        lru.reads += 1;
        Ok(lru.insert(image, loaded))
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
}
