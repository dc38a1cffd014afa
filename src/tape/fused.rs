//! Registration of fused operators with hand-written adjoints (the physics kernels plug in
//! here: one node for a whole shoebox over channels and domains, never one per pixel).
//!
//! A fused operator takes several tensor inputs and returns one tensor; its `vjp` returns a
//! gradient for each input (None where it has none). The tape treats it like a built-in op:
//! it appears in error messages by `name`, and the finite-difference tests apply to it too.

use super::graph::{NodeId, Tape, TapeError};
use super::op::Op;
use super::value::Value;
use std::sync::Arc;

/// An operator with a hand-written vector-Jacobian product.
pub trait FusedOp: Send + Sync + std::fmt::Debug {
    /// Short name shown in errors (e.g. "bragg_spot").
    fn name(&self) -> &'static str;

    /// The output from the inputs; an `Err` message names what is wrong with them.
    fn forward(&self, inputs: &[&Value]) -> Result<Value, String>;

    /// Gradients of the inputs given the output and the gradient of the loss with respect to it.
    fn vjp(
        &self,
        inputs: &[&Value],
        output: &Value,
        grad: &Value,
    ) -> Result<Vec<Option<Value>>, String>;

    /// Like `vjp`, told which inputs need a gradient (`wanted[i]`), so an operator may skip
    /// the others (data and constants); the default computes them all.
    fn vjp_wanted(
        &self,
        inputs: &[&Value],
        output: &Value,
        grad: &Value,
        _wanted: &[bool],
    ) -> Result<Vec<Option<Value>>, String> {
        self.vjp(inputs, output, grad)
    }
}

impl Tape {
    /// Records a fused operator applied to `inputs`.
    pub fn fused(&mut self, op: Arc<dyn FusedOp>, inputs: &[NodeId]) -> Result<NodeId, TapeError> {
        self.apply(Op::Fused(op), inputs)
    }
}
