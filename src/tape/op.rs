//! The operator set of the tape: one enum, dispatching each family's forward rule and its
//! vector-Jacobian product (VJP), which live side by side in the family's module.
//!
//! In: input values (and, for the VJP, the output value and its gradient). Out: the output
//! value, or one optional gradient per input (None where the input needs none).

use super::complex::ComplexOp;
use super::elementwise::{Binary, Unary};
use super::fused::FusedOp;
use super::fusion::{self, ElemOp, Ternary};
use super::index::Index;
use super::linalg;
use super::reduce::Reduce;
use super::value::Value;
use ndarray::ArrayD;
use std::sync::Arc;

/// An operator recorded on the tape.
#[derive(Debug, Clone)]
pub enum Op {
    /// An input with a gradient.
    Leaf,
    /// An input without a gradient.
    Const,
    /// A constant read in place from shared data.
    Data(Box<super::graph::DataRef>),
    /// Real elementwise unary math.
    Unary(Unary),
    /// Real elementwise binary arithmetic with broadcasting.
    Binary(Binary),
    /// Real elementwise three-input operators with broadcasting (log-densities).
    Ternary(Ternary),
    /// Complex-valued operations.
    Complex(ComplexOp),
    /// Sums, means and log-sum-exps, over everything or one axis.
    Reduce(Reduce),
    /// Gathers, scatter-adds, reshapes, concatenations.
    Index(Index),
    /// Matrix product of a 2-d tensor with a 2-d or 1-d tensor.
    MatMul,
    /// A registered operator with a hand-written adjoint.
    Fused(Arc<dyn FusedOp>),
}

/// An op's complaint about its inputs, before the tape adds the source label.
#[derive(Debug, Clone)]
pub struct OpError {
    /// Operator name.
    pub op: &'static str,
    /// What was wrong.
    pub detail: String,
}

impl OpError {
    /// An error of operator `op`.
    pub fn new(op: &'static str, detail: impl Into<String>) -> Self {
        OpError {
            op,
            detail: detail.into(),
        }
    }
}

/// The gradients of an op's inputs: one entry per input.
/// Inline for up to two inputs (most ops), so the generic backward path allocates no vector.
pub type InputGrads = smallvec::SmallVec<[Option<Value>; 2]>;

impl Op {
    /// Name used in error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Leaf => "leaf",
            Op::Const => "constant",
            Op::Data(_) => "data",
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::Ternary(t) => t.name(),
            Op::Complex(c) => c.name(),
            Op::Reduce(r) => r.name(),
            Op::Index(i) => i.name(),
            Op::MatMul => "matmul",
            Op::Fused(f) => f.name(),
        }
    }

    /// Computes the op's output from its inputs.
    pub fn forward(&self, x: &[&Value]) -> Result<Value, OpError> {
        let name = self.name();
        match self {
            Op::Leaf | Op::Const => Err(OpError::new(name, "inputs have no forward rule")),
            Op::Data(d) => Ok(Value::Real(d.view().to_owned())),
            Op::Unary(u) => Ok(Value::Real(u.forward(real(name, x, 0)?))),
            Op::Binary(b) => Ok(Value::Real(
                b.forward(real(name, x, 0)?, real(name, x, 1)?)?,
            )),
            Op::Ternary(t) => {
                let reals = reals(name, x, 3)?;
                fusion::single(ElemOp::Ternary(*t), &reals)
                    .map(Value::Real)
                    .map_err(|d| OpError::new(name, d))
            }
            Op::Complex(c) => c.forward(x),
            Op::Reduce(r) => r.forward(arg(name, x, 0)?),
            Op::Index(i) => i.forward(x),
            Op::MatMul => Ok(Value::Real(linalg::matmul(
                real(name, x, 0)?,
                real(name, x, 1)?,
            )?)),
            Op::Fused(f) => f.forward(x).map_err(|d| OpError::new(name, d)),
        }
    }

    /// Gradients of the inputs given the output gradient `g`; `wanted[i]` says which are needed.
    pub fn vjp(
        &self,
        x: &[&Value],
        y: &Value,
        g: &Value,
        wanted: &[bool],
    ) -> Result<InputGrads, OpError> {
        let name = self.name();
        match self {
            Op::Leaf | Op::Const | Op::Data(_) => Ok(InputGrads::new()),
            Op::Unary(u) => {
                let (xr, yr, gr) = (real(name, x, 0)?, as_real(name, y)?, as_real(name, g)?);
                Ok(smallvec::smallvec![Some(Value::Real(u.vjp(xr, yr, gr)))])
            }
            Op::Binary(b) => {
                let (a, c, gr) = (real(name, x, 0)?, real(name, x, 1)?, as_real(name, g)?);
                let (ga, gc) = b.vjp(a, c, as_real(name, y)?, gr, wanted);
                Ok(smallvec::smallvec![
                    ga.map(Value::Real),
                    gc.map(Value::Real)
                ])
            }
            Op::Ternary(t) => {
                let reals = reals(name, x, 3)?;
                fusion::single_vjp(ElemOp::Ternary(*t), &reals, as_real(name, g)?, wanted)
                    .map(|gs| gs.into_iter().map(|g| g.map(Value::Real)).collect())
                    .map_err(|d| OpError::new(name, d))
            }
            Op::Complex(c) => c.vjp(x, y, g),
            Op::Reduce(r) => Ok(smallvec::smallvec![Some(r.vjp(arg(name, x, 0)?, y, g)?)]),
            Op::Index(i) => i.vjp(x, g),
            Op::MatMul => {
                let (a, b, gr) = (real(name, x, 0)?, real(name, x, 1)?, as_real(name, g)?);
                let (ga, gb) = linalg::matmul_vjp(a, b, gr)?;
                Ok(smallvec::smallvec![
                    Some(Value::Real(ga)),
                    Some(Value::Real(gb))
                ])
            }
            Op::Fused(f) => f
                .vjp_wanted(x, y, g, wanted)
                .map(InputGrads::from_vec)
                .map_err(|d| OpError::new(name, d)),
        }
    }
}

/// Input `i`, of either kind.
pub(crate) fn arg<'a>(op: &'static str, x: &[&'a Value], i: usize) -> Result<&'a Value, OpError> {
    x.get(i)
        .copied()
        .ok_or_else(|| OpError::new(op, format!("missing input {i}")))
}

/// The first `n` inputs, which must be real.
fn reals<'a>(op: &'static str, x: &[&'a Value], n: usize) -> Result<Vec<&'a ArrayD<f64>>, OpError> {
    (0..n).map(|i| real(op, x, i)).collect()
}

/// Input `i`, which must be real.
pub(crate) fn real<'a>(
    op: &'static str,
    x: &[&'a Value],
    i: usize,
) -> Result<&'a ArrayD<f64>, OpError> {
    as_real(op, arg(op, x, i)?)
}

/// A value that must be real.
pub(crate) fn as_real<'a>(op: &'static str, v: &'a Value) -> Result<&'a ArrayD<f64>, OpError> {
    match v {
        Value::Real(a) => Ok(a),
        Value::Complex(_) => Err(OpError::new(op, "expected a real input, found complex")),
    }
}

/// A value that must be complex.
pub(crate) fn as_complex<'a>(
    op: &'static str,
    v: &'a Value,
) -> Result<&'a ArrayD<num_complex::Complex64>, OpError> {
    match v {
        Value::Complex(a) => Ok(a),
        Value::Real(_) => Err(OpError::new(op, "expected a complex input, found real")),
    }
}
