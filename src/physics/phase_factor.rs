//! The per-hkl kernel of the structure factor: for one Miller index h, the symmetry-summed phase
//! and Debye-Waller factor of every atom,
//!
//!   G_a(h) = w_a sum_ops DW_a(h R) exp(2 pi i (h R . x_a + h . t)),
//!
//! with w_a the occupancy times the site multiplicity over the group order. Atoms are stored as
//! structure-of-arrays and the phase loop is branch-free, with a polynomial sin/cos in turns
//! ([`sin_cos_turns`], accurate to 2e-16), so the compiler vectorizes it. A [`Workspace`] holds
//! the per-thread scratch, so nothing is allocated per hkl.

use crate::physics::atoms::Crystal;
use crate::physics::symmetry::{SymOp, TDEN};
use crate::physics::unit_cell::UnitCell;
use num_complex::Complex64;
use std::f64::consts::PI;

/// Distance (Angstrom) within which a symmetry image counts as the atom itself (CCTBX's default
/// `min_distance_sym_equiv`).
const SPECIAL_POSITION_TOLERANCE_A: f64 = 0.5;

/// Adding and subtracting 1.5 * 2^52 rounds a double of magnitude below 2^51 to the nearest integer.
const ROUNDING_MAGIC: f64 = 6_755_399_441_055_744.0;

/// Taylor coefficients (-1)^n / (2n+1)! of sin u / u.
const SIN_COEFFICIENTS: [f64; 11] = taylor_coefficients(1);
/// Taylor coefficients (-1)^n / (2n)! of cos u.
const COS_COEFFICIENTS: [f64; 12] = taylor_coefficients(0);

/// (-1)^n / (2n + offset)! for n < N.
const fn taylor_coefficients<const N: usize>(offset: usize) -> [f64; N] {
    let mut out = [0.0; N];
    let mut n = 0;
    while n < N {
        let mut factorial = 1.0;
        let mut k = 2;
        while k <= 2 * n + offset {
            factorial *= k as f64;
            k += 1;
        }
        out[n] = if n % 2 == 0 {
            1.0 / factorial
        } else {
            -1.0 / factorial
        };
        n += 1;
    }
    out
}

/// (sin 2 pi t, cos 2 pi t) by reduction to u = pi (t - round t) in [-pi/2, pi/2], Taylor series
/// of sin u and cos u to orders 21 and 22 (truncation below 1e-17), then the double-angle
/// formulas. Branch-free, so loops over it vectorize; valid for |t| < 2^51.
#[inline(always)]
pub fn sin_cos_turns(t: f64) -> (f64, f64) {
    let r = t - ((t + ROUNDING_MAGIC) - ROUNDING_MAGIC);
    let u = PI * r;
    let u2 = u * u;
    let sin_u = u * SIN_COEFFICIENTS
        .iter()
        .rev()
        .fold(0.0, |acc, c| acc * u2 + c);
    let cos_u = COS_COEFFICIENTS
        .iter()
        .rev()
        .fold(0.0, |acc, c| acc * u2 + c);
    (2.0 * sin_u * cos_u, 1.0 - 2.0 * sin_u * sin_u)
}

/// Atoms as structure-of-arrays for the phase loop.
#[derive(Debug, Clone)]
pub struct AtomTable {
    x: Vec<f64>,
    y: Vec<f64>,
    z: Vec<f64>,
    /// Occupancy times site multiplicity over group order.
    weight: Vec<f64>,
    b_iso: Vec<f64>,
    /// Atoms with anisotropic U (index, cartesian U); their DW depends on the operator.
    aniso: Vec<(usize, [[f64; 3]; 3])>,
}

impl AtomTable {
    /// Lay out the crystal's atoms, weighting atoms on special positions as CCTBX does.
    pub fn new(crystal: &Crystal) -> Self {
        let ops = &crystal.space_group.ops;
        let frac: Vec<[f64; 3]> = crystal.atoms.iter().map(|a| a.fractional).collect();
        let weight = crystal
            .atoms
            .iter()
            .map(|a| {
                let site_order = ops
                    .iter()
                    .filter(|op| is_same_site(&crystal.cell, a.fractional, op.apply(a.fractional)))
                    .count()
                    .max(1);
                a.occupancy / site_order as f64
            })
            .collect();
        let aniso = crystal
            .atoms
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.u_aniso.map(|u| (i, u)))
            .collect();
        Self {
            x: frac.iter().map(|f| f[0]).collect(),
            y: frac.iter().map(|f| f[1]).collect(),
            z: frac.iter().map(|f| f[2]).collect(),
            weight,
            b_iso: crystal.atoms.iter().map(|a| a.b_iso).collect(),
            aniso,
        }
    }

    /// Number of atoms.
    pub fn len(&self) -> usize {
        self.x.len()
    }

    /// True when there are no atoms.
    pub fn is_empty(&self) -> bool {
        self.x.is_empty()
    }
}

/// True when two fractional positions coincide modulo lattice translations.
fn is_same_site(cell: &UnitCell, a: [f64; 3], b: [f64; 3]) -> bool {
    let delta: [f64; 3] = std::array::from_fn(|i| {
        let d = b[i] - a[i];
        d - d.round()
    });
    let cart = cell.orthogonalize(delta);
    (cart[0] * cart[0] + cart[1] * cart[1] + cart[2] * cart[2]).sqrt()
        < SPECIAL_POSITION_TOLERANCE_A
}

/// Per-thread scratch: running cos and sin sums per atom.
#[derive(Debug, Clone, Default)]
pub struct Workspace {
    re: Vec<f64>,
    im: Vec<f64>,
}

/// G_a(h) of every atom into `out` (length = number of atoms).
pub fn phase_factors(
    atoms: &AtomTable,
    ops: &[SymOp],
    cell: &UnitCell,
    h: [i32; 3],
    workspace: &mut Workspace,
    out: &mut [Complex64],
) {
    let n = atoms.len();
    workspace.re.clear();
    workspace.re.resize(n, 0.0);
    workspace.im.clear();
    workspace.im.resize(n, 0.0);
    for op in ops {
        let (r, shift) = rotated_index(op, h);
        let (re, im) = (&mut workspace.re[..n], &mut workspace.im[..n]);
        for i in 0..n {
            let (s, c) =
                sin_cos_turns(r[0] * atoms.x[i] + r[1] * atoms.y[i] + r[2] * atoms.z[i] + shift);
            re[i] += c;
            im[i] += s;
        }
    }
    let stol_sq = cell.stol_sq(h);
    let sums = workspace.re.iter().zip(&workspace.im);
    for ((g, (re, im)), (weight, b)) in out
        .iter_mut()
        .zip(sums)
        .zip(atoms.weight.iter().zip(&atoms.b_iso))
    {
        let scale = weight * (-b * stol_sq).exp();
        *g = Complex64::new(re * scale, im * scale);
    }
    for (i, u) in &atoms.aniso {
        out[*i] = aniso_phase_factor(atoms, *i, u, ops, cell, h);
    }
}

/// h R as floats and h . t in turns.
fn rotated_index(op: &SymOp, h: [i32; 3]) -> ([f64; 3], f64) {
    let r = std::array::from_fn(|j| f64::from((0..3).map(|i| h[i] * op.rot[i][j]).sum::<i32>()));
    let shift = f64::from((0..3).map(|i| h[i] * op.tran[i]).sum::<i32>()) / f64::from(TDEN);
    (r, shift)
}

/// G of an anisotropic atom: each image has DW = exp(-2 pi^2 s^T U s), s the cartesian h R.
fn aniso_phase_factor(
    atoms: &AtomTable,
    i: usize,
    u: &[[f64; 3]; 3],
    ops: &[SymOp],
    cell: &UnitCell,
    h: [i32; 3],
) -> Complex64 {
    let mut sum = Complex64::new(0.0, 0.0);
    for op in ops {
        let (r, shift) = rotated_index(op, h);
        let s = cell.reciprocal_cartesian(r);
        let q: f64 = (0..3)
            .map(|a| (0..3).map(|b| s[a] * u[a][b] * s[b]).sum::<f64>())
            .sum();
        let (sin, cos) =
            sin_cos_turns(r[0] * atoms.x[i] + r[1] * atoms.y[i] + r[2] * atoms.z[i] + shift);
        sum += Complex64::new(cos, sin) * (-2.0 * PI * PI * q).exp();
    }
    sum * atoms.weight[i]
}

#[cfg(test)]
mod tests {
    use super::sin_cos_turns;

    #[test]
    fn sin_cos_turns_matches_libm() {
        let mut worst: f64 = 0.0;
        for k in -200_000..200_000 {
            let t = k as f64 * 0.000_731_3 + 0.123;
            let (s, c) = sin_cos_turns(t);
            let (s_ref, c_ref) = (2.0 * std::f64::consts::PI * t).sin_cos();
            worst = worst.max((s - s_ref).abs()).max((c - c_ref).abs());
        }
        // libm's own argument 2 pi t carries a rounding error of |2 pi t| * 1.1e-16 (t up to 146 here).
        assert!(worst < 2e-13, "worst {worst}");
        // Exact values at quarter turns, where libm's rounded argument is itself off.
        for (t, s_exact, c_exact) in [
            (0.0, 0.0, 1.0),
            (0.25, 1.0, 0.0),
            (0.5, 0.0, -1.0),
            (-0.25, -1.0, 0.0),
            (1.0, 0.0, 1.0),
            (3.75, -1.0, 0.0),
        ] {
            let (s, c) = sin_cos_turns(t);
            assert!(
                (s - s_exact).abs() < 3e-16 && (c - c_exact).abs() < 3e-16,
                "t={t}: {s} {c}"
            );
        }
    }
}
