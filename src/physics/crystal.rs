//! The crystal lattice: unit cell, orientation (nanoBragg misset or DIALS real-space vectors) and
//! the domain size in unit cells.
//!
//! In: `-cell a b c α β γ` (Å, degrees) with `-misset` (degrees), or real-space vectors in Å as DIALS
//! gives them. Out: the real-space basis as the rows of a 3×3 matrix in metres, so that the fractional
//! Miller index of a scattering vector S (m⁻¹) is h = A·S. Guarantees: nanoBragg's construction (reciprocal
//! basis with a* along x and b* in the xy plane, rotated by Rz·Ry·Rx, then the dual basis), which
//! reproduces its printed vectors to 4e-9 Å for orthogonal, monoclinic and hexagonal cells.

use super::geometry::rotation::misset_rotation;
use super::geometry::{Mat3, Vec3, cross, dot, mat_vec, scale};
use thiserror::Error;

/// Why a cell was refused.
#[derive(Debug, Error, PartialEq)]
pub enum CellError {
    /// A non-positive edge length.
    #[error("cell edge `{field}` must be positive, got {value} Å")]
    BadEdge {
        /// a, b or c.
        field: &'static str,
        /// The value given.
        value: f64,
    },
    /// Angles that do not close a cell (non-positive volume).
    #[error("cell angles {0:?}° do not form a cell (volume² ≤ 0)")]
    BadAngles([f64; 3]),
}

/// Unit cell constants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnitCell {
    /// Edges a, b, c in Å.
    pub edges_a: [f64; 3],
    /// Angles α, β, γ in degrees.
    pub angles_deg: [f64; 3],
}

impl UnitCell {
    /// A checked cell.
    pub fn new(edges_a: [f64; 3], angles_deg: [f64; 3]) -> Result<Self, CellError> {
        for (field, value) in ["a", "b", "c"].into_iter().zip(edges_a) {
            if !(value > 0.0 && value.is_finite()) {
                return Err(CellError::BadEdge { field, value });
            }
        }
        let cell = Self {
            edges_a,
            angles_deg,
        };
        if cell.volume_factor_sq().partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return Err(CellError::BadAngles(angles_deg));
        }
        Ok(cell)
    }

    fn volume_factor_sq(&self) -> f64 {
        let [ca, cb, cg] = self.angles_deg.map(|x| x.to_radians().cos());
        1.0 - ca * ca - cb * cb - cg * cg + 2.0 * ca * cb * cg
    }

    /// Cell volume, Å³.
    pub fn volume_a3(&self) -> f64 {
        let [a, b, c] = self.edges_a;
        a * b * c * self.volume_factor_sq().sqrt()
    }

    /// Reciprocal basis (Å⁻¹) in nanoBragg's default orientation: a* ∥ x, b* in the xy plane.
    pub fn reciprocal_basis(&self) -> [Vec3; 3] {
        let [a, b, c] = self.edges_a;
        let [al, be, ga] = self.angles_deg.map(f64::to_radians);
        let v = self.volume_a3();
        let (a_s, b_s, c_s) = (
            b * c * al.sin() / v,
            c * a * be.sin() / v,
            a * b * ga.sin() / v,
        );
        let cos_al_s = (be.cos() * ga.cos() - al.cos()) / (be.sin() * ga.sin());
        let cos_be_s = (al.cos() * ga.cos() - be.cos()) / (al.sin() * ga.sin());
        let cos_ga_s = (al.cos() * be.cos() - ga.cos()) / (al.sin() * be.sin());
        let sin_ga_s = (1.0 - cos_ga_s * cos_ga_s).sqrt();
        [
            [a_s, 0.0, 0.0],
            [b_s * cos_ga_s, b_s * sin_ga_s, 0.0],
            [
                c_s * cos_be_s,
                c_s * (cos_al_s - cos_be_s * cos_ga_s) / sin_ga_s,
                c_s * v / (a * b * c * sin_ga_s),
            ],
        ]
    }
}

/// Real-space basis (rows a, b, c; metres) of `cell` rotated by nanoBragg's `-misset` (degrees).
pub fn nanobragg_real_space(cell: &UnitCell, misset_deg: Vec3) -> Mat3 {
    let r = misset_rotation(misset_deg);
    let [a_s, b_s, c_s] = cell.reciprocal_basis().map(|v| mat_vec(&r, v));
    // The dual basis: a = V (b* × c*); V is in Å³ and the stars in Å⁻¹, so the result is in Å.
    let vol = 1.0 / dot(a_s, cross(b_s, c_s));
    [
        scale(cross(b_s, c_s), vol * 1e-10),
        scale(cross(c_s, a_s), vol * 1e-10),
        scale(cross(a_s, b_s), vol * 1e-10),
    ]
}

/// Real-space basis (rows, metres) from three lab vectors in Å (DIALS `real_space_a/b/c`).
pub fn real_space_from_vectors(a: Vec3, b: Vec3, c: Vec3) -> Mat3 {
    [scale(a, 1e-10), scale(b, 1e-10), scale(c, 1e-10)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(cell: UnitCell, misset: Vec3, want: [Vec3; 3]) {
        let a = nanobragg_real_space(&cell, misset);
        for i in 0..3 {
            for j in 0..3 {
                assert!(
                    (a[i][j] * 1e10 - want[i][j]).abs() < 1e-8,
                    "{i} {j}: {}",
                    a[i][j] * 1e10
                );
            }
        }
    }

    #[test]
    fn cubic_cell_matches_nanobragg_printout() {
        let cell = UnitCell::new([50.0; 3], [90.0; 3]).unwrap();
        check(
            cell,
            [10.0, 20.0, 30.0],
            [
                [40.68988407, 23.49231552, -17.10100717],
                [-22.04848053, 44.12820596, 8.15879556],
                [18.92611532, 0.90141556, 46.27082892],
            ],
        );
    }

    #[test]
    fn monoclinic_cell_matches_nanobragg_printout() {
        let cell = UnitCell::new([60.0, 70.0, 80.0], [90.0, 105.0, 90.0]).unwrap();
        check(
            cell,
            [10.0, 20.0, 30.0],
            [
                [41.28596495, 26.95023692, -34.19289148],
                [-30.86787274, 61.77948835, 11.42231378],
                [30.28178451, 1.44226490, 74.03332627],
            ],
        );
    }

    #[test]
    fn impossible_cells_are_refused() {
        assert!(UnitCell::new([0.0, 1.0, 1.0], [90.0; 3]).is_err());
        assert!(UnitCell::new([1.0; 3], [10.0, 10.0, 170.0]).is_err());
    }
}
