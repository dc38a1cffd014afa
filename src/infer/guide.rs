//! Guides: the variational families of latents, their parameter layout in one flat vector,
//! and reparameterized draws on the tape.
//!
//! In: a model's latent sites. Out: a `ParamLayout` (where each site instance's parameters
//! live and how they start) and, per draw, the unconstrained sample u, log q(u) and the
//! parameter leaf whose gradient goes back into the flat gradient vector. Guarantees: scales
//! are softplus of raw parameters (always positive); the full-rank factor is lower-triangular
//! with a softplus diagonal; draws use only the noise passed in (no hidden randomness).

use super::lowrank::LowRankLogPdf;
use super::model::{GuideKind, Model, Site};
use crate::tape::elementwise::softplus;
use crate::tape::{NodeId, Tape, TapeError};
use ndarray::{ArrayD, IxDyn};
use rand::RngExt;
use rand::rngs::Xoshiro256PlusPlus;
use std::sync::Arc;

const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;
const INIT_SCALE: f64 = 0.1;

/// Where one latent site's guide parameters live.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SiteBlock {
    /// Site index in the model.
    pub site: usize,
    /// Offset of instance 0's block in the flat vector.
    pub offset: usize,
    /// Parameters per instance.
    pub per_instance: usize,
    /// Number of instances (product of the plate sizes).
    pub instances: usize,
    /// Elements of one instance's value.
    pub event: usize,
    /// Value shape of one instance.
    pub shape: Vec<usize>,
    /// Guide family.
    pub kind: GuideKind,
    /// Per-instance refinements after a shared block: 2 × event location and raw-scale
    /// offsets per instance for a semi-amortized encoder (`refine = true`), else 0.
    #[serde(default)]
    pub refine: usize,
}

impl SiteBlock {
    /// Offset of an instance's block (an encoder's one block serves every instance).
    pub fn instance_offset(&self, instance: usize) -> usize {
        if matches!(self.kind, GuideKind::Encoder | GuideKind::Flow) {
            return self.offset;
        }
        self.offset + instance * self.per_instance
    }

    /// Parameters the block takes in the flat vector.
    pub fn len(&self) -> usize {
        match self.kind {
            GuideKind::Encoder | GuideKind::Flow => {
                self.per_instance + self.refine * self.instances
            }
            // One centring logit shared by every instance and element, after their blocks.
            GuideKind::PartialCentring => self.per_instance * self.instances + 1,
            _ => self.per_instance * self.instances,
        }
    }

    /// Offset of a partially centred site's centring logit (shared by all its instances).
    pub fn centring_offset(&self) -> usize {
        self.offset + self.per_instance * self.instances
    }

    /// A partially centred site's centring λ = sigmoid(logit) from the flat parameters.
    pub fn centring(&self, params: &[f64]) -> f64 {
        crate::tape::elementwise::sigmoid(params[self.centring_offset()])
    }

    /// Offset of an instance's refinement (location offsets, then raw-scale offsets, each
    /// `event` long) when the block has them: they follow the shared block.
    pub fn refine_offset(&self, instance: usize) -> Option<usize> {
        (self.refine > 0).then(|| self.offset + self.per_instance + instance * self.refine)
    }

    /// True when the block holds no parameters.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The flat parameter vector's layout.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ParamLayout {
    /// Block of each site (None for observe sites).
    pub blocks: Vec<Option<SiteBlock>>,
    /// Total length.
    pub total: usize,
}

fn per_instance(kind: GuideKind, d: usize) -> usize {
    match kind {
        GuideKind::MeanField => 2 * d,
        GuideKind::PartialCentring => 2 * d,
        GuideKind::LowRank(r) => d * (r + 2),
        GuideKind::FullRank => d + d * (d + 1) / 2,
        GuideKind::Point => d,
        // Set from the network's widths in `ParamLayout::new`.
        GuideKind::Encoder | GuideKind::Flow => 0,
    }
}

/// Inverse of softplus, for initial raw scales.
pub fn softplus_inv(y: f64) -> f64 {
    y + (-(-y).exp_m1()).ln()
}

impl ParamLayout {
    /// Lays out every latent site's guide parameters.
    pub fn new(model: &Model) -> Self {
        let mut total = 0;
        let blocks = model
            .sites
            .iter()
            .enumerate()
            .map(|(i, site)| match site {
                Site::Observe(o) => o.correction.as_ref().map(|c| {
                    let block = SiteBlock {
                        site: i,
                        offset: total,
                        per_instance: c.n_params(),
                        instances: model.instances(o.plate),
                        event: 0,
                        shape: vec![],
                        kind: GuideKind::Flow,
                        refine: 0,
                    };
                    total += block.len();
                    block
                }),
                Site::Let(_) | Site::Factor(_) => None,
                Site::Latent(l) => {
                    let event = l.shape.iter().product();
                    let (per, refine) = match (&l.encoder, l.guide) {
                        (Some(e), GuideKind::Encoder) => {
                            (e.n_params(), if e.refine { 2 * event } else { 0 })
                        }
                        _ => (per_instance(l.guide, event), 0),
                    };
                    let block = SiteBlock {
                        site: i,
                        offset: total,
                        per_instance: per,
                        instances: model.instances(l.plate),
                        event,
                        shape: l.shape.clone(),
                        kind: l.guide,
                        refine,
                    };
                    total += block.len();
                    Some(block)
                }
            })
            .collect();
        ParamLayout { blocks, total }
    }

    /// Adam's step multiplier of every parameter: a latent whose prior scale s is known
    /// (`init_scale` = 0.1 s) moves its location in steps of s × the learning rate when s < 1,
    /// as if it were parametrized in units of its prior (`rot ~ Normal(0, 0.0005)` would
    /// otherwise jump by the learning rate in radians); everything else 1.
    pub fn step_scales(&self, model: &Model) -> Vec<f64> {
        let mut scales = vec![1.0; self.total];
        for (block, site) in self.blocks.iter().zip(&model.sites) {
            let (Some(b), Site::Latent(l)) = (block, site) else {
                continue;
            };
            let Some(s) = l.init_scale.map(|s| (s / INIT_SCALE).min(1.0)) else {
                continue;
            };
            if b.kind == GuideKind::Encoder {
                continue;
            }
            for inst in 0..b.instances {
                scales[b.instance_offset(inst)..][..b.event].fill(s);
            }
        }
        scales
    }

    /// Initial parameters: location at the constrained `init` (or 0 unconstrained), scales 0.1.
    pub fn init(&self, model: &Model) -> Vec<f64> {
        let mut params = vec![0.0; self.total];
        for (block, site) in self.blocks.iter().zip(&model.sites) {
            if let (Some(b), Site::Observe(o)) = (block, site)
                && let Some(c) = &o.correction
            {
                c.conditioner
                    .init(&mut params[b.offset..b.offset + b.len()], b.site as u64);
                continue;
            }
            let (Some(b), Site::Latent(l)) = (block, site) else {
                continue;
            };
            if let Some(e) = &l.encoder {
                // Refinement offsets start at zero: the guide starts as the network's.
                e.init(
                    &mut params[b.offset..b.offset + b.per_instance],
                    b.site as u64,
                );
                continue;
            }
            let loc = l.init.map_or(0.0, |v| l.constraint.inverse(v));
            let scale = l.init_scale.unwrap_or(INIT_SCALE);
            for inst in 0..b.instances {
                let p = &mut params[b.instance_offset(inst)..][..b.per_instance];
                init_block(b.kind, b.event, loc, scale, p);
            }
        }
        params
    }
}

fn init_block(kind: GuideKind, d: usize, loc: f64, scale: f64, p: &mut [f64]) {
    p[..d].fill(loc);
    let raw = softplus_inv(scale);
    match kind {
        GuideKind::MeanField | GuideKind::PartialCentring => p[d..].fill(raw),
        GuideKind::LowRank(r) => {
            // A small deterministic non-zero factor: at W = 0 the factor's gradient vanishes
            // by symmetry, and the run must not depend on an initialization RNG.
            for (k, w) in p[d..d + d * r].iter_mut().enumerate() {
                *w = 0.01 * (((k * 7) % 5) as f64 - 2.0);
            }
            p[d + d * r..].fill(raw);
        }
        GuideKind::FullRank => {
            for (k, (i, j)) in tril(d).enumerate() {
                p[d + k] = if i == j { raw } else { 0.0 };
            }
        }
        GuideKind::Point | GuideKind::Encoder | GuideKind::Flow => {}
    }
}

/// (row, column) of the lower triangle in row-major order.
pub(crate) fn tril(d: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..d).flat_map(|i| (0..=i).map(move |j| (i, j)))
}

/// One guide draw on the tape.
#[derive(Clone, Copy, Debug)]
pub struct GuideDraw {
    /// Parameter leaves with their offsets inside the instance's block.
    pub leaves: [Option<(usize, NodeId)>; 2],
    /// Unconstrained sample, shaped like the site.
    pub u: NodeId,
    /// log q(u) summed over the site (None for point guides).
    pub log_q: Option<NodeId>,
    /// Mean-field location and scale (for analytic KL).
    pub loc_scale: Option<(NodeId, NodeId)>,
}

fn range(start: usize, len: usize) -> Vec<usize> {
    (start..start + len).collect()
}

/// Draws u ~ q for one site instance; `block` is that instance's slice of the parameters.
pub fn draw(
    t: &mut Tape,
    b: &SiteBlock,
    block: &[f64],
    rng: &mut Xoshiro256PlusPlus,
) -> Result<GuideDraw, TapeError> {
    match b.kind {
        GuideKind::Point | GuideKind::MeanField | GuideKind::PartialCentring => {
            draw_diagonal(t, b, block, rng)
        }
        GuideKind::FullRank | GuideKind::LowRank(_) => draw_correlated(t, b, block, rng),
        GuideKind::Encoder | GuideKind::Flow => Err(TapeError::Op {
            op: "guide",
            label: String::new(),
            detail: "an encoder guide is drawn from its inputs (encoder::EncoderSpec::draw)".into(),
        }),
    }
}

fn shaped(shape: &[usize], v: &[f64]) -> ArrayD<f64> {
    shaped_owned(shape, v.to_vec())
}

fn shaped_owned(shape: &[usize], v: Vec<f64>) -> ArrayD<f64> {
    ArrayD::from_shape_vec(IxDyn(shape), v).unwrap_or_default()
}

/// Point and mean-field guides: leaves already in the site's shape, no gathers.
fn draw_diagonal(
    t: &mut Tape,
    b: &SiteBlock,
    block: &[f64],
    rng: &mut Xoshiro256PlusPlus,
) -> Result<GuideDraw, TapeError> {
    let d = b.event;
    let loc = t.leaf_real(shaped(&b.shape, &block[..d]));
    if b.kind == GuideKind::Point {
        return Ok(GuideDraw {
            leaves: [Some((0, loc)), None],
            u: loc,
            log_q: None,
            loc_scale: None,
        });
    }
    let raw = t.leaf_real(shaped(&b.shape, &block[d..2 * d]));
    let mut g = normal_draw(t, loc, raw, &b.shape, rng)?;
    g.leaves = [Some((0, loc)), Some((d, raw))];
    Ok(g)
}

/// u = loc + softplus(raw) ε with ε ~ N(0, I) of `shape` from `rng`, and log q(u); no leaves.
pub(crate) fn normal_draw(
    t: &mut Tape,
    loc: NodeId,
    raw: NodeId,
    shape: &[usize],
    rng: &mut Xoshiro256PlusPlus,
) -> Result<GuideDraw, TapeError> {
    let eps = super::rng::standard_normal(rng, shape);
    let base_lp: f64 = eps.iter().map(|e| -0.5 * e * e - LN_SQRT_2PI).sum();
    let scale = t.softplus(raw)?;
    let e = t.constant_real(eps);
    let se = t.mul(scale, e)?;
    let u = t.add(loc, se)?;
    let log_q = log_q_affine(t, scale, base_lp)?;
    Ok(GuideDraw {
        leaves: [None, None],
        u,
        log_q: Some(log_q),
        loc_scale: Some((loc, scale)),
    })
}

/// Draws for several instances at once (a chunked plate): leaves and u get a leading axis of
/// length `blocks.len()`; instance k's noise comes from `rngs[k]`, exactly as one-by-one draws.
pub fn draw_rows(
    t: &mut Tape,
    b: &SiteBlock,
    blocks: &[&[f64]],
    rngs: &mut [Xoshiro256PlusPlus],
) -> Result<GuideDraw, crate::infer::dist::DistError> {
    if !matches!(b.kind, GuideKind::Point | GuideKind::MeanField) {
        return Err(crate::infer::dist::DistError::Unsupported {
            family: "guide",
            detail: "chunked plates take mean-field or point guides".into(),
        });
    }
    let d = b.event;
    let mut shape = vec![blocks.len()];
    shape.extend_from_slice(&b.shape);
    // One buffer per tensor, no allocation per row.
    let rows = |range: std::ops::Range<usize>| -> Vec<f64> {
        let mut out = Vec::with_capacity(blocks.len() * range.len());
        for blk in blocks {
            out.extend_from_slice(&blk[range.clone()]);
        }
        out
    };
    let loc = t.leaf_real(shaped_owned(&shape, rows(0..d)));
    if b.kind == GuideKind::Point {
        return Ok(GuideDraw {
            leaves: [Some((0, loc)), None],
            u: loc,
            log_q: None,
            loc_scale: None,
        });
    }
    let raw = t.leaf_real(shaped_owned(&shape, rows(d..2 * d)));
    // Each row's draws from its own stream, in row-major order (as `rng::standard_normal`).
    let per_row: usize = b.shape.iter().product();
    let mut eps = Vec::with_capacity(rngs.len() * per_row);
    for r in rngs.iter_mut() {
        eps.extend((0..per_row).map(|_| r.sample::<f64, _>(rand_distr::StandardNormal)));
    }
    let base_lp: f64 = eps.iter().map(|e| -0.5 * e * e - LN_SQRT_2PI).sum();
    let scale = t.softplus(raw)?;
    let e = t.constant_real(shaped_owned(&shape, eps));
    let se = t.mul(scale, e)?;
    let u = t.add(loc, se)?;
    let log_q = log_q_affine(t, scale, base_lp)?;
    Ok(GuideDraw {
        leaves: [Some((0, loc)), Some((d, raw))],
        u,
        log_q: Some(log_q),
        loc_scale: Some((loc, scale)),
    })
}

/// Full-rank and low-rank guides: one flat leaf per instance, pieces gathered from it.
fn draw_correlated(
    t: &mut Tape,
    b: &SiteBlock,
    block: &[f64],
    rng: &mut Xoshiro256PlusPlus,
) -> Result<GuideDraw, TapeError> {
    let d = b.event;
    let leaf = t.leaf_real(shaped(&[block.len()], block));
    let loc = t.gather(leaf, 0, &range(0, d))?;
    let eps = super::rng::standard_normal(rng, &[d]);
    let base_lp: f64 = eps.iter().map(|e| -0.5 * e * e - LN_SQRT_2PI).sum();
    let (u, log_q) = match b.kind {
        GuideKind::LowRank(r) => {
            let w0 = t.gather(leaf, 0, &range(d, d * r))?;
            let w = t.reshape(w0, &[d, r])?;
            let raw = t.gather(leaf, 0, &range(d + d * r, d))?;
            let diag = t.softplus(raw)?;
            let e1 = t.constant_real(super::rng::standard_normal(rng, &[r]));
            let e2 = t.constant_real(eps);
            let we = t.matmul(w, e1)?;
            let de = t.mul(diag, e2)?;
            let s = t.add(we, de)?;
            let u = t.add(loc, s)?;
            (u, t.fused(Arc::new(LowRankLogPdf), &[u, loc, w, diag])?)
        }
        _ => {
            let (l, diag) = tril_factor(t, leaf, d)?;
            let e = t.constant_real(eps);
            let le = t.matmul(l, e)?;
            (t.add(loc, le)?, log_q_affine(t, diag, base_lp)?)
        }
    };
    let u = t.reshape(u, &b.shape)?;
    Ok(GuideDraw {
        leaves: [Some((0, leaf)), None],
        u,
        log_q: Some(log_q),
        loc_scale: None,
    })
}

/// log q(u) = Σ log N(ε) - Σ ln scale for u = loc + (triangular or diagonal) · ε.
fn log_q_affine(t: &mut Tape, scale_diag: NodeId, base_lp: f64) -> Result<NodeId, TapeError> {
    let ls = t.log(scale_diag)?;
    let s = t.sum(ls)?;
    let n = t.neg(s)?;
    t.shift(n, base_lp)
}

/// The lower-triangular factor L (d×d) and its positive diagonal from a full-rank block.
fn tril_factor(t: &mut Tape, leaf: NodeId, d: usize) -> Result<(NodeId, NodeId), TapeError> {
    let (mut diag_src, mut diag_dst, mut off_src, mut off_dst) = (vec![], vec![], vec![], vec![]);
    for (k, (i, j)) in tril(d).enumerate() {
        if i == j {
            diag_src.push(d + k);
            diag_dst.push(i * d + j);
        } else {
            off_src.push(d + k);
            off_dst.push(i * d + j);
        }
    }
    let raw = t.gather(leaf, 0, &diag_src)?;
    let diag = t.softplus(raw)?;
    let mut flat = t.scatter_add(diag, 0, &diag_dst, d * d)?;
    if !off_src.is_empty() {
        let off = t.gather(leaf, 0, &off_src)?;
        let off_flat = t.scatter_add(off, 0, &off_dst, d * d)?;
        flat = t.add(flat, off_flat)?;
    }
    Ok((t.reshape(flat, &[d, d])?, diag))
}

/// Mean and covariance of a Gaussian guide block in unconstrained space (for summaries).
pub fn gaussian_moments(b: &SiteBlock, block: &[f64]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let d = b.event;
    let loc = block[..d].to_vec();
    let mut cov = vec![vec![0.0; d]; d];
    match b.kind {
        GuideKind::Point | GuideKind::Encoder | GuideKind::Flow => {}
        // A partially centred guide's moments are those of its ũ, not of the latent.
        GuideKind::MeanField | GuideKind::PartialCentring => {
            (0..d).for_each(|i| cov[i][i] = softplus(block[d + i]).powi(2))
        }
        GuideKind::FullRank => {
            let mut l = vec![vec![0.0; d]; d];
            for (k, (i, j)) in tril(d).enumerate() {
                l[i][j] = if i == j {
                    softplus(block[d + k])
                } else {
                    block[d + k]
                };
            }
            for i in 0..d {
                for j in 0..d {
                    cov[i][j] = (0..d).map(|k| l[i][k] * l[j][k]).sum();
                }
            }
        }
        GuideKind::LowRank(r) => {
            for i in 0..d {
                for j in 0..d {
                    cov[i][j] = (0..r)
                        .map(|k| block[d + i * r + k] * block[d + j * r + k])
                        .sum();
                }
                cov[i][i] += softplus(block[d + d * r + i]).powi(2);
            }
        }
    }
    (loc, cov)
}
