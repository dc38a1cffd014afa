//! The response-matrix fast path of the bragg spot model (DESIGN.md §7) as one node.
//!
//! In (static): a `SpotModel` whose geometry latents are held fixed (orientation, cell, mosaic
//! domains, N, detector, spectrum) and the shoebox regions; R and b are built once per region at
//! construction with scale 1. In (tensors): 0 `fsq` per-channel |F|², shape (shoebox, channel) or
//! (channel) for one shoebox; 1 `scale` (one value). Out: scale·(R·fsq + b) for every shoebox,
//! concatenated, shape (pixel): the same values as [`BraggSpotOp`](super::BraggSpotOp) at that
//! geometry. Guarantees: forward is `ResponseMatrix::apply`, the fsq adjoint `ResponseMatrix::vjp_fsq`
//! (Rᵀ·g); when a geometry latent moves, build a new node (the matrices are a cache, not state).

use super::{OpsError, real_grad, real_values, shaped};
use crate::physics::response::ResponseMatrix;
use crate::physics::spot::{Region, SpotModel};
use crate::tape::{FusedOp, Value};

/// scale · (R·|F|² + b) per shoebox for fixed geometry.
#[derive(Debug, Clone)]
pub struct ResponseOp {
    matrices: Vec<ResponseMatrix>,
    offsets: Vec<usize>,
    n_channels: usize,
}

impl ResponseOp {
    /// Build R and b of every region at `model`'s geometry (its scale is ignored: scale is input 1).
    pub fn new(model: &SpotModel, regions: &[Region]) -> Result<Self, OpsError> {
        if regions.is_empty() {
            return Err(OpsError::Shape {
                op: "bragg_response",
                detail: "no shoebox regions".into(),
            });
        }
        let unit = SpotModel {
            scale: 1.0,
            ..model.clone()
        };
        let matrices = regions
            .iter()
            .map(|r| ResponseMatrix::build(&unit, r))
            .collect::<Result<Vec<_>, _>>()?;
        let mut offsets = vec![0];
        for r in regions {
            offsets.push(offsets[offsets.len() - 1] + r.len());
        }
        Ok(Self {
            matrices,
            offsets,
            n_channels: model.beam.channels.len(),
        })
    }

    /// Start of each shoebox's pixels in the output, plus the total at the end.
    pub fn pixel_offsets(&self) -> &[usize] {
        &self.offsets
    }

    fn inputs(&self, inputs: &[&Value]) -> Result<(Vec<f64>, f64), String> {
        let n = self.matrices.len() * self.n_channels;
        Ok((
            real_values(inputs, 0, "fsq", n)?,
            real_values(inputs, 1, "scale", 1)?[0],
        ))
    }

    /// R·fsq + b of every shoebox, concatenated (before the scale).
    fn unscaled(&self, fsq: &[f64]) -> Result<Vec<f64>, String> {
        let mut out = Vec::with_capacity(self.offsets[self.matrices.len()]);
        for (m, f) in self.matrices.iter().zip(fsq.chunks(self.n_channels)) {
            out.extend(m.apply(f).map_err(|e| e.to_string())?);
        }
        Ok(out)
    }
}

impl FusedOp for ResponseOp {
    fn name(&self) -> &'static str {
        "bragg_response"
    }

    fn forward(&self, inputs: &[&Value]) -> Result<Value, String> {
        let (fsq, scale) = self.inputs(inputs)?;
        let out: Vec<f64> = self.unscaled(&fsq)?.iter().map(|v| v * scale).collect();
        let n = out.len();
        shaped(out, &[n])
    }

    fn vjp(
        &self,
        inputs: &[&Value],
        output: &Value,
        grad: &Value,
    ) -> Result<Vec<Option<Value>>, String> {
        let (fsq, scale) = self.inputs(inputs)?;
        let g: Vec<f64> = real_grad(grad, output.len())?.iter().copied().collect();
        let g_scale: f64 = self
            .unscaled(&fsq)?
            .iter()
            .zip(&g)
            .map(|(a, b)| a * b)
            .sum();
        let mut g_fsq = Vec::with_capacity(fsq.len());
        for (i, m) in self.matrices.iter().enumerate() {
            let up = &g[self.offsets[i]..self.offsets[i + 1]];
            g_fsq.extend(
                m.vjp_fsq(up)
                    .map_err(|e| e.to_string())?
                    .iter()
                    .map(|v| v * scale),
            );
        }
        Ok(vec![
            Some(shaped(g_fsq, inputs[0].shape())?),
            Some(shaped(vec![g_scale], inputs[1].shape())?),
        ])
    }
}
