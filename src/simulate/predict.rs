//! Which reflections of a randomly oriented crystal diffract onto the detector, and where.
//!
//! In: the crystal's real-space basis in the lab frame (rows a, b, c in Å), the incident beam
//! direction, the spectrum's wavelength range, the panel and a resolution limit. Out: one
//! [`Candidate`] per reflection whose Ewald condition is met by a wavelength inside the range
//! (widened by a relative tolerance for mosaicity and domain size), with the pixel its diffracted
//! ray hits. Guarantees: every Miller index within the resolution limit is tried once, in a fixed
//! order (h, then k, then l ascending), so the output does not depend on anything but the inputs.

use crate::physics::geometry::detector::Panel;
use crate::physics::geometry::{Mat3, Vec3, cross, dot, norm, scale, sub};
use crate::physics::spot::Region;
use rand::RngExt;
use rand_distr::StandardNormal;

/// A reflection in diffracting position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Miller index.
    pub hkl: [i32; 3],
    /// Wavelength (Å) that satisfies its Ewald condition exactly.
    pub wavelength_a: f64,
    /// Fast pixel coordinate of the predicted spot centre (fractional).
    pub fast_px: f64,
    /// Slow pixel coordinate of the predicted spot centre (fractional).
    pub slow_px: f64,
}

/// A rotation uniform over SO(3), from a normalized 4-vector of standard normals (a uniform
/// unit quaternion).
pub fn random_rotation<R: RngExt>(rng: &mut R) -> Mat3 {
    let mut q = [0.0f64; 4];
    loop {
        for x in &mut q {
            *x = rng.sample(StandardNormal);
        }
        let n = q.iter().map(|x| x * x).sum::<f64>().sqrt();
        if n > 1e-8 {
            q.iter_mut().for_each(|x| *x /= n);
            break;
        }
    }
    let [w, x, y, z] = q;
    [
        [
            1.0 - 2.0 * (y * y + z * z),
            2.0 * (x * y - w * z),
            2.0 * (x * z + w * y),
        ],
        [
            2.0 * (x * y + w * z),
            1.0 - 2.0 * (x * x + z * z),
            2.0 * (y * z - w * x),
        ],
        [
            2.0 * (x * z - w * y),
            2.0 * (y * z + w * x),
            1.0 - 2.0 * (x * x + y * y),
        ],
    ]
}

/// Reciprocal basis vectors a*, b*, c* (Å⁻¹) of real-space rows a, b, c (Å).
pub fn reciprocal(real: &Mat3) -> Mat3 {
    let [a, b, c] = *real;
    let volume = dot(a, cross(b, c));
    [
        scale(cross(b, c), 1.0 / volume),
        scale(cross(c, a), 1.0 / volume),
        scale(cross(a, b), 1.0 / volume),
    ]
}

/// What limits the prediction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Resolution limit, Å.
    pub d_min_a: f64,
    /// Shortest and longest wavelength of the spectrum, Å.
    pub wavelength_range_a: (f64, f64),
    /// Relative widening of the wavelength range (mosaic spread and finite domains).
    pub tolerance: f64,
}

/// Reflections of the crystal with real-space rows `real` (Å, lab frame) that diffract onto
/// `panel` for a beam travelling along `incident` (unit).
pub fn predict(real: &Mat3, incident: Vec3, panel: &Panel, limits: &Limits) -> Vec<Candidate> {
    let recip = reciprocal(real);
    let (lo, hi) = limits.wavelength_range_a;
    let (lo, hi) = (lo * (1.0 - limits.tolerance), hi * (1.0 + limits.tolerance));
    let bound = |axis: usize| (norm(real[axis]) / limits.d_min_a).ceil() as i32;
    let (hm, km, lm) = (bound(0), bound(1), bound(2));
    let mut out = Vec::new();
    for h in -hm..=hm {
        for k in -km..=km {
            for l in -lm..=lm {
                if (h, k, l) == (0, 0, 0) {
                    continue;
                }
                let hkl = [h, k, l];
                let q = (0..3).fold([0.0; 3], |acc, i| {
                    let c = scale(recip[i], f64::from(hkl[i]));
                    [acc[0] + c[0], acc[1] + c[1], acc[2] + c[2]]
                });
                let q2 = dot(q, q);
                if q2 * limits.d_min_a * limits.d_min_a > 1.0 {
                    continue;
                }
                let qi = dot(q, incident);
                if qi >= 0.0 {
                    continue;
                }
                let wavelength = -2.0 * qi / q2;
                if wavelength < lo || wavelength > hi {
                    continue;
                }
                let s1 = [
                    q[0] + incident[0] / wavelength,
                    q[1] + incident[1] / wavelength,
                    q[2] + incident[2] / wavelength,
                ];
                if let Some((fast_px, slow_px)) = hit(panel, s1) {
                    out.push(Candidate {
                        hkl,
                        wavelength_a: wavelength,
                        fast_px,
                        slow_px,
                    });
                }
            }
        }
    }
    out
}

/// Fractional (fast, slow) pixel where the ray from the sample along `dir` meets the panel.
fn hit(panel: &Panel, dir: Vec3) -> Option<(f64, f64)> {
    let n = panel.normal();
    let along = dot(dir, n);
    if along <= 0.0 {
        return None;
    }
    let t = dot(panel.origin_m, n) / along;
    let p = sub(scale(dir, t), panel.origin_m);
    let fast = dot(p, panel.fast) / panel.pixel_size_m[0];
    let slow = dot(p, panel.slow) / panel.pixel_size_m[1];
    let inside =
        fast >= 0.0 && slow >= 0.0 && fast < panel.n_fast as f64 && slow < panel.n_slow as f64;
    inside.then_some((fast, slow))
}

/// The `size`×`size` region centred on a spot, or None if it does not fit on the panel.
pub fn shoebox_region(panel: &Panel, c: &Candidate, size: usize) -> Option<Region> {
    let half = (size / 2) as f64;
    let fast0 = (c.fast_px.floor() - half) as i64;
    let slow0 = (c.slow_px.floor() - half) as i64;
    let fits = |start: i64, n: usize| start >= 0 && start as usize + size <= n;
    (fits(fast0, panel.n_fast) && fits(slow0, panel.n_slow)).then_some(Region {
        slow0: slow0 as usize,
        fast0: fast0 as usize,
        n_slow: size,
        n_fast: size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn random_rotations_are_orthonormal() {
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..20 {
            let r = random_rotation(&mut rng);
            for i in 0..3 {
                for j in 0..3 {
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((dot(r[i], r[j]) - want).abs() < 1e-12);
                }
            }
            assert!((dot(r[0], cross(r[1], r[2])) - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn predicted_reflections_satisfy_bragg_law() {
        let real = [[34.0, 0.0, 0.0], [0.0, 35.0, 0.0], [0.0, 0.0, 44.0]];
        let mut rng = StdRng::seed_from_u64(5);
        let u = random_rotation(&mut rng);
        let rotated = real.map(|row| crate::physics::geometry::mat_vec(&u, row));
        let panel = Panel::from_dials(
            [-105.6, 105.6, -100.0],
            [1.0, 0.0, 0.0],
            [0.0, -1.0, 0.0],
            [0.11, 0.11],
            [1920, 1920],
        )
        .unwrap();
        let limits = Limits {
            d_min_a: 2.5,
            wavelength_range_a: (1.73, 1.75),
            tolerance: 0.0,
        };
        let found = predict(&rotated, [0.0, 0.0, -1.0], &panel, &limits);
        assert!(!found.is_empty());
        for c in &found {
            // λ = 2 d sin θ with d from the unrotated orthorhombic cell.
            let inv_d2 = (f64::from(c.hkl[0]) / 34.0).powi(2)
                + (f64::from(c.hkl[1]) / 35.0).powi(2)
                + (f64::from(c.hkl[2]) / 44.0).powi(2);
            let d = 1.0 / inv_d2.sqrt();
            assert!(d >= 2.5 - 1e-9);
            assert!((1.73..=1.75).contains(&c.wavelength_a));
            // The spot's scattering angle 2θ from the pixel position matches Bragg's law.
            let fdet = c.fast_px * 0.11e-3;
            let sdet = c.slow_px * 0.11e-3;
            let p = [-105.6e-3 + fdet, 105.6e-3 - sdet, -100.0e-3];
            let cos2t = dot(p, [0.0, 0.0, -1.0]) / norm(p);
            let sin_t = ((1.0 - cos2t) / 2.0).sqrt();
            assert!((2.0 * d * sin_t - c.wavelength_a).abs() < 1e-9 * c.wavelength_a);
        }
    }
}
