//! Detector noise for simulation: calibration error, Poisson photon noise, Gaussian readout, ADC.
//!
//! In: expected photons per pixel and a `NoiseModel` with an explicit seed. Out: counts in ADU as
//! nanoBragg writes them, `trunc(clamp(gain·(photons) + readout·N(0,1) + adc_offset, 0, 65535))`.
//! Guarantees: deterministic for a seed (one `StdRng` stream, pixels in row-major order); the
//! calibration error is a fixed per-pixel gain drawn from its own seed, so it is the same on every
//! image of a run, as a real miscalibration is. nanoBragg's own generator is not reproduced, so counts
//! agree with it in distribution only.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Poisson, StandardNormal};

/// Largest value of an unsigned 16-bit pixel.
pub const MAX_ADU: f64 = 65535.0;

/// Noise parameters (nanoBragg's defaults: gain 1, ADC offset 40, no readout or calibration noise).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseModel {
    /// Seed of the Poisson/readout stream.
    pub seed: u64,
    /// Seed of the per-pixel calibration gains.
    pub calibration_seed: u64,
    /// Relative rms calibration error (0.03 = 3 %).
    pub calibration_sigma: f64,
    /// Gaussian readout noise, ADU rms.
    pub readout_sigma: f64,
    /// ADU per photon.
    pub gain: f64,
    /// Constant added to every pixel, ADU.
    pub adc_offset: f64,
}

impl Default for NoiseModel {
    fn default() -> Self {
        Self {
            seed: 1,
            calibration_seed: 123456789,
            calibration_sigma: 0.0,
            readout_sigma: 0.0,
            gain: 1.0,
            adc_offset: 40.0,
        }
    }
}

/// Outcome of `add_noise`: the counts and how many pixels hit the 16-bit ceiling.
#[derive(Debug, Clone, PartialEq)]
pub struct NoisyImage {
    /// ADU per pixel.
    pub counts: Vec<u16>,
    /// Pixels clipped at 65535.
    pub overloads: usize,
    /// Σ photons drawn (before gain, offset and readout).
    pub photons: f64,
}

/// One Poisson draw; λ ≤ 0 (or not finite) gives 0 photons, as nanoBragg's poidev does for λ ≤ 0.
fn poisson<R: RngExt>(rng: &mut R, lambda: f64) -> f64 {
    match Poisson::new(lambda) {
        Ok(p) if lambda > 0.0 => rng.sample(p),
        _ => 0.0,
    }
}

/// Draws a noisy image from expected photons (as float32 values, like nanoBragg's floatimage).
pub fn add_noise(expected: &[f32], model: &NoiseModel) -> NoisyImage {
    let mut rng = StdRng::seed_from_u64(model.seed);
    let mut calib = StdRng::seed_from_u64(model.calibration_seed);
    let mut overloads = 0;
    let mut photons = 0.0;
    let counts = expected
        .iter()
        .map(|&e| {
            let mut lambda = f64::from(e);
            if model.calibration_sigma > 0.0 {
                let z: f64 = calib.sample(StandardNormal);
                lambda *= 1.0 + model.calibration_sigma * z;
            }
            let n = poisson(&mut rng, lambda);
            photons += n;
            let mut adu = model.gain * n + model.adc_offset;
            if model.readout_sigma > 0.0 {
                let z: f64 = rng.sample(StandardNormal);
                adu += model.readout_sigma * z;
            }
            if adu > MAX_ADU {
                overloads += 1;
            }
            adu.clamp(0.0, MAX_ADU) as u16
        })
        .collect();
    NoisyImage {
        counts,
        overloads,
        photons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_image() {
        let e = vec![3.5f32; 100];
        let m = NoiseModel {
            seed: 9,
            ..NoiseModel::default()
        };
        assert_eq!(add_noise(&e, &m), add_noise(&e, &m));
        let m2 = NoiseModel { seed: 10, ..m };
        assert_ne!(add_noise(&e, &m).counts, add_noise(&e, &m2).counts);
    }

    #[test]
    fn readout_noise_has_its_variance() {
        // Zero photons: counts = 1000 + N(0, 5²); sample variance within 5σ of 25.
        let e = vec![0.0f32; 20000];
        let m = NoiseModel {
            readout_sigma: 5.0,
            adc_offset: 1000.0,
            ..NoiseModel::default()
        };
        let c = add_noise(&e, &m).counts;
        let n = c.len() as f64;
        let x: Vec<f64> = c.iter().map(|&v| f64::from(v) + 0.5 - 1000.0).collect();
        let mean = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0);
        // truncation to integers adds 1/12 to the variance
        let want = 25.0 + 1.0 / 12.0;
        assert!((var - want).abs() < 5.0 * want * (2.0 / n).sqrt(), "{var}");
        assert!(mean.abs() < 5.0 * 5.0 / n.sqrt(), "{mean}");
    }

    #[test]
    fn calibration_error_is_a_fixed_per_pixel_gain() {
        // λ = 40000: Poisson adds 0.5 % rms, calibration 3 %, so the relative spread is √(0.03² + 1/λ).
        let e = vec![40000.0f32; 20000];
        let m = NoiseModel {
            calibration_sigma: 0.03,
            adc_offset: 0.0,
            ..NoiseModel::default()
        };
        let a = add_noise(&e, &m).counts;
        let n = a.len() as f64;
        let rel: Vec<f64> = a.iter().map(|&c| f64::from(c) / 40000.0 - 1.0).collect();
        let mean = rel.iter().sum::<f64>() / n;
        let var = rel.iter().map(|r| (r - mean) * (r - mean)).sum::<f64>() / (n - 1.0);
        let want = 0.03f64.powi(2) + 1.0 / 40000.0;
        assert!(
            (var - want).abs() < 5.0 * want * (2.0 / n).sqrt(),
            "{var} vs {want}"
        );
        // a second image with another Poisson seed keeps the same gains: differences are Poisson only
        let b = add_noise(&e, &NoiseModel { seed: 2, ..m }).counts;
        let d: Vec<f64> = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (f64::from(*x) - f64::from(*y)) / 40000.0)
            .collect();
        let dvar = d.iter().map(|v| v * v).sum::<f64>() / n;
        assert!(dvar < 3.0 / 40000.0, "{dvar}");
    }

    #[test]
    fn overloads_are_counted() {
        let e = vec![1e6f32; 3];
        let r = add_noise(&e, &NoiseModel::default());
        assert_eq!(r.overloads, 3);
        assert!(r.counts.iter().all(|&c| c == 65535));
    }
}
