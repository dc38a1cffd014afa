//! The incident beam: direction, fluence, polarization and the spectrum as weighted channels.
//!
//! In: a wavelength (Å) or energy (eV), nanoBragg's `-dispersion`/`-dispsteps`, or a measured
//! spectrum (wavelength Å, weight). Out: a `Beam` with channels in metres. Guarantees: nanoBragg's
//! source list is reproduced exactly (λ_k = λ0·(1 + k·Δ/(n−1) − Δ/2)) and its weighting: every
//! source counts 1 and the sum is divided by the number of sources, i.e. weights 1/n.

use super::geometry::Vec3;
use thiserror::Error;

/// Classical electron radius squared, m² (nanoBragg's r_e_sqr).
pub const R_E_SQR_M2: f64 = 7.94079248018965e-30;
/// nanoBragg's default fluence, photons/m² (= 1/r_e², so r_e²·Φ = 1).
pub const DEFAULT_FLUENCE: f64 = 125932015286227086360700780544.0;
/// E (eV) · λ (Å) as nanoBragg uses it for `-energy`.
pub const EV_ANGSTROM_NANOBRAGG: f64 = 12398.42;

/// Why a spectrum was refused.
#[derive(Debug, Error, PartialEq)]
pub enum BeamError {
    /// A wavelength that is not positive and finite.
    #[error("wavelength must be positive, got {0} Å")]
    BadWavelength(f64),
    /// A spectrum with no channels or a negative/non-finite weight.
    #[error(
        "spectrum channel {index}: weight {weight} must be finite and ≥ 0 (and the spectrum non-empty)"
    )]
    BadWeight {
        /// Index of the channel.
        index: usize,
        /// Its weight.
        weight: f64,
    },
    /// dispsteps = 0.
    #[error("-dispsteps must be at least 1")]
    NoSteps,
}

/// One spectrum channel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Channel {
    /// Wavelength, m.
    pub wavelength_m: f64,
    /// Weight of the channel in the pixel sum (nanoBragg: 1/n_sources).
    pub weight: f64,
}

/// The incident beam.
#[derive(Debug, Clone, PartialEq)]
pub struct Beam {
    /// Unit direction of travel of the incident X-rays (î).
    pub incident: Vec3,
    /// Direction of the E vector of the polarized beam (nanoBragg's polar_vector).
    pub polar_vector: Vec3,
    /// Kahn polarization factor K (0 = unpolarized, 1 = fully polarized along `polar_vector`).
    pub kahn: f64,
    /// Photons per m².
    pub fluence: f64,
    /// Spectrum channels.
    pub channels: Vec<Channel>,
}

/// nanoBragg's source wavelengths for `-lambda`, `-dispersion D%` and `-dispsteps n`, in Å.
pub fn dispersion_wavelengths(
    lambda_a: f64,
    dispersion_pct: f64,
    steps: usize,
) -> Result<Vec<f64>, BeamError> {
    if !(lambda_a > 0.0 && lambda_a.is_finite()) {
        return Err(BeamError::BadWavelength(lambda_a));
    }
    if steps == 0 {
        return Err(BeamError::NoSteps);
    }
    if steps == 1 {
        return Ok(vec![lambda_a]);
    }
    let delta = dispersion_pct / 100.0;
    let n = steps as f64;
    Ok((0..steps)
        .map(|k| lambda_a * (1.0 + k as f64 * delta / (n - 1.0) - delta / 2.0))
        .collect())
}

/// Channels with equal weights 1/n from wavelengths in Å (nanoBragg's averaging over sources).
pub fn equal_weight_channels(wavelengths_a: &[f64]) -> Result<Vec<Channel>, BeamError> {
    let w: Vec<f64> = vec![1.0 / wavelengths_a.len() as f64; wavelengths_a.len()];
    spectrum_channels(wavelengths_a, &w)
}

/// Channels from a measured spectrum (wavelength Å, weight), weights kept as given.
pub fn spectrum_channels(
    wavelengths_a: &[f64],
    weights: &[f64],
) -> Result<Vec<Channel>, BeamError> {
    if wavelengths_a.is_empty() || wavelengths_a.len() != weights.len() {
        return Err(BeamError::BadWeight {
            index: 0,
            weight: f64::NAN,
        });
    }
    wavelengths_a
        .iter()
        .zip(weights)
        .enumerate()
        .map(|(index, (&l, &weight))| {
            if !(l > 0.0 && l.is_finite()) {
                Err(BeamError::BadWavelength(l))
            } else if !(weight >= 0.0 && weight.is_finite()) {
                Err(BeamError::BadWeight { index, weight })
            } else {
                Ok(Channel {
                    wavelength_m: l * 1e-10,
                    weight,
                })
            }
        })
        .collect()
}

/// Direction of travel î from a (non-zero) DIALS/dxtbx beam `direction`, which points back towards
/// the source.
pub fn incident_from_dials_direction(direction: Vec3) -> Vec3 {
    let n =
        (direction[0] * direction[0] + direction[1] * direction[1] + direction[2] * direction[2])
            .sqrt();
    [-direction[0] / n, -direction[1] / n, -direction[2] / n]
}

impl Beam {
    /// nanoBragg's beam: along +x, E along +z, default fluence.
    pub fn nanobragg(channels: Vec<Channel>, kahn: f64) -> Self {
        Self {
            incident: [1.0, 0.0, 0.0],
            polar_vector: [0.0, 0.0, 1.0],
            kahn,
            fluence: DEFAULT_FLUENCE,
            channels,
        }
    }

    /// r_e²·Φ: the Thomson prefactor that turns electron units into photons per steradian.
    pub fn thomson_prefactor(&self) -> f64 {
        R_E_SQR_M2 * self.fluence
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispersion_matches_oracle_square_poly() {
        // λ printed by nanoBragg for -lambda 1 -dispersion 0.5 -dispsteps 5
        let l = dispersion_wavelengths(1.0, 0.5, 5).unwrap();
        let want = [0.9975, 0.99875, 1.0, 1.00125, 1.0025];
        for (a, b) in l.iter().zip(want) {
            assert!((a - b).abs() < 1e-15);
        }
    }

    #[test]
    fn default_fluence_cancels_r_e_squared() {
        assert_eq!(R_E_SQR_M2 * DEFAULT_FLUENCE, 1.0);
    }

    #[test]
    fn bad_spectra_are_refused() {
        assert!(spectrum_channels(&[1.0], &[-1.0]).is_err());
        assert!(spectrum_channels(&[0.0], &[1.0]).is_err());
        assert!(dispersion_wavelengths(1.0, 0.5, 0).is_err());
    }
}
