//! The plane background per shoebox as one node for a batch of shoeboxes.
//!
//! In (static): the shoebox regions. In (tensor): plane coefficients (offset at the shoebox
//! centre, slope per pixel along fast, slope per pixel along slow), shape (shoebox, 3) or (3) for
//! one shoebox. Out: photons per pixel of every shoebox, concatenated, shape (pixel).
//! Guarantees: forward is `BackgroundPlane::add_to`, the VJP `BackgroundPlane::vjp` (exact: the
//! plane is linear in its coefficients).

use super::{OpsError, real_grad, real_values, shaped};
use crate::physics::background::BackgroundPlane;
use crate::physics::spot::Region;
use crate::tape::{FusedOp, Value};

/// a + b·x + c·y over each shoebox's pixels (x, y about the shoebox centre).
#[derive(Debug, Clone)]
pub struct PlaneBackgroundOp {
    regions: Vec<Region>,
    offsets: Vec<usize>,
}

impl PlaneBackgroundOp {
    /// The node for `regions`.
    pub fn new(regions: Vec<Region>) -> Result<Self, OpsError> {
        if regions.is_empty() {
            return Err(OpsError::Shape {
                op: "plane_background",
                detail: "no shoebox regions".into(),
            });
        }
        let mut offsets = vec![0];
        for r in &regions {
            offsets.push(offsets[offsets.len() - 1] + r.len());
        }
        Ok(Self { regions, offsets })
    }

    /// Start of each shoebox's pixels in the output, plus the total at the end.
    pub fn pixel_offsets(&self) -> &[usize] {
        &self.offsets
    }
}

impl FusedOp for PlaneBackgroundOp {
    fn name(&self) -> &'static str {
        "plane_background"
    }

    fn forward(&self, inputs: &[&Value]) -> Result<Value, String> {
        let c = real_values(inputs, 0, "coeffs", 3 * self.regions.len())?;
        let mut out = vec![0.0; self.offsets[self.regions.len()]];
        for (i, r) in self.regions.iter().enumerate() {
            let plane = BackgroundPlane {
                offset: c[3 * i],
                slope_fast: c[3 * i + 1],
                slope_slow: c[3 * i + 2],
            };
            plane.add_to(r, &mut out[self.offsets[i]..self.offsets[i + 1]]);
        }
        let n = out.len();
        shaped(out, &[n])
    }

    fn vjp(
        &self,
        inputs: &[&Value],
        output: &Value,
        grad: &Value,
    ) -> Result<Vec<Option<Value>>, String> {
        real_values(inputs, 0, "coeffs", 3 * self.regions.len())?;
        let g: Vec<f64> = real_grad(grad, output.len())?.iter().copied().collect();
        let coeffs = self
            .regions
            .iter()
            .enumerate()
            .flat_map(|(i, r)| BackgroundPlane::vjp(r, &g[self.offsets[i]..self.offsets[i + 1]]))
            .collect();
        Ok(vec![Some(shaped(coeffs, inputs[0].shape())?)])
    }
}
