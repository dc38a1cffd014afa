//! Amortized guides: an MLP maps each plate instance's data to the location and scale of its
//! latent's normal guide, so the guide's parameters are the network's weights, shared by all
//! instances, instead of two numbers per instance.
//!
//! In: the inputs (data expressions evaluated at the instance; for a vectorized plate, one row
//! per instance), the layer widths, the activation. Out: a [`GuideDraw`] whose single leaf is the
//! flat weight block. Guarantees: the output layer starts at zero, so at initialization every
//! instance's guide is the mean-field start (location at the prior centre, scale 0.1× the prior
//! scale); the location moves in units of the prior scale (loc = centre + s·o), as mean-field
//! locations do under Adam's step scaling; the hidden weights start from a fixed-seed Glorot draw,
//! so a run never depends on anything but its seed.

use super::guide::{GuideDraw, SiteBlock};
use super::mlp::Mlp;
use super::model::Expr;
use crate::tape::{NodeId, Tape, TapeError};
use ndarray::{ArrayD, IxDyn};
use rand::rngs::Xoshiro256PlusPlus;

/// An encoder guide of one latent site.
#[derive(Clone, Debug)]
pub struct EncoderSpec {
    /// Encoder declaration name.
    pub name: String,
    /// Data inputs, each flattened per row and concatenated.
    pub inputs: Vec<Expr>,
    /// The network: widths input, hidden..., output (= 2 × values per row).
    pub net: Mlp,
    /// Rows evaluated together (the size of a vectorized plate; 1 per engine instance).
    pub rows: usize,
    /// Unconstrained location of the guide at initialization (the prior's centre).
    pub centre: f64,
    /// Prior scale s: the location is centre + s·output (1 when unknown).
    pub loc_unit: f64,
    /// Raw (softplus⁻¹) scale of the guide at initialization.
    pub raw_scale: f64,
}

impl EncoderSpec {
    /// Weights and biases of the network.
    pub fn n_params(&self) -> usize {
        self.net.n_params()
    }

    /// Fixed-seed Glorot-uniform hidden weights, zero biases, zero output layer.
    pub fn init(&self, block: &mut [f64], seed: u64) {
        self.net.init(block, seed);
    }

    /// The input matrix (rows × width 0) from the evaluated inputs.
    pub fn input_matrix(&self, values: &[&ArrayD<f64>]) -> Result<ArrayD<f64>, String> {
        let mut flat = Vec::with_capacity(self.rows * self.net.widths[0]);
        let per_row: Vec<usize> = values
            .iter()
            .map(|v| {
                if self.rows > 1 {
                    v.len() / self.rows
                } else {
                    v.len()
                }
            })
            .collect();
        if per_row.iter().sum::<usize>() != self.net.widths[0]
            || values
                .iter()
                .zip(&per_row)
                .any(|(v, k)| v.len() != k * self.rows)
        {
            let shapes: Vec<Vec<usize>> = values.iter().map(|v| v.shape().to_vec()).collect();
            return Err(format!(
                "encoder `{}`: inputs of shapes {shapes:?} do not give {} rows of {} values",
                self.name, self.rows, self.net.widths[0]
            ));
        }
        for r in 0..self.rows {
            for (v, k) in values.iter().zip(&per_row) {
                let s = v.as_slice_memory_order().ok_or("non-contiguous input")?;
                flat.extend_from_slice(&s[r * k..(r + 1) * k]);
            }
        }
        ArrayD::from_shape_vec(IxDyn(&[self.rows, self.net.widths[0]]), flat)
            .map_err(|e| e.to_string())
    }

    /// One leaf per weight matrix and bias of `block`, with its offset in the block.
    pub fn weight_leaves(&self, t: &mut Tape, block: &[f64]) -> Vec<(usize, NodeId)> {
        self.net.weight_leaves(t, block)
    }

    /// u = loc(x) + softplus(raw(x)) ε for the site of `b`, from the weight leaves (made by
    /// [`EncoderSpec::weight_leaves`], and shared by every instance on one tape).
    pub fn draw(
        &self,
        t: &mut Tape,
        b: &SiteBlock,
        weights: &[(usize, NodeId)],
        x: ArrayD<f64>,
        rng: &mut Xoshiro256PlusPlus,
    ) -> Result<GuideDraw, TapeError> {
        let x = t.constant_real(x);
        let h = self.net.forward(t, weights, x)?;
        let d = self.net.widths[self.net.n_layers()] / 2;
        let o_loc = t.gather(h, 1, &(0..d).collect::<Vec<_>>())?;
        let o_raw = t.gather(h, 1, &(d..2 * d).collect::<Vec<_>>())?;
        let loc = t.scale(o_loc, self.loc_unit)?;
        let loc = t.shift(loc, self.centre)?;
        let loc = t.reshape(loc, &b.shape)?;
        let raw = t.shift(o_raw, self.raw_scale)?;
        let raw = t.reshape(raw, &b.shape)?;
        super::guide::normal_draw(t, loc, raw, &b.shape, rng)
    }
}
