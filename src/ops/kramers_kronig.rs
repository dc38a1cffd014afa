//! The Kramers-Kronig operator: f' = f'_ref + KK[f'' − f''_ref] on the channel grid, as one node.
//!
//! In (static): a uniform channel grid and a reference curve whose f' is right beyond the window
//! (Henke, Sasaki or Sherrell table read at the channels), which handles the tails. In (tensor):
//! f'' of shape (channel) or (site, channel), each row transformed independently. Out: f' of the
//! same shape. Guarantees: forward is `KramersKronig::apply_with_reference`, the VJP its transpose
//! `KramersKronig::adjoint` (the map is affine in f''), both O(n log n) by FFT.

use super::{OpsError, real_grad, real_input, shaped};
use crate::physics::anomalous::Curves;
use crate::physics::kramers_kronig::KramersKronig;
use crate::physics::scattering_tables::henke::HenkeTable;
use crate::tape::{FusedOp, Value};

/// f' from f'' with reference tails, per row.
pub struct KramersKronigOp {
    kk: KramersKronig,
    reference: Curves,
}

impl std::fmt::Debug for KramersKronigOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KramersKronigOp")
            .field("channels", &self.kk.len())
            .finish()
    }
}

impl KramersKronigOp {
    /// The operator on the uniform grid `energy_ev` with tails from `reference` (one value per channel).
    pub fn new(energy_ev: &[f64], reference: Curves) -> Result<Self, OpsError> {
        let kk = KramersKronig::on_grid(energy_ev)?;
        if reference.fp.len() != kk.len() || reference.fdp.len() != kk.len() {
            return Err(OpsError::Shape {
                op: "kramers_kronig",
                detail: format!(
                    "reference curve has {} f' and {} f'' values for {} channels",
                    reference.fp.len(),
                    reference.fdp.len(),
                    kk.len()
                ),
            });
        }
        Ok(Self { kk, reference })
    }

    /// The operator with tails from the embedded Henke table of `element` (stdlib's `kramers_kronig`).
    pub fn with_henke(energy_ev: &[f64], element: &str) -> Result<Self, OpsError> {
        let table = HenkeTable::embedded(element)?;
        let values = energy_ev
            .iter()
            .map(|&e| table.at_ev(e))
            .collect::<Result<Vec<_>, _>>()?;
        let reference = Curves {
            fp: values.iter().map(|v| v.0).collect(),
            fdp: values.iter().map(|v| v.1).collect(),
        };
        Self::new(energy_ev, reference)
    }

    /// Number of channels.
    pub fn n_channels(&self) -> usize {
        self.kk.len()
    }

    fn check_rows(&self, shape: &[usize], what: &str) -> Result<(), String> {
        let n = self.kk.len();
        match shape {
            [k] | [_, k] if *k == n => Ok(()),
            _ => Err(format!(
                "{what} must have shape [{n}] or [sites, {n}], got {shape:?}"
            )),
        }
    }
}

impl FusedOp for KramersKronigOp {
    fn name(&self) -> &'static str {
        "kramers_kronig"
    }

    fn forward(&self, inputs: &[&Value]) -> Result<Value, String> {
        let fdp = real_input(inputs, 0, "fdp")?;
        self.check_rows(fdp.shape(), "input 0 (fdp)")?;
        let fdp: Vec<f64> = fdp.iter().copied().collect();
        let mut fp = Vec::with_capacity(fdp.len());
        for row in fdp.chunks(self.kk.len()) {
            let r = &self.reference;
            fp.extend(
                self.kk
                    .apply_with_reference(row, &r.fp, &r.fdp)
                    .map_err(|e| e.to_string())?,
            );
        }
        shaped(fp, real_input(inputs, 0, "fdp")?.shape())
    }

    fn vjp(
        &self,
        inputs: &[&Value],
        output: &Value,
        grad: &Value,
    ) -> Result<Vec<Option<Value>>, String> {
        let shape = real_input(inputs, 0, "fdp")?.shape().to_vec();
        let g: Vec<f64> = real_grad(grad, output.len())?.iter().copied().collect();
        let mut g_fdp = Vec::with_capacity(g.len());
        for row in g.chunks(self.kk.len()) {
            g_fdp.extend(self.kk.adjoint(row).map_err(|e| e.to_string())?);
        }
        Ok(vec![Some(shaped(g_fdp, &shape)?)])
    }
}
