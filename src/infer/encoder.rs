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
//!
//! An image-level encoder may also read sets (`[f(s) for s in image.shoeboxes]`: one row per
//! record of the image): its network is then a [`DeepSet`], ρ([mean_j φ(x_j), own inputs]), so
//! the guide does not depend on the order of the records and takes any number of them.

use super::guide::{GuideDraw, SiteBlock};
use super::mlp::{DeepSet, Mlp};
use super::model::Expr;
use crate::tape::{NodeId, Tape, TapeError};
use ndarray::{ArrayD, IxDyn};
use rand::rngs::Xoshiro256PlusPlus;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The network of an encoder guide.
#[derive(Clone, Debug, PartialEq)]
pub enum EncoderNet {
    /// An MLP over the instance's own inputs: widths input, hidden..., output.
    Mlp(Mlp),
    /// A deep set over the rows of the set inputs, with the own inputs joined after pooling.
    DeepSet(DeepSet),
}

impl EncoderNet {
    /// Weights and biases.
    pub fn n_params(&self) -> usize {
        match self {
            EncoderNet::Mlp(m) => m.n_params(),
            EncoderNet::DeepSet(d) => d.n_params(),
        }
    }

    /// Weight leaves (two per layer).
    pub fn n_leaves(&self) -> usize {
        match self {
            EncoderNet::Mlp(m) => 2 * m.n_layers(),
            EncoderNet::DeepSet(d) => 2 * (d.phi.n_layers() + d.rho.n_layers()),
        }
    }

    /// Width of the own inputs (after pooling, for a deep set).
    pub fn own_width(&self) -> usize {
        match self {
            EncoderNet::Mlp(m) => m.widths[0],
            EncoderNet::DeepSet(d) => d.rho.widths[0] - d.embedding_width(),
        }
    }

    /// Width of one element row of the set inputs (0 for an MLP).
    pub fn element_width(&self) -> usize {
        match self {
            EncoderNet::Mlp(_) => 0,
            EncoderNet::DeepSet(d) => d.phi.widths[0],
        }
    }

    /// Output width (2 × values per row).
    pub fn output_width(&self) -> usize {
        let m = match self {
            EncoderNet::Mlp(m) => m,
            EncoderNet::DeepSet(d) => &d.rho,
        };
        m.widths.last().copied().unwrap_or(0)
    }

    /// Fixed-seed initialization with a zero output layer.
    pub fn init(&self, block: &mut [f64], seed: u64) {
        match self {
            EncoderNet::Mlp(m) => m.init(block, seed),
            EncoderNet::DeepSet(d) => d.init(block, seed),
        }
    }

    /// One leaf per weight matrix and bias, with its offset in the block.
    pub fn weight_leaves(&self, t: &mut Tape, block: &[f64]) -> Vec<(usize, NodeId)> {
        match self {
            EncoderNet::Mlp(m) => m.weight_leaves(t, block),
            EncoderNet::DeepSet(d) => d.weight_leaves(t, block),
        }
    }
}

/// Own-input and element matrices by flat instance (shared by the clones of a spec).
pub type FeatureCache = Arc<Mutex<HashMap<usize, Features>>>;

/// An instance's own-input matrix and element matrix.
pub type Features = Arc<(ArrayD<f64>, Option<ArrayD<f64>>)>;

/// An encoder guide of one latent site.
#[derive(Clone, Debug)]
pub struct EncoderSpec {
    /// Encoder declaration name.
    pub name: String,
    /// Data inputs, each flattened per row and concatenated.
    pub inputs: Vec<Expr>,
    /// Set inputs (one row per record, the same records for each), flattened per record and
    /// joined along the row: the element rows of a [`EncoderNet::DeepSet`].
    pub set_inputs: Vec<Expr>,
    /// The network (output width 2 × values per row).
    pub net: EncoderNet,
    /// The features of a deep-set encoder by flat instance: its inputs are data, the same at
    /// every step, so each image's records are read and reduced once.
    pub feature_cache: FeatureCache,
    /// Rows evaluated together (the size of a vectorized plate; 1 per engine instance).
    pub rows: usize,
    /// Unconstrained location of the guide at initialization (the prior's centre).
    pub centre: f64,
    /// Prior scale s: the location is centre + s·output (1 when unknown).
    pub loc_unit: f64,
    /// Raw (softplus⁻¹) scale of the guide at initialization.
    pub raw_scale: f64,
    /// Semi-amortized (`refine = true`): every instance adds its own location and raw-scale
    /// offsets (starting at zero) to the network's output, so the network gives the starting
    /// point and the fit can still reach each instance's own optimum (Kim et al. 2018).
    pub refine: bool,
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
        let width = self.net.own_width();
        let mut flat = Vec::with_capacity(self.rows * width);
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
        if per_row.iter().sum::<usize>() != width
            || values
                .iter()
                .zip(&per_row)
                .any(|(v, k)| v.len() != k * self.rows)
        {
            let shapes: Vec<Vec<usize>> = values.iter().map(|v| v.shape().to_vec()).collect();
            return Err(format!(
                "encoder `{}`: inputs of shapes {shapes:?} do not give {} rows of {} values",
                self.name, self.rows, width
            ));
        }
        // Logical (row-major) order, whatever the arrays' memory layout.
        let values: Vec<_> = values.iter().map(|v| v.as_standard_layout()).collect();
        for r in 0..self.rows {
            for (v, k) in values.iter().zip(&per_row) {
                let s = v.as_slice().ok_or("non-contiguous input")?;
                flat.extend_from_slice(&s[r * k..(r + 1) * k]);
            }
        }
        ArrayD::from_shape_vec(IxDyn(&[self.rows, width]), flat).map_err(|e| e.to_string())
    }

    /// The own-input matrix and the element matrix (for a deep set) at `env`'s instance, whose
    /// flat index is `instance`. A deep set's features are computed once per instance (the
    /// instance of an engine-iterated plate, always the same records) and then cached; an MLP
    /// encoder's, which may serve different rows of a vectorized plate, every time.
    pub fn features(
        &self,
        t: &mut Tape,
        env: &super::model::Env,
        instance: usize,
        label: &str,
    ) -> Result<Features, TapeError> {
        let cached = matches!(self.net, EncoderNet::DeepSet(_));
        if cached && let Some(f) = self.lock_cache().get(&instance) {
            return Ok(f.clone());
        }
        let f = Arc::new(self.compute_features(t, env, label)?);
        if cached {
            self.lock_cache().insert(instance, f.clone());
        }
        Ok(f)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<usize, Features>> {
        self.feature_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn compute_features(
        &self,
        t: &mut Tape,
        env: &super::model::Env,
        label: &str,
    ) -> Result<(ArrayD<f64>, Option<ArrayD<f64>>), TapeError> {
        let fail = |detail| TapeError::Op {
            op: "encoder",
            label: label.to_string(),
            detail,
        };
        let evaluate = |t: &mut Tape, xs: &[Expr]| -> Result<Vec<ArrayD<f64>>, TapeError> {
            let nodes: Vec<NodeId> = xs
                .iter()
                .map(|e| env.eval(t, e))
                .collect::<Result<_, _>>()?;
            nodes.iter().map(|&n| t.real(n).cloned()).collect()
        };
        let own = evaluate(t, &self.inputs)?;
        let sets = evaluate(t, &self.set_inputs)?;
        let x = self
            .input_matrix(&own.iter().collect::<Vec<_>>())
            .map_err(fail)?;
        let e = self
            .element_matrix(&sets.iter().collect::<Vec<_>>())
            .map_err(fail)?;
        Ok((x, e))
    }

    /// The element matrix (records × element width) from the evaluated set inputs, each
    /// records × (its own dims); None for an MLP encoder.
    pub fn element_matrix(&self, sets: &[&ArrayD<f64>]) -> Result<Option<ArrayD<f64>>, String> {
        if sets.is_empty() {
            return Ok(None);
        }
        let n = sets[0].shape().first().copied().unwrap_or(0);
        let per: Vec<usize> = sets
            .iter()
            .map(|s| s.shape()[1..].iter().product())
            .collect();
        let width = self.net.element_width();
        if sets.iter().any(|s| s.shape().first() != Some(&n)) || per.iter().sum::<usize>() != width
        {
            let shapes: Vec<Vec<usize>> = sets.iter().map(|v| v.shape().to_vec()).collect();
            return Err(format!(
                "encoder `{}`: set inputs of shapes {shapes:?} do not give rows of {width} values \
                 for the same records",
                self.name
            ));
        }
        let mut flat = Vec::with_capacity(n * width);
        let sets: Vec<_> = sets.iter().map(|v| v.as_standard_layout()).collect();
        for r in 0..n {
            for (s, k) in sets.iter().zip(&per) {
                let v = s.as_slice().ok_or("non-contiguous input")?;
                flat.extend_from_slice(&v[r * k..(r + 1) * k]);
            }
        }
        ArrayD::from_shape_vec(IxDyn(&[n, width]), flat)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// One leaf per weight matrix and bias of `block`, with its offset in the block.
    pub fn weight_leaves(&self, t: &mut Tape, block: &[f64]) -> Vec<(usize, NodeId)> {
        self.net.weight_leaves(t, block)
    }

    /// u = loc(x) + softplus(raw(x)) ε for the site of `b`, from the weight leaves (made by
    /// [`EncoderSpec::weight_leaves`], and shared by every instance on one tape); `x` holds the
    /// own inputs, `elements` the element rows of a deep set; `refine` the instance's offsets
    /// (added to the network's location, in prior-scale units, and raw scale).
    pub fn draw(
        &self,
        t: &mut Tape,
        b: &SiteBlock,
        weights: &[(usize, NodeId)],
        features: &Features,
        refine: Option<[NodeId; 2]>,
        rng: &mut Xoshiro256PlusPlus,
    ) -> Result<GuideDraw, TapeError> {
        let (x, elements) = &**features;
        let h = match (&self.net, elements) {
            (EncoderNet::Mlp(m), _) => {
                let x = t.constant_real(x.clone());
                m.forward(t, weights, x)?
            }
            (EncoderNet::DeepSet(ds), Some(e)) => {
                let own = (!x.is_empty()).then(|| t.constant_real(x.clone()));
                let e = t.constant_real(e.clone());
                ds.forward(t, weights, e, own)?
            }
            (EncoderNet::DeepSet(_), None) => {
                return Err(TapeError::Op {
                    op: "encoder",
                    label: self.name.clone(),
                    detail: "a deep-set encoder without its set inputs".into(),
                });
            }
        };
        let d = self.net.output_width() / 2;
        let o_loc = t.gather(h, 1, &(0..d).collect::<Vec<_>>())?;
        let o_raw = t.gather(h, 1, &(d..2 * d).collect::<Vec<_>>())?;
        let mut loc = t.reshape(o_loc, &b.shape)?;
        let mut raw = t.reshape(o_raw, &b.shape)?;
        if let Some([d_loc, d_raw]) = refine {
            loc = t.add(loc, d_loc)?;
            raw = t.add(raw, d_raw)?;
        }
        let loc = t.scale(loc, self.loc_unit)?;
        let loc = t.shift(loc, self.centre)?;
        let raw = t.shift(raw, self.raw_scale)?;
        super::guide::normal_draw(t, loc, raw, &b.shape, rng)
    }
}

/// The leaves of an instance's refinement offsets of a semi-amortized encoder (location, then
/// raw scale, each shaped like the site) from its `2 × event` parameters.
pub fn refine_leaves(t: &mut Tape, b: &SiteBlock, offsets: &[f64]) -> [NodeId; 2] {
    debug_assert_eq!(offsets.len(), 2 * b.event);
    let leaf = |t: &mut Tape, v: &[f64]| {
        t.leaf_real(ArrayD::from_shape_vec(IxDyn(&b.shape), v.to_vec()).unwrap_or_default())
    };
    [leaf(t, &offsets[..b.event]), leaf(t, &offsets[b.event..])]
}
