//! Structure factors by direct summation with full space-group expansion, split for SPREAD:
//!
//!   F(h, E) = F_fixed(h, E) + sum_m (f'_m(E) + i f''_m(E)) G_m(h)
//!
//! where m runs over the unknown metal sites, G_m(h) = w_m DW_m(h) sum_ops exp(2 pi i h.(R x_m + t))
//! is the symmetry-summed phase and Debye-Waller factor of site m (w = occupancy times the site
//! multiplicity over the group order, as CCTBX weights atoms on special positions), and F_fixed
//! holds every other atom's (f0 + f' + i f'') G and the metal sites' f0 G.
//!
//! In: a [`Crystal`], Miller indices, form factors, the metal element(s). [`StructureFactorModel`]
//! precomputes per hkl (once): f0-weighted sums, G of each anomalous scatterer type and of each
//! metal site. [`StructureFactorModel::fixed_part`] adds the known f'/f'' per channel (once per
//! channel set). [`structure_factors`] and its adjoint [`structure_factor_vjp`] are then a small
//! fused loop over (hkl, channel, site) with no allocation inside; [`intensity_vjp`] chains |F|^2.
//! B convention: DW = exp(-B s^2) with s = sin(theta)/lambda; anisotropic U as
//! exp(-2 pi^2 s*^T U s*) with s* the cartesian reciprocal vector of each symmetry image.

use crate::physics::atoms::{Atom, Crystal};
use crate::physics::form_factor::FormFactors;
use crate::physics::scattering_tables::TableError;
use crate::physics::symmetry::{SymOp, TDEN};
use crate::physics::unit_cell::UnitCell;
use ndarray::{Array2, ArrayView2};
use num_complex::Complex64;
use rayon::prelude::*;
use std::f64::consts::PI;

/// Distance (Angstrom) within which a symmetry image counts as the atom itself (CCTBX's default
/// `min_distance_sym_equiv`).
const SPECIAL_POSITION_TOLERANCE_A: f64 = 0.5;

/// Errors building structure factors.
#[derive(Debug, thiserror::Error)]
pub enum StructureFactorError {
    /// A scattering table is missing or out of range.
    #[error(transparent)]
    Table(#[from] TableError),
    /// Inputs of mismatched shape.
    #[error("shape mismatch: {0}")]
    Shape(String),
}

/// Per-hkl precomputation for a crystal, a list of hkl, and its metal sites.
#[derive(Debug, Clone)]
pub struct StructureFactorModel {
    /// Miller indices.
    pub hkl: Vec<[i32; 3]>,
    /// d spacing of each hkl, Angstrom.
    pub d_spacing: Vec<f64>,
    /// Element of each anomalous scatterer type (non-metal atoms grouped by element).
    pub types: Vec<String>,
    /// Indices into the crystal's atoms of the metal sites, in file order.
    pub metal_atoms: Vec<usize>,
    /// sum over non-metal atoms of f0 G, plus metal f0 G: shape (hkl).
    f0_part: Vec<Complex64>,
    /// G summed over the atoms of each type: shape (hkl, type).
    g_type: Array2<Complex64>,
    /// G of each metal site: shape (hkl, site).
    g_metal: Array2<Complex64>,
}

/// F_fixed(h, E): everything but the metal sites' f'/f''; shape (hkl, channel).
#[derive(Debug, Clone)]
pub struct FixedPart {
    /// Channel energies, eV.
    pub energy_ev: Vec<f64>,
    /// The fixed structure factors.
    pub f_fixed: Array2<Complex64>,
}

/// Atom data laid out for the inner loop.
struct Scatterer {
    frac: [f64; 3],
    weight: f64,
    b_iso: f64,
    u_aniso: Option<[[f64; 3]; 3]>,
}

impl StructureFactorModel {
    /// Precompute per hkl; atoms whose element is in `metal_elements` become metal sites.
    pub fn new(crystal: &Crystal, hkl: &[[i32; 3]], form_factors: &FormFactors, metal_elements: &[&str]) -> Result<Self, StructureFactorError> {
        let is_metal = |a: &Atom| metal_elements.iter().any(|m| m.eq_ignore_ascii_case(&a.element));
        let metal_atoms: Vec<usize> = (0..crystal.atoms.len()).filter(|&i| is_metal(&crystal.atoms[i])).collect();
        let mut types: Vec<String> = Vec::new();
        for atom in crystal.atoms.iter().filter(|a| !is_metal(a)) {
            if !types.contains(&atom.element) {
                types.push(atom.element.clone());
            }
        }
        let coefficients = crystal.atoms.iter().map(|a| form_factors.resolve(&a.element, a.charge).and_then(|l| form_factors.get(&l).cloned())).collect::<Result<Vec<_>, _>>()?;
        let scatterers: Vec<Scatterer> = crystal.atoms.iter().map(|a| scatterer(a, crystal)).collect();
        let type_of: Vec<Option<usize>> = crystal.atoms.iter().map(|a| if is_metal(a) { None } else { types.iter().position(|t| *t == a.element) }).collect();
        let site_of: Vec<Option<usize>> = (0..crystal.atoms.len()).map(|i| metal_atoms.iter().position(|&m| m == i)).collect();
        let (n_types, n_sites) = (types.len(), metal_atoms.len());
        let rows: Vec<(Complex64, Vec<Complex64>, Vec<Complex64>)> = hkl
            .par_iter()
            .map(|&h| {
                let stol_sq = crystal.cell.stol_sq(h);
                let (mut f0_sum, mut g_type, mut g_metal) = (Complex64::new(0.0, 0.0), vec![Complex64::new(0.0, 0.0); n_types], vec![Complex64::new(0.0, 0.0); n_sites]);
                let images = SymmetryImages::new(&crystal.space_group.ops, h, &crystal.cell);
                for (i, s) in scatterers.iter().enumerate() {
                    let g = images.g(s, stol_sq);
                    f0_sum += coefficients[i].f0(stol_sq) * g;
                    if let Some(t) = type_of[i] { g_type[t] += g; }
                    if let Some(m) = site_of[i] { g_metal[m] = g; }
                }
                (f0_sum, g_type, g_metal)
            })
            .collect();
        let f0_part = rows.iter().map(|r| r.0).collect();
        let g_type = Array2::from_shape_fn((hkl.len(), n_types), |(i, t)| rows[i].1[t]);
        let g_metal = Array2::from_shape_fn((hkl.len(), n_sites), |(i, m)| rows[i].2[m]);
        let d_spacing = hkl.iter().map(|&h| crystal.cell.d_spacing(h)).collect();
        Ok(Self { hkl: hkl.to_vec(), d_spacing, types, metal_atoms, f0_part, g_type, g_metal })
    }

    /// Number of metal sites.
    pub fn n_sites(&self) -> usize {
        self.g_metal.ncols()
    }

    /// G_m(h) of every metal site: shape (hkl, site).
    pub fn g_metal(&self) -> ArrayView2<'_, Complex64> {
        self.g_metal.view()
    }

    /// F_fixed for channels `energy_ev`, with f'/f'' of each non-metal element from `anomalous`.
    pub fn fixed_part<F>(&self, energy_ev: &[f64], anomalous: F) -> Result<FixedPart, StructureFactorError>
    where
        F: Fn(&str, f64) -> Result<(f64, f64), TableError>,
    {
        let mut fp_fdp = Array2::from_elem((self.types.len(), energy_ev.len()), Complex64::new(0.0, 0.0));
        for (t, element) in self.types.iter().enumerate() {
            for (e, &energy) in energy_ev.iter().enumerate() {
                let (fp, fdp) = anomalous(element, energy)?;
                fp_fdp[(t, e)] = Complex64::new(fp, fdp);
            }
        }
        let n_channels = energy_ev.len().max(1);
        let mut out: Vec<Complex64> = self.f0_part.iter().flat_map(|&f| std::iter::repeat_n(f, energy_ev.len())).collect();
        out.par_chunks_mut(n_channels).enumerate().for_each(|(i, row)| {
            for (t, g) in self.g_type.row(i).iter().enumerate() {
                row.iter_mut().zip(fp_fdp.row(t)).for_each(|(f, anomalous)| *f += anomalous * g);
            }
        });
        let f_fixed = Array2::from_shape_vec((self.hkl.len(), energy_ev.len()), out).map_err(|e| StructureFactorError::Shape(e.to_string()))?;
        Ok(FixedPart { energy_ev: energy_ev.to_vec(), f_fixed })
    }
}

/// Weight, B and position of an atom; the weight carries the special-position correction.
fn scatterer(atom: &Atom, crystal: &Crystal) -> Scatterer {
    let ops = &crystal.space_group.ops;
    let site_order = ops.iter().filter(|op| is_same_site(&crystal.cell, atom.fractional, op.apply(atom.fractional))).count().max(1);
    Scatterer { frac: atom.fractional, weight: atom.occupancy / site_order as f64, b_iso: atom.b_iso, u_aniso: atom.u_aniso }
}

/// True when two fractional positions coincide modulo lattice translations.
fn is_same_site(cell: &UnitCell, a: [f64; 3], b: [f64; 3]) -> bool {
    let delta: [f64; 3] = std::array::from_fn(|i| {
        let d = b[i] - a[i];
        d - d.round()
    });
    let cart = cell.orthogonalize(delta);
    (cart[0] * cart[0] + cart[1] * cart[1] + cart[2] * cart[2]).sqrt() < SPECIAL_POSITION_TOLERANCE_A
}

/// For one hkl, each operator's rotated index R^T h, phase shift h.t and reciprocal vector.
struct SymmetryImages {
    rotated: Vec<[f64; 3]>,
    shift: Vec<f64>,
    reciprocal: Vec<[f64; 3]>,
}

impl SymmetryImages {
    /// Precompute the images of `h` under `ops`.
    fn new(ops: &[SymOp], h: [i32; 3], cell: &UnitCell) -> Self {
        let rotated: Vec<[f64; 3]> = ops.iter().map(|op| std::array::from_fn(|j| f64::from((0..3).map(|i| h[i] * op.rot[i][j]).sum::<i32>()))).collect();
        let shift = ops.iter().map(|op| f64::from((0..3).map(|i| h[i] * op.tran[i]).sum::<i32>()) / f64::from(TDEN)).collect();
        let reciprocal = rotated.iter().map(|&r| cell.reciprocal_cartesian(r)).collect();
        Self { rotated, shift, reciprocal }
    }

    /// G = w DW sum_ops exp(2 pi i (R^T h . x + h . t)) for one scatterer.
    fn g(&self, s: &Scatterer, stol_sq: f64) -> Complex64 {
        let mut sum = Complex64::new(0.0, 0.0);
        for (k, r) in self.rotated.iter().enumerate() {
            let phase = 2.0 * PI * (r[0] * s.frac[0] + r[1] * s.frac[1] + r[2] * s.frac[2] + self.shift[k]);
            let (sin, cos) = phase.sin_cos();
            let dw = match &s.u_aniso {
                Some(u) => aniso_dw(u, self.reciprocal[k]),
                None => 1.0,
            };
            sum += Complex64::new(cos, sin) * dw;
        }
        let iso = if s.u_aniso.is_some() { 1.0 } else { (-s.b_iso * stol_sq).exp() };
        sum * (s.weight * iso)
    }
}

/// exp(-2 pi^2 s^T U s) for cartesian U and reciprocal vector s.
fn aniso_dw(u: &[[f64; 3]; 3], s: [f64; 3]) -> f64 {
    let q: f64 = (0..3).map(|i| (0..3).map(|j| s[i] * u[i][j] * s[j]).sum::<f64>()).sum();
    (-2.0 * PI * PI * q).exp()
}

/// F(h, E) = F_fixed + sum_m (f'[m, E] + i f''[m, E]) G_m(h); `fp`, `fdp` have shape (site, channel).
pub fn structure_factors(model: &StructureFactorModel, fixed: &FixedPart, fp: ArrayView2<f64>, fdp: ArrayView2<f64>) -> Result<Array2<Complex64>, StructureFactorError> {
    check_site_shape(model, fixed, fp)?;
    check_site_shape(model, fixed, fdp)?;
    let n_channels = fixed.energy_ev.len();
    let mut out: Vec<Complex64> = fixed.f_fixed.iter().copied().collect();
    out.par_chunks_mut(n_channels.max(1)).enumerate().for_each(|(i, row)| {
        for (m, g) in model.g_metal.row(i).iter().enumerate() {
            for (e, f) in row.iter_mut().enumerate() {
                *f += Complex64::new(fp[(m, e)], fdp[(m, e)]) * g;
            }
        }
    });
    Array2::from_shape_vec((model.hkl.len(), n_channels), out).map_err(|e| StructureFactorError::Shape(e.to_string()))
}

/// Adjoint of [`structure_factors`]: from dL/dF = dL/dReF + i dL/dImF (shape (hkl, channel)) to
/// (dL/df', dL/df'') of shape (site, channel).
pub fn structure_factor_vjp(model: &StructureFactorModel, grad_f: ArrayView2<Complex64>) -> (Array2<f64>, Array2<f64>) {
    let (n_sites, n_channels) = (model.n_sites(), grad_f.ncols());
    let per_site: Vec<(Vec<f64>, Vec<f64>)> = (0..n_sites)
        .into_par_iter()
        .map(|m| {
            let (mut g_fp, mut g_fdp) = (vec![0.0; n_channels], vec![0.0; n_channels]);
            for (i, grad_row) in grad_f.outer_iter().enumerate() {
                let g = model.g_metal[(i, m)];
                for (e, gf) in grad_row.iter().enumerate() {
                    g_fp[e] += gf.re * g.re + gf.im * g.im;
                    g_fdp[e] += gf.im * g.re - gf.re * g.im;
                }
            }
            (g_fp, g_fdp)
        })
        .collect();
    let g_fp = Array2::from_shape_fn((n_sites, n_channels), |(m, e)| per_site[m].0[e]);
    let g_fdp = Array2::from_shape_fn((n_sites, n_channels), |(m, e)| per_site[m].1[e]);
    (g_fp, g_fdp)
}

/// |F|^2 elementwise.
pub fn intensities(f: ArrayView2<Complex64>) -> Array2<f64> {
    f.mapv(|f| f.norm_sqr())
}

/// Adjoint of [`intensities`]: dL/dF = 2 dL/dI F (as dL/dReF + i dL/dImF).
pub fn intensity_vjp(f: ArrayView2<Complex64>, grad_i: ArrayView2<f64>) -> Array2<Complex64> {
    ndarray::Zip::from(f).and(grad_i).map_collect(|f, g| 2.0 * g * f)
}

/// Check that a per-site array has shape (site, channel).
fn check_site_shape(model: &StructureFactorModel, fixed: &FixedPart, a: ArrayView2<f64>) -> Result<(), StructureFactorError> {
    let expected = (model.n_sites(), fixed.energy_ev.len());
    if a.dim() != expected {
        return Err(StructureFactorError::Shape(format!("f'/f'' per site and channel must be {expected:?}, got {:?}", a.dim())));
    }
    Ok(())
}
