//! The bragg spot operator: expected photons in every pixel of a batch of shoeboxes of one image.
//!
//! In (static): a `SpotModel` template (panel, beam and spectrum, polarization, reference
//! orientation A, shape transform, oversampling, bracket background, and the mosaic domain draws
//! when they are fixed) and the shoebox regions on its panel. In (tensors, in order):
//! 0 `fsq` per-channel |F(h0, λ_k)|² of each shoebox's reflection, shape (shoebox, channel), or
//! (channel) for one shoebox; 1 `scale` per-image scale (one value); 2 `rotation` small-angle
//! image rotation θ (3, radians); 3 `n_cells` domain size Na, Nb, Nc (3); then by [`MosaicInput`]:
//! nothing, the domains' tilt vectors (domain, 3; radians), or the mosaic spread (3 per axis, or
//! one isotropic value; radians) over the template's fixed draws.
//! Out: pixels of all shoeboxes concatenated (row-major each, shoeboxes in order), shape (pixel).
//! Guarantees: forward is `spot::render` (one shoebox, rows in parallel) or `render_serial` per
//! shoebox in parallel; the VJP is `spot_vjp` / `spot_vjp_serial`, its per-shoebox parts added in
//! shoebox order, so results do not depend on the thread count. No allocation per pixel.

use super::{OpsError, real_grad, real_input, real_values, shaped};
use crate::physics::geometry::Vec3;
use crate::physics::mosaic::MosaicDomains;
use crate::physics::spot::{
    ChannelFsq, Region, SpotGradient, SpotModel, render, render_serial, spot_vjp, spot_vjp_serial,
};
use crate::tape::{FusedOp, Value};
use rayon::prelude::*;

/// Which mosaic parameters are a tensor input (input 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MosaicInput {
    /// The template's domains are fixed; there is no input 4.
    Fixed,
    /// Input 4 holds each domain's tilt vector, shape (domain, 3), radians.
    Tilts,
    /// Input 4 is the spread over the template's draws: 3 per-axis values or 1 isotropic, radians.
    Spread,
}

/// Expected photons per pixel of a batch of shoeboxes of one image.
#[derive(Debug, Clone)]
pub struct BraggSpotOp {
    template: SpotModel,
    regions: Vec<Region>,
    offsets: Vec<usize>,
    mosaic: MosaicInput,
    squeeze: bool,
}

const INPUTS: [&str; 5] = ["fsq", "scale", "rotation", "n_cells", "mosaic"];

impl BraggSpotOp {
    /// The node for `regions` (each must lie on the template's panel).
    pub fn new(
        template: SpotModel,
        regions: Vec<Region>,
        mosaic: MosaicInput,
    ) -> Result<Self, OpsError> {
        if regions.is_empty() {
            return Err(OpsError::Shape {
                op: "bragg_spot",
                detail: "no shoebox regions".into(),
            });
        }
        for region in &regions {
            template.validate(region, None)?;
        }
        let mut offsets = vec![0];
        for r in &regions {
            offsets.push(offsets[offsets.len() - 1] + r.len());
        }
        let squeeze = regions.len() == 1;
        Ok(Self {
            template,
            regions,
            offsets,
            mosaic,
            squeeze,
        })
    }

    /// Start of each shoebox's pixels in the output, plus the total at the end.
    pub fn pixel_offsets(&self) -> &[usize] {
        &self.offsets
    }

    /// Number of inputs the node expects.
    pub fn n_inputs(&self) -> usize {
        if self.mosaic == MosaicInput::Fixed {
            4
        } else {
            5
        }
    }

    fn n_channels(&self) -> usize {
        self.template.beam.channels.len()
    }

    /// The model at the inputs' values and the per-shoebox |F|² rows.
    fn model(&self, inputs: &[&Value]) -> Result<(SpotModel, Vec<f64>), String> {
        if inputs.len() != self.n_inputs() {
            return Err(format!(
                "expected {} inputs ({}), got {}",
                self.n_inputs(),
                INPUTS[..self.n_inputs()].join(", "),
                inputs.len()
            ));
        }
        let fsq = real_values(inputs, 0, INPUTS[0], self.regions.len() * self.n_channels())?;
        let three = |i: usize| -> Result<Vec3, String> {
            let v = real_values(inputs, i, INPUTS[i], 3)?;
            Ok([v[0], v[1], v[2]])
        };
        let mut model = self.template.clone();
        model.scale = real_values(inputs, 1, INPUTS[1], 1)?[0];
        model.rotation = three(2)?;
        model.n_cells = three(3)?;
        model.domains = match self.mosaic {
            MosaicInput::Fixed => model.domains,
            MosaicInput::Tilts => MosaicDomains::from_tilts(self.tilts(inputs)?),
            MosaicInput::Spread => MosaicDomains {
                spread_rad: self.spread(inputs)?,
                draws: model.domains.draws,
            },
        };
        Ok((model, fsq))
    }

    fn tilts(&self, inputs: &[&Value]) -> Result<Vec<Vec3>, String> {
        let t = real_input(inputs, 4, "tilts")?;
        match t.shape() {
            [d, 3] if *d > 0 => Ok(t
                .iter()
                .copied()
                .collect::<Vec<_>>()
                .chunks(3)
                .map(|c| [c[0], c[1], c[2]])
                .collect()),
            s => Err(format!(
                "input 4 (tilts) must have shape [domain, 3], got {s:?}"
            )),
        }
    }

    fn spread(&self, inputs: &[&Value]) -> Result<Vec3, String> {
        let s: Vec<f64> = real_input(inputs, 4, "spread")?.iter().copied().collect();
        match s.len() {
            1 => Ok([s[0]; 3]),
            3 => Ok([s[0], s[1], s[2]]),
            n => Err(format!("input 4 (spread) must hold 1 or 3 values, got {n}")),
        }
    }

    /// The mosaic input's gradient in that input's shape.
    fn mosaic_grad(&self, inputs: &[&Value], g: &SpotGradient) -> Result<Option<Value>, String> {
        let shape = match inputs.get(4) {
            Some(v) => v.shape().to_vec(),
            None => return Ok(None),
        };
        let values = match self.mosaic {
            MosaicInput::Fixed => return Ok(None),
            MosaicInput::Tilts => g.domain_draws.iter().flatten().copied().collect(),
            MosaicInput::Spread if shape.iter().product::<usize>() == 1 => {
                vec![g.mosaic_spread.iter().sum()]
            }
            MosaicInput::Spread => g.mosaic_spread.to_vec(),
        };
        Ok(Some(shaped(values, &shape)?))
    }

    /// Each shoebox's gradient, summed in shoebox order (fsq kept per shoebox).
    fn gradients(
        &self,
        model: &SpotModel,
        fsq: &[f64],
        upstream: &[f64],
    ) -> Result<(SpotGradient, Vec<f64>), String> {
        let n_ch = self.n_channels();
        let one = |i: usize| {
            let (r, up) = (
                &self.regions[i],
                &upstream[self.offsets[i]..self.offsets[i + 1]],
            );
            let f = &fsq[i * n_ch..(i + 1) * n_ch];
            if self.regions.len() == 1 {
                spot_vjp(model, f, r, up)
            } else {
                spot_vjp_serial(model, f, r, up)
            }
        };
        let parts = (0..self.regions.len())
            .into_par_iter()
            .map(one)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let mut fsq_grad = Vec::with_capacity(fsq.len());
        let mut total = parts[0].clone();
        for (i, p) in parts.iter().enumerate() {
            fsq_grad.extend_from_slice(&p.fsq);
            if i > 0 {
                add_gradient(&mut total, p);
            }
        }
        Ok((total, fsq_grad))
    }
}

/// Adds the image-level parts of `b` (everything but the per-shoebox fsq) into `a`.
fn add_gradient(a: &mut SpotGradient, b: &SpotGradient) {
    a.scale += b.scale;
    a.background += b.background;
    for i in 0..3 {
        a.n_cells[i] += b.n_cells[i];
        a.rotation[i] += b.rotation[i];
        a.mosaic_spread[i] += b.mosaic_spread[i];
    }
    for (x, y) in a.domain_draws.iter_mut().zip(&b.domain_draws) {
        for i in 0..3 {
            x[i] += y[i];
        }
    }
}

impl FusedOp for BraggSpotOp {
    fn name(&self) -> &'static str {
        "bragg_spot"
    }

    fn forward(&self, inputs: &[&Value]) -> Result<Value, String> {
        let (model, fsq) = self.model(inputs)?;
        let n_ch = self.n_channels();
        let mut out = vec![0.0; self.offsets[self.regions.len()]];
        if self.squeeze {
            render(&model, &ChannelFsq(&fsq), &self.regions[0], &mut out)
                .map_err(|e| e.to_string())?;
        } else {
            let mut chunks = Vec::with_capacity(self.regions.len());
            let mut rest = out.as_mut_slice();
            for r in &self.regions {
                let (head, tail) = rest.split_at_mut(r.len());
                chunks.push(head);
                rest = tail;
            }
            chunks
                .into_par_iter()
                .enumerate()
                .try_for_each(|(i, chunk)| {
                    let f = ChannelFsq(&fsq[i * n_ch..(i + 1) * n_ch]);
                    render_serial(&model, &f, &self.regions[i], chunk)
                })
                .map_err(|e| e.to_string())?;
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
        let (model, fsq) = self.model(inputs)?;
        let upstream: Vec<f64> = real_grad(grad, output.len())?.iter().copied().collect();
        let (g, fsq_grad) = self.gradients(&model, &fsq, &upstream)?;
        let shape = |i: usize| inputs[i].shape().to_vec();
        let mut grads = vec![
            Some(shaped(fsq_grad, &shape(0))?),
            Some(shaped(vec![g.scale], &shape(1))?),
            Some(shaped(g.rotation.to_vec(), &shape(2))?),
            Some(shaped(g.n_cells.to_vec(), &shape(3))?),
        ];
        if self.mosaic != MosaicInput::Fixed {
            grads.push(self.mosaic_grad(inputs, &g)?);
        }
        Ok(grads)
    }
}
