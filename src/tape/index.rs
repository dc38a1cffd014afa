//! Indexing and shape operators on real or complex tensors: gather and scatter-add along an
//! axis, reshape, explicit broadcast, transpose and concatenation.
//!
//! Gather and scatter-add are each other's adjoints; indices are checked at record time, so
//! an out-of-range index is an error naming the operator, never a panic.

use super::graph::{NodeId, Tape, TapeError};
use super::op::{InputGrads, Op, OpError, arg};
use super::value::{Value, unbroadcast};
use ndarray::{ArrayD, Axis, IxDyn};
use num_complex::ComplexFloat;
use std::sync::Arc;

/// Indexing and shape operators.
#[derive(Debug, Clone, PartialEq)]
pub enum Index {
    /// out[.., j, ..] = x[.., index[j], ..] along `axis`.
    Gather {
        /// Axis indexed.
        axis: usize,
        /// Selected positions (repeats allowed).
        index: Arc<[usize]>,
    },
    /// out has length `len` along `axis`; out[.., index[j], ..] += x[.., j, ..].
    ScatterAdd {
        /// Axis scattered into.
        axis: usize,
        /// Destination of each input slice.
        index: Arc<[usize]>,
        /// Output length along `axis`.
        len: usize,
    },
    /// Same elements in row-major order, new shape.
    Reshape(Vec<usize>),
    /// Broadcast to a larger shape (numpy rules).
    BroadcastTo(Vec<usize>),
    /// Reverse the order of axes.
    Transpose,
    /// Join inputs along an existing axis.
    Concat(usize),
}

impl Index {
    /// Operator name for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Index::Gather { .. } => "gather",
            Index::ScatterAdd { .. } => "scatter_add",
            Index::Reshape(_) => "reshape",
            Index::BroadcastTo(_) => "broadcast_to",
            Index::Transpose => "transpose",
            Index::Concat(_) => "concat",
        }
    }

    /// Output value.
    pub fn forward(&self, x: &[&Value]) -> Result<Value, OpError> {
        let n = self.name();
        if let Index::Concat(axis) = self {
            return concat(n, x, *axis);
        }
        match arg(n, x, 0)? {
            Value::Real(a) => self.forward_one(a).map(Value::Real),
            Value::Complex(a) => self.forward_one(a).map(Value::Complex),
        }
    }

    fn forward_one<T: ComplexFloat>(&self, x: &ArrayD<T>) -> Result<ArrayD<T>, OpError> {
        let n = self.name();
        match self {
            Index::Gather { axis, index } => {
                check_index(
                    n,
                    x.shape(),
                    *axis,
                    index,
                    x.shape().get(*axis).copied().unwrap_or(0),
                )?;
                Ok(x.select(Axis(*axis), index))
            }
            Index::ScatterAdd { axis, index, len } => {
                check_index(n, x.shape(), *axis, index, *len)?;
                if x.shape()[*axis] != index.len() {
                    return Err(OpError::new(
                        n,
                        format!("{} indices for {} slices", index.len(), x.shape()[*axis]),
                    ));
                }
                Ok(scatter_add(x, *axis, index, *len))
            }
            Index::Reshape(shape) => {
                x.to_shape(IxDyn(shape))
                    .map(|v| v.into_owned())
                    .map_err(|e| {
                        OpError::new(
                            n,
                            format!("cannot reshape {:?} to {shape:?}: {e}", x.shape()),
                        )
                    })
            }
            Index::BroadcastTo(shape) => x
                .broadcast(IxDyn(shape))
                .map(|v| v.to_owned())
                .ok_or_else(|| {
                    OpError::new(n, format!("cannot broadcast {:?} to {shape:?}", x.shape()))
                }),
            Index::Transpose => Ok(x.t().as_standard_layout().into_owned()),
            Index::Concat(_) => Err(OpError::new(n, "concat takes several inputs")),
        }
    }

    /// Input gradients.
    pub fn vjp(&self, x: &[&Value], g: &Value) -> Result<InputGrads, OpError> {
        if let Index::Concat(axis) = self {
            return concat_vjp(x, g, *axis);
        }
        let shape = arg(self.name(), x, 0)?.shape().to_vec();
        Ok(smallvec::smallvec![Some(match g {
            Value::Real(g) => Value::Real(self.vjp_one(g, &shape)),
            Value::Complex(g) => Value::Complex(self.vjp_one(g, &shape)),
        })])
    }

    fn vjp_one<T: ComplexFloat>(&self, g: &ArrayD<T>, shape: &[usize]) -> ArrayD<T> {
        match self {
            Index::Gather { axis, index } => scatter_add(g, *axis, index, shape[*axis]),
            Index::ScatterAdd { axis, index, .. } => g.select(Axis(*axis), index),
            Index::Reshape(_) | Index::Concat(_) => {
                let flat: Vec<T> = g.iter().copied().collect();
                ArrayD::from_shape_vec(IxDyn(shape), flat)
                    .unwrap_or_else(|_| ArrayD::zeros(IxDyn(shape)))
            }
            Index::BroadcastTo(_) => unbroadcast(g.clone(), shape),
            Index::Transpose => g.t().as_standard_layout().into_owned(),
        }
    }
}

fn check_index(
    op: &'static str,
    shape: &[usize],
    axis: usize,
    index: &[usize],
    len: usize,
) -> Result<(), OpError> {
    if axis >= shape.len() {
        return Err(OpError::new(
            op,
            format!("axis {axis} out of range for shape {shape:?}"),
        ));
    }
    match index.iter().find(|&&i| i >= len) {
        Some(bad) => Err(OpError::new(
            op,
            format!("index {bad} out of range 0..{len} on axis {axis}"),
        )),
        None => Ok(()),
    }
}

fn scatter_add<T: ComplexFloat>(
    x: &ArrayD<T>,
    axis: usize,
    index: &[usize],
    len: usize,
) -> ArrayD<T> {
    let mut shape = x.shape().to_vec();
    shape[axis] = len;
    let mut out = ArrayD::zeros(IxDyn(&shape));
    // Vectors (the common case: pixel masks, parameter slices): one pass, no views per element.
    if x.ndim() == 1
        && let (Some(src), Some(dst)) = (x.as_slice(), out.as_slice_mut())
    {
        for (&v, &i) in src.iter().zip(index) {
            dst[i] = dst[i] + v;
        }
        return out;
    }
    for (j, &i) in index.iter().enumerate() {
        let mut dst = out.index_axis_mut(Axis(axis), i);
        dst.zip_mut_with(&x.index_axis(Axis(axis), j), |d, &s| *d = *d + s);
    }
    out
}

fn concat(op: &'static str, x: &[&Value], axis: usize) -> Result<Value, OpError> {
    let err = |e: ndarray::ShapeError| {
        OpError::new(op, format!("cannot concatenate along axis {axis}: {e}"))
    };
    if x.iter().all(|v| matches!(v, Value::Real(_))) {
        let views: Vec<_> = x
            .iter()
            .filter_map(|v| {
                if let Value::Real(a) = v {
                    Some(a.view())
                } else {
                    None
                }
            })
            .collect();
        return ndarray::concatenate(Axis(axis), &views)
            .map(Value::Real)
            .map_err(err);
    }
    if x.iter().all(|v| matches!(v, Value::Complex(_))) {
        let views: Vec<_> = x
            .iter()
            .filter_map(|v| {
                if let Value::Complex(a) = v {
                    Some(a.view())
                } else {
                    None
                }
            })
            .collect();
        return ndarray::concatenate(Axis(axis), &views)
            .map(Value::Complex)
            .map_err(err);
    }
    Err(OpError::new(op, "inputs mix real and complex tensors"))
}

fn concat_vjp(x: &[&Value], g: &Value, axis: usize) -> Result<InputGrads, OpError> {
    let mut start = 0;
    let mut out = InputGrads::with_capacity(x.len());
    for v in x {
        let len = v.shape()[axis];
        let range = ndarray::Slice::from(start..start + len);
        out.push(Some(match g {
            Value::Real(g) => Value::Real(g.slice_axis(Axis(axis), range).to_owned()),
            Value::Complex(g) => Value::Complex(g.slice_axis(Axis(axis), range).to_owned()),
        }));
        start += len;
    }
    Ok(out)
}

impl Tape {
    /// Selects positions `index` along `axis`.
    pub fn gather(&mut self, x: NodeId, axis: usize, index: &[usize]) -> Result<NodeId, TapeError> {
        self.apply(
            Op::Index(Index::Gather {
                axis,
                index: index.into(),
            }),
            &[x],
        )
    }

    /// Adds slice j of `x` into position index[j] of a zero tensor of length `len` on `axis`.
    pub fn scatter_add(
        &mut self,
        x: NodeId,
        axis: usize,
        index: &[usize],
        len: usize,
    ) -> Result<NodeId, TapeError> {
        self.apply(
            Op::Index(Index::ScatterAdd {
                axis,
                index: index.into(),
                len,
            }),
            &[x],
        )
    }

    /// Reshapes (row-major).
    pub fn reshape(&mut self, x: NodeId, shape: &[usize]) -> Result<NodeId, TapeError> {
        self.apply(Op::Index(Index::Reshape(shape.to_vec())), &[x])
    }

    /// Broadcasts to `shape`.
    pub fn broadcast_to(&mut self, x: NodeId, shape: &[usize]) -> Result<NodeId, TapeError> {
        self.apply(Op::Index(Index::BroadcastTo(shape.to_vec())), &[x])
    }

    /// Reverses the axes.
    pub fn transpose(&mut self, x: NodeId) -> Result<NodeId, TapeError> {
        self.apply(Op::Index(Index::Transpose), &[x])
    }

    /// Concatenates along `axis`.
    pub fn concat(&mut self, xs: &[NodeId], axis: usize) -> Result<NodeId, TapeError> {
        self.apply(Op::Index(Index::Concat(axis)), xs)
    }
}
