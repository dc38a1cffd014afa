//! The tape: an arena of tensor-valued nodes with integer ids, recorded in evaluation order.
//!
//! In: leaves (values whose gradient is wanted), constants, and ops applied to earlier nodes.
//! Out: every node's value, and after `backward` the gradient of a scalar root with respect to
//! every node that depends on a leaf. Guarantees: nodes only point to earlier nodes, so one
//! reverse sweep is a valid reverse-mode pass; `replay` recomputes the same structure with new
//! leaf values without re-recording; `clear` keeps the arena's capacity for the next record.

use super::elementwise::Binary;
use super::fusion::{self, Arg, ElemOp, Instr, Seed, Sink, Tree};
use super::op::{Op, OpError};
use super::reduce::Reduce;
use super::value::{Shape, Value};
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use num_complex::Complex64;
use smallvec::SmallVec;
use std::borrow::Cow;
use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;

/// Elementwise nodes with at least this many elements are deferred and fused.
pub const DEFER_MIN_LEN: usize = 1024;

/// Instructions in one fused tree at most (deeper chains split into several trees).
const MAX_TREE_INSTRS: usize = 48;

/// Spare value buffers by length.
type Spare = HashMap<usize, Vec<ArrayD<f64>>>;

/// Arrays at least this long are kept for reuse when a tape is cleared.
const SPARE_MIN_LEN: usize = 512;

/// Labels are kept across `clear` (re-recordings use the same few) up to this many.
const MAX_KEPT_LABELS: usize = 256;

/// A contiguous block of a shared array in standard layout: a data column's rows, read in
/// place by fused elementwise trees.
#[derive(Clone, Debug)]
pub struct DataRef {
    array: Arc<ArrayD<f64>>,
    offset: usize,
    shape: Vec<usize>,
}

impl DataRef {
    /// The block of `array` that `view` (a view into it) covers, if that block is contiguous.
    pub fn of_view(array: &Arc<ArrayD<f64>>, view: &ArrayViewD<f64>) -> Option<DataRef> {
        let whole = array.as_slice()?;
        view.as_slice()?;
        let base = whole.as_ptr() as usize;
        let at = view.as_ptr() as usize;
        let offset = at.checked_sub(base)? / std::mem::size_of::<f64>();
        (offset + view.len() <= whole.len()).then(|| DataRef {
            array: array.clone(),
            offset,
            shape: view.shape().to_vec(),
        })
    }

    /// Identity of the block: (array address, offset, length). The `DataRef` keeps its array
    /// alive, so a key held together with a clone of it cannot be reused by another array.
    pub fn key(&self) -> (usize, usize, usize) {
        (
            Arc::as_ptr(&self.array) as usize,
            self.offset,
            self.shape.iter().product(),
        )
    }

    /// The block as a view.
    pub fn view(&self) -> ArrayViewD<'_, f64> {
        let len: usize = self.shape.iter().product();
        let slice = self
            .array
            .as_slice()
            .map(|s| &s[self.offset..self.offset + len])
            .unwrap_or(&[]);
        // `of_view` checked the block against the array, so this cannot fail; NaN if it did.
        ArrayViewD::from_shape(IxDyn(&self.shape), slice).unwrap_or_else(|_| unreachable_real())
    }
}

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

/// A node's inputs: at most three for every op but concatenations, so kept inline.
type Inputs = SmallVec<[NodeId; 3]>;

/// One recorded operation and its value.
///
/// A *deferred* node (a large real elementwise op) is recorded without its value: it is
/// computed on first use, fused with the deferred nodes below it that nothing else uses
/// (`fusion`), and a sum of it is computed without ever storing it.
#[derive(Debug, Clone)]
pub struct Node {
    op: Op,
    inputs: Inputs,
    value: OnceCell<Value>,
    /// The output shape of a deferred node (empty otherwise: the value holds it).
    shape: Shape,
    deferred: bool,
    needs_grad: bool,
    label: u32,
    /// Nodes recorded so far that take this one as an input.
    uses: u32,
    /// For a fused sum: its gradient with respect to each input of its tree (node index),
    /// computed with its value; `backward` scales them by the sum's own gradient.
    local_grads: Option<Box<LocalGrads>>,
}

/// Gradients of a fused sum with respect to its tree's inputs, by node index.
type LocalGrads = Vec<(usize, ArrayD<f64>)>;

/// Describes element `flat` of a checked value of `shape` for an error (for a model statement:
/// its source span and the plate indices of that element).
pub type Describe = Arc<dyn Fn(&[usize], usize) -> String + Send + Sync>;

/// A finiteness check left until a deferred value is computed (or a failure is looked for).
#[derive(Clone)]
struct FiniteCheck {
    node: NodeId,
    describe: Describe,
}

impl std::fmt::Debug for FiniteCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FiniteCheck({})", self.node.index())
    }
}

/// A reverse-mode tape over real and complex tensors.
#[derive(Debug, Clone)]
pub struct Tape {
    nodes: Vec<Node>,
    /// Gradient buffers, kept across passes and re-recordings so a static structure
    /// allocates them once; `live[i]` says whether buffer i holds this pass's gradient.
    grads: Vec<Option<Value>>,
    live: Vec<bool>,
    /// Value buffers of cleared nodes, by length, reused by elementwise ops when re-recording
    /// (a cell: deferred nodes take buffers when they are computed, behind `&self`).
    spare: RefCell<Spare>,
    labels: Vec<Arc<str>>,
    current_label: u32,
    /// Finiteness checks of deferred values, in recording order ([`Tape::check_finite`]).
    checks: Vec<FiniteCheck>,
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
            spare: RefCell::new(HashMap::new()),
            labels: vec![Arc::from("<unlabelled>")],
            current_label: 0,
            checks: Vec::new(),
        }
    }

    /// Forgets all nodes but keeps the allocated arena and gradient buffers for the next recording.
    pub fn clear(&mut self) {
        // Spare buffers that this recording did not take are not needed by the next one
        // either: keep only the ones freed now, so the pool holds at most one recording's worth.
        let spare = self.spare.get_mut();
        spare.values_mut().for_each(Vec::clear);
        for mut node in self.nodes.drain(..) {
            for (_, a) in node.local_grads.take().into_iter().flat_map(|b| *b) {
                if a.len() >= SPARE_MIN_LEN && a.is_standard_layout() {
                    spare.entry(a.len()).or_default().push(a);
                }
            }
            // Small arrays come cheaply from malloc; large ones would page-fault when re-made.
            if let (Some(Value::Real(a)), Op::Unary(_) | Op::Binary(_) | Op::Ternary(_)) =
                (node.value.into_inner(), node.op)
                && a.len() >= SPARE_MIN_LEN
            {
                spare.entry(a.len()).or_default().push(a);
            }
        }
        spare.retain(|_, buffers| !buffers.is_empty());
        self.live.clear();
        self.checks.clear();
        if self.labels.len() > MAX_KEPT_LABELS {
            self.labels.truncate(1);
        }
        self.current_label = 0;
    }

    /// Value buffers kept for reuse by the next recording (bounded by one recording's worth).
    pub fn spare_buffers(&self) -> usize {
        self.spare.borrow().values().map(Vec::len).sum()
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
        self.push_node(Op::Leaf, Inputs::new(), value, true)
    }

    /// A real leaf from an array.
    pub fn leaf_real(&mut self, value: ArrayD<f64>) -> NodeId {
        self.leaf(Value::Real(value))
    }

    /// A constant: an input with no gradient.
    pub fn constant(&mut self, value: Value) -> NodeId {
        self.push_node(Op::Const, Inputs::new(), value, false)
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

    /// Records `op` applied to `inputs`, computing its value now (large elementwise ops:
    /// when first needed, fused with the ops below them).
    pub fn apply(&mut self, op: Op, inputs: &[NodeId]) -> Result<NodeId, TapeError> {
        for id in inputs {
            self.check(*id)?;
        }
        let needs_grad = inputs.iter().any(|id| self.nodes[id.index()].needs_grad);
        if let Some(shape) = self.deferrable(&op, inputs)? {
            return Ok(self.push_deferred(op, Inputs::from_slice(inputs), shape, needs_grad));
        }
        if let Some((total, local)) = self.fused_sum(&op, inputs) {
            let value = Value::Real(ArrayD::from_elem(IxDyn(&[]), total));
            let id = self.push_node(op, Inputs::from_slice(inputs), value, needs_grad);
            self.nodes[id.index()].local_grads = (!local.is_empty()).then(|| Box::new(local));
            return Ok(id);
        }
        let values: SmallVec<[&Value; 4]> = inputs
            .iter()
            .map(|id| node_value(&self.nodes, &self.spare, id.index()))
            .collect();
        let value = match reuse_spare(self.spare.get_mut(), &op, &values) {
            Some(v) => v,
            None => op
                .forward(&values)
                .map_err(|e| self.op_error(e, self.current_label))?,
        };
        drop(values);
        Ok(self.push_node(op, Inputs::from_slice(inputs), value, needs_grad))
    }

    /// The output shape when `op` is to be deferred: a real elementwise op of at least
    /// `DEFER_MIN_LEN` elements. Broadcast errors are raised here, at recording.
    fn deferrable(&self, op: &Op, inputs: &[NodeId]) -> Result<Option<Shape>, TapeError> {
        let Some(e) = elem_op(op) else {
            return Ok(None);
        };
        if inputs.len() != e.arity() || !inputs.iter().all(|id| self.is_real(*id)) {
            return Ok(None);
        }
        // Most elementwise ops are small (per-instance tapes): decide without allocating.
        if broadcast_len(inputs.iter().map(|id| self.shape(*id))) < DEFER_MIN_LEN {
            return Ok(None);
        }
        let shapes: Vec<&[usize]> = inputs.iter().map(|id| self.shape(*id)).collect();
        let shape = fusion::check_shapes(e, &shapes)
            .map_err(|d| self.op_error(OpError::new(op.name(), d), self.current_label))?;
        Ok((shape.iter().product::<usize>() >= DEFER_MIN_LEN).then_some(shape))
    }

    /// The sum of a deferred node nothing else uses, computed tile by tile without storing it.
    /// When a gradient will be wanted, the same pass (one read of the data) also computes the
    /// sum's gradient with respect to the tree's inputs, for `backward` to scale by the seed.
    fn fused_sum(&self, op: &Op, inputs: &[NodeId]) -> Option<(f64, LocalGrads)> {
        let (Op::Reduce(Reduce::Sum(None)), [x]) = (op, inputs) else {
            return None;
        };
        let node = &self.nodes[x.index()];
        if !node.deferred || node.uses != 0 || node.value.get().is_some() {
            return None;
        }
        elem_op(&node.op)?;
        let built = build_tree(&self.nodes, x.index());
        let values = frontier_values(&self.nodes, &self.spare, &built.frontier);
        if !node.needs_grad {
            let mut total = 0.0;
            fusion::evaluate(&built.tree, &values, Sink::Sum(&mut total)).ok()?;
            return Some((total, Vec::new()));
        }
        let mut local: LocalGrads = built
            .frontier
            .iter()
            .zip(&values)
            .filter(|(j, _)| self.nodes[**j].needs_grad)
            .map(|(&j, v)| (j, zeroed(&self.spare, v.shape())))
            .collect();
        let mut total = 0.0;
        {
            let mut it = local.iter_mut();
            let mut refs: Vec<Option<&mut [f64]>> = Vec::with_capacity(built.frontier.len());
            for &j in &built.frontier {
                refs.push(match self.nodes[j].needs_grad {
                    true => it.next().and_then(|(_, a)| a.as_slice_mut()),
                    false => None,
                });
            }
            fusion::value_and_gradient(&built.tree, &values, &mut refs, &mut total).ok()?;
        }
        Some((total, local))
    }

    fn push_node(&mut self, op: Op, inputs: Inputs, value: Value, needs_grad: bool) -> NodeId {
        self.push(op, inputs, OnceCell::from(value), Shape::new(), needs_grad)
    }

    fn push_deferred(&mut self, op: Op, inputs: Inputs, shape: Shape, needs_grad: bool) -> NodeId {
        let id = self.push(op, inputs, OnceCell::new(), shape, needs_grad);
        self.nodes[id.index()].deferred = true;
        id
    }

    fn push(
        &mut self,
        op: Op,
        inputs: Inputs,
        value: OnceCell<Value>,
        shape: Shape,
        needs_grad: bool,
    ) -> NodeId {
        let id = NodeId(self.nodes.len() as u32);
        for i in &inputs {
            self.nodes[i.index()].uses += 1;
        }
        self.nodes.push(Node {
            op,
            inputs,
            value,
            shape,
            deferred: false,
            needs_grad,
            label: self.current_label,
            uses: 0,
            local_grads: None,
        });
        id
    }

    /// A constant read in place from a shared array (data on the tape without a copy; a copy
    /// is made only if something needs the node's value as an array).
    pub fn data(&mut self, data: DataRef) -> NodeId {
        let shape = Shape::from_slice(&data.shape);
        self.push_deferred(Op::Data(Box::new(data)), Inputs::new(), shape, false)
    }

    /// The shared data block a `data` node reads, if the node is one.
    pub fn data_ref(&self, id: NodeId) -> Option<&DataRef> {
        match &self.nodes.get(id.index())?.op {
            Op::Data(d) => Some(d),
            _ => None,
        }
    }

    /// The shape of a node's value (without computing a deferred node).
    pub fn shape(&self, id: NodeId) -> &[usize] {
        let node = &self.nodes[id.index()];
        match node.value.get() {
            Some(v) => v.shape(),
            None => &node.shape,
        }
    }

    /// True when the node's value is real (without computing a deferred node).
    pub fn is_real(&self, id: NodeId) -> bool {
        let node = &self.nodes[id.index()];
        node.deferred || matches!(node.value.get(), Some(Value::Real(_)))
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

    /// The value of a node (computing it now if it was deferred).
    pub fn value(&self, id: NodeId) -> &Value {
        node_value(&self.nodes, &self.spare, id.index())
    }

    /// True when the node depends on a leaf that takes gradients (a latent or param).
    pub fn needs_grad(&self, id: NodeId) -> bool {
        self.nodes.get(id.index()).is_some_and(|n| n.needs_grad)
    }

    /// The value of a real node, or an error naming the node's operator.
    pub fn real(&self, id: NodeId) -> Result<&ArrayD<f64>, TapeError> {
        self.check(id)?;
        match self.value(id) {
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
            detail: format!(
                "expected a {expected} value, found {}",
                self.value(id).kind()
            ),
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
        node.value = OnceCell::from(value);
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
            if node.deferred {
                // Recomputed on first use, from the new inputs.
                node.value.take();
                continue;
            }
            let values: Vec<&Value> = node
                .inputs
                .iter()
                .map(|id| node_value(before, &self.spare, id.index()))
                .collect();
            if let Some(out) = node.value.get_mut()
                && forward_in_place(&node.op, &values, out)
            {
                continue;
            }
            match node.op.forward(&values) {
                Ok(v) => node.value = OnceCell::from(v),
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
        self.real(root)?;
        let seed = Value::Real(ArrayD::from_elem(IxDyn(self.shape(root)), 1.0));
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
            if seed.shape() != self.shape(*id) {
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
        if self.propagate_local(i) || self.propagate_fused(i) || self.propagate_in_place(i) {
            return Ok(());
        }
        let node = &self.nodes[i];
        let Some(g) = self.grads[i].as_ref() else {
            return Ok(());
        };
        let inputs: SmallVec<[&Value; 4]> = node
            .inputs
            .iter()
            .map(|id| node_value(&self.nodes, &self.spare, id.index()))
            .collect();
        let wanted: SmallVec<[bool; 4]> = node
            .inputs
            .iter()
            .map(|id| self.nodes[id.index()].needs_grad)
            .collect();
        let input_grads = node
            .op
            .vjp(&inputs, node_value(&self.nodes, &self.spare, i), g, &wanted)
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
        let real = |id: &NodeId| match self.nodes[id.index()].value.get() {
            Some(Value::Real(a)) if a.shape() == g.shape() => Some(a),
            _ => None,
        };
        let Some(Value::Real(y)) = node.value.get() else {
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
                let inner: SmallVec<[Option<(usize, usize)>; 2]> = node
                    .inputs
                    .iter()
                    .map(|id| match self.nodes[id.index()].value.get() {
                        Some(Value::Real(a)) => {
                            row_blocks(a.shape(), g.shape()).map(|r| (id.index(), r))
                        }
                        _ => None,
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
                    let shape = self.nodes[j].value.get().map_or(&[][..], Value::shape);
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

    /// The reverse sweep of a fused sum whose local gradients were computed with its value:
    /// each input's gradient is the sum's gradient times its local gradient.
    fn propagate_local(&mut self, i: usize) -> bool {
        let node = &self.nodes[i];
        let Some(local_grads) = node.local_grads.as_deref() else {
            return false;
        };
        let g = match self.grads[i].as_ref() {
            Some(Value::Real(g)) if g.len() == 1 => g.iter().copied().sum::<f64>(),
            _ => return false,
        };
        for (j, local) in local_grads {
            let j = *j;
            if let Some(acc) = grad_buffer(&mut self.grads[j], &mut self.live[j], local.shape()) {
                acc.zip_mut_with(local, |a, &l| *a += g * l);
            }
        }
        true
    }

    /// The reverse sweep of a deferred node, or of the sum of one, as one fused pass over the
    /// tree below it. Returns false when the node is neither.
    fn propagate_fused(&mut self, i: usize) -> bool {
        let node = &self.nodes[i];
        let (root, scalar_seed) = match (&node.op, node.inputs.as_slice()) {
            _ if node.deferred && elem_op(&node.op).is_some() => (i, None),
            (Op::Reduce(Reduce::Sum(None)), [x])
                if inlined(&self.nodes, x.index())
                    && elem_op(&self.nodes[x.index()].op).is_some() =>
            {
                let g = match self.grads[i].as_ref() {
                    Some(Value::Real(g)) if g.len() == 1 => g.iter().copied().sum::<f64>(),
                    _ => return false,
                };
                (x.index(), Some(g))
            }
            _ => return false,
        };
        let (nodes, grads, live) = (&self.nodes, &mut self.grads, &mut self.live);
        let built = build_tree(nodes, root);
        let values = frontier_values(nodes, &self.spare, &built.frontier);
        // Take the frontier's gradient buffers out while the tree writes into them.
        let mut buffers: Vec<Option<ArrayD<f64>>> = built
            .frontier
            .iter()
            .map(|&j| {
                if !nodes[j].needs_grad {
                    return None;
                }
                let shape = values[built.frontier.iter().position(|&f| f == j)?].shape();
                grad_buffer(&mut grads[j], &mut live[j], shape)?;
                match grads[j].take() {
                    Some(Value::Real(a)) => Some(a),
                    _ => None,
                }
            })
            .collect();
        let seed_buffer = match scalar_seed {
            Some(_) => None,
            None => match grads[i].take() {
                Some(Value::Real(g)) if g.is_standard_layout() => Some(g),
                Some(Value::Real(g)) => Some(g.as_standard_layout().into_owned()),
                _ => return false,
            },
        };
        let seed = match (&seed_buffer, scalar_seed) {
            (_, Some(g)) => Seed::Scalar(g),
            (Some(g), None) => match g.as_slice() {
                Some(s) => Seed::Buffer(s),
                None => Seed::Scalar(f64::NAN),
            },
            (None, None) => Seed::Scalar(f64::NAN),
        };
        {
            let mut refs: Vec<Option<&mut [f64]>> = buffers
                .iter_mut()
                .map(|b| b.as_mut().and_then(|a| a.as_slice_mut()))
                .collect();
            // Shapes were checked at recording, so the tree cannot fail here; a failure would
            // leave NaN gradients, which the engine reports.
            if fusion::backward(&built.tree, &values, seed, &mut refs).is_err() {
                refs.iter_mut().flatten().for_each(|r| r.fill(f64::NAN));
            }
        }
        for (&j, b) in built.frontier.iter().zip(buffers) {
            if let Some(b) = b {
                grads[j] = Some(Value::Real(b));
            }
        }
        if let Some(g) = seed_buffer {
            grads[i] = Some(Value::Real(g));
        }
        true
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
        self.grad_real_ref(id).map(Cow::into_owned)
    }

    /// `grad_real` without copying a gradient that exists (zeros are made when it does not).
    pub fn grad_real_ref(&self, id: NodeId) -> Result<Cow<'_, ArrayD<f64>>, TapeError> {
        match self.grad(id) {
            Some(Value::Real(g)) => Ok(Cow::Borrowed(g)),
            Some(Value::Complex(_)) => Err(self.kind_error(id, "real")),
            None => {
                self.real(id)?;
                Ok(Cow::Owned(ArrayD::zeros(IxDyn(self.shape(id)))))
            }
        }
    }

    /// Requires `id`'s value to be finite. A computed value is checked now: a non-finite element
    /// is an error whose op is the first non-finite node on the tape and whose label is
    /// `describe(shape, flat)` of the first bad element. A deferred value is not computed for the
    /// check, which would split its fused tree: the check is kept, and
    /// [`Tape::first_non_finite_value`] runs the kept checks first, in recording order, when a
    /// result that depends on the value turns out not finite.
    pub fn check_finite(
        &mut self,
        id: NodeId,
        describe: impl FnOnce() -> Describe,
    ) -> Result<(), TapeError> {
        let node = self
            .nodes
            .get(id.index())
            .ok_or(TapeError::UnknownNode(id.index()))?;
        if node.value.get().is_none() {
            let describe = describe();
            self.checks.push(FiniteCheck { node: id, describe });
            return Ok(());
        }
        if self.value(id).is_finite() {
            return Ok(());
        }
        // A kept check recorded earlier names the first bad statement, as an eager one would have.
        self.first_failed_kept_check()
            .or_else(|| self.failed_check(id, &describe()))
            .map_or(Ok(()), Err)
    }

    fn first_failed_kept_check(&self) -> Option<TapeError> {
        self.checks
            .iter()
            .find_map(|c| self.failed_check(c.node, &c.describe))
    }

    /// The error of a failed finiteness check of `id` (None when its value is finite).
    fn failed_check(&self, id: NodeId, describe: &Describe) -> Option<TapeError> {
        let v = self.value(id);
        if v.is_finite() {
            return None;
        }
        let flat = match v {
            Value::Real(a) => a.iter().position(|x| !x.is_finite()),
            Value::Complex(a) => a.iter().position(|x| !x.is_finite()),
        };
        let op = match self.first_non_finite_node() {
            Some(i) => self.nodes[i].op.name(),
            None => "value",
        };
        Some(TapeError::NonFinite {
            op,
            label: describe(v.shape(), flat.unwrap_or(0)),
            what: "value",
            node: id.index(),
        })
    }

    fn first_non_finite_node(&self) -> Option<usize> {
        (0..self.nodes.len()).position(|i| !node_value(&self.nodes, &self.spare, i).is_finite())
    }

    /// The first failed kept finiteness check ([`Tape::check_finite`]), else the first node (in
    /// recording order) whose value is not finite, as an error.
    pub fn first_non_finite_value(&self) -> Option<TapeError> {
        if let Some(e) = self.first_failed_kept_check() {
            return Some(e);
        }
        let i = self.first_non_finite_node()?;
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

/// The element count of the broadcast of `shapes` (an upper bound when they do not broadcast).
fn broadcast_len<'a>(shapes: impl Iterator<Item = &'a [usize]> + Clone) -> usize {
    let ndim = shapes.clone().map(<[usize]>::len).max().unwrap_or(0);
    (0..ndim)
        .map(|k| {
            shapes
                .clone()
                .filter_map(|s| s.len().checked_sub(ndim - k).map(|i| s[i]))
                .max()
                .unwrap_or(1)
        })
        .product()
}

/// The value of node `i`, computing it (fused with the deferred nodes below it) if needed.
fn node_value<'a>(nodes: &'a [Node], spare: &RefCell<Spare>, i: usize) -> &'a Value {
    nodes[i]
        .value
        .get_or_init(|| Value::Real(materialize(nodes, spare, i)))
}

/// A zero array of `shape`, in a spare buffer when there is one.
fn zeroed(spare: &RefCell<Spare>, shape: &[usize]) -> ArrayD<f64> {
    let len: usize = shape.iter().product();
    let reused = spare
        .borrow_mut()
        .get_mut(&len)
        .and_then(Vec::pop)
        .and_then(|a| a.into_shape_with_order(IxDyn(shape)).ok());
    match reused {
        Some(mut a) => {
            a.fill(0.0);
            a
        }
        None => ArrayD::zeros(IxDyn(shape)),
    }
}

/// Computes a deferred node into a (reused) buffer.
fn materialize(nodes: &[Node], spare: &RefCell<Spare>, i: usize) -> ArrayD<f64> {
    if let Op::Data(d) = &nodes[i].op {
        return d.view().to_owned();
    }
    let built = build_tree(nodes, i);
    let values = frontier_values(nodes, spare, &built.frontier);
    let shape = &built.tree.shape;
    let len: usize = shape.iter().product();
    let reused = spare
        .borrow_mut()
        .get_mut(&len)
        .and_then(Vec::pop)
        .and_then(|a| a.into_shape_with_order(IxDyn(shape)).ok())
        .filter(|a| a.is_standard_layout());
    let mut out = reused.unwrap_or_else(|| ArrayD::zeros(IxDyn(shape)));
    let ok = out
        .as_slice_mut()
        .is_some_and(|o| fusion::evaluate(&built.tree, &values, Sink::Buffer(o)).is_ok());
    if !ok {
        // Shapes were checked at recording; NaN makes any impossible failure visible.
        out.fill(f64::NAN);
    }
    out
}

/// The elementwise operator of an op that can be fused.
fn elem_op(op: &Op) -> Option<ElemOp> {
    match op {
        Op::Unary(u) => Some(ElemOp::Unary(*u)),
        Op::Binary(b) => Some(ElemOp::Binary(*b)),
        Op::Ternary(t) => Some(ElemOp::Ternary(*t)),
        _ => None,
    }
}

/// True when node `j` is computed inside its consumer's tree: deferred, not stored, and used
/// by that consumer only.
fn inlined(nodes: &[Node], j: usize) -> bool {
    let n = &nodes[j];
    n.deferred && n.uses == 1 && n.value.get().is_none()
}

/// A tree and the node index of each frontier input.
struct Built {
    tree: Tree,
    frontier: Vec<usize>,
}

/// The fused tree rooted at deferred node `root`: its inlined inputs of the same shape
/// become instructions, everything else a frontier input.
fn build_tree(nodes: &[Node], root: usize) -> Built {
    let mut b = Built {
        tree: Tree {
            instrs: Vec::new(),
            shape: nodes[root].shape.clone(),
        },
        frontier: Vec::new(),
    };
    emit(nodes, root, &mut b);
    b
}

fn emit(nodes: &[Node], i: usize, b: &mut Built) -> Arg {
    let node = &nodes[i];
    let Some(op) = elem_op(&node.op) else {
        return frontier(b, i);
    };
    let mut args = [Arg::In(0); 3];
    for (slot, id) in args.iter_mut().zip(&node.inputs) {
        let j = id.index();
        let inline = inlined(nodes, j)
            && nodes[j].shape == b.tree.shape
            && b.tree.instrs.len() < MAX_TREE_INSTRS;
        *slot = if inline {
            emit(nodes, j, b)
        } else {
            frontier(b, j)
        };
    }
    b.tree.instrs.push(Instr {
        op,
        args,
        needs: node.needs_grad,
    });
    Arg::Reg(b.tree.instrs.len() - 1)
}

fn frontier(b: &mut Built, j: usize) -> Arg {
    let m = match b.frontier.iter().position(|&f| f == j) {
        Some(m) => m,
        None => {
            b.frontier.push(j);
            b.frontier.len() - 1
        }
    };
    Arg::In(m)
}

/// The real values of a tree's frontier inputs: data read in place, deferred nodes computed now.
fn frontier_values<'a>(
    nodes: &'a [Node],
    spare: &RefCell<Spare>,
    frontier: &[usize],
) -> Vec<ArrayViewD<'a, f64>> {
    frontier
        .iter()
        .map(|&j| {
            if let (Op::Data(d), None) = (&nodes[j].op, nodes[j].value.get()) {
                return d.view();
            }
            match node_value(nodes, spare, j) {
                Value::Real(a) => a.view(),
                // Deferred ops take real inputs only (checked at recording).
                Value::Complex(_) => unreachable_real(),
            }
        })
        .collect()
}

fn unreachable_real() -> ArrayViewD<'static, f64> {
    static EMPTY: std::sync::OnceLock<ArrayD<f64>> = std::sync::OnceLock::new();
    EMPTY
        .get_or_init(|| ArrayD::from_elem(IxDyn(&[]), f64::NAN))
        .view()
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
fn reuse_spare(spare: &mut Spare, op: &Op, x: &[&Value]) -> Option<Value> {
    let shape = match (op, x) {
        (Op::Unary(_), [Value::Real(a)]) => Shape::from_slice(a.shape()),
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
