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
        self.glorot(block, seed, true);
    }

    /// Glorot-uniform weights (the output layer's zero when `zero_output`), zero biases.
    fn glorot(&self, block: &mut [f64], seed: u64, zero_output: bool) {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut pos = 0;
        let layers = self.n_layers();
        for (l, w) in self.widths.windows(2).enumerate() {
            let (n_in, n_out) = (w[0], w[1]);
            let a = (6.0 / (n_in + n_out) as f64).sqrt();
            let zero = zero_output && l + 1 == layers;
            for x in &mut block[pos..pos + n_in * n_out] {
                *x = if zero {
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

/// A permutation-invariant network over a set of element rows (deep sets, Zaheer et al. 2017,
/// with mean pooling): out = ρ([mean_j φ(x_j), c]), φ applied to every element row x_j, c the
/// instance's own inputs (none when ρ's input width is φ's output width). For the guide of an
/// image-level latent from the image's shoeboxes.
///
/// Layout: φ's layers, then ρ's, each as in [`Mlp`]. Guarantees: every φ layer applies the
/// activation (the embedding is non-linear) and starts Glorot-uniform; ρ starts as [`Mlp::init`]
/// does, with a zero output layer, so the network's output is exactly 0 at initialization; the
/// output does not depend on the order of the elements (up to rounding of the mean); an empty
/// set pools to zeros.
#[derive(Clone, Debug, PartialEq)]
pub struct DeepSet {
    /// The element network: element width, hidden..., embedding width.
    pub phi: Mlp,
    /// The pooled network: embedding width + own width, hidden..., output width.
    pub rho: Mlp,
}

impl DeepSet {
    /// Weights and biases of φ and ρ.
    pub fn n_params(&self) -> usize {
        self.phi.n_params() + self.rho.n_params()
    }

    /// Width of the pooled embedding.
    pub fn embedding_width(&self) -> usize {
        self.phi.widths.last().copied().unwrap_or(0)
    }

    /// Glorot-uniform φ (every layer), then ρ as [`Mlp::init`] (zero output layer).
    pub fn init(&self, block: &mut [f64], seed: u64) {
        let n_phi = self.phi.n_params();
        self.phi.glorot(&mut block[..n_phi], seed, false);
        self.rho.init(&mut block[n_phi..], seed ^ 0x0005_eed0_fa11);
    }

    /// The leaves of φ then ρ, offsets relative to the start of the block.
    pub fn weight_leaves(&self, t: &mut Tape, block: &[f64]) -> Vec<(usize, NodeId)> {
        let n_phi = self.phi.n_params();
        let mut leaves = self.phi.weight_leaves(t, &block[..n_phi]);
        leaves.extend(
            self.rho
                .weight_leaves(t, &block[n_phi..])
                .into_iter()
                .map(|(o, n)| (o + n_phi, n)),
        );
        leaves
    }

    /// ρ([mean of φ over the rows of `elements` (n × element width), `own` (1 × own width)]),
    /// 1 × output width.
    pub fn forward(
        &self,
        t: &mut Tape,
        weights: &[(usize, NodeId)],
        elements: NodeId,
        own: Option<NodeId>,
    ) -> Result<NodeId, TapeError> {
        let (phi_w, rho_w) = weights.split_at(2 * self.phi.n_layers());
        let emb = self.embedding_width();
        let n = t.shape(elements).first().copied().unwrap_or(0);
        let pooled = if n == 0 || self.phi.n_layers() == 0 {
            t.constant_real(ArrayD::zeros(IxDyn(&[1, emb])))
        } else {
            let mut h = elements;
            for l in 0..self.phi.n_layers() {
                h = t.dense(h, phi_w[2 * l].1, phi_w[2 * l + 1].1, self.phi.activation)?;
            }
            let m = t.mean_axis(h, 0)?;
            t.reshape(m, &[1, emb])?
        };
        let x = match own {
            Some(c) => t.concat(&[pooled, c], 1)?,
            None => pooled,
        };
        self.rho.forward(t, rho_w, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> DeepSet {
        DeepSet {
            phi: Mlp {
                widths: vec![3, 5, 4],
                activation: Activation::Tanh,
            },
            rho: Mlp {
                widths: vec![4 + 2, 6, 2],
                activation: Activation::Tanh,
            },
        }
    }

    fn rows(n: usize, w: usize, shift: f64) -> ArrayD<f64> {
        ArrayD::from_shape_fn(IxDyn(&[n, w]), |i| {
            ((i[0] * 7 + i[1] * 3) as f64 * 0.37 + shift).sin()
        })
    }

    /// The output and the gradient of sum(out) with respect to every weight.
    fn run(d: &DeepSet, block: &[f64], x: &ArrayD<f64>) -> (Vec<f64>, Vec<f64>) {
        let mut t = Tape::new();
        let leaves = d.weight_leaves(&mut t, block);
        let e = t.constant_real(x.clone());
        let c = t.constant_real(rows(1, 2, 0.5));
        let out = d.forward(&mut t, &leaves, e, Some(c)).unwrap();
        let values = t.real(out).unwrap().iter().copied().collect();
        let total = t.sum(out).unwrap();
        t.backward(total).unwrap();
        let mut grad = vec![0.0; block.len()];
        for (offset, leaf) in &leaves {
            for (k, g) in t.grad_real(*leaf).unwrap().iter().enumerate() {
                grad[offset + k] = *g;
            }
        }
        (values, grad)
    }

    #[test]
    fn deep_set_starts_at_zero_and_ignores_element_order() {
        let d = net();
        let mut block = vec![0.0; d.n_params()];
        d.init(&mut block, 3);
        let x = rows(5, 3, 0.0);
        assert_eq!(run(&d, &block, &x).0, vec![0.0, 0.0]);
        // Move the zero output layer so the output depends on the elements.
        for (k, v) in block.iter_mut().enumerate().skip(d.phi.n_params()) {
            *v += 0.05 * ((k as f64) * 1.3).cos();
        }
        let reversed = ArrayD::from_shape_fn(IxDyn(&[5, 3]), |i| x[[4 - i[0], i[1]]]);
        let (a, b) = (run(&d, &block, &x).0, run(&d, &block, &reversed).0);
        assert!(a.iter().any(|v| v.abs() > 1e-3), "{a:?}");
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() <= 1e-14, "{a:?} vs {b:?}");
        }
        // A set of one element repeated pools to that element.
        let one = rows(1, 3, 0.0);
        let twice = ArrayD::from_shape_fn(IxDyn(&[2, 3]), |i| one[[0, i[1]]]);
        let (p, q) = (run(&d, &block, &one).0, run(&d, &block, &twice).0);
        assert!((p[0] - q[0]).abs() <= 1e-14 && (p[1] - q[1]).abs() <= 1e-14);
        // An empty set pools to zeros: finite, and the same as a set whose φ is zero.
        let empty = run(&d, &block, &ArrayD::zeros(IxDyn(&[0, 3]))).0;
        assert!(empty.iter().all(|v| v.is_finite()), "{empty:?}");
    }

    #[test]
    fn deep_set_gradients_match_central_differences() {
        let d = net();
        let mut block = vec![0.0; d.n_params()];
        d.init(&mut block, 11);
        for (k, v) in block.iter_mut().enumerate() {
            *v += 0.1 * ((k as f64) * 0.71).sin();
        }
        let x = rows(4, 3, 0.2);
        let (_, grad) = run(&d, &block, &x);
        let h = 1e-6;
        for k in 0..block.len() {
            let mut up = block.clone();
            up[k] += h;
            let mut down = block.clone();
            down[k] -= h;
            let f = |b: &[f64]| run(&d, b, &x).0.iter().sum::<f64>();
            let fd = (f(&up) - f(&down)) / (2.0 * h);
            assert!(
                (fd - grad[k]).abs() <= 1e-7 * (1.0 + fd.abs()),
                "weight {k}: tape {} vs central difference {fd}",
                grad[k]
            );
        }
    }
}
