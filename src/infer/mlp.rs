//! A multilayer perceptron whose weights live in one block of the flat parameter vector: the
//! network of encoder guides and of correction-flow conditioners.
//!
//! Layout: layer by layer, W (row-major, input × output) then b. Guarantees: `init` draws the
//! hidden weights from a fixed-seed Glorot-uniform distribution and sets the biases and the
//! whole output layer to zero, so the network's output is exactly 0 at initialization (an
//! encoder starts at the mean-field guide, a flow at the identity) and a run depends only on
//! its seed.

use crate::tape::linalg::Activation;
use crate::tape::{NodeId, Tape, TapeError};
use ndarray::{ArrayD, IxDyn};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

/// Widths (input, hidden..., output) and the hidden-layer activation; the output is linear.
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp {
    /// Widths: input, hidden..., output.
    pub widths: Vec<usize>,
    /// Hidden-layer activation.
    pub activation: Activation,
}

impl Mlp {
    /// Weights and biases of every layer.
    pub fn n_params(&self) -> usize {
        self.widths.windows(2).map(|w| w[0] * w[1] + w[1]).sum()
    }

    /// Layers with weights (the number of leaves is twice this).
    pub fn n_layers(&self) -> usize {
        self.widths.len().saturating_sub(1)
    }

    /// Fixed-seed Glorot-uniform hidden weights, zero biases, zero output layer.
    pub fn init(&self, block: &mut [f64], seed: u64) {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut pos = 0;
        let layers = self.n_layers();
        for (l, w) in self.widths.windows(2).enumerate() {
            let (n_in, n_out) = (w[0], w[1]);
            let a = (6.0 / (n_in + n_out) as f64).sqrt();
            for x in &mut block[pos..pos + n_in * n_out] {
                *x = if l + 1 == layers {
                    0.0
                } else {
                    a * (2.0 * rng.random::<f64>() - 1.0)
                };
            }
            pos += n_in * n_out;
            block[pos..pos + n_out].fill(0.0);
            pos += n_out;
        }
    }

    /// One leaf per weight matrix and bias of `block`, with its offset in the block.
    pub fn weight_leaves(&self, t: &mut Tape, block: &[f64]) -> Vec<(usize, NodeId)> {
        let mut leaves = Vec::with_capacity(2 * self.n_layers());
        let mut pos = 0;
        for w in self.widths.windows(2) {
            for shape in [vec![w[0], w[1]], vec![w[1]]] {
                let n: usize = shape.iter().product();
                let a = ArrayD::from_shape_vec(IxDyn(&shape), block[pos..pos + n].to_vec())
                    .unwrap_or_default();
                leaves.push((pos, t.leaf_real(a)));
                pos += n;
            }
        }
        leaves
    }

    /// The network applied to the rows of `x` (rows × widths[0]) with the leaves of
    /// [`Mlp::weight_leaves`]; rows × output width.
    pub fn forward(
        &self,
        t: &mut Tape,
        weights: &[(usize, NodeId)],
        x: NodeId,
    ) -> Result<NodeId, TapeError> {
        let layers = self.n_layers();
        let mut h = x;
        for l in 0..layers {
            let act = if l + 1 == layers {
                Activation::Identity
            } else {
                self.activation
            };
            h = t.dense(h, weights[2 * l].1, weights[2 * l + 1].1, act)?;
        }
        Ok(h)
    }
}
