//! Tensor values held by tape nodes: real (`f64`) or complex (`Complex64`) n-d arrays.
//!
//! In: ndarray arrays. Out: a `Value` with shape queries and the broadcast helpers the
//! vector-Jacobian products need (`unbroadcast` sums a gradient back to an input's shape).
//! Complex gradients follow one convention throughout the tape: for a real loss L and a
//! complex node z = x + iy, the stored gradient is dL/dx + i dL/dy.

use ndarray::{ArrayD, Axis, IxDyn};
use num_complex::Complex64;

/// A tensor value: real or complex.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Real-valued tensor.
    Real(ArrayD<f64>),
    /// Complex-valued tensor.
    Complex(ArrayD<Complex64>),
}

impl Value {
    /// Shape of the tensor.
    pub fn shape(&self) -> &[usize] {
        match self {
            Value::Real(a) => a.shape(),
            Value::Complex(a) => a.shape(),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Value::Real(a) => a.len(),
            Value::Complex(a) => a.len(),
        }
    }

    /// True when the tensor holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when every element (both parts for complex) is finite.
    pub fn is_finite(&self) -> bool {
        match self {
            Value::Real(a) => a.iter().all(|v| v.is_finite()),
            Value::Complex(a) => a.iter().all(|v| v.re.is_finite() && v.im.is_finite()),
        }
    }

    /// The kind name used in error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Real(_) => "real",
            Value::Complex(_) => "complex",
        }
    }

    /// A zero tensor of the same kind and shape.
    pub fn zeros_like(&self) -> Value {
        match self {
            Value::Real(a) => Value::Real(ArrayD::zeros(a.raw_dim())),
            Value::Complex(a) => Value::Complex(ArrayD::zeros(a.raw_dim())),
        }
    }

    /// Adds `other` (same kind and shape) into `self`.
    pub(crate) fn accumulate(&mut self, other: &Value) {
        match (self, other) {
            (Value::Real(a), Value::Real(b)) => *a += b,
            (Value::Complex(a), Value::Complex(b)) => *a += b,
            // The tape only produces gradients of the node's own kind; a mismatch is unreachable.
            _ => {}
        }
    }
}

/// A tensor shape, inline up to four axes (no allocation for the shapes tapes compute).
pub type Shape = smallvec::SmallVec<[usize; 4]>;

/// Broadcast shape of two shapes under numpy rules, or None when incompatible.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Shape> {
    let n = a.len().max(b.len());
    let mut out = Shape::from_elem(0, n);
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// Sums a gradient of a broadcast result back to the shape of the input that was broadcast.
pub fn unbroadcast<T: num_complex::ComplexFloat>(g: ArrayD<T>, shape: &[usize]) -> ArrayD<T> {
    if g.shape() == shape {
        return g;
    }
    let mut g = g;
    while g.ndim() > shape.len() {
        g = g.sum_axis(Axis(0));
    }
    for (axis, &len) in shape.iter().enumerate() {
        if len == 1 && g.shape()[axis] != 1 {
            g = g.sum_axis(Axis(axis)).insert_axis(Axis(axis));
        }
    }
    match g.into_shape_with_order(IxDyn(shape)) {
        Ok(g) => g,
        Err(e) => unreachable!("unbroadcast of a checked broadcast cannot fail: {e}"),
    }
}
