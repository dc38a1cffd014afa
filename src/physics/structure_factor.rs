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
//! channel set). [`structure_factors`] (or [`structure_factors_into`], allocation-free) and its
//! adjoint [`structure_factor_vjp`] are then a small fused loop over (hkl, channel, site);
//! [`intensity_vjp`] chains |F|^2 and [`intensity_site_vjp`] fuses both adjoints. The adjoints
//! reduce over hkl in fixed chunks and a fixed order: bit-identical results on any thread count.
//! B convention: DW = exp(-B s^2) with s = sin(theta)/lambda; anisotropic U as
//! exp(-2 pi^2 s*^T U s*) with s* the cartesian reciprocal vector of each symmetry image.

use crate::physics::atoms::{Atom, Crystal};
use crate::physics::form_factor::FormFactors;
use crate::physics::phase_factor::{AtomTable, Workspace, phase_factors};
use crate::physics::scattering_tables::TableError;
use crate::physics::scattering_tables::wk1995::GaussianCoefficients;
use ndarray::{Array2, ArrayView2};
use num_complex::Complex64;
use rayon::prelude::*;

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

impl StructureFactorModel {
    /// Precompute per hkl; atoms whose element is in `metal_elements` become metal sites.
    pub fn new(
        crystal: &Crystal,
        hkl: &[[i32; 3]],
        form_factors: &FormFactors,
        metal_elements: &[&str],
    ) -> Result<Self, StructureFactorError> {
        let roles = AtomRoles::new(crystal, form_factors, metal_elements)?;
        let table = AtomTable::new(crystal);
        let (n_types, n_sites) = (roles.types.len(), roles.metal_atoms.len());
        let chunks: Vec<HklSums> = hkl
            .par_chunks(PRECOMPUTE_CHUNK)
            .map_init(
                || PerThread::new(crystal.atoms.len(), roles.labels.len()),
                |scratch, chunk| {
                    let mut sums = HklSums::with_capacity(chunk.len(), n_types, n_sites);
                    for &h in chunk {
                        let ops = &crystal.space_group.ops;
                        phase_factors(
                            &table,
                            ops,
                            &crystal.cell,
                            h,
                            &mut scratch.workspace,
                            &mut scratch.g,
                        );
                        roles.accumulate(scratch, crystal.cell.stol_sq(h), &mut sums);
                    }
                    sums
                },
            )
            .collect();
        let mut all = HklSums::with_capacity(hkl.len(), n_types, n_sites);
        for chunk in chunks {
            all.f0_part.extend(chunk.f0_part);
            all.g_type.extend(chunk.g_type);
            all.g_metal.extend(chunk.g_metal);
        }
        let shape_error = |e: ndarray::ShapeError| StructureFactorError::Shape(e.to_string());
        Ok(Self {
            hkl: hkl.to_vec(),
            d_spacing: hkl.iter().map(|&h| crystal.cell.d_spacing(h)).collect(),
            types: roles.types,
            metal_atoms: roles.metal_atoms,
            f0_part: all.f0_part,
            g_type: Array2::from_shape_vec((hkl.len(), n_types), all.g_type)
                .map_err(shape_error)?,
            g_metal: Array2::from_shape_vec((hkl.len(), n_sites), all.g_metal)
                .map_err(shape_error)?,
        })
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
    pub fn fixed_part<F>(
        &self,
        energy_ev: &[f64],
        anomalous: F,
    ) -> Result<FixedPart, StructureFactorError>
    where
        F: Fn(&str, f64) -> Result<(f64, f64), TableError>,
    {
        let mut fp_fdp = Array2::from_elem(
            (self.types.len(), energy_ev.len()),
            Complex64::new(0.0, 0.0),
        );
        for (t, element) in self.types.iter().enumerate() {
            for (e, &energy) in energy_ev.iter().enumerate() {
                let (fp, fdp) = anomalous(element, energy)?;
                fp_fdp[(t, e)] = Complex64::new(fp, fdp);
            }
        }
        let n_channels = energy_ev.len().max(1);
        let mut out: Vec<Complex64> = self
            .f0_part
            .iter()
            .flat_map(|&f| std::iter::repeat_n(f, energy_ev.len()))
            .collect();
        out.par_chunks_mut(n_channels)
            .enumerate()
            .for_each(|(i, row)| {
                for (t, g) in self.g_type.row(i).iter().enumerate() {
                    row.iter_mut()
                        .zip(fp_fdp.row(t))
                        .for_each(|(f, anomalous)| *f += anomalous * g);
                }
            });
        let f_fixed = Array2::from_shape_vec((self.hkl.len(), energy_ev.len()), out)
            .map_err(|e| StructureFactorError::Shape(e.to_string()))?;
        Ok(FixedPart {
            energy_ev: energy_ev.to_vec(),
            f_fixed,
        })
    }
}

/// What each atom contributes to: its f0 coefficients, its anomalous type or its metal site.
struct AtomRoles {
    metal_atoms: Vec<usize>,
    types: Vec<String>,
    labels: Vec<GaussianCoefficients>,
    label_of: Vec<usize>,
    type_of: Vec<Option<usize>>,
    site_of: Vec<Option<usize>>,
}

/// Reflections per parallel task of the precomputation.
const PRECOMPUTE_CHUNK: usize = 64;

/// Per-hkl sums of a run of reflections, row-major: f0 G, G per type, G per metal site.
struct HklSums {
    f0_part: Vec<Complex64>,
    g_type: Vec<Complex64>,
    g_metal: Vec<Complex64>,
}

impl HklSums {
    /// Empty sums with room for `n` reflections.
    fn with_capacity(n: usize, n_types: usize, n_sites: usize) -> Self {
        Self {
            f0_part: Vec::with_capacity(n),
            g_type: Vec::with_capacity(n * n_types),
            g_metal: Vec::with_capacity(n * n_sites),
        }
    }
}

/// Per-thread scratch of the precomputation, so nothing is allocated per reflection.
struct PerThread {
    workspace: Workspace,
    g: Vec<Complex64>,
    f0: Vec<f64>,
}

impl PerThread {
    /// Scratch for `n_atoms` atoms and `n_labels` form-factor types.
    fn new(n_atoms: usize, n_labels: usize) -> Self {
        Self {
            workspace: Workspace::default(),
            g: vec![Complex64::new(0.0, 0.0); n_atoms],
            f0: vec![0.0; n_labels],
        }
    }
}

impl AtomRoles {
    /// Assign roles; every atom's form factor must resolve.
    fn new(
        crystal: &Crystal,
        form_factors: &FormFactors,
        metal_elements: &[&str],
    ) -> Result<Self, StructureFactorError> {
        let is_metal = |a: &Atom| {
            metal_elements
                .iter()
                .any(|m| m.eq_ignore_ascii_case(&a.element))
        };
        let metal_atoms: Vec<usize> = (0..crystal.atoms.len())
            .filter(|&i| is_metal(&crystal.atoms[i]))
            .collect();
        let mut types: Vec<String> = Vec::new();
        for atom in crystal.atoms.iter().filter(|a| !is_metal(a)) {
            if !types.contains(&atom.element) {
                types.push(atom.element.clone());
            }
        }
        let type_of = crystal
            .atoms
            .iter()
            .map(|a| {
                if is_metal(a) {
                    None
                } else {
                    types.iter().position(|t| *t == a.element)
                }
            })
            .collect();
        let site_of = (0..crystal.atoms.len())
            .map(|i| metal_atoms.iter().position(|&m| m == i))
            .collect();
        let mut names: Vec<String> = Vec::new();
        let mut label_of = Vec::with_capacity(crystal.atoms.len());
        for atom in &crystal.atoms {
            let label = form_factors.resolve(&atom.element, atom.charge)?;
            label_of.push(
                names
                    .iter()
                    .position(|n| *n == label)
                    .unwrap_or(names.len()),
            );
            if !names.contains(&label) {
                names.push(label);
            }
        }
        let labels = names
            .iter()
            .map(|n| form_factors.get(n).cloned())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            metal_atoms,
            types,
            labels,
            label_of,
            type_of,
            site_of,
        })
    }

    /// Append one reflection's sums (atoms' G in `scratch.g`) to `sums`.
    fn accumulate(&self, scratch: &mut PerThread, stol_sq: f64, sums: &mut HklSums) {
        scratch
            .f0
            .iter_mut()
            .zip(&self.labels)
            .for_each(|(f, c)| *f = c.f0(stol_sq));
        let zero = Complex64::new(0.0, 0.0);
        let (type_start, site_start) = (sums.g_type.len(), sums.g_metal.len());
        sums.g_type
            .extend(std::iter::repeat_n(zero, self.types.len()));
        sums.g_metal
            .extend(std::iter::repeat_n(zero, self.metal_atoms.len()));
        let mut f0_part = zero;
        for (i, g) in scratch.g.iter().enumerate() {
            f0_part += scratch.f0[self.label_of[i]] * g;
            if let Some(t) = self.type_of[i] {
                sums.g_type[type_start + t] += g;
            }
            if let Some(m) = self.site_of[i] {
                sums.g_metal[site_start + m] = *g;
            }
        }
        sums.f0_part.push(f0_part);
    }
}

/// F(h, E) = F_fixed + sum_m (f'[m, E] + i f''[m, E]) G_m(h); `fp`, `fdp` have shape (site, channel).
pub fn structure_factors(
    model: &StructureFactorModel,
    fixed: &FixedPart,
    fp: ArrayView2<f64>,
    fdp: ArrayView2<f64>,
) -> Result<Array2<Complex64>, StructureFactorError> {
    let mut out = Array2::zeros(fixed.f_fixed.dim());
    structure_factors_into(model, fixed, fp, fdp, &mut out)?;
    Ok(out)
}

/// [`structure_factors`] into a caller-owned array of shape (hkl, channel): no allocation.
pub fn structure_factors_into(
    model: &StructureFactorModel,
    fixed: &FixedPart,
    fp: ArrayView2<f64>,
    fdp: ArrayView2<f64>,
    out: &mut Array2<Complex64>,
) -> Result<(), StructureFactorError> {
    check_site_shape(model, fixed, fp)?;
    check_site_shape(model, fixed, fdp)?;
    if out.dim() != fixed.f_fixed.dim() {
        return Err(StructureFactorError::Shape(format!(
            "output must be {:?}, got {:?}",
            fixed.f_fixed.dim(),
            out.dim()
        )));
    }
    let n_channels = fixed.energy_ev.len().max(1);
    let (fp, fdp) = (fp.as_standard_layout(), fdp.as_standard_layout());
    let sites: Vec<(&[f64], &[f64])> = fp
        .outer_iter()
        .zip(fdp.outer_iter())
        .filter_map(|(a, b)| Some((a.to_slice()?, b.to_slice()?)))
        .collect();
    let (Some(out_slice), Some(fixed_slice)) = (out.as_slice_mut(), fixed.f_fixed.as_slice())
    else {
        return Err(StructureFactorError::Shape(
            "arrays must be in standard layout".into(),
        ));
    };
    out_slice
        .par_chunks_mut(n_channels)
        .zip(fixed_slice.par_chunks(n_channels))
        .enumerate()
        .for_each(|(i, (row, fixed_row))| {
            row.copy_from_slice(fixed_row);
            for (g, (fp, fdp)) in model.g_metal.row(i).iter().zip(&sites) {
                for ((f, a), b) in row.iter_mut().zip(*fp).zip(*fdp) {
                    *f += Complex64::new(a * g.re - b * g.im, a * g.im + b * g.re);
                }
            }
        });
    Ok(())
}

/// Adjoint of [`structure_factors`]: from dL/dF = dL/dReF + i dL/dImF (shape (hkl, channel)) to
/// (dL/df', dL/df'') of shape (site, channel).
pub fn structure_factor_vjp(
    model: &StructureFactorModel,
    grad_f: ArrayView2<Complex64>,
) -> (Array2<f64>, Array2<f64>) {
    site_gradients(model, grad_f.ncols(), |i, e| grad_f[(i, e)])
}

/// Fused adjoint of I = |F|^2 through [`structure_factors`]: from dL/dI (hkl, channel) to
/// (dL/df', dL/df'') of shape (site, channel), without materializing dL/dF.
pub fn intensity_site_vjp(
    model: &StructureFactorModel,
    f: ArrayView2<Complex64>,
    grad_i: ArrayView2<f64>,
) -> (Array2<f64>, Array2<f64>) {
    site_gradients(model, f.ncols(), |i, e| 2.0 * grad_i[(i, e)] * f[(i, e)])
}

/// Rows of hkl per parallel task of the adjoint; partial sums are added in chunk order, so the
/// result is bit-identical for any number of threads.
const HKL_CHUNK: usize = 256;

/// sum over hkl of dL/dF(h, e) against G_m(h): the transpose of F += (f' + i f'') G.
fn site_gradients<G>(
    model: &StructureFactorModel,
    n_channels: usize,
    grad_f: G,
) -> (Array2<f64>, Array2<f64>)
where
    G: Fn(usize, usize) -> Complex64 + Sync,
{
    let n_sites = model.n_sites();
    let starts: Vec<usize> = (0..model.hkl.len()).step_by(HKL_CHUNK).collect();
    let partials: Vec<Array2<f64>> = starts
        .par_iter()
        .map(|&start| {
            let mut partial = Array2::zeros((2 * n_sites, n_channels));
            for i in start..(start + HKL_CHUNK).min(model.hkl.len()) {
                for (m, g) in model.g_metal.row(i).iter().enumerate() {
                    for e in 0..n_channels {
                        let gf = grad_f(i, e);
                        partial[(2 * m, e)] += gf.re * g.re + gf.im * g.im;
                        partial[(2 * m + 1, e)] += gf.im * g.re - gf.re * g.im;
                    }
                }
            }
            partial
        })
        .collect();
    let mut total = Array2::zeros((2 * n_sites, n_channels));
    partials.iter().for_each(|p| total += p);
    let g_fp = Array2::from_shape_fn((n_sites, n_channels), |(m, e)| total[(2 * m, e)]);
    let g_fdp = Array2::from_shape_fn((n_sites, n_channels), |(m, e)| total[(2 * m + 1, e)]);
    (g_fp, g_fdp)
}

/// |F|^2 elementwise.
pub fn intensities(f: ArrayView2<Complex64>) -> Array2<f64> {
    f.mapv(|f| f.norm_sqr())
}

/// Adjoint of [`intensities`]: dL/dF = 2 dL/dI F (as dL/dReF + i dL/dImF).
pub fn intensity_vjp(f: ArrayView2<Complex64>, grad_i: ArrayView2<f64>) -> Array2<Complex64> {
    ndarray::Zip::from(f)
        .and(grad_i)
        .map_collect(|f, g| 2.0 * g * f)
}

/// Check that a per-site array has shape (site, channel).
fn check_site_shape(
    model: &StructureFactorModel,
    fixed: &FixedPart,
    a: ArrayView2<f64>,
) -> Result<(), StructureFactorError> {
    let expected = (model.n_sites(), fixed.energy_ev.len());
    if a.dim() != expected {
        return Err(StructureFactorError::Shape(format!(
            "f'/f'' per site and channel must be {expected:?}, got {:?}",
            a.dim()
        )));
    }
    Ok(())
}
