//! The tape: an arena of tensor-valued nodes with integer ids, recorded in evaluation order.
//!
//! In: leaves (values whose gradient is wanted), constants, and ops applied to earlier nodes.
//! Out: every node's value, and after `backward` the gradient of a scalar root with respect to
//! every node that depends on a leaf. Guarantees: nodes only point to earlier nodes, so one
//! reverse sweep is a valid reverse-mode pass; `replay` recomputes the same structure with new
//! leaf values without re-recording; `clear` keeps the arena's capacity for the next record.

use super::op::{Op, OpError};
use super::value::Value;
use ndarray::{ArrayD, IxDyn};
use num_complex::Complex64;
use std::sync::Arc;

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
#[derive(Debug, Default, Clone)]
pub struct Tape {
    nodes: Vec<Node>,
    grads: Vec<Option<Value>>,
    labels: Vec<Arc<str>>,
    current_label: u32,
}

impl Tape {
    /// An empty tape.
    pub fn new() -> Self {
        Tape { labels: vec![Arc::from("<unlabelled>")], ..Default::default() }
    }

    /// Forgets all nodes but keeps the allocated arena for the next recording.
    pub fn clear(&mut self) {
        self.nodes.clear();
        self.grads.clear();
        self.labels.truncate(1);
        self.current_label = 0;
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
        if self.labels.last().is_some_and(|l| &**l == label) {
            self.current_label = (self.labels.len() - 1) as u32;
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
        let values: Vec<&Value> = inputs.iter().map(|id| &self.nodes[id.index()].value).collect();
        let value = op.forward(&values).map_err(|e| self.op_error(e, self.current_label))?;
        let needs_grad = inputs.iter().any(|id| self.nodes[id.index()].needs_grad);
        Ok(self.push_node(op, inputs.to_vec(), value, needs_grad))
    }

    fn push_node(&mut self, op: Op, inputs: Vec<NodeId>, value: Value, needs_grad: bool) -> NodeId {
        let id = NodeId(self.nodes.len() as u32);
        self.nodes.push(Node { op, inputs, value, needs_grad, label: self.current_label });
        id
    }

    fn check(&self, id: NodeId) -> Result<(), TapeError> {
        if id.index() < self.nodes.len() { Ok(()) } else { Err(TapeError::UnknownNode(id.index())) }
    }

    fn op_error(&self, e: OpError, label: u32) -> TapeError {
        TapeError::Op { op: e.op, label: self.label_text(label), detail: e.detail }
    }

    fn label_text(&self, label: u32) -> String {
        self.labels.get(label as usize).map(|l| l.to_string()).unwrap_or_default()
    }

    /// The value of a node.
    pub fn value(&self, id: NodeId) -> &Value {
        &self.nodes[id.index()].value
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
        TapeError::Op { op: node.op.name(), label: self.label_text(node.label), detail }
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
            let values: Vec<&Value> = node.inputs.iter().map(|id| &before[id.index()].value).collect();
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
        self.grads.clear();
        self.grads.resize(self.nodes.len(), None);
        let mut last = 0;
        for (id, seed) in seeds {
            self.check(*id)?;
            if seed.shape() != self.nodes[id.index()].value.shape() {
                return Err(self.shape_error(*id, format!("seed shape {:?} differs", seed.shape())));
            }
            accumulate(&mut self.grads[id.index()], seed.clone());
            last = last.max(id.index() + 1);
        }
        for i in (0..last).rev() {
            self.propagate(i)?;
        }
        Ok(())
    }

    fn propagate(&mut self, i: usize) -> Result<(), TapeError> {
        let node = &self.nodes[i];
        if !node.needs_grad || node.inputs.is_empty() {
            return Ok(());
        }
        let Some(g) = self.grads[i].as_ref() else { return Ok(()) };
        let inputs: Vec<&Value> = node.inputs.iter().map(|id| &self.nodes[id.index()].value).collect();
        let wanted: Vec<bool> = node.inputs.iter().map(|id| self.nodes[id.index()].needs_grad).collect();
        let input_grads =
            node.op.vjp(&inputs, &node.value, g, &wanted).map_err(|e| self.op_error(e, node.label))?;
        let targets = node.inputs.clone();
        for ((id, grad), want) in targets.iter().zip(input_grads).zip(wanted) {
            if let (Some(grad), true) = (grad, want) {
                accumulate(&mut self.grads[id.index()], grad);
            }
        }
        Ok(())
    }

    /// The gradient of the last `backward` root with respect to a node (None if unreached).
    pub fn grad(&self, id: NodeId) -> Option<&Value> {
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
        let i = self.grads.iter().rposition(|g| g.as_ref().is_some_and(|g| !g.is_finite()))?;
        Some(self.non_finite(i, "gradient"))
    }

    fn non_finite(&self, i: usize, what: &'static str) -> TapeError {
        let node = &self.nodes[i];
        TapeError::NonFinite { op: node.op.name(), label: self.label_text(node.label), what, node: i }
    }
}

fn accumulate(slot: &mut Option<Value>, grad: Value) {
    match slot {
        Some(existing) => existing.accumulate(&grad),
        None => *slot = Some(grad),
    }
}
