//! Mosaic domains: the set of small rotations U_d applied (in the lab frame) to the crystal orientation.
//!
//! In: either a spread (isotropic, or anisotropic per lab axis; degrees) with a domain count and a seed,
//! giving nanoBragg-like fixed domain sets, or explicit small-angle tilt vectors (the VI model's
//! per-domain latents, radians). Out: U_d = exp([diag(σ)·ε_d]×) for unit draws ε_d, with ∂U_d/∂σ and
//! ∂U_d/∂ε_d for the adjoint. Guarantees: deterministic for a seed; the draws are fixed so the spread σ
//! is a smooth parameter (reparameterization); `symmetric` sets pair every ε with −ε so the mean
//! orientation is unbiased. The draws are not nanoBragg's (its generator is not reproduced).

use super::geometry::rotation::rotation_jacobian;
use super::geometry::{Mat3, Vec3};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;

/// A fixed set of mosaic domains.
#[derive(Debug, Clone, PartialEq)]
pub struct MosaicDomains {
    /// Spread per lab axis, radians (all equal for an isotropic model).
    pub spread_rad: Vec3,
    /// Standard-normal draws ε_d, one per domain; the rotation vector is diag(spread)·ε_d.
    pub draws: Vec<Vec3>,
}

/// U_d with its derivatives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DomainRotation {
    /// The rotation U_d.
    pub rotation: Mat3,
    /// ∂U_d/∂σ_j for each axis' spread.
    pub d_spread: [Mat3; 3],
    /// ∂U_d/∂ε_dj: derivatives w.r.t. this domain's draw (the tilt latent when σ = 1).
    pub d_draw: [Mat3; 3],
}

impl MosaicDomains {
    /// One domain with no misorientation (nanoBragg without `-mosaic`).
    pub fn single() -> Self {
        Self {
            spread_rad: [0.0; 3],
            draws: vec![[0.0; 3]],
        }
    }

    /// Isotropic spread `spread_deg` (rms per axis), `n` domains drawn from `seed`.
    pub fn isotropic(spread_deg: f64, n: usize, seed: u64, symmetric: bool) -> Self {
        Self::anisotropic([spread_deg; 3], n, seed, symmetric)
    }

    /// Per-axis spreads (degrees), `n` domains drawn from `seed`; `symmetric` pairs ε with −ε.
    pub fn anisotropic(spread_deg: Vec3, n: usize, seed: u64, symmetric: bool) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut draws = Vec::with_capacity(n);
        while draws.len() < n {
            let e: Vec3 = [
                rng.sample(StandardNormal),
                rng.sample(StandardNormal),
                rng.sample(StandardNormal),
            ];
            draws.push(e);
            if symmetric && draws.len() < n {
                draws.push([-e[0], -e[1], -e[2]]);
            }
        }
        Self {
            spread_rad: spread_deg.map(f64::to_radians),
            draws,
        }
    }

    /// Domains from explicit small-angle tilt vectors (radians), spread fixed at 1.
    pub fn from_tilts(tilts: Vec<Vec3>) -> Self {
        Self {
            spread_rad: [1.0; 3],
            draws: tilts,
        }
    }

    /// Number of domains.
    pub fn len(&self) -> usize {
        self.draws.len()
    }

    /// True when there are no domains.
    pub fn is_empty(&self) -> bool {
        self.draws.is_empty()
    }

    /// U_d and its derivatives for every domain.
    pub fn rotations(&self) -> Vec<DomainRotation> {
        self.draws
            .iter()
            .map(|e| {
                let v = [
                    self.spread_rad[0] * e[0],
                    self.spread_rad[1] * e[1],
                    self.spread_rad[2] * e[2],
                ];
                let (rotation, dv) = rotation_jacobian(v);
                let mut d_spread = dv;
                let mut d_draw = dv;
                for j in 0..3 {
                    for row in 0..3 {
                        for col in 0..3 {
                            d_spread[j][row][col] = dv[j][row][col] * e[j];
                            d_draw[j][row][col] = dv[j][row][col] * self.spread_rad[j];
                        }
                    }
                }
                DomainRotation {
                    rotation,
                    d_spread,
                    d_draw,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_sets_pair_draws() {
        let m = MosaicDomains::isotropic(0.5, 6, 7, true);
        assert_eq!(m.len(), 6);
        for k in 0..3 {
            for i in 0..3 {
                assert_eq!(m.draws[2 * k][i], -m.draws[2 * k + 1][i]);
            }
        }
    }

    #[test]
    fn spread_derivative_matches_central_difference() {
        let mut m = MosaicDomains::anisotropic([0.3, 0.5, 0.2], 3, 11, false);
        let base = m.rotations();
        let h = 1e-7;
        for j in 0..3 {
            let s = m.spread_rad[j];
            m.spread_rad[j] = s + h;
            let p = m.rotations();
            m.spread_rad[j] = s - h;
            let q = m.rotations();
            m.spread_rad[j] = s;
            for d in 0..3 {
                for r in 0..3 {
                    for c in 0..3 {
                        let fd = (p[d].rotation[r][c] - q[d].rotation[r][c]) / (2.0 * h);
                        assert!((fd - base[d].d_spread[j][r][c]).abs() < 1e-7);
                    }
                }
            }
        }
    }
}
