//! Complex operators: products, sums, conjugate, |z|^2, real and imaginary parts, e^{iφ},
//! and building complex tensors from real parts.
//!
//! Gradient convention (see `value`): a complex node's gradient is dL/dRe + i dL/dIm for the
//! real loss L. Under it, the VJP of w = a b is (g conj(b), g conj(a)), of |z|^2 is 2 g z.

use super::graph::{NodeId, Tape, TapeError};
use super::op::{InputGrads, Op, OpError, arg, as_complex, as_real};
use super::value::{Value, broadcast_shape, unbroadcast};
use ndarray::{ArrayD, Zip};
use num_complex::Complex64;

/// Complex-valued operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComplexOp {
    /// a b for complex a, b (broadcasting).
    Mul,
    /// a + b for complex a, b (broadcasting).
    Add,
    /// r z for real r and complex z (broadcasting).
    ScaleReal,
    /// conj(z)
    Conj,
    /// |z|^2, real output.
    Abs2,
    /// Re z, real output.
    Re,
    /// Im z, real output.
    Im,
    /// e^{iφ} from real φ.
    ExpI,
    /// re + i im from two real tensors (broadcasting).
    FromParts,
}

impl ComplexOp {
    /// Operator name for messages.
    pub fn name(self) -> &'static str {
        match self {
            ComplexOp::Mul => "complex_mul",
            ComplexOp::Add => "complex_add",
            ComplexOp::ScaleReal => "complex_scale",
            ComplexOp::Conj => "conj",
            ComplexOp::Abs2 => "abs2",
            ComplexOp::Re => "re",
            ComplexOp::Im => "im",
            ComplexOp::ExpI => "exp_i",
            ComplexOp::FromParts => "complex",
        }
    }

    /// Output value.
    pub fn forward(self, x: &[&Value]) -> Result<Value, OpError> {
        let n = self.name();
        let c = |i| arg(n, x, i).and_then(|v| as_complex(n, v));
        let r = |i| arg(n, x, i).and_then(|v| as_real(n, v));
        Ok(match self {
            ComplexOp::Mul => Value::Complex(zip2(n, c(0)?, c(1)?, |a, b| a * b)?),
            ComplexOp::Add => Value::Complex(zip2(n, c(0)?, c(1)?, |a, b| a + b)?),
            ComplexOp::ScaleReal => Value::Complex(zip2(n, r(0)?, c(1)?, |a, b| b * a)?),
            ComplexOp::Conj => Value::Complex(c(0)?.mapv(|z| z.conj())),
            ComplexOp::Abs2 => Value::Real(c(0)?.mapv(|z| z.norm_sqr())),
            ComplexOp::Re => Value::Real(c(0)?.mapv(|z| z.re)),
            ComplexOp::Im => Value::Real(c(0)?.mapv(|z| z.im)),
            ComplexOp::ExpI => Value::Complex(r(0)?.mapv(|p| Complex64::new(p.cos(), p.sin()))),
            ComplexOp::FromParts => Value::Complex(zip2(n, r(0)?, r(1)?, Complex64::new)?),
        })
    }

    /// Input gradients under the dL/dRe + i dL/dIm convention.
    pub fn vjp(self, x: &[&Value], y: &Value, g: &Value) -> Result<InputGrads, OpError> {
        let n = self.name();
        let c = |i| arg(n, x, i).and_then(|v| as_complex(n, v));
        let r = |i| arg(n, x, i).and_then(|v| as_real(n, v));
        let cplx = |a: ArrayD<Complex64>| Some(Value::Complex(a));
        let real = |a: ArrayD<f64>| Some(Value::Real(a));
        Ok(match self {
            ComplexOp::Mul => {
                let (a, b, g) = (c(0)?, c(1)?, as_complex(n, g)?);
                let ga = bzip(a.shape(), g, b, |g, b| g * b.conj());
                let gb = bzip(b.shape(), g, a, |g, a| g * a.conj());
                smallvec::smallvec![cplx(ga), cplx(gb)]
            }
            ComplexOp::Add => {
                let (a, b, g) = (c(0)?, c(1)?, as_complex(n, g)?);
                smallvec::smallvec![
                    cplx(unbroadcast(g.clone(), a.shape())),
                    cplx(unbroadcast(g.clone(), b.shape())),
                ]
            }
            ComplexOp::ScaleReal => {
                let (s, z, g) = (r(0)?, c(1)?, as_complex(n, g)?);
                let gs = bzip(s.shape(), g, z, |g, z| {
                    Complex64::new((g * z.conj()).re, 0.0)
                });
                let gz = bzip(z.shape(), g, s, |g, s| g * s);
                smallvec::smallvec![real(gs.mapv(|v| v.re)), cplx(gz)]
            }
            ComplexOp::Conj => smallvec::smallvec![cplx(as_complex(n, g)?.mapv(|g| g.conj()))],
            ComplexOp::Abs2 => {
                let g = as_real(n, g)?;
                smallvec::smallvec![cplx(
                    Zip::from(c(0)?).and(g).map_collect(|&z, &g| z * (2.0 * g)),
                )]
            }
            ComplexOp::Re => {
                smallvec::smallvec![cplx(as_real(n, g)?.mapv(|g| Complex64::new(g, 0.0)))]
            }
            ComplexOp::Im => {
                smallvec::smallvec![cplx(as_real(n, g)?.mapv(|g| Complex64::new(0.0, g)))]
            }
            ComplexOp::ExpI => {
                let (z, g) = (as_complex(n, y)?, as_complex(n, g)?);
                smallvec::smallvec![real(
                    Zip::from(z)
                        .and(g)
                        .map_collect(|z, g| g.im * z.re - g.re * z.im),
                )]
            }
            ComplexOp::FromParts => {
                let (a, b, g) = (r(0)?, r(1)?, as_complex(n, g)?);
                let gre = unbroadcast(g.mapv(|g| g.re), a.shape());
                let gim = unbroadcast(g.mapv(|g| g.im), b.shape());
                smallvec::smallvec![real(gre), real(gim)]
            }
        })
    }
}

/// Elementwise f(a, b) over the broadcast shape of a and b.
fn zip2<A: Copy, B: Copy, C>(
    op: &'static str,
    a: &ArrayD<A>,
    b: &ArrayD<B>,
    f: impl Fn(A, B) -> C,
) -> Result<ArrayD<C>, OpError> {
    let shape = broadcast_shape(a.shape(), b.shape()).ok_or_else(|| {
        OpError::new(
            op,
            format!("cannot broadcast {:?} and {:?}", a.shape(), b.shape()),
        )
    })?;
    let dim = ndarray::IxDyn(&shape);
    match (a.broadcast(dim.clone()), b.broadcast(dim)) {
        (Some(av), Some(bv)) => Ok(Zip::from(&av).and(&bv).map_collect(|&a, &b| f(a, b))),
        _ => Err(OpError::new(op, "broadcast failed")),
    }
}

/// f(g, other) over g's shape (other broadcast to it), summed back to `target` shape.
fn bzip<B: Copy>(
    target: &[usize],
    g: &ArrayD<Complex64>,
    other: &ArrayD<B>,
    f: impl Fn(Complex64, B) -> Complex64,
) -> ArrayD<Complex64> {
    let full = match other.broadcast(g.raw_dim()) {
        Some(ov) => Zip::from(g).and(&ov).map_collect(|&g, &o| f(g, o)),
        None => g.clone(),
    };
    unbroadcast(full, target)
}

impl Tape {
    /// Records a complex op.
    pub fn complex_op(&mut self, op: ComplexOp, inputs: &[NodeId]) -> Result<NodeId, TapeError> {
        self.apply(Op::Complex(op), inputs)
    }

    /// Complex product a b.
    pub fn cmul(&mut self, a: NodeId, b: NodeId) -> Result<NodeId, TapeError> {
        self.complex_op(ComplexOp::Mul, &[a, b])
    }

    /// Complex sum a + b.
    pub fn cadd(&mut self, a: NodeId, b: NodeId) -> Result<NodeId, TapeError> {
        self.complex_op(ComplexOp::Add, &[a, b])
    }

    /// Real-times-complex product r z.
    pub fn cscale(&mut self, r: NodeId, z: NodeId) -> Result<NodeId, TapeError> {
        self.complex_op(ComplexOp::ScaleReal, &[r, z])
    }

    /// Complex conjugate.
    pub fn conj(&mut self, z: NodeId) -> Result<NodeId, TapeError> {
        self.complex_op(ComplexOp::Conj, &[z])
    }

    /// |z|^2 (real).
    pub fn abs2(&mut self, z: NodeId) -> Result<NodeId, TapeError> {
        self.complex_op(ComplexOp::Abs2, &[z])
    }

    /// Re z.
    pub fn re(&mut self, z: NodeId) -> Result<NodeId, TapeError> {
        self.complex_op(ComplexOp::Re, &[z])
    }

    /// Im z.
    pub fn im(&mut self, z: NodeId) -> Result<NodeId, TapeError> {
        self.complex_op(ComplexOp::Im, &[z])
    }

    /// e^{iφ} for real φ.
    pub fn exp_i(&mut self, phi: NodeId) -> Result<NodeId, TapeError> {
        self.complex_op(ComplexOp::ExpI, &[phi])
    }

    /// re + i im from real tensors.
    pub fn complex(&mut self, re: NodeId, im: NodeId) -> Result<NodeId, TapeError> {
        self.complex_op(ComplexOp::FromParts, &[re, im])
    }
}
