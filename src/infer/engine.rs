//! One particle of one SVI step: draw every latent from its guide, score model and guide on
//! tapes, and return the log-weight and its gradient with respect to all guide parameters.
//!
//! In: model, layout, parameters, the step's random-stream coordinates, a reducer. Out: a
//! `Particle` (log-weight = log p(x, z) - log q(z) with mini-batch scaling, and its gradient).
//! Guarantees: global sites go on one tape; each instance of a top-level plate (with its
//! nested plates) on its own tape, in parallel under rayon; per-instance results are summed
//! in instance order and then passed through the `GradientReduce`, so the result does not
//! depend on the number of threads.

use super::dist::Dist;
use super::encoder::refine_leaves;
use super::error::InferError;
use super::guide::{ParamLayout, draw, draw_rows};
use super::model::{Env, GuideKind, LatentSite, Model, ObserveSite, PlateId, Site};
use super::reduce::GradientReduce;
use super::rng::{StreamKey, subsample};
use crate::tape::{NodeId, Tape, TapeError, Value};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

/// Site-index offset of the random streams that pick mini-batches (keeps them apart from site streams).
const SUBSAMPLE_STREAM: u64 = 1 << 40;

/// Which bound is estimated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Objective {
    /// The ELBO averaged over particles.
    Elbo,
    /// The importance-weighted bound log (1/K) Σ w_k.
    Iwae,
}

/// Where the randomness of this particle comes from, and how terms are computed.
#[derive(Clone, Copy, Debug)]
pub struct ParticleSpec {
    /// Run seed.
    pub seed: u64,
    /// Step.
    pub step: u64,
    /// Particle index.
    pub particle: u64,
    /// Use closed-form KL for Normal priors with mean-field guides on the real line.
    pub analytic_kl: bool,
}

/// Draws from some latent sites' priors in place of their guides' draws, for the mode
/// search's starts (`super::search`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// The sites.
    pub sites: Vec<usize>,
    /// Which start: the k-th draw from the priors (its streams' particle coordinate).
    pub candidate: u64,
    /// Step coordinate of the prior draws' random streams.
    pub stream_step: u64,
}

/// One instance's value for a mode search, with the values proposed for the searched site.
#[derive(Clone, Debug)]
pub struct InstanceScore {
    /// log p(x, z) - log q(z) of the instance and its nested plates, unscaled.
    pub value: f64,
    /// (site, flat instance, constrained value) of every proposed value in this instance.
    pub proposals: Vec<(usize, usize, Vec<f64>)>,
}

/// One particle's log-weight and its gradient.
#[derive(Clone, Debug)]
pub struct Particle {
    /// log p(x, z) - log q(z) (scaled for mini-batches; KL terms in closed form if asked).
    pub log_weight: f64,
    /// d log_weight / d params.
    pub grad: Vec<f64>,
    /// Which parameters took part (mini-batches leave the other instances' guides untouched).
    pub touched: Vec<bool>,
}

/// Where a parameter leaf's gradient goes in the flat vector.
#[derive(Clone, Debug)]
enum Target {
    /// The whole leaf, row-major, from this offset.
    At(usize),
    /// Row k of the leaf (leading axis = instances of a chunked plate) from offset k.
    Rows(Vec<usize>),
}

/// Appends a leaf gradient to `values` and records where its pieces go in the flat
/// vector as (offset, start in `values`, length); one buffer per instance, not one per row.
fn pieces(target: &Target, g: &ArrayD<f64>, spans: &mut Vec<Span>, values: &mut Vec<f64>) {
    let start = values.len();
    values.extend(g.iter().copied());
    let n = values.len() - start;
    match target {
        Target::At(o) => spans.push((*o, start, n)),
        Target::Rows(offsets) => {
            let per = (n / offsets.len().max(1)).max(1);
            spans.extend(
                offsets
                    .iter()
                    .enumerate()
                    .map(|(k, o)| (*o, start + k * per, per.min(n.saturating_sub(k * per))))
                    .filter(|s| s.2 > 0),
            );
        }
    }
}

/// (offset in the flat parameter vector, start in an instance's gradient values, length).
type Span = (usize, usize, usize);

/// Tapes kept per worker thread across steps at most.
const POOLED_TAPES: usize = 4;

thread_local! {
    /// Cleared tapes of this worker: their arenas, gradient buffers and spare value buffers
    /// outlive a step, so a static model structure stops allocating after the first step.
    static TAPE_POOL: std::cell::RefCell<Vec<Tape>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A tape borrowed from the worker's pool and given back when dropped. Every use starts
/// with `Tape::clear`, so which pooled tape a chunk gets never changes its result.
struct PooledTape(Tape);

impl PooledTape {
    fn take() -> Self {
        PooledTape(TAPE_POOL.with(|p| p.borrow_mut().pop()).unwrap_or_default())
    }
}

impl Drop for PooledTape {
    fn drop(&mut self) {
        let tape = std::mem::take(&mut self.0);
        TAPE_POOL.with(|p| {
            let mut pool = p.borrow_mut();
            if pool.len() < POOLED_TAPES {
                pool.push(tape);
            }
        });
    }
}

/// What one plate instance (with its nested plates) returns.
struct InstanceResult {
    value: f64,
    proposals: Vec<(usize, usize, Vec<f64>)>,
    global_grads: Vec<ArrayD<f64>>,
    param_spans: Vec<Span>,
    param_values: Vec<f64>,
}

/// Everything shared by the evaluation of one particle.
pub struct Evaluator<'a> {
    /// The model.
    pub model: &'a Model,
    /// Parameter layout.
    pub layout: &'a ParamLayout,
    /// Current parameters.
    pub params: &'a [f64],
    /// Randomness and options.
    pub spec: ParticleSpec,
    /// Sites whose values are proposed instead of drawn from their guides (None in SVI steps).
    pub proposal: Option<&'a Proposal>,
}

impl Evaluator<'_> {
    /// Runs one particle.
    pub fn particle(&self, reducer: &dyn GradientReduce) -> Result<Particle, InferError> {
        // A pooled tape keeps its buffers from step to step (large deferred values and
        // gradients would otherwise be fresh, page-faulting allocations every step).
        let mut pooled = PooledTape::take();
        let tape = &mut pooled.0;
        tape.clear();
        let mut env = Env::new(self.model);
        let mut leaves = Vec::new();
        let global = self.sites_of(tape, &mut env, None, 1.0, &mut leaves)?;
        let (global_ids, inputs) = global_inputs(tape, &env);
        let mut buffer =
            vec![0.0; 1 + inputs.iter().map(Value::len).sum::<usize>() + self.layout.total];
        let mut touched = vec![false; self.layout.total];
        for plate in self.top_plates() {
            self.run_plate(plate, &global_ids, &inputs, &mut buffer, &mut touched)?;
        }
        reducer.all_reduce_sum(&mut buffer);
        for (target, leaf) in &leaves {
            if let Target::At(offset) = target {
                touched[*offset..*offset + tape.value(*leaf).len()].fill(true);
            }
        }
        let mut particle = self.finish(tape, global, &global_ids, &leaves, buffer)?;
        particle.touched = touched;
        Ok(particle)
    }

    /// log p(x, z) - log q(z) of one particle, forward only (no gradients), summed in the
    /// order `particle` sums it, so the two agree to the bit: for end-of-fit summaries.
    pub fn log_weight(&self) -> Result<f64, InferError> {
        self.forward_value(false)
    }

    /// log p(x, z) - log q(z) over all the data, forward only: every instance of each
    /// top-level plate unscaled, whatever its mini-batch (nested plates still draw theirs).
    /// For comparisons that must not depend on which instances a step picked (the profile
    /// scan, `super::scan`).
    pub fn full_log_weight(&self) -> Result<f64, InferError> {
        self.forward_value(true)
    }

    /// The forward value over this step's mini-batches, or over all instances if `all`.
    fn forward_value(&self, all: bool) -> Result<f64, InferError> {
        let mut pooled = PooledTape::take();
        let tape = &mut pooled.0;
        tape.clear();
        let mut env = Env::new(self.model);
        let global = self.sites_of(tape, &mut env, None, 1.0, &mut Vec::new())?;
        let (global_ids, inputs) = global_inputs(tape, &env);
        let mut plates_sum = 0.0;
        for plate in self.top_plates() {
            let results = if all {
                let every: Vec<usize> = (0..self.model.plates[plate].size).collect();
                self.rows_results(plate, &every, 1.0, (&global_ids, &inputs), false)
            } else {
                self.plate_results(plate, &global_ids, &inputs, false)
            };
            for r in results {
                plates_sum += r?.value;
            }
        }
        let global_value = tape
            .scalar_value(global)
            .map_err(|e| InferError::from_tape(e, self.spec.step, "global".into()))?;
        Ok(global_value + plates_sum)
    }

    /// The value of every instance of top-level `plate` (or of its `restrict` list; with its
    /// nested plates, all of them, unscaled), forward only, with `self.proposal`'s values in place of its site's
    /// guide draws: one result per instance, in instance order. The global sites are drawn
    /// once, from this evaluator's streams, so scores of different proposals share them.
    pub fn instance_scores(
        &self,
        plate: PlateId,
    ) -> Result<Vec<Result<InstanceScore, InferError>>, InferError> {
        let p = &self.model.plates[plate];
        if p.parent.is_some() || p.chunk.is_some() {
            return Err(InferError::Search(format!(
                "scores per instance of plate `{}`: only for unchunked top-level plates",
                p.name
            )));
        }
        let mut pooled = PooledTape::take();
        let tape = &mut pooled.0;
        tape.clear();
        let mut env = Env::new(self.model);
        self.sites_of(tape, &mut env, None, 1.0, &mut Vec::new())?;
        let (global_ids, inputs) = global_inputs(tape, &env);
        let instances: Vec<usize> = match &p.restrict {
            Some(only) => only.to_vec(),
            None => (0..p.size).collect(),
        };
        Ok(instances
            .par_iter()
            .map_init(PooledTape::take, |t, &i| {
                let r = self.instance(&mut t.0, plate, &[i], 1.0, (&global_ids, &inputs), false)?;
                Ok(InstanceScore {
                    value: r.value,
                    proposals: r.proposals,
                })
            })
            .collect())
    }

    /// The values proposed on this tape, read back as numbers.
    fn proposed_values(
        &self,
        tape: &Tape,
        env: &Env,
    ) -> Result<Vec<(usize, usize, Vec<f64>)>, InferError> {
        env.proposals
            .iter()
            .map(|&(site, flat, node)| {
                let v = tape.real(node).map_err(|e| {
                    InferError::from_tape(e, self.spec.step, self.describe_env(env))
                })?;
                Ok((site, flat, v.iter().copied().collect()))
            })
            .collect()
    }

    fn top_plates(&self) -> Vec<PlateId> {
        (0..self.model.plates.len())
            .filter(|&p| self.model.plates[p].parent.is_none())
            .collect()
    }

    /// The global backward pass, seeded by the plates' reduced gradients.
    fn finish(
        &self,
        tape: &mut Tape,
        global: NodeId,
        global_ids: &[(usize, NodeId)],
        leaves: &[(Target, NodeId)],
        buffer: Vec<f64>,
    ) -> Result<Particle, InferError> {
        let step = self.spec.step;
        let log_weight = tape
            .scalar_value(global)
            .map_err(|e| InferError::from_tape(e, step, "global".into()))?
            + buffer[0];
        let mut seeds = vec![(
            global,
            Value::Real(ArrayD::from_elem(tape.shape(global), 1.0)),
        )];
        let mut pos = 1;
        for (_, node) in global_ids {
            let shape = tape.shape(*node).to_vec();
            let n = tape.value(*node).len();
            let g =
                ArrayD::from_shape_vec(shape, buffer[pos..pos + n].to_vec()).unwrap_or_default();
            seeds.push((*node, Value::Real(g)));
            pos += n;
        }
        tape.backward_seeded(&seeds)
            .map_err(|e| InferError::from_tape(e, step, "global".into()))?;
        if let Some(e) = tape.first_non_finite_grad() {
            return Err(InferError::from_tape(e, step, "global".into()));
        }
        let mut grad = buffer;
        grad.drain(..pos);
        for (target, leaf) in leaves {
            let Target::At(offset) = target else { continue };
            let g = tape
                .grad_real(*leaf)
                .map_err(|e| InferError::from_tape(e, step, "global".into()))?;
            grad[*offset..][..g.len()]
                .iter_mut()
                .zip(g.iter())
                .for_each(|(a, b)| *a += b);
        }
        Ok(Particle {
            log_weight,
            grad,
            touched: Vec::new(),
        })
    }

    /// The stream that picks this step's mini-batch of `plate` inside parent instance `parent_flat`.
    fn batch_rng(&self, plate: PlateId, parent_flat: usize) -> rand::rngs::Xoshiro256PlusPlus {
        StreamKey {
            seed: self.spec.seed,
            step: self.spec.step,
            particle: 0,
            site: SUBSAMPLE_STREAM + plate as u64,
            instance: parent_flat as u64,
        }
        .rng()
    }

    /// The instances of a plate drawn this step (all of them without subsampling).
    fn batch(&self, plate: PlateId, parent_flat: usize) -> (Vec<usize>, f64) {
        let p = &self.model.plates[plate];
        if p.ragged.is_some() {
            let range = self.model.child_instances(plate, parent_flat);
            let n = range.len();
            return match p.subsample {
                // At most b instances of each parent's range, scaled by its own n / b.
                Some(b) if b < n => {
                    let picked = subsample(&mut self.batch_rng(plate, parent_flat), n, b);
                    (
                        picked.into_iter().map(|k| range.start + k).collect(),
                        n as f64 / b as f64,
                    )
                }
                _ => (range.collect(), 1.0),
            };
        }
        if let Some(only) = &p.restrict {
            return (only.to_vec(), 1.0);
        }
        match p.subsample {
            None => ((0..p.size).collect(), 1.0),
            Some(b) => (
                subsample(&mut self.batch_rng(plate, parent_flat), p.size, b),
                p.size as f64 / b as f64,
            ),
        }
    }

    /// Evaluates every instance of a top-level plate in parallel and adds the results, in
    /// instance order, into `buffer` = [value, global-site gradients, parameter gradients].
    fn run_plate(
        &self,
        plate: PlateId,
        global_ids: &[(usize, NodeId)],
        inputs: &[Value],
        buffer: &mut [f64],
        touched: &mut [bool],
    ) -> Result<(), InferError> {
        let results = self.plate_results(plate, global_ids, inputs, true);
        let globals_len: usize = inputs.iter().map(Value::len).sum();
        for r in results {
            let r = r?;
            buffer[0] += r.value;
            let mut pos = 1;
            for g in &r.global_grads {
                buffer[pos..pos + g.len()]
                    .iter_mut()
                    .zip(g.iter())
                    .for_each(|(a, b)| *a += b);
                pos += g.len();
            }
            let params_grad = &mut buffer[1 + globals_len..];
            for &(offset, start, len) in &r.param_spans {
                // One value per row of a chunked mean-field plate: the common case, thousands
                // of spans per step, added without building slices.
                if len == 1 {
                    touched[offset] = true;
                    params_grad[offset] += r.param_values[start];
                    continue;
                }
                let g = &r.param_values[start..start + len];
                touched[offset..offset + len].fill(true);
                let dst = &mut params_grad[offset..][..len];
                dst.iter_mut().zip(g.iter()).for_each(|(a, b)| *a += b);
            }
        }
        Ok(())
    }

    /// This step's instances of top-level `plate`, chunk by chunk in parallel, the results in
    /// chunk order (fixed chunk boundaries, never thread-dependent, keep them bit-identical).
    fn plate_results(
        &self,
        plate: PlateId,
        global_ids: &[(usize, NodeId)],
        inputs: &[Value],
        grad: bool,
    ) -> Vec<Result<InstanceResult, InferError>> {
        let (instances, scale) = self.batch(plate, 0);
        self.rows_results(plate, &instances, scale, (global_ids, inputs), grad)
    }

    /// The given instances of top-level `plate`, scaled by `scale`, chunk by chunk.
    fn rows_results(
        &self,
        plate: PlateId,
        instances: &[usize],
        scale: f64,
        (global_ids, inputs): (&[(usize, NodeId)], &[Value]),
        grad: bool,
    ) -> Vec<Result<InstanceResult, InferError>> {
        let chunk = self.model.plates[plate].chunk.unwrap_or(1).max(1);
        let chunks: Vec<&[usize]> = instances.chunks(chunk).collect();
        if let [rows] = chunks.as_slice() {
            // One chunk: nothing to share, so no region (and no spinners to wake and stop).
            let mut tape = PooledTape::take();
            let result = self.instance(&mut tape.0, plate, rows, scale, (global_ids, inputs), grad);
            return vec![result];
        }
        // The other workers spin through the serial part between two such regions instead
        // of sleeping (`super::warm`): waking them costs more than a small model's chunk.
        super::warm::release();
        let results = chunks
            .par_iter()
            .map_init(PooledTape::take, |tape, &rows| {
                self.instance(&mut tape.0, plate, rows, scale, (global_ids, inputs), grad)
            })
            .collect();
        super::warm::hold();
        results
    }

    /// One instance (or one chunk of instances, batched along a leading axis) of a
    /// top-level plate on its own (reused) tape; forward only unless `grad`.
    fn instance(
        &self,
        tape: &mut Tape,
        plate: PlateId,
        rows: &[usize],
        scale: f64,
        (global_ids, inputs): (&[(usize, NodeId)], &[Value]),
        grad: bool,
    ) -> Result<InstanceResult, InferError> {
        tape.clear();
        let mut env = Env {
            batch: (self.model.plates[plate].chunk.is_some()).then(|| (plate, rows.to_vec())),
            ..Env::new(self.model)
        };
        let index = rows.first().copied().unwrap_or(0);
        let global_leaves: Vec<NodeId> = global_ids
            .iter()
            .zip(inputs)
            .map(|((site, _), v)| {
                let leaf = tape.leaf(v.clone());
                env.values[*site] = Some(leaf);
                leaf
            })
            .collect();
        let mut leaves = Vec::new();
        env.instance.push((plate, index));
        let total = self.plate_instance(tape, &mut env, plate, index, scale, &mut leaves)?;
        let fail = |e| InferError::from_tape(e, self.spec.step, self.describe_env(&env));
        let value = tape.scalar_value(total).map_err(fail)?;
        let proposals = self.proposed_values(tape, &env)?;
        if !grad {
            return Ok(InstanceResult {
                value,
                proposals,
                global_grads: Vec::new(),
                param_spans: Vec::new(),
                param_values: Vec::new(),
            });
        }
        tape.backward(total).map_err(fail)?;
        // Global gradients leave with the result (owned); leaf gradients are read in place.
        let global_grads = global_leaves
            .iter()
            .map(|n| tape.grad_real(*n).map_err(fail))
            .collect::<Result<Vec<_>, InferError>>()?;
        let leaf_grads = leaves
            .iter()
            .map(|(_, n)| tape.grad_real_ref(*n).map_err(fail))
            .collect::<Result<Vec<_>, InferError>>()?;
        // Only the gradients that leave this tape must be finite; locate the cause if not.
        let finite = |g: &ArrayD<f64>| g.iter().all(|v| v.is_finite());
        if !global_grads
            .iter()
            .chain(leaf_grads.iter().map(|g| &**g))
            .all(finite)
        {
            let e = tape
                .first_non_finite_grad()
                .unwrap_or(crate::tape::TapeError::UnknownNode(0));
            return Err(fail(e));
        }
        let total: usize = leaf_grads.iter().map(|g| g.len()).sum();
        let spans: usize = leaves
            .iter()
            .map(|(target, _)| match target {
                Target::At(_) => 1,
                Target::Rows(offsets) => offsets.len(),
            })
            .sum();
        let (mut param_spans, mut param_values) =
            (Vec::with_capacity(spans), Vec::with_capacity(total));
        for ((target, _), g) in leaves.iter().zip(&leaf_grads) {
            pieces(target, g, &mut param_spans, &mut param_values);
        }
        Ok(InstanceResult {
            value,
            proposals,
            global_grads,
            param_spans,
            param_values,
        })
    }

    /// Sites of `plate` at the current instance, then its child plates; returns the scaled total.
    fn plate_instance(
        &self,
        tape: &mut Tape,
        env: &mut Env,
        plate: PlateId,
        _index: usize,
        scale: f64,
        leaves: &mut Vec<(Target, NodeId)>,
    ) -> Result<NodeId, InferError> {
        let mut total = self.sites_of(tape, env, Some(plate), scale, leaves)?;
        let flat = self.flat_instance(&env.instance);
        let children: Vec<PlateId> = (0..self.model.plates.len())
            .filter(|&c| self.model.plates[c].parent == Some(plate))
            .collect();
        for child in children {
            let (instances, child_scale) = self.batch(child, flat);
            for j in instances {
                env.instance.push((child, j));
                let sub = self.plate_instance(tape, env, child, j, scale * child_scale, leaves)?;
                env.instance.pop();
                total = tape.add(total, sub).map_err(|e| self.tape_err(e, env))?;
            }
        }
        Ok(total)
    }

    fn tape_err(&self, e: TapeError, env: &Env) -> InferError {
        InferError::from_tape(e, self.spec.step, self.describe_env(env))
    }

    /// Row-major flat index of the current instance over its plate chain.
    fn flat_instance(&self, instance: &[(PlateId, usize)]) -> usize {
        self.model.flat_index(instance)
    }

    /// "school 3" / "image 17, shoebox 4" / "global".
    pub fn describe(&self, instance: &[(PlateId, usize)]) -> String {
        if instance.is_empty() {
            return "global".into();
        }
        let parts: Vec<String> = instance
            .iter()
            .map(|&(p, i)| format!("{} {i}", self.model.plates[p].name))
            .collect();
        parts.join(", ")
    }

    /// Like `describe`, naming the instances of a chunk ("group 0-124 (chunk)").
    fn describe_env(&self, env: &Env) -> String {
        match &env.batch {
            Some((p, rows)) if rows.len() > 1 => {
                let (first, last) = (rows[0], rows[rows.len() - 1]);
                format!(
                    "{} {first}-{last} (chunk of {})",
                    self.model.plates[*p].name,
                    rows.len()
                )
            }
            _ => self.describe(&env.instance),
        }
    }

    /// Evaluates the sites directly in `plate` (None = global) and returns their scaled sum.
    fn sites_of(
        &self,
        tape: &mut Tape,
        env: &mut Env,
        plate: Option<PlateId>,
        scale: f64,
        leaves: &mut Vec<(Target, NodeId)>,
    ) -> Result<NodeId, InferError> {
        let mut total = tape.scalar(0.0);
        for (i, site) in self
            .model
            .sites
            .iter()
            .enumerate()
            .filter(|(_, s)| s.plate() == plate)
        {
            tape.set_label(super::model::site_label(site));
            let term = match site {
                Site::Latent(l) => self.latent(tape, env, i, l, leaves),
                Site::Observe(o) => self.observe(tape, env, i, o, leaves),
                Site::Factor(f) => Self::factor(tape, env, f),
                Site::Let(d) => {
                    let v = env
                        .eval(tape, &d.value)
                        .map_err(|e| self.tape_err(e, env))?;
                    env.values[i] = Some(v);
                    continue;
                }
            }
            .map_err(|source| self.site_error(site, env, source))?;
            let scaled = tape.scale(term, scale).map_err(|e| self.tape_err(e, env))?;
            total = tape.add(total, scaled).map_err(|e| self.tape_err(e, env))?;
            if let Ok(v) = tape.scalar_value(scaled)
                && !v.is_finite()
            {
                let e = tape
                    .first_non_finite_value()
                    .unwrap_or_else(|| TapeError::UnknownNode(scaled.index()));
                return Err(self.tape_err(e, env));
            }
        }
        Ok(total)
    }

    fn site_error(&self, site: &Site, env: &Env, source: super::dist::DistError) -> InferError {
        InferError::Site {
            step: self.spec.step,
            site: site.name().into(),
            label: super::model::site_label(site).to_string(),
            plates: self.describe_env(env),
            source: Box::new(source),
        }
    }

    /// A latent's contribution: log p(z) + log|J| - log q(u), or -KL in closed form.
    fn latent(
        &self,
        t: &mut Tape,
        env: &mut Env,
        site: usize,
        l: &LatentSite,
        leaves: &mut Vec<(Target, NodeId)>,
    ) -> Result<NodeId, super::dist::DistError> {
        let Some(b) = self.layout.blocks[site].as_ref() else {
            return Err(super::dist::DistError::Unsupported {
                family: "guide",
                detail: "site has no parameters".into(),
            });
        };
        let key = |instance: usize| StreamKey {
            seed: self.spec.seed,
            step: self.spec.step,
            particle: self.spec.particle,
            site: site as u64,
            instance: instance as u64,
        };
        if let Some(p) = self.proposal.filter(|p| p.sites.contains(&site)) {
            return self.proposed(t, env, (site, l), p);
        }
        let g = match (&l.encoder, &env.batch) {
            (Some(enc), None) => {
                let flat = self.flat_instance(&env.instance);
                let features = enc.features(t, env, flat, &l.label)?;
                let weights = self.shared_weights(
                    t,
                    b,
                    enc.net.n_leaves(),
                    |t, block| enc.net.weight_leaves(t, block),
                    leaves,
                );
                let refine = b.refine_offset(flat).map(|o| {
                    let nodes = refine_leaves(t, b, &self.params[o..o + b.refine]);
                    leaves.extend([
                        (Target::At(o), nodes[0]),
                        (Target::At(o + b.event), nodes[1]),
                    ]);
                    nodes
                });
                enc.draw(t, b, &weights, &features, refine, &mut key(flat).rng())?
            }
            (Some(_), Some(_)) => {
                return Err(super::dist::DistError::Unsupported {
                    family: "encoder",
                    detail: "encoder guides in chunked plates".into(),
                });
            }
            (None, Some((_, rows))) if l.plate.is_some() => {
                let offsets: Vec<usize> = rows.iter().map(|&i| b.instance_offset(i)).collect();
                let blocks: Vec<&[f64]> = offsets
                    .iter()
                    .map(|&o| &self.params[o..o + b.per_instance])
                    .collect();
                let prefix = key(0).prefix();
                let mut rngs: Vec<_> = rows.iter().map(|&i| prefix.rng(i as u64)).collect();
                let g = draw_rows(t, b, &blocks, &mut rngs)?;
                let rows_at = |rel: usize| Target::Rows(offsets.iter().map(|o| o + rel).collect());
                leaves.extend(
                    g.leaves
                        .iter()
                        .flatten()
                        .map(|(rel, n)| (rows_at(*rel), *n)),
                );
                g
            }
            (None, _) => {
                let flat = self.flat_instance(&env.instance);
                let offset = b.instance_offset(flat);
                let block = &self.params[offset..offset + b.per_instance];
                let g = draw(t, b, block, &mut key(flat).rng())?;
                leaves.extend(
                    g.leaves
                        .iter()
                        .flatten()
                        .map(|(o, n)| (Target::At(offset + o), *n)),
                );
                if b.kind == GuideKind::PartialCentring {
                    let at = b.centring_offset();
                    let logit = t.leaf_real(ArrayD::from_elem(IxDyn(&[]), self.params[at]));
                    leaves.push((Target::At(at), logit));
                    return self.partially_centred(t, env, (site, l), &g, logit);
                }
                g
            }
        };
        let (z, log_j) = l.constraint.forward(t, g.u)?;
        env.values[site] = Some(z);
        let Some((family, args)) = &l.prior else {
            return Ok(t.scalar(0.0));
        };
        let params: Vec<NodeId> = args
            .iter()
            .map(|a| env.eval(t, a))
            .collect::<Result<_, _>>()?;
        if let (true, Some((loc, scale)), super::dist::Family::Normal, None) =
            (self.spec.analytic_kl, g.loc_scale, family, log_j)
        {
            return Ok(neg_kl_normal(t, loc, scale, params[0], params[1])?);
        }
        let lp = Dist::new(*family, params)?.log_prob(t, z)?;
        let mut term = t.sum(lp)?;
        if let Some(lj) = log_j {
            let s = t.sum(lj)?;
            term = t.add(term, s)?;
        }
        match (g.log_q, l.guide) {
            (Some(lq), _) => Ok(t.sub(term, lq)?),
            (None, GuideKind::Point) | (None, _) => Ok(term),
        }
    }

    /// A partially centred latent's term, log p(ũ) - log q(ũ), or -KL in closed form, with
    /// ũ ~ N(λμ, σ^λ) the guide's draw and z = μ + σ^(1-λ) (ũ - λμ) the latent's value.
    fn partially_centred(
        &self,
        t: &mut Tape,
        env: &mut Env,
        (site, l): (usize, &LatentSite),
        g: &super::guide::GuideDraw,
        logit: NodeId,
    ) -> Result<NodeId, super::dist::DistError> {
        let Some((super::dist::Family::Normal, args)) = &l.prior else {
            return Err(super::dist::DistError::Unsupported {
                family: "partial_centring",
                detail: format!("`{}` needs a Normal prior", l.name),
            });
        };
        let mu = env.eval(t, &args[0])?;
        let sigma = env.eval(t, &args[1])?;
        let c = partial_centring(t, mu, sigma, logit, g.u)?;
        env.values[site] = Some(c.z);
        if let (true, Some((loc, scale))) = (self.spec.analytic_kl, g.loc_scale) {
            return Ok(neg_kl_normal(t, loc, scale, c.loc, c.scale)?);
        }
        let lp = Dist::new(super::dist::Family::Normal, vec![c.loc, c.scale])?.log_prob(t, g.u)?;
        let term = t.sum(lp)?;
        match g.log_q {
            Some(lq) => Ok(t.sub(term, lq)?),
            None => Ok(term),
        }
    }

    /// A searched site's term at its proposed value z: log p(z), with no guide density; z is
    /// the k-th draw from the prior (given the sites it depends on), keyed by (seed, stream
    /// step, k, site, instance).
    fn proposed(
        &self,
        t: &mut Tape,
        env: &mut Env,
        (site, l): (usize, &LatentSite),
        p: &Proposal,
    ) -> Result<NodeId, super::dist::DistError> {
        let unsupported = |detail: String| super::dist::DistError::Unsupported {
            family: "mode search",
            detail,
        };
        if env.batch.is_some() {
            return Err(unsupported("a searched latent in a chunked plate".into()));
        }
        let Some((family, args)) = &l.prior else {
            return Err(unsupported(format!(
                "`{}` has no prior to draw from",
                l.name
            )));
        };
        let params: Vec<NodeId> = args
            .iter()
            .map(|a| env.eval(t, a))
            .collect::<Result<_, _>>()?;
        let dist = Dist::new(*family, params.clone())?;
        let flat = self.flat_instance(&env.instance);
        let key = StreamKey {
            seed: self.spec.seed,
            step: p.stream_step,
            particle: p.candidate,
            site: site as u64,
            instance: flat as u64,
        };
        let z = dist.rsample(t, &mut key.rng(), &l.shape)?;
        env.values[site] = Some(z);
        // A partially centred guide's location is ũ's: the start is z seen through λ.
        let start = match self.layout.blocks[site].as_ref() {
            Some(b) if b.kind == GuideKind::PartialCentring => {
                let lambda = b.centring(self.params);
                uncentred(t, params[0], params[1], lambda, z)?
            }
            _ => z,
        };
        env.proposals.push((site, flat, start));
        let lp = dist.log_prob(t, z)?;
        Ok(t.sum(lp)?)
    }

    /// A restraint's log-density term, summed over its elements.
    fn factor(
        t: &mut Tape,
        env: &mut Env,
        f: &super::model::FactorSite,
    ) -> Result<NodeId, super::dist::DistError> {
        let v = env.eval(t, &f.value)?;
        Ok(t.sum(v)?)
    }

    /// An observation's log-likelihood, summed over its elements.
    fn observe(
        &self,
        t: &mut Tape,
        env: &mut Env,
        site: usize,
        o: &ObserveSite,
        leaves: &mut Vec<(Target, NodeId)>,
    ) -> Result<NodeId, super::dist::DistError> {
        let params: Vec<NodeId> = o
            .args
            .iter()
            .map(|a| env.eval(t, a))
            .collect::<Result<_, _>>()?;
        let x = env.eval(t, &o.value)?;
        if let Some(c) = &o.correction {
            let weights = self.flow_weights(t, site, c, leaves, env)?;
            return super::flow::corrected_log_lik(t, env, c, &weights, params[0], x);
        }
        let lp = Dist::new(o.family, params)?.log_prob(t, x)?;
        Ok(t.sum(lp)?)
    }

    /// The conditioner's weight leaves of a correction flow.
    fn flow_weights(
        &self,
        t: &mut Tape,
        site: usize,
        c: &super::flow::CorrectionSpec,
        leaves: &mut Vec<(Target, NodeId)>,
        env: &Env,
    ) -> Result<Vec<(usize, NodeId)>, super::dist::DistError> {
        let unsupported = |detail: &str| super::dist::DistError::Unsupported {
            family: "correction flow",
            detail: detail.into(),
        };
        if env.batch.is_some() {
            return Err(unsupported(
                "a correction flow in a chunked (vectorized) plate",
            ));
        }
        let b = self.layout.blocks[site]
            .as_ref()
            .ok_or_else(|| unsupported("the flow has no parameter block"))?;
        Ok(self.shared_weights(
            t,
            b,
            2 * c.conditioner.n_layers(),
            |t, block| c.conditioner.weight_leaves(t, block),
            leaves,
        ))
    }

    /// The weight leaves of a network shared by all instances (an encoder, a flow's
    /// conditioner), with their offsets in its block: made once per tape, so the instances on
    /// the tape add into one gradient.
    fn shared_weights(
        &self,
        t: &mut Tape,
        b: &super::guide::SiteBlock,
        n_leaves: usize,
        make: impl FnOnce(&mut Tape, &[f64]) -> Vec<(usize, NodeId)>,
        leaves: &mut Vec<(Target, NodeId)>,
    ) -> Vec<(usize, NodeId)> {
        let first = leaves
            .iter()
            .position(|(tg, _)| matches!(tg, Target::At(o) if *o == b.offset));
        if let Some(k) = first {
            return leaves[k..k + n_leaves]
                .iter()
                .map(|(tg, n)| match tg {
                    Target::At(o) => (o - b.offset, *n),
                    Target::Rows(_) => (0, *n),
                })
                .collect();
        }
        let w = make(t, &self.params[b.offset..b.offset + b.per_instance]);
        leaves.extend(w.iter().map(|(o, n)| (Target::At(b.offset + o), *n)));
        w
    }
}

/// The global sites' nodes (site, node) and their values, the inputs of every instance tape.
fn global_inputs(tape: &Tape, env: &Env) -> (Vec<(usize, NodeId)>, Vec<Value>) {
    let ids: Vec<(usize, NodeId)> = env
        .values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.map(|n| (i, n)))
        .collect();
    let inputs = ids.iter().map(|(_, n)| tape.value(*n).clone()).collect();
    (ids, inputs)
}

/// -KL(N(μq, σq) ‖ N(μp, σp)) summed: ln(σq/σp) - (σq² + (μq-μp)²)/(2σp²) + ½.
/// A partially centred Normal latent: ũ's prior N(λμ, σ^λ) and the latent's value.
struct Centred {
    /// λμ.
    loc: NodeId,
    /// σ^λ.
    scale: NodeId,
    /// z = μ + σ^(1-λ) (ũ - λμ).
    z: NodeId,
}

/// λ = sigmoid(logit); ũ's prior and the latent z from ũ (`u`), for z ~ N(`mu`, `sigma`).
fn partial_centring(
    t: &mut Tape,
    mu: NodeId,
    sigma: NodeId,
    logit: NodeId,
    u: NodeId,
) -> Result<Centred, TapeError> {
    let lambda = t.sigmoid(logit)?;
    let ln_sigma = t.log(sigma)?;
    let loc = t.mul(lambda, mu)?;
    let lam_ln = t.mul(lambda, ln_sigma)?;
    let scale = t.exp(lam_ln)?;
    // σ^(1-λ) = σ / σ^λ.
    let rest_ln = t.sub(ln_sigma, lam_ln)?;
    let rest = t.exp(rest_ln)?;
    let dev = t.sub(u, loc)?;
    let spread = t.mul(rest, dev)?;
    let z = t.add(mu, spread)?;
    Ok(Centred { loc, scale, z })
}

/// ũ = λμ + (z - μ) / σ^(1-λ): the inverse of `partial_centring` at a fixed λ.
fn uncentred(
    t: &mut Tape,
    mu: NodeId,
    sigma: NodeId,
    lambda: f64,
    z: NodeId,
) -> Result<NodeId, TapeError> {
    let loc = t.scale(mu, lambda)?;
    let ln_sigma = t.log(sigma)?;
    let rest_ln = t.scale(ln_sigma, 1.0 - lambda)?;
    let rest = t.exp(rest_ln)?;
    let dev = t.sub(z, mu)?;
    let spread = t.div(dev, rest)?;
    t.add(loc, spread)
}

fn neg_kl_normal(
    t: &mut Tape,
    mq: NodeId,
    sq: NodeId,
    mp: NodeId,
    sp: NodeId,
) -> Result<NodeId, TapeError> {
    let ratio = t.div(sq, sp)?;
    let lr = t.log(ratio)?;
    let d = t.sub(mq, mp)?;
    let d2 = t.square(d)?;
    let sq2 = t.square(sq)?;
    let num = t.add(sq2, d2)?;
    let sp2 = t.square(sp)?;
    let q = t.div(num, sp2)?;
    let hq = t.scale(q, -0.5)?;
    let s = t.add(lr, hq)?;
    let s = t.shift(s, 0.5)?;
    t.sum(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `uncentred` inverts `partial_centring` at the same λ, and λ = 1 / λ = 0 are the
    /// centred (z = ũ) and non-centred (z = μ + σ ũ) forms.
    #[test]
    fn uncentring_inverts_the_partial_centring() {
        for (lambda, mu, sigma, z) in [(0.3, 1.5, 0.7, -0.4), (0.9, -2.0, 3.0, 1.1)] {
            let mut t = Tape::new();
            let (m, s, zn) = (t.scalar(mu), t.scalar(sigma), t.scalar(z));
            let u = uncentred(&mut t, m, s, lambda, zn).unwrap();
            let logit = t.scalar((lambda / (1.0 - lambda)).ln());
            let c = partial_centring(&mut t, m, s, logit, u).unwrap();
            let back = t.scalar_value(c.z).unwrap();
            assert!((back - z).abs() < 1e-12, "{back} vs {z}");
        }
        let mut t = Tape::new();
        let (m, s, u) = (t.scalar(1.5), t.scalar(0.7), t.scalar(-0.4));
        let centred = t.scalar(40.0);
        let c = partial_centring(&mut t, m, s, centred, u).unwrap();
        assert!((t.scalar_value(c.z).unwrap() + 0.4).abs() < 1e-12);
        let noncentred = t.scalar(-40.0);
        let c = partial_centring(&mut t, m, s, noncentred, u).unwrap();
        assert!((t.scalar_value(c.z).unwrap() - (1.5 - 0.7 * 0.4)).abs() < 1e-12);
    }
}
