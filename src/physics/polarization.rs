//! Polarization factor of Thomson scattering with the Kahn factor (nanoBragg's polarization_factor).
//!
//! In: incident direction î, the E-vector direction, Kahn factor K, and a scattered unit vector d̂.
//! Out: P = ½(1 + cos²2θ − K·cos2ψ·sin²2θ). Guarantees: B̂ = unit(polar × î), Ê = unit(î × B̂),
//! ψ = −atan2(d̂·B̂, d̂·Ê), cos2θ = î·d̂, exactly as nanoBragg (K = 0 gives (1+cos²2θ)/2).

use super::geometry::{Vec3, cross, dot, unit};

/// Precomputed polarization frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Polarization {
    incident: Vec3,
    e_hat: Vec3,
    b_hat: Vec3,
    kahn: f64,
    enabled: bool,
}

impl Polarization {
    /// The frame for incident direction `incident`, E along `polar_vector`, Kahn factor `kahn`.
    pub fn new(incident: Vec3, polar_vector: Vec3, kahn: f64) -> Self {
        let i = unit(incident);
        let b_hat = unit(cross(polar_vector, i));
        let e_hat = unit(cross(i, b_hat));
        Self {
            incident: i,
            e_hat,
            b_hat,
            kahn,
            enabled: true,
        }
    }

    /// The frame from a DIALS beam: the polarization-plane normal and the polarization fraction f
    /// (the share of intensity with E in the plane), so K = 2f − 1 and Ê ⟂ normal, î.
    pub fn from_dials(incident: Vec3, plane_normal: Vec3, fraction: f64) -> Self {
        Self::new(
            incident,
            cross(plane_normal, unit(incident)),
            2.0 * fraction - 1.0,
        )
    }

    /// P ≡ 1 (nanoBragg's `-nopolar`).
    pub fn disabled() -> Self {
        Self {
            incident: [1.0, 0.0, 0.0],
            e_hat: [0.0; 3],
            b_hat: [0.0; 3],
            kahn: 0.0,
            enabled: false,
        }
    }

    /// P for the scattered unit vector `d`.
    #[inline]
    pub fn factor(&self, d: Vec3) -> f64 {
        if !self.enabled {
            return 1.0;
        }
        let cos2theta = dot(self.incident, d);
        let sin2theta_sq = 1.0 - cos2theta * cos2theta;
        // cos 2ψ with ψ = −atan2(y, x) is (x² − y²)/(x² + y²): no atan2/cos in the pixel loop.
        let (x, y) = (dot(d, self.e_hat), dot(d, self.b_hat));
        let rho = x * x + y * y;
        let cos2psi = if rho > 0.0 {
            (x * x - y * y) / rho
        } else {
            1.0
        };
        0.5 * (1.0 + cos2theta * cos2theta - self.kahn * cos2psi * sin2theta_sq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fully_polarized_along_z_is_one_minus_dz_squared() {
        let p = Polarization::new([1.0, 0.0, 0.0], [0.0, 0.0, 1.0], 1.0);
        let d = unit([0.9, 0.2, -0.3]);
        assert!((p.factor(d) - (1.0 - d[2] * d[2])).abs() < 1e-15);
    }

    #[test]
    fn matches_the_atan2_form() {
        let p = Polarization::new([1.0, 0.0, 0.0], [0.0, 0.0, 1.0], 0.6);
        for d in [[0.9, 0.2, -0.3], [0.5, -0.7, 0.1], [0.99, 0.0, 0.05]] {
            let d = unit(d);
            let psi = -dot(d, p.b_hat).atan2(dot(d, p.e_hat));
            let c = d[0];
            let want = 0.5 * (1.0 + c * c - 0.6 * (2.0 * psi).cos() * (1.0 - c * c));
            assert!((p.factor(d) - want).abs() < 1e-15);
        }
    }

    #[test]
    fn dials_fraction_one_is_fully_polarized_in_the_plane() {
        // DIALS: beam along −z (travel), plane normal (0,1,0), so E lies along x.
        let p = Polarization::from_dials([0.0, 0.0, -1.0], [0.0, 1.0, 0.0], 1.0);
        let d = unit([0.3, -0.4, -0.8]);
        assert!((p.factor(d) - (1.0 - d[0] * d[0])).abs() < 1e-15);
        let half = Polarization::from_dials([0.0, 0.0, -1.0], [0.0, 1.0, 0.0], 0.5);
        assert!((half.factor(d) - 0.5 * (1.0 + d[2] * d[2])).abs() < 1e-15);
    }

    #[test]
    fn unpolarized_is_thomson_average() {
        let p = Polarization::new([1.0, 0.0, 0.0], [0.0, 0.0, 1.0], 0.0);
        let d = unit([0.7, -0.5, 0.4]);
        assert!((p.factor(d) - 0.5 * (1.0 + d[0] * d[0])).abs() < 1e-15);
    }
}
