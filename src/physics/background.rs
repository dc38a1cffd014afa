//! Background under the spots: a plane per shoebox (fitted) and amorphous water/air scattering
//! F_bg(stol) (simulated or fixed).
//!
//! In: plane coefficients per shoebox, or a table of F_bg against sin θ/λ (Å⁻¹) with a number of
//! scatterers; nanoBragg's `-water` size. Out: photons per pixel over a region, and for the plane its
//! gradient. Guarantees: the plane is b0 + b1·(fast − fast_c) + b2·(slow − slow_c) about the region
//! centre, linear so its adjoint is exact; F_bg is interpolated linearly in stol and clamped at the
//! table ends; the water term reproduces nanoBragg's I_bg = 2.57²·r_e²Φ·w³·10⁶·N_A/18 (which the pixel
//! formula then multiplies by r_e²Φ again and divides by steps, a nanoBragg quirk kept for matching).

use super::beam::{Beam, R_E_SQR_M2};
use super::geometry::detector::Panel;
use super::geometry::norm;
use super::polarization::Polarization;
use super::spot::Region;
use thiserror::Error;

/// Avogadro's number as nanoBragg uses it.
pub const AVOGADRO: f64 = 6.02214179e23;
/// Forward scattering factor of a water molecule, electrons (nanoBragg's water_F).
pub const WATER_F: f64 = 2.57;
/// Molecular weight of water, g/mol (nanoBragg's water_MW).
pub const WATER_MW: f64 = 18.0;

/// Why a background table was refused.
#[derive(Debug, Error, PartialEq)]
pub enum BackgroundError {
    /// stol values must be finite and strictly increasing.
    #[error("F_bg table row {row}: stol {stol} is not increasing")]
    NotIncreasing {
        /// 0-based row.
        row: usize,
        /// Offending stol.
        stol: f64,
    },
    /// Fewer than two rows.
    #[error("F_bg table needs at least two rows, got {0}")]
    TooShort(usize),
}

/// nanoBragg's `-water` bracket term I_bg (electrons²·r_e²Φ) for a cube of water `water_um` µm wide.
pub fn water_bracket(water_um: f64, fluence: f64) -> f64 {
    let w = water_um * 1e-6;
    WATER_F * WATER_F * R_E_SQR_M2 * fluence * w * w * w * 1e6 * AVOGADRO / WATER_MW
}

/// A background plane over one shoebox, in photons.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackgroundPlane {
    /// Value at the region centre.
    pub offset: f64,
    /// Slope per pixel along fast.
    pub slope_fast: f64,
    /// Slope per pixel along slow.
    pub slope_slow: f64,
}

impl BackgroundPlane {
    /// Adds the plane to `out` (row-major over `region`).
    pub fn add_to(&self, region: &Region, out: &mut [f64]) {
        let (cf, cs) = plane_centre(region);
        for (r, row) in out.chunks_mut(region.n_fast.max(1)).enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v += self.offset
                    + self.slope_fast * (c as f64 - cf)
                    + self.slope_slow * (r as f64 - cs);
            }
        }
    }

    /// Gradient of Σ_p g_p·plane_p w.r.t. (offset, slope_fast, slope_slow).
    pub fn vjp(region: &Region, upstream: &[f64]) -> [f64; 3] {
        let (cf, cs) = plane_centre(region);
        let mut g = [0.0; 3];
        for (r, row) in upstream.chunks(region.n_fast.max(1)).enumerate() {
            for (c, u) in row.iter().enumerate() {
                g[0] += u;
                g[1] += u * (c as f64 - cf);
                g[2] += u * (r as f64 - cs);
            }
        }
        g
    }
}

fn plane_centre(region: &Region) -> (f64, f64) {
    (
        (region.n_fast as f64 - 1.0) / 2.0,
        (region.n_slow as f64 - 1.0) / 2.0,
    )
}

/// Amorphous scattering factor of one scatterer against sin θ/λ.
#[derive(Debug, Clone, PartialEq)]
pub struct AmorphousTable {
    stol_per_a: Vec<f64>,
    f_bg: Vec<f64>,
}

impl AmorphousTable {
    /// A table from (stol Å⁻¹, F_bg electrons) rows, stol strictly increasing.
    pub fn new(stol_per_a: Vec<f64>, f_bg: Vec<f64>) -> Result<Self, BackgroundError> {
        if stol_per_a.len() < 2 || stol_per_a.len() != f_bg.len() {
            return Err(BackgroundError::TooShort(stol_per_a.len().min(f_bg.len())));
        }
        for (row, w) in stol_per_a.windows(2).enumerate() {
            if w[1].partial_cmp(&w[0]) != Some(std::cmp::Ordering::Greater) || !w[1].is_finite() {
                return Err(BackgroundError::NotIncreasing {
                    row: row + 1,
                    stol: w[1],
                });
            }
        }
        Ok(Self { stol_per_a, f_bg })
    }

    /// F_bg at `stol` (Å⁻¹), linear between rows, clamped outside.
    pub fn f_bg(&self, stol: f64) -> f64 {
        let x = &self.stol_per_a;
        let i = x.partition_point(|&v| v <= stol);
        if i == 0 {
            return self.f_bg[0];
        }
        if i == x.len() {
            return self.f_bg[x.len() - 1];
        }
        let t = (stol - x[i - 1]) / (x[i] - x[i - 1]);
        self.f_bg[i - 1] + t * (self.f_bg[i] - self.f_bg[i - 1])
    }
}

/// Adds r_e²Φ·P·Ω·n_scatterers·Σ_k w_k F_bg(stol_k)² at each pixel centre of `region` to `out`.
pub fn add_amorphous(
    panel: &Panel,
    beam: &Beam,
    polarization: &Polarization,
    table: &AmorphousTable,
    n_scatterers: f64,
    region: &Region,
    out: &mut [f64],
) {
    let pref = beam.thomson_prefactor() * n_scatterers;
    for (r, row) in out.chunks_mut(region.n_fast.max(1)).enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            let p = panel.subpixel_position(region.slow0 + r, region.fast0 + c, 0, 0, 1);
            let rr = norm(p);
            let d = [p[0] / rr, p[1] / rr, p[2] / rr];
            let s_len_m = norm([
                d[0] - beam.incident[0],
                d[1] - beam.incident[1],
                d[2] - beam.incident[2],
            ]);
            let sum: f64 = beam
                .channels
                .iter()
                .map(|ch| ch.weight * table.f_bg(s_len_m / ch.wavelength_m * 1e-10 / 2.0).powi(2))
                .sum();
            *v += pref * polarization.factor(d) * panel.solid_angle(p) * sum;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn water_term_matches_oracle_readme() {
        // README: I_bg = 5966346.6 for -water 0.03 at the default fluence.
        let i = water_bracket(0.03, super::super::beam::DEFAULT_FLUENCE);
        assert!((i - 5966346.6).abs() < 0.1, "{i}");
    }

    #[test]
    fn plane_adjoint_is_its_transpose() {
        let region = Region {
            slow0: 3,
            fast0: 5,
            n_slow: 4,
            n_fast: 5,
        };
        let plane = BackgroundPlane {
            offset: 2.0,
            slope_fast: 0.3,
            slope_slow: -0.7,
        };
        let mut out = vec![0.0; region.len()];
        plane.add_to(&region, &mut out);
        let up: Vec<f64> = (0..region.len()).map(|i| (i as f64 * 0.37).sin()).collect();
        let g = BackgroundPlane::vjp(&region, &up);
        let lhs: f64 = out.iter().zip(&up).map(|(a, b)| a * b).sum();
        assert!((lhs - (2.0 * g[0] + 0.3 * g[1] - 0.7 * g[2])).abs() < 1e-12);
    }

    #[test]
    fn table_interpolates_and_clamps() {
        let t = AmorphousTable::new(vec![0.0, 0.1, 0.3], vec![2.57, 2.0, 1.0]).unwrap();
        assert!((t.f_bg(0.05) - 2.285).abs() < 1e-12);
        assert_eq!(t.f_bg(1.0), 1.0);
        assert!(AmorphousTable::new(vec![0.0, 0.0], vec![1.0, 1.0]).is_err());
    }
}
