//! The tape: an arena of tensor-valued nodes with integer ids, recorded in evaluation order.
//!
//! In: leaves (values whose gradient is wanted), constants, and ops applied to earlier nodes.
//! Out: every node's value, and after `backward` the gradient of a scalar root with respect to
//! every node that depends on a leaf. Guarantees: nodes only point to earlier nodes, so one
//! reverse sweep is a valid reverse-mode pass; `replay` recomputes the same structure with new
//! leaf values without re-recording; `clear` keeps the arena's capacity for the next record.

use super::elementwise::Binary;
use super::op::{Op, OpError};
use super::value::Value;
use ndarray::{ArrayD, IxDyn};
use num_complex::Complex64;
use std::sync::Arc;

/// Arrays at least this long are kept for reuse when a tape is cleared.
const SPARE_MIN_LEN: usize = 512;

/// Labels are kept across `clear` (re-recordings use the same few) up to this many.
const MAX_KEPT_LABELS: usize = 256;

/// Index of a node on one tape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub(crate) u32);

impl NodeId {
    /// Position of the node in the arena.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// An error raised while recording, replaying or differentiating a tape.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum TapeError {
    /// An op rejected its inputs (shape, kind or index problems).
    #[error("operator `{op}` at {label}: {detail}")]
    Op {
        /// Name of the operator.
        op: &'static str,
        /// Source label in force when the node was recorded.
        label: String,
        /// What was wrong.
        detail: String,
    },
    /// A node's value or gradient is NaN or infinite.
    #[error("non-finite {what} produced by operator `{op}` at {label} (node {node})")]
    NonFinite {
        /// Name of the operator.
        op: &'static str,
        /// Source label in force when the node was recorded.
        label: String,
        /// "value" or "gradient".
        what: &'static str,
        /// Index of the node on its tape.
        node: usize,
    },
    /// A node id from another tape, or past the end of this one.
    #[error("node {0} is not on this tape")]
    UnknownNode(usize),
}

/// One recorded operation and its value.
#[derive(Debug, Clone)]
pub struct Node {
    op: Op,
    inputs: Vec<NodeId>,
    value: Value,
    needs_grad: bool,
    label: u32,
}

/// A reverse-mode tape over real and complex tensors.
#[derive(Debug, Clone)]
pub struct Tape {
    nodes: Vec<Node>,
    /// Gradient buffers, kept across passes and re-recordings so a static structure
    /// allocates them once; `live[i]` says whether buffer i holds this pass's gradient.
    grads: Vec<Option<Value>>,
    live: Vec<bool>,
    /// Value buffers of cleared nodes, by length, reused by elementwise ops when re-recording.
    spare: std::collections::HashMap<usize, Vec<ArrayD<f64>>>,
    labels: Vec<Arc<str>>,
    current_label: u32,
}

impl Default for Tape {
    fn default() -> Self {
        Tape::new()
    }
}

impl Tape {
    /// An empty tape (label 0 is "<unlabelled>").
    pub fn new() -> Self {
        Tape {
            nodes: Vec::new(),
            grads: Vec::new(),
            live: Vec::new(),
            spare: std::collections::HashMap::new(),
            labels: vec![Arc::from("<unlabelled>")],
            current_label: 0,
        }
    }

    /// Forgets all nodes but keeps the allocated arena and gradient buffers for the next recording.
    pub fn clear(&mut self) {
        // Spare buffers that this recording did not take are not needed by the next one
        // either: keep only the ones freed now, so the pool holds at most one recording's worth.
        self.spare.values_mut().for_each(Vec::clear);
        for node in self.nodes.drain(..) {
            // Small arrays come cheaply from malloc; large ones would page-fault when re-made.
            if let (Value::Real(a), Op::Unary(_) | Op::Binary(_)) = (node.value, node.op)
                && a.len() >= SPARE_MIN_LEN
            {
                self.spare.entry(a.len()).or_default().push(a);
            }
        }
        self.spare.retain(|_, buffers| !buffers.is_empty());
        self.live.clear();
        if self.labels.len() > MAX_KEPT_LABELS {
            self.labels.truncate(1);
        }
        self.current_label = 0;
    }

    /// Value buffers kept for reuse by the next recording (bounded by one recording's worth).
    pub fn spare_buffers(&self) -> usize {
        self.spare.values().map(Vec::len).sum()
    }

    /// Number of recorded nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Sets the source label (an opaque span or name) attached to nodes recorded from now on.
    pub fn set_label(&mut self, label: &str) {
        if let Some(i) = self.labels.iter().rposition(|l| &**l == label) {
            self.current_label = i as u32;
            return;
        }
        self.labels.push(Arc::from(label));
        self.current_label = (self.labels.len() - 1) as u32;
    }

    /// A leaf: an input whose gradient `backward` computes.
    pub fn leaf(&mut self, value: Value) -> NodeId {
        self.push_node(Op::Leaf, Vec::new(), value, true)
    }

    /// A real leaf from an array.
    pub fn leaf_real(&mut self, value: ArrayD<f64>) -> NodeId {
        self.leaf(Value::Real(value))
    }

    /// A constant: an input with no gradient.
    pub fn constant(&mut self, value: Value) -> NodeId {
        self.push_node(Op::Const, Vec::new(), value, false)
    }

    /// A real constant from an array.
    pub fn constant_real(&mut self, value: ArrayD<f64>) -> NodeId {
        self.constant(Value::Real(value))
    }

    /// A real 0-d constant.
    pub fn scalar(&mut self, value: f64) -> NodeId {
        self.constant(Value::Real(ArrayD::from_elem(IxDyn(&[]), value)))
    }

    /// A complex 0-d constant.
    pub fn complex_scalar(&mut self, value: Complex64) -> NodeId {
        self.constant(Value::Complex(ArrayD::from_elem(IxDyn(&[]), value)))
    }

    /// Records `op` applied to `inputs`, computing its value now.
    pub fn apply(&mut self, op: Op, inputs: &[NodeId]) -> Result<NodeId, TapeError> {
        for id in inputs {
            self.check(*id)?;
        }
        let values: Vec<&Value> = inputs
            .iter()
            .map(|id| &self.nodes[id.index()].value)
            .collect();
        let value = match reuse_spare(&mut self.spare, &op, &values) {
            Some(v) => v,
            None => op
                .forward(&values)
                .map_err(|e| self.op_error(e, self.current_label))?,
        };
        let needs_grad = inputs.iter().any(|id| self.nodes[id.index()].needs_grad);
        Ok(self.push_node(op, inputs.to_vec(), value, needs_grad))
    }

    fn push_node(&mut self, op: Op, inputs: Vec<NodeId>, value: Value, needs_grad: bool) -> NodeId {
        let id = NodeId(self.nodes.len() as u32);
        self.nodes.push(Node {
            op,
            inputs,
            value,
            needs_grad,
            label: self.current_label,
        });
        id
    }

    fn check(&self, id: NodeId) -> Result<(), TapeError> {
        if id.index() < self.nodes.len() {
            Ok(())
        } else {
            Err(TapeError::UnknownNode(id.index()))
        }
    }

    fn op_error(&self, e: OpError, label: u32) -> TapeError {
        TapeError::Op {
            op: e.op,
            label: self.label_text(label),
            detail: e.detail,
        }
    }

    fn label_text(&self, label: u32) -> String {
        self.labels
            .get(label as usize)
            .map(|l| l.to_string())
            .unwrap_or_default()
    }

    /// The value of a node.
    pub fn value(&self, id: NodeId) -> &Value {
        &self.nodes[id.index()].value
    }

    /// True when the node depends on a leaf that takes gradients (a latent or param).
    pub fn needs_grad(&self, id: NodeId) -> bool {
        self.nodes.get(id.index()).is_some_and(|n| n.needs_grad)
    }

    /// The value of a real node, or an error naming the node's operator.
    pub fn real(&self, id: NodeId) -> Result<&ArrayD<f64>, TapeError> {
        self.check(id)?;
        match &self.nodes[id.index()].value {
            Value::Real(a) => Ok(a),
            Value::Complex(_) => Err(self.kind_error(id, "real")),
        }
    }

    /// The single element of a real node holding exactly one element.
    pub fn scalar_value(&self, id: NodeId) -> Result<f64, TapeError> {
        let a = self.real(id)?;
        match a.len() {
            1 => Ok(a.iter().copied().sum()),
            n => Err(self.shape_error(id, format!("expected one element, found {n}"))),
        }
    }

    fn kind_error(&self, id: NodeId, expected: &str) -> TapeError {
        let node = &self.nodes[id.index()];
        TapeError::Op {
            op: node.op.name(),
            label: self.label_text(node.label),
            detail: format!("expected a {expected} value, found {}", node.value.kind()),
        }
    }

    fn shape_error(&self, id: NodeId, detail: String) -> TapeError {
        let node = &self.nodes[id.index()];
        TapeError::Op {
            op: node.op.name(),
            label: self.label_text(node.label),
            detail,
        }
    }

    /// Replaces the value of a leaf or constant (same kind; the shape may change only if no op
    /// depends on it before `replay`).
    pub fn set_value(&mut self, id: NodeId, value: Value) -> Result<(), TapeError> {
        self.check(id)?;
        let node = &mut self.nodes[id.index()];
        if !matches!(node.op, Op::Leaf | Op::Const) {
            return Err(self.shape_error(id, "only leaves and constants can be set".into()));
        }
        node.value = value;
        Ok(())
    }

    /// Recomputes every op node from its inputs, for a tape whose leaves were `set_value`d.
    pub fn replay(&mut self) -> Result<(), TapeError> {
        for i in 0..self.nodes.len() {
            if matches!(self.nodes[i].op, Op::Leaf | Op::Const) {
                continue;
            }
            let (before, rest) = self.nodes.split_at_mut(i);
            let node = &mut rest[0];
            let values: Vec<&Value> = node
                .inputs
                .iter()
                .map(|id| &before[id.index()].value)
                .collect();
            if forward_in_place(&node.op, &values, &mut node.value) {
                continue;
            }
            match node.op.forward(&values) {
                Ok(v) => node.value = v,
                Err(e) => {
                    let label = node.label;
                    return Err(self.op_error(e, label));
                }
            }
        }
        Ok(())
    }

    /// Reverse sweep from a real scalar root (seed 1).
    pub fn backward(&mut self, root: NodeId) -> Result<(), TapeError> {
        let a = self.real(root)?;
        let seed = Value::Real(ArrayD::from_elem(a.raw_dim(), 1.0));
        self.backward_seeded(&[(root, seed)])
    }

    /// Reverse sweep seeded with given output gradients (e.g. reduced gradients of shared
    /// latents coming back from plate workers). Seeds for the same node add up.
    pub fn backward_seeded(&mut self, seeds: &[(NodeId, Value)]) -> Result<(), TapeError> {
        if self.grads.len() < self.nodes.len() {
            self.grads.resize(self.nodes.len(), None);
        }
        self.live.clear();
        self.live.resize(self.nodes.len(), false);
        let mut last = 0;
        for (id, seed) in seeds {
            self.check(*id)?;
            if seed.shape() != self.nodes[id.index()].value.shape() {
                return Err(self.shape_error(*id, format!("seed shape {:?} differs", seed.shape())));
            }
            accumulate(
                &mut self.grads[id.index()],
                &mut self.live[id.index()],
                seed.clone(),
            );
            last = last.max(id.index() + 1);
        }
        for i in (0..last).rev() {
            self.propagate(i)?;
        }
        Ok(())
    }

    fn propagate(&mut self, i: usize) -> Result<(), TapeError> {
        let node = &self.nodes[i];
        if !node.needs_grad || node.inputs.is_empty() || !self.live[i] {
            return Ok(());
        }
        if self.propagate_in_place(i) {
            return Ok(());
        }
        let node = &self.nodes[i];
        let Some(g) = self.grads[i].as_ref() else {
            return Ok(());
        };
        let inputs: Vec<&Value> = node
            .inputs
            .iter()
            .map(|id| &self.nodes[id.index()].value)
            .collect();
        let wanted: Vec<bool> = node
            .inputs
            .iter()
            .map(|id| self.nodes[id.index()].needs_grad)
            .collect();
        let input_grads = node
            .op
            .vjp(&inputs, &node.value, g, &wanted)
            .map_err(|e| self.op_error(e, node.label))?;
        let targets = node.inputs.clone();
        for ((id, grad), want) in targets.iter().zip(input_grads).zip(wanted) {
            if let (Some(grad), true) = (grad, want) {
                accumulate(
                    &mut self.grads[id.index()],
                    &mut self.live[id.index()],
                    grad,
                );
            }
        }
        Ok(())
    }

    /// Elementwise VJPs with equal shapes accumulate straight into the inputs' gradient
    /// buffers (no temporaries). Returns false when the generic path must run.
    fn propagate_in_place(&mut self, i: usize) -> bool {
        let node = &self.nodes[i];
        let (lo, hi) = self.grads.split_at_mut(i);
        let Some(Value::Real(g)) = hi[0].as_ref() else {
            return false;
        };
        let real = |id: &NodeId| match &self.nodes[id.index()].value {
            Value::Real(a) if a.shape() == g.shape() => Some(a),
            _ => None,
        };
        let Value::Real(y) = &node.value else {
            return false;
        };
        match &node.op {
            Op::Unary(u) => {
                let Some(x) = real(&node.inputs[0]) else {
                    return false;
                };
                let j = node.inputs[0].index();
                if let Some(acc) = grad_buffer(&mut lo[j], &mut self.live[j], g.shape()) {
                    u.vjp_accumulate(x, y, g, acc);
                }
                true
            }
            Op::Binary(b @ (Binary::Add | Binary::Sub)) => {
                let inner: Vec<Option<(usize, usize)>> = node
                    .inputs
                    .iter()
                    .map(|id| match &self.nodes[id.index()].value {
                        Value::Real(a) => row_blocks(a.shape(), g.shape()).map(|r| (id.index(), r)),
                        Value::Complex(_) => None,
                    })
                    .collect();
                if inner.iter().any(Option::is_none) {
                    return false;
                }
                let Some(gs) = g.as_slice() else { return false };
                for (which, (j, block)) in inner.into_iter().flatten().enumerate() {
                    if !self.nodes[j].needs_grad {
                        continue;
                    }
                    let shape = self.nodes[j].value.shape();
                    let sign = if which == 1 && *b == Binary::Sub {
                        -1.0
                    } else {
                        1.0
                    };
                    if let Some(acc) = grad_buffer(&mut lo[j], &mut self.live[j], shape)
                        && let Some(acc) = acc.as_slice_mut()
                    {
                        sum_blocks_into(acc, gs, block, sign);
                    }
                }
                true
            }
            Op::Binary(b) => {
                let (Some(a), Some(c)) = (real(&node.inputs[0]), real(&node.inputs[1])) else {
                    return false;
                };
                for (which, id) in node.inputs.iter().enumerate() {
                    let j = id.index();
                    if !self.nodes[j].needs_grad {
                        continue;
                    }
                    if let Some(acc) = grad_buffer(&mut lo[j], &mut self.live[j], g.shape()) {
                        b.vjp_accumulate(which, a, c, y, g, acc);
                    }
                }
                true
            }
            _ => false,
        }
    }

    /// The gradient of the last `backward` root with respect to a node (None if unreached).
    pub fn grad(&self, id: NodeId) -> Option<&Value> {
        if !self.live.get(id.index()).copied().unwrap_or(false) {
            return None;
        }
        self.grads.get(id.index()).and_then(|g| g.as_ref())
    }

    /// The real gradient of a node, zeros when the root does not depend on it.
    pub fn grad_real(&self, id: NodeId) -> Result<ArrayD<f64>, TapeError> {
        match self.grad(id) {
            Some(Value::Real(g)) => Ok(g.clone()),
            Some(Value::Complex(_)) => Err(self.kind_error(id, "real")),
            None => Ok(ArrayD::zeros(self.real(id)?.raw_dim())),
        }
    }

    /// The first node (in recording order) whose value is not finite, as an error.
    pub fn first_non_finite_value(&self) -> Option<TapeError> {
        let i = self.nodes.iter().position(|n| !n.value.is_finite())?;
        Some(self.non_finite(i, "value"))
    }

    /// The last node (first reached by the reverse sweep) whose gradient is not finite.
    pub fn first_non_finite_grad(&self) -> Option<TapeError> {
        let i = (0..self.live.len())
            .rev()
            .find(|&i| self.live[i] && self.grads[i].as_ref().is_some_and(|g| !g.is_finite()))?;
        Some(self.non_finite(i, "gradient"))
    }

    fn non_finite(&self, i: usize, what: &'static str) -> TapeError {
        let node = &self.nodes[i];
        TapeError::NonFinite {
            op: node.op.name(),
            label: self.label_text(node.label),
            what,
            node: i,
        }
    }
}

fn accumulate(slot: &mut Option<Value>, live: &mut bool, grad: Value) {
    match slot {
        Some(existing) if *live => existing.accumulate(&grad),
        _ => *slot = Some(grad),
    }
    *live = true;
}

/// The real gradient buffer of a node for this pass: reused (zeroed) when the shape fits.
fn grad_buffer<'a>(
    slot: &'a mut Option<Value>,
    live: &mut bool,
    shape: &[usize],
) -> Option<&'a mut ArrayD<f64>> {
    let fits = matches!(slot, Some(Value::Real(a)) if a.shape() == shape);
    if !fits {
        *slot = Some(Value::Real(ArrayD::zeros(IxDyn(shape))));
    } else if !*live && let Some(Value::Real(a)) = slot {
        a.fill(0.0);
    }
    *live = true;
    match slot {
        Some(Value::Real(a)) => Some(a),
        _ => None,
    }
}

/// Block length b when an input of `shape` broadcasts to `out` by repeating each of its
/// elements over b consecutive output elements (equal shapes: 1; one number or a column
/// [r, 1] against [r, c]: the whole or c), so its gradient is a sum over each block.
fn row_blocks(shape: &[usize], out: &[usize]) -> Option<usize> {
    if shape.len() > out.len() {
        return None;
    }
    let padded = out.len() - shape.len();
    let dims = |i: usize| if i < padded { 1 } else { shape[i - padded] };
    let kept = (0..out.len())
        .rposition(|i| dims(i) != 1)
        .map_or(0, |i| i + 1);
    let prefix_matches = (0..kept).all(|i| dims(i) == out[i]);
    prefix_matches.then(|| out[kept..].iter().product())
}

/// acc[k] += sign · Σ g over block k (blocks of `block` consecutive elements).
fn sum_blocks_into(acc: &mut [f64], g: &[f64], block: usize, sign: f64) {
    if block == 0 {
        return;
    }
    if block == 1 {
        acc.iter_mut().zip(g).for_each(|(a, &g)| *a += sign * g);
        return;
    }
    for (a, chunk) in acc.iter_mut().zip(g.chunks(block)) {
        *a += sign * chunk.iter().sum::<f64>();
    }
}

/// Runs an elementwise op into a spare buffer of the right size, if there is one.
fn reuse_spare(
    spare: &mut std::collections::HashMap<usize, Vec<ArrayD<f64>>>,
    op: &Op,
    x: &[&Value],
) -> Option<Value> {
    let shape = match (op, x) {
        (Op::Unary(_), [Value::Real(a)]) => a.shape().to_vec(),
        (Op::Binary(_), [Value::Real(a), Value::Real(b)]) => {
            crate::tape::value::broadcast_shape(a.shape(), b.shape())?
        }
        _ => return None,
    };
    let n: usize = shape.iter().product();
    if n < SPARE_MIN_LEN {
        return None;
    }
    let buf = spare.get_mut(&n)?.pop()?;
    let mut out = Value::Real(buf.into_shape_with_order(IxDyn(&shape)).ok()?);
    forward_in_place(op, x, &mut out).then_some(out)
}

/// Recomputes elementwise nodes into their existing buffers; false when not applicable.
fn forward_in_place(op: &Op, x: &[&Value], out: &mut Value) -> bool {
    let Value::Real(o) = out else { return false };
    match (op, x) {
        (Op::Unary(u), [Value::Real(a)]) if a.shape() == o.shape() => u.forward_into(a, o),
        (Op::Binary(b), [Value::Real(a), Value::Real(c)]) => {
            if a.shape() == o.shape() && c.shape() == o.shape() {
                b.forward_into(a, c, o)
            } else {
                let (Some(av), Some(cv)) = (a.broadcast(o.raw_dim()), c.broadcast(o.raw_dim()))
                else {
                    return false;
                };
                b.forward_into_views(av, cv, o)
            }
        }
        _ => return false,
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    /// Re-recording a broadcast product (a global latent times data) must not grow the pool
    /// of spare buffers: it grew by one buffer per recording before (1.6 GB in a benchmark).
    #[test]
    fn spare_pool_stays_bounded_over_re_recordings() {
        let mut tape = Tape::new();
        for step in 0..50 {
            // Chunks of changing length (a last, shorter chunk) leave buffers nobody reuses.
            let x = ArrayD::from_shape_fn(IxDyn(&[4, 1000 + step % 7]), |i| i[1] as f64);
            let b = tape.leaf_real(ArrayD::from_elem(IxDyn(&[]), 0.5 + step as f64));
            let xn = tape.constant_real(x);
            let bx = tape.mul(b, xn).unwrap();
            let y = tape.add(bx, xn).unwrap();
            let expected = (0.5 + step as f64) * 7.0 + 7.0;
            assert_eq!(tape.real(y).unwrap()[[0, 7]], expected);
            tape.clear();
            assert!(
                tape.spare_buffers() <= 2,
                "step {step}: {}",
                tape.spare_buffers()
            );
        }
    }
}
