//! Counter-based random streams: every draw is keyed by (seed, step, particle, site,
//! instance), never by thread identity, so a run is bit-identical with any number of threads.
//!
//! In: a key. Out: a `Xoshiro256PlusPlus` generator seeded by a SplitMix64 hash of the key,
//! and helpers that fill tensors with standard normal or uniform draws.

use ndarray::{ArrayD, IxDyn};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;

/// The coordinates of one random stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamKey {
    /// The run's seed.
    pub seed: u64,
    /// Optimization step (or a tag for draws outside the loop).
    pub step: u64,
    /// Particle index within the step.
    pub particle: u64,
    /// Site (or plate, for subsampling) index in the model.
    pub site: u64,
    /// Flat index of the plate instance.
    pub instance: u64,
}

/// SplitMix64 finalizer: a bijective 64-bit mix.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The chained hash of a key's coordinates up to its site: shared by every instance of the
/// site, so a chunk of rows hashes it once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamPrefix(u64);

impl StreamPrefix {
    /// The hash of the key with this prefix and `instance` (equal to `StreamKey::hash`).
    pub fn hash(self, instance: u64) -> u64 {
        mix(self.0 ^ mix(instance))
    }

    /// The generator of instance `instance`'s stream.
    pub fn rng(self, instance: u64) -> Xoshiro256PlusPlus {
        Xoshiro256PlusPlus::seed_from_u64(self.hash(instance))
    }
}

impl StreamKey {
    /// A 64-bit hash of all coordinates (chained, so coordinate order matters).
    pub fn hash(&self) -> u64 {
        self.prefix().hash(self.instance)
    }

    /// The hash of every coordinate but the instance.
    pub fn prefix(&self) -> StreamPrefix {
        StreamPrefix(
            [self.step, self.particle, self.site]
                .iter()
                .fold(mix(self.seed), |h, &c| mix(h ^ mix(c))),
        )
    }

    /// The generator of this stream.
    pub fn rng(&self) -> Xoshiro256PlusPlus {
        Xoshiro256PlusPlus::seed_from_u64(self.hash())
    }
}

/// A tensor of independent standard normal draws.
pub fn standard_normal(rng: &mut Xoshiro256PlusPlus, shape: &[usize]) -> ArrayD<f64> {
    ArrayD::from_shape_simple_fn(IxDyn(shape), || rng.sample(StandardNormal))
}

/// A tensor of independent uniform draws on the open interval (0, 1).
pub fn uniform_open(rng: &mut Xoshiro256PlusPlus, shape: &[usize]) -> ArrayD<f64> {
    ArrayD::from_shape_simple_fn(IxDyn(shape), || {
        let u: f64 = rng.random();
        u.max(f64::MIN_POSITIVE)
    })
}

/// `count` distinct indices from 0..n, sorted (a partial Fisher-Yates shuffle).
pub fn subsample(rng: &mut Xoshiro256PlusPlus, n: usize, count: usize) -> Vec<usize> {
    let mut all: Vec<usize> = (0..n).collect();
    let count = count.min(n);
    for i in 0..count {
        let j = rng.random_range(i..n);
        all.swap(i, j);
    }
    let mut chosen = all[..count].to_vec();
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The prefix split keeps every stream: the hash is the chain over all five coordinates.
    #[test]
    fn prefix_hash_is_the_chained_hash_of_all_coordinates() {
        for (seed, step, particle, site, instance) in [
            (0, 0, 0, 0, 0),
            (7, 3, 1, 12, 999),
            (u64::MAX, u64::MAX - 1, 5, 2, 1 << 40),
        ] {
            let key = StreamKey {
                seed,
                step,
                particle,
                site,
                instance,
            };
            let chained = [step, particle, site, instance]
                .iter()
                .fold(mix(seed), |h, &c| mix(h ^ mix(c)));
            assert_eq!(key.hash(), chained);
            assert_eq!(key.prefix().hash(instance), chained);
        }
    }
}
