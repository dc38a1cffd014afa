//! The structure-factor operator: F(h, E) = F_fixed + Σ_m q_m (f'_m + i f''_m) G_m(h) as one node.
//!
//! In (static): a [`StructureFactorModel`] (per-hkl sums, computed once) and its [`FixedPart`]
//! for the channel energies (computed once per channel set). In (tensors): f' and f'' of shape
//! (site, channel), and optionally per-site occupancy scales q of shape (site) relative to the
//! model file's occupancy (q = 1 reproduces the file; the metal's f0 term scales with q as well).
//! Out: F as complex, or |F|², of shape (hkl, channel), or (channel) for a single hkl when built
//! `squeezed`. Guarantees: forward is `physics::structure_factor::structure_factors`, the adjoint
//! is `structure_factor_vjp` / `intensity_site_vjp`; the occupancy enters only through the chain
//! rule on q·f', q·f'' and a precomputed f0_m(h) G_m(h) table.

use super::{OpsError, real_grad, real_input, shaped};
use crate::physics::atoms::Crystal;
use crate::physics::form_factor::FormFactors;
use crate::physics::scattering_tables::henke::HenkeTable;
use crate::physics::structure_factor::{
    FixedPart, StructureFactorModel, intensity_site_vjp, intensity_vjp, structure_factor_vjp,
    structure_factors,
};
use crate::tape::{FusedOp, Value};
use ndarray::{Array2, ArrayView2, Ix2, IxDyn};
use num_complex::Complex64;
use std::sync::{Arc, Mutex};

/// What the structure-factor node returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StructureFactorOutput {
    /// F itself (complex).
    Complex,
    /// |F|² (real).
    Intensity,
}

/// F or |F|² per (hkl, channel) from per-site f', f'' (and optionally occupancy).
#[derive(Debug)]
pub struct StructureFactorOp {
    model: Arc<StructureFactorModel>,
    fixed: Arc<FixedPart>,
    output: StructureFactorOutput,
    squeeze: bool,
    /// f0_m(h) G_m(h) of each metal site, shape (hkl, site): present when occupancy is an input.
    metal_f0: Option<Array2<Complex64>>,
    /// F of the last |F|² forward with the input values it came from: the VJP needs F's phase, which
    /// |F|² drops, and would otherwise recompute it.
    last_f: Mutex<Option<CachedF>>,
}

/// The input values of a forward and the F it computed.
type CachedF = (Vec<f64>, Arc<Array2<Complex64>>);

/// Every input value in order: the key of the F cache.
fn input_key(inputs: &[&Value]) -> Vec<f64> {
    inputs
        .iter()
        .filter_map(|v| match v {
            Value::Real(a) => Some(a.iter().copied()),
            Value::Complex(_) => None,
        })
        .flatten()
        .collect()
}

impl StructureFactorOp {
    /// The node for `model`'s hkl list at the channels of `fixed`.
    pub fn new(
        model: Arc<StructureFactorModel>,
        fixed: Arc<FixedPart>,
        output: StructureFactorOutput,
    ) -> Self {
        Self {
            model,
            fixed,
            output,
            squeeze: false,
            metal_f0: None,
            last_f: Mutex::new(None),
        }
    }

    /// Precomputes everything for `crystal` at `hkl` and `energy_ev`: atoms of `metal_elements` are
    /// the refined sites, every other atom takes CCTBX-convention Henke f'/f'' (as `spreadc fcalc`).
    pub fn from_crystal(
        crystal: &Crystal,
        hkl: &[[i32; 3]],
        energy_ev: &[f64],
        form_factors: &FormFactors,
        metal_elements: &[&str],
        output: StructureFactorOutput,
    ) -> Result<Self, OpsError> {
        let model = StructureFactorModel::new(crystal, hkl, form_factors, metal_elements)?;
        let fixed = model.fixed_part(energy_ev, |el, e| HenkeTable::embedded(el)?.at_ev(e))?;
        Ok(Self::new(Arc::new(model), Arc::new(fixed), output))
    }

    /// Output of shape (channel) instead of (1, channel); an error unless there is one hkl.
    pub fn squeezed(mut self) -> Result<Self, OpsError> {
        if self.model.hkl.len() != 1 {
            return Err(OpsError::Shape {
                op: "structure_factor",
                detail: format!("squeezing needs one hkl, got {}", self.model.hkl.len()),
            });
        }
        self.squeeze = true;
        Ok(self)
    }

    /// Adds a third input, per-site occupancy scales q (site); needs the crystal the model was built
    /// from and its form factors to split off each metal site's f0 term.
    pub fn with_occupancy(
        mut self,
        crystal: &Crystal,
        form_factors: &FormFactors,
    ) -> Result<Self, OpsError> {
        let mut f0 = Vec::with_capacity(self.model.metal_atoms.len());
        for &i in &self.model.metal_atoms {
            let atom = crystal.atoms.get(i).ok_or_else(|| OpsError::Shape {
                op: "structure_factor",
                detail: format!("metal atom {i} is not in the crystal"),
            })?;
            f0.push(form_factors.get(&form_factors.resolve(&atom.element, atom.charge)?)?);
        }
        let g = self.model.g_metal();
        let table = Array2::from_shape_fn(g.dim(), |(h, m)| {
            g[(h, m)] * f0[m].f0(crystal.cell.stol_sq(self.model.hkl[h]))
        });
        self.metal_f0 = Some(table);
        Ok(self)
    }

    /// F_fixed, shape (hkl, channel): the constant behind stdlib's `structure_factor_rest`.
    pub fn rest_constant(&self) -> Value {
        Value::Complex(self.fixed.f_fixed.clone().into_dyn())
    }

    /// G_m(h), shape (hkl, site): the constant behind stdlib's `metal_phase`.
    pub fn metal_phase_constant(&self) -> Value {
        Value::Complex(self.model.g_metal().to_owned().into_dyn())
    }

    /// Number of hkl, metal sites and channels.
    pub fn dims(&self) -> (usize, usize, usize) {
        (
            self.model.hkl.len(),
            self.model.n_sites(),
            self.fixed.energy_ev.len(),
        )
    }

    fn site_input<'a>(
        &self,
        inputs: &[&'a Value],
        i: usize,
        name: &str,
    ) -> Result<ArrayView2<'a, f64>, String> {
        let (_, n_sites, n_ch) = self.dims();
        let a = real_input(inputs, i, name)?;
        if a.shape() != [n_sites, n_ch] {
            return Err(format!(
                "input {i} ({name}) must have shape [{n_sites}, {n_ch}] (site, channel), got {:?}",
                a.shape()
            ));
        }
        a.view()
            .into_dimensionality::<Ix2>()
            .map_err(|e| format!("input {i} ({name}): {e}"))
    }

    fn occupancy(&self, inputs: &[&Value]) -> Result<Option<Vec<f64>>, String> {
        if self.metal_f0.is_none() {
            return Ok(None);
        }
        let n_sites = self.model.n_sites();
        let q = real_input(inputs, 2, "occupancy")?;
        if q.len() != n_sites || q.ndim() != 1 {
            return Err(format!(
                "input 2 (occupancy) must have shape [{n_sites}], got {:?}",
                q.shape()
            ));
        }
        Ok(Some(q.iter().copied().collect()))
    }

    /// F for the given inputs, shape (hkl, channel).
    fn complex_f(&self, inputs: &[&Value]) -> Result<Array2<Complex64>, String> {
        let fp = self.site_input(inputs, 0, "fp")?;
        let fdp = self.site_input(inputs, 1, "fdp")?;
        let Some(q) = self.occupancy(inputs)? else {
            return structure_factors(&self.model, &self.fixed, fp, fdp).map_err(|e| e.to_string());
        };
        let scale = |a: ArrayView2<f64>| Array2::from_shape_fn(a.dim(), |(m, e)| q[m] * a[(m, e)]);
        let mut f = structure_factors(
            &self.model,
            &self.fixed,
            scale(fp).view(),
            scale(fdp).view(),
        )
        .map_err(|e| e.to_string())?;
        if let Some(h0) = &self.metal_f0 {
            for (mut row, h0_row) in f.outer_iter_mut().zip(h0.outer_iter()) {
                let extra: Complex64 = h0_row.iter().zip(&q).map(|(t, q)| t * (q - 1.0)).sum();
                row.iter_mut().for_each(|v| *v += extra);
            }
        }
        Ok(f)
    }

    /// F of the last forward when `inputs` are its inputs, else recomputed.
    fn forward_f(&self, inputs: &[&Value]) -> Result<Arc<Array2<Complex64>>, String> {
        if let Ok(last) = self.last_f.lock()
            && let Some((key, f)) = last.as_ref()
            && *key == input_key(inputs)
        {
            return Ok(f.clone());
        }
        Ok(Arc::new(self.complex_f(inputs)?))
    }

    fn output_shape(&self) -> Vec<usize> {
        let (n_hkl, _, n_ch) = self.dims();
        if self.squeeze {
            vec![n_ch]
        } else {
            vec![n_hkl, n_ch]
        }
    }

    /// dL/dF (hkl, channel) from the output gradient.
    fn grad_f(&self, f: ArrayView2<Complex64>, grad: &Value) -> Result<Array2<Complex64>, String> {
        let dim = f.dim();
        match (self.output, grad) {
            (StructureFactorOutput::Complex, Value::Complex(g)) if g.len() == f.len() => {
                Array2::from_shape_vec(dim, g.iter().copied().collect()).map_err(|e| e.to_string())
            }
            (StructureFactorOutput::Intensity, _) => {
                let g = real_grad(grad, f.len())?;
                let g = Array2::from_shape_vec(dim, g.iter().copied().collect())
                    .map_err(|e| e.to_string())?;
                Ok(intensity_vjp(f, g.view()))
            }
            _ => Err(format!(
                "output gradient must be {} with {} values, got {} {:?}",
                self.output_kind(),
                f.len(),
                grad.kind(),
                grad.shape()
            )),
        }
    }

    fn output_kind(&self) -> &'static str {
        match self.output {
            StructureFactorOutput::Complex => "complex",
            StructureFactorOutput::Intensity => "real",
        }
    }

    /// Gradients of f', f'' and q when occupancy is an input.
    fn occupancy_vjp(
        &self,
        inputs: &[&Value],
        q: &[f64],
        grad_f: ArrayView2<Complex64>,
    ) -> Result<Vec<Option<Value>>, String> {
        let (fp, fdp) = (
            self.site_input(inputs, 0, "fp")?,
            self.site_input(inputs, 1, "fdp")?,
        );
        let (g_fp, g_fdp) = structure_factor_vjp(&self.model, grad_f);
        let mut g_q = vec![0.0; q.len()];
        for (m, gq) in g_q.iter_mut().enumerate() {
            *gq = (0..fp.ncols())
                .map(|e| fp[(m, e)] * g_fp[(m, e)] + fdp[(m, e)] * g_fdp[(m, e)])
                .sum();
        }
        if let Some(h0) = &self.metal_f0 {
            for (g_row, h0_row) in grad_f.outer_iter().zip(h0.outer_iter()) {
                let g_sum: Complex64 = g_row.iter().sum();
                for (gq, t) in g_q.iter_mut().zip(h0_row) {
                    *gq += g_sum.re * t.re + g_sum.im * t.im;
                }
            }
        }
        let scale = |g: Array2<f64>| Array2::from_shape_fn(g.dim(), |(m, e)| q[m] * g[(m, e)]);
        Ok(vec![
            Some(Value::Real(scale(g_fp).into_dyn())),
            Some(Value::Real(scale(g_fdp).into_dyn())),
            Some(shaped(g_q, &[q.len()])?),
        ])
    }
}

impl FusedOp for StructureFactorOp {
    fn name(&self) -> &'static str {
        "structure_factor"
    }

    fn forward(&self, inputs: &[&Value]) -> Result<Value, String> {
        let f = self.complex_f(inputs)?;
        let shape = IxDyn(&self.output_shape());
        Ok(match self.output {
            StructureFactorOutput::Complex => {
                Value::Complex(f.into_shape_with_order(shape).map_err(|e| e.to_string())?)
            }
            StructureFactorOutput::Intensity => {
                let fsq = f.mapv(|f| f.norm_sqr());
                if let Ok(mut last) = self.last_f.lock() {
                    *last = Some((input_key(inputs), Arc::new(f)));
                }
                Value::Real(
                    fsq.into_shape_with_order(shape)
                        .map_err(|e| e.to_string())?,
                )
            }
        })
    }

    fn vjp(
        &self,
        inputs: &[&Value],
        output: &Value,
        grad: &Value,
    ) -> Result<Vec<Option<Value>>, String> {
        let (n_hkl, _, n_ch) = self.dims();
        let cached;
        let f = match output {
            Value::Complex(f) => f
                .view()
                .into_shape_with_order((n_hkl, n_ch))
                .map_err(|e| e.to_string())?,
            Value::Real(_) => {
                cached = self.forward_f(inputs)?;
                cached.view()
            }
        };
        if let Some(q) = self.occupancy(inputs)? {
            let grad_f = self.grad_f(f, grad)?;
            return self.occupancy_vjp(inputs, &q, grad_f.view());
        }
        let (g_fp, g_fdp) = match self.output {
            StructureFactorOutput::Intensity => {
                let g = real_grad(grad, f.len())?.as_standard_layout();
                let g = g
                    .view()
                    .into_shape_with_order((n_hkl, n_ch))
                    .map_err(|e| e.to_string())?;
                intensity_site_vjp(&self.model, f, g)
            }
            StructureFactorOutput::Complex => {
                structure_factor_vjp(&self.model, self.grad_f(f, grad)?.view())
            }
        };
        Ok(vec![
            Some(Value::Real(g_fp.into_dyn())),
            Some(Value::Real(g_fdp.into_dyn())),
        ])
    }
}
