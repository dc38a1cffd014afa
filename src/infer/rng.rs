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

impl StreamKey {
    /// A 64-bit hash of all coordinates (chained, so coordinate order matters).
    pub fn hash(&self) -> u64 {
        [self.step, self.particle, self.site, self.instance]
            .iter()
            .fold(mix(self.seed), |h, &c| mix(h ^ mix(c)))
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
