//! Real elementwise operators: unary math and broadcasting binary arithmetic.
//!
//! Each unary op states its value and its derivative (from x and the output y) next to each
//! other; the VJP is g * f'(x). Binary ops broadcast under numpy rules and sum their
//! gradients back to each input's shape.

use super::graph::{NodeId, Tape, TapeError};
use super::op::{Op, OpError};
use super::value::{Shape, broadcast_shape, unbroadcast};
use ndarray::{ArrayD, ArrayViewD, IxDyn, Zip};

/// Real elementwise unary operators.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unary {
    /// -x
    Neg,
    /// exp(x)
    Exp,
    /// ln(x)
    Log,
    /// ln(1 + x)
    Log1p,
    /// sqrt(x)
    Sqrt,
    /// sin(x)
    Sin,
    /// cos(x)
    Cos,
    /// tanh(x)
    Tanh,
    /// 1 / (1 + exp(-x))
    Sigmoid,
    /// ln(1 + exp(x)), computed without overflow
    Softplus,
    /// |x| (derivative 0 at 0)
    Abs,
    /// x^2
    Square,
    /// max(x, 0)
    Relu,
    /// ln Γ(x)
    LnGamma,
    /// x^p for a constant p
    PowConst(f64),
    /// c x for a constant c
    Scale(f64),
    /// x + c for a constant c
    Shift(f64),
}

impl Unary {
    /// Operator name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Unary::Neg => "neg",
            Unary::Exp => "exp",
            Unary::Log => "log",
            Unary::Log1p => "log1p",
            Unary::Sqrt => "sqrt",
            Unary::Sin => "sin",
            Unary::Cos => "cos",
            Unary::Tanh => "tanh",
            Unary::Sigmoid => "sigmoid",
            Unary::Softplus => "softplus",
            Unary::Abs => "abs",
            Unary::Square => "square",
            Unary::Relu => "relu",
            Unary::LnGamma => "lgamma",
            Unary::PowConst(_) => "pow",
            Unary::Scale(_) => "scale",
            Unary::Shift(_) => "shift",
        }
    }

    /// The value f(x) (left) and the derivative f'(x) given y = f(x) (right), op by op.
    #[inline]
    fn value_and_slope(self, x: f64, y: Option<f64>) -> f64 {
        match (self, y) {
            (Unary::Neg, None) => -x,
            (Unary::Neg, Some(_)) => -1.0,
            (Unary::Exp, None) => x.exp(),
            (Unary::Exp, Some(y)) => y,
            (Unary::Log, None) => x.ln(),
            (Unary::Log, Some(_)) => 1.0 / x,
            (Unary::Log1p, None) => x.ln_1p(),
            (Unary::Log1p, Some(_)) => 1.0 / (1.0 + x),
            (Unary::Sqrt, None) => x.sqrt(),
            (Unary::Sqrt, Some(y)) => 0.5 / y,
            (Unary::Sin, None) => x.sin(),
            (Unary::Sin, Some(_)) => x.cos(),
            (Unary::Cos, None) => x.cos(),
            (Unary::Cos, Some(_)) => -x.sin(),
            (Unary::Tanh, None) => x.tanh(),
            (Unary::Tanh, Some(y)) => 1.0 - y * y,
            (Unary::Sigmoid, None) => sigmoid(x),
            (Unary::Sigmoid, Some(y)) => y * (1.0 - y),
            (Unary::Softplus, None) => softplus(x),
            (Unary::Softplus, Some(_)) => sigmoid(x),
            (Unary::Abs, None) => x.abs(),
            (Unary::Abs, Some(_)) => sign(x),
            (Unary::Square, None) => x * x,
            (Unary::Square, Some(_)) => 2.0 * x,
            (Unary::Relu, None) => x.max(0.0),
            (Unary::Relu, Some(_)) => f64::from(u8::from(x > 0.0)),
            (Unary::LnGamma, None) => statrs::function::gamma::ln_gamma(x),
            (Unary::LnGamma, Some(_)) => statrs::function::gamma::digamma(x),
            (Unary::PowConst(p), None) => x.powf(p),
            (Unary::PowConst(p), Some(_)) => p * x.powf(p - 1.0),
            (Unary::Scale(c), None) => c * x,
            (Unary::Scale(c), Some(_)) => c,
            (Unary::Shift(c), None) => x + c,
            (Unary::Shift(_), Some(_)) => 1.0,
        }
    }

    /// f(x) of one number.
    #[inline]
    pub(crate) fn value(self, x: f64) -> f64 {
        self.value_and_slope(x, None)
    }

    /// f'(x) of one number, given y = f(x).
    #[inline]
    pub(crate) fn slope(self, x: f64, y: f64) -> f64 {
        self.value_and_slope(x, Some(y))
    }

    /// y = f(x) over a slice into `out` (the same arithmetic as `forward`).
    pub(crate) fn forward_slice(self, xs: &[f64], out: &mut [f64]) {
        match self {
            Unary::Scale(c) => out.iter_mut().zip(xs).for_each(|(o, &v)| *o = c * v),
            Unary::Shift(c) => out.iter_mut().zip(xs).for_each(|(o, &v)| *o = v + c),
            _ => out
                .iter_mut()
                .zip(xs)
                .for_each(|(o, &v)| *o = self.value_and_slope(v, None)),
        }
    }

    /// y = f(x), elementwise.
    pub fn forward(self, x: &ArrayD<f64>) -> ArrayD<f64> {
        // Contiguous slices skip ndarray's per-call dimension bookkeeping, which dominates
        // for the small tensors of per-instance model code.
        if let Some(xs) = x.as_slice() {
            let v: Vec<f64> = match self {
                Unary::Scale(c) => xs.iter().map(|&v| c * v).collect(),
                Unary::Shift(c) => xs.iter().map(|&v| v + c).collect(),
                _ => xs.iter().map(|&v| self.value_and_slope(v, None)).collect(),
            };
            return ArrayD::from_shape_vec(x.raw_dim(), v)
                .unwrap_or_else(|_| x.mapv(|v| self.value_and_slope(v, None)));
        }
        match self {
            Unary::Scale(c) => x.mapv(|v| c * v),
            Unary::Shift(c) => x.mapv(|v| v + c),
            Unary::Square => x.mapv(|v| v * v),
            Unary::Neg => x.mapv(|v| -v),
            _ => x.mapv(|v| self.value_and_slope(v, None)),
        }
    }

    /// g * f'(x), elementwise.
    pub fn vjp(self, x: &ArrayD<f64>, y: &ArrayD<f64>, g: &ArrayD<f64>) -> ArrayD<f64> {
        Zip::from(x)
            .and(y)
            .and(g)
            .map_collect(|&x, &y, &g| g * self.value_and_slope(x, Some(y)))
    }

    /// y = f(x) written into an existing buffer of x's shape (tape replay).
    pub fn forward_into(self, x: &ArrayD<f64>, out: &mut ArrayD<f64>) {
        Zip::from(out)
            .and(x)
            .for_each(|o, &x| *o = self.value_and_slope(x, None));
    }

    /// gx += g * f'(x), accumulating into an existing gradient buffer.
    pub fn vjp_accumulate(
        self,
        x: &ArrayD<f64>,
        y: &ArrayD<f64>,
        g: &ArrayD<f64>,
        gx: &mut ArrayD<f64>,
    ) {
        if let (Some(xs), Some(ys), Some(gs), Some(acc)) =
            (x.as_slice(), y.as_slice(), g.as_slice(), gx.as_slice_mut())
        {
            for (((a, &x), &y), &g) in acc.iter_mut().zip(xs).zip(ys).zip(gs) {
                *a += g * self.value_and_slope(x, Some(y));
            }
            return;
        }
        Zip::from(gx)
            .and(x)
            .and(y)
            .and(g)
            .for_each(|gx, &x, &y, &g| *gx += g * self.value_and_slope(x, Some(y)));
    }
}

/// Logistic sigmoid, accurate for large |x|.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// ln(1 + e^x) without overflow.
pub fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

fn sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// Real elementwise binary operators with broadcasting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    /// a + b
    Add,
    /// a - b
    Sub,
    /// a * b
    Mul,
    /// a / b
    Div,
    /// a^b
    Pow,
}

impl Binary {
    /// Operator name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Binary::Add => "add",
            Binary::Sub => "sub",
            Binary::Mul => "mul",
            Binary::Div => "div",
            Binary::Pow => "pow",
        }
    }

    #[inline]
    fn value(self, a: f64, b: f64) -> f64 {
        match self {
            Binary::Add => a + b,
            Binary::Sub => a - b,
            Binary::Mul => a * b,
            Binary::Div => a / b,
            Binary::Pow => a.powf(b),
        }
    }

    /// Partial derivatives (d/da, d/db) at (a, b) with output y.
    #[inline]
    pub(crate) fn slopes(self, a: f64, b: f64, y: f64) -> (f64, f64) {
        match self {
            Binary::Add => (1.0, 1.0),
            Binary::Sub => (1.0, -1.0),
            Binary::Mul => (b, a),
            Binary::Div => (1.0 / b, -y / b),
            Binary::Pow => (b * a.powf(b - 1.0), if a > 0.0 { y * a.ln() } else { 0.0 }),
        }
    }

    /// a (op) b with broadcasting.
    pub fn forward(self, a: &ArrayD<f64>, b: &ArrayD<f64>) -> Result<ArrayD<f64>, OpError> {
        if let Some(out) = self.forward_with_scalar(a, b) {
            return Ok(out);
        }
        if a.shape() == b.shape() {
            if let (Some(xs), Some(ys)) = (a.as_slice(), b.as_slice()) {
                let v: Vec<f64> = match self {
                    Binary::Add => xs.iter().zip(ys).map(|(a, b)| a + b).collect(),
                    Binary::Mul => xs.iter().zip(ys).map(|(a, b)| a * b).collect(),
                    _ => xs.iter().zip(ys).map(|(&a, &b)| self.value(a, b)).collect(),
                };
                if let Ok(out) = ArrayD::from_shape_vec(a.raw_dim(), v) {
                    return Ok(out);
                }
            }
            let z = Zip::from(a).and(b);
            return Ok(match self {
                Binary::Add => z.map_collect(|&a, &b| a + b),
                Binary::Sub => z.map_collect(|&a, &b| a - b),
                Binary::Mul => z.map_collect(|&a, &b| a * b),
                Binary::Div => z.map_collect(|&a, &b| a / b),
                Binary::Pow => z.map_collect(|&a, &b| a.powf(b)),
            });
        }
        let shape = broadcast(self.name(), a.shape(), b.shape())?;
        let (av, bv) = (a.broadcast(IxDyn(&shape)), b.broadcast(IxDyn(&shape)));
        match (av, bv) {
            (Some(av), Some(bv)) => Ok(Zip::from(&av)
                .and(&bv)
                .map_collect(|&a, &b| self.value(a, b))),
            _ => Err(OpError::new(self.name(), "broadcast failed")),
        }
    }

    /// a (op) b for equal shapes, written into an existing buffer (tape replay).
    pub fn forward_into(self, a: &ArrayD<f64>, b: &ArrayD<f64>, out: &mut ArrayD<f64>) {
        // One loop per operator (not a match per element) so the arithmetic ones vectorize.
        let z = Zip::from(out).and(a).and(b);
        match self {
            Binary::Add => z.for_each(|o, &a, &b| *o = a + b),
            Binary::Sub => z.for_each(|o, &a, &b| *o = a - b),
            Binary::Mul => z.for_each(|o, &a, &b| *o = a * b),
            Binary::Div => z.for_each(|o, &a, &b| *o = a / b),
            Binary::Pow => z.for_each(|o, &a, &b| *o = a.powf(b)),
        }
    }

    /// Like [`Binary::forward_into`] for operands already broadcast to `out`'s shape.
    pub fn forward_into_views(self, a: ArrayViewD<f64>, b: ArrayViewD<f64>, out: &mut ArrayD<f64>) {
        let z = Zip::from(out).and(a).and(b);
        match self {
            Binary::Add => z.for_each(|o, &a, &b| *o = a + b),
            Binary::Sub => z.for_each(|o, &a, &b| *o = a - b),
            Binary::Mul => z.for_each(|o, &a, &b| *o = a * b),
            Binary::Div => z.for_each(|o, &a, &b| *o = a / b),
            Binary::Pow => z.for_each(|o, &a, &b| *o = a.powf(b)),
        }
    }

    /// Accumulates the gradient of input `which` (0 = a, 1 = b) for equal shapes, in place.
    pub fn vjp_accumulate(
        self,
        which: usize,
        a: &ArrayD<f64>,
        b: &ArrayD<f64>,
        y: &ArrayD<f64>,
        g: &ArrayD<f64>,
        acc: &mut ArrayD<f64>,
    ) {
        let all = (a.as_slice(), b.as_slice(), y.as_slice(), g.as_slice());
        if let ((Some(a), Some(b), Some(y), Some(g)), Some(acc)) = (all, acc.as_slice_mut()) {
            for i in 0..acc.len() {
                let (da, db) = self.slopes(a[i], b[i], y[i]);
                acc[i] += g[i] * if which == 0 { da } else { db };
            }
            return;
        }
        match (self, which) {
            (Binary::Add, _) | (Binary::Sub, 0) => Zip::from(acc).and(g).for_each(|s, &g| *s += g),
            (Binary::Sub, _) => Zip::from(acc).and(g).for_each(|s, &g| *s -= g),
            (Binary::Mul, 0) => Zip::from(acc)
                .and(b)
                .and(g)
                .for_each(|s, &b, &g| *s += g * b),
            (Binary::Mul, _) => Zip::from(acc)
                .and(a)
                .and(g)
                .for_each(|s, &a, &g| *s += g * a),
            _ => Zip::from(acc)
                .and(a)
                .and(b)
                .and(y)
                .and(g)
                .for_each(|s, &a, &b, &y, &g| {
                    let (da, db) = self.slopes(a, b, y);
                    *s += g * if which == 0 { da } else { db };
                }),
        }
    }

    /// Gradients for (a, b), each summed back to its input's shape.
    pub fn vjp(
        self,
        a: &ArrayD<f64>,
        b: &ArrayD<f64>,
        y: &ArrayD<f64>,
        g: &ArrayD<f64>,
        wanted: &[bool],
    ) -> (Option<ArrayD<f64>>, Option<ArrayD<f64>>) {
        if let Some(grads) = self.vjp_with_scalar(a, b, y, g, wanted) {
            return grads;
        }
        let (Some(av), Some(bv)) = (a.broadcast(y.raw_dim()), b.broadcast(y.raw_dim())) else {
            return (None, None);
        };
        let want_a = wanted.first().copied().unwrap_or(true);
        let want_b = wanted.get(1).copied().unwrap_or(true);
        let part = |first: bool| {
            Zip::from(&av)
                .and(&bv)
                .and(y)
                .and(g)
                .map_collect(|&a, &b, &y, &g| {
                    let (da, db) = self.slopes(a, b, y);
                    g * if first { da } else { db }
                })
        };
        let ga = want_a.then(|| unbroadcast(part(true), a.shape()));
        let gb = want_b.then(|| unbroadcast(part(false), b.shape()));
        (ga, gb)
    }
}

/// A contiguous tensor paired with a single number (either side): the common broadcast of
/// model code (a global latent times per-instance data), run over plain slices.
struct WithScalar<'a> {
    full: &'a [f64],
    scalar: f64,
    full_is_a: bool,
}

fn with_scalar<'a>(a: &'a ArrayD<f64>, b: &'a ArrayD<f64>) -> Option<WithScalar<'a>> {
    let first = |x: &ArrayD<f64>| x.iter().next().copied();
    if b.len() == 1 && b.ndim() <= a.ndim() && a.len() > 1 {
        return Some(WithScalar {
            full: a.as_slice()?,
            scalar: first(b)?,
            full_is_a: true,
        });
    }
    if a.len() == 1 && a.ndim() <= b.ndim() && b.len() > 1 {
        return Some(WithScalar {
            full: b.as_slice()?,
            scalar: first(a)?,
            full_is_a: false,
        });
    }
    None
}

impl Binary {
    fn forward_with_scalar(self, a: &ArrayD<f64>, b: &ArrayD<f64>) -> Option<ArrayD<f64>> {
        let w = with_scalar(a, b)?;
        let s = w.scalar;
        let v: Vec<f64> = if w.full_is_a {
            w.full.iter().map(|&x| self.value(x, s)).collect()
        } else {
            w.full.iter().map(|&x| self.value(s, x)).collect()
        };
        let shape = if w.full_is_a {
            a.raw_dim()
        } else {
            b.raw_dim()
        };
        ArrayD::from_shape_vec(shape, v).ok()
    }

    /// Gradients when one side is a single number: elementwise for the full side, a sum for the scalar.
    #[allow(clippy::type_complexity)]
    fn vjp_with_scalar(
        self,
        a: &ArrayD<f64>,
        b: &ArrayD<f64>,
        y: &ArrayD<f64>,
        g: &ArrayD<f64>,
        wanted: &[bool],
    ) -> Option<(Option<ArrayD<f64>>, Option<ArrayD<f64>>)> {
        let w = with_scalar(a, b)?;
        let (ys, gs) = (y.as_slice()?, g.as_slice()?);
        if ys.len() != w.full.len() {
            return None;
        }
        let s = w.scalar;
        let want = |i: usize| wanted.get(i).copied().unwrap_or(true);
        let want_full = want(if w.full_is_a { 0 } else { 1 });
        if !want_full && matches!(self, Binary::Mul) {
            // A global latent times data: only the latent's gradient, a dot product, is needed.
            let dot: f64 = gs.iter().zip(w.full).map(|(g, x)| g * x).sum();
            let scalar_grad = ArrayD::from_elem(
                if w.full_is_a {
                    b.raw_dim()
                } else {
                    a.raw_dim()
                },
                dot,
            );
            return Some(if w.full_is_a {
                (None, want(1).then_some(scalar_grad))
            } else {
                (want(0).then_some(scalar_grad), None)
            });
        }
        let (mut full_grad, mut scalar_grad) = (Vec::with_capacity(gs.len()), 0.0);
        for i in 0..gs.len() {
            let (da, db) = if w.full_is_a {
                self.slopes(w.full[i], s, ys[i])
            } else {
                self.slopes(s, w.full[i], ys[i])
            };
            let (d_full, d_scalar) = if w.full_is_a { (da, db) } else { (db, da) };
            full_grad.push(gs[i] * d_full);
            scalar_grad += gs[i] * d_scalar;
        }
        let (full_shape, scalar_shape) = if w.full_is_a {
            (a.raw_dim(), b.raw_dim())
        } else {
            (b.raw_dim(), a.raw_dim())
        };
        let full_grad = ArrayD::from_shape_vec(full_shape, full_grad).ok()?;
        let scalar_grad = ArrayD::from_elem(scalar_shape, scalar_grad);
        let (ga, gb) = if w.full_is_a {
            (full_grad, scalar_grad)
        } else {
            (scalar_grad, full_grad)
        };
        Some((want(0).then_some(ga), want(1).then_some(gb)))
    }
}

fn broadcast(op: &'static str, a: &[usize], b: &[usize]) -> Result<Shape, OpError> {
    broadcast_shape(a, b)
        .ok_or_else(|| OpError::new(op, format!("cannot broadcast shapes {a:?} and {b:?}")))
}

impl Tape {
    /// Records a real unary op.
    pub fn unary(&mut self, op: Unary, x: NodeId) -> Result<NodeId, TapeError> {
        self.apply(Op::Unary(op), &[x])
    }

    /// Records a real binary op.
    pub fn binary(&mut self, op: Binary, a: NodeId, b: NodeId) -> Result<NodeId, TapeError> {
        self.apply(Op::Binary(op), &[a, b])
    }

    /// a + b (broadcasting).
    pub fn add(&mut self, a: NodeId, b: NodeId) -> Result<NodeId, TapeError> {
        self.binary(Binary::Add, a, b)
    }

    /// a - b (broadcasting).
    pub fn sub(&mut self, a: NodeId, b: NodeId) -> Result<NodeId, TapeError> {
        self.binary(Binary::Sub, a, b)
    }

    /// a * b (broadcasting).
    pub fn mul(&mut self, a: NodeId, b: NodeId) -> Result<NodeId, TapeError> {
        self.binary(Binary::Mul, a, b)
    }

    /// a / b (broadcasting).
    pub fn div(&mut self, a: NodeId, b: NodeId) -> Result<NodeId, TapeError> {
        self.binary(Binary::Div, a, b)
    }

    /// a^b (broadcasting; the gradient in b is taken as 0 where a <= 0).
    pub fn pow(&mut self, a: NodeId, b: NodeId) -> Result<NodeId, TapeError> {
        self.binary(Binary::Pow, a, b)
    }

    /// -x
    pub fn neg(&mut self, x: NodeId) -> Result<NodeId, TapeError> {
        self.unary(Unary::Neg, x)
    }

    /// exp(x)
    pub fn exp(&mut self, x: NodeId) -> Result<NodeId, TapeError> {
        self.unary(Unary::Exp, x)
    }

    /// ln(x)
    pub fn log(&mut self, x: NodeId) -> Result<NodeId, TapeError> {
        self.unary(Unary::Log, x)
    }

    /// ln(1 + x)
    pub fn log1p(&mut self, x: NodeId) -> Result<NodeId, TapeError> {
        self.unary(Unary::Log1p, x)
    }

    /// sqrt(x)
    pub fn sqrt(&mut self, x: NodeId) -> Result<NodeId, TapeError> {
        self.unary(Unary::Sqrt, x)
    }

    /// sin(x)
    pub fn sin(&mut self, x: NodeId) -> Result<NodeId, TapeError> {
        self.unary(Unary::Sin, x)
    }

    /// cos(x)
    pub fn cos(&mut self, x: NodeId) -> Result<NodeId, TapeError> {
        self.unary(Unary::Cos, x)
    }

    /// tanh(x)
    pub fn tanh(&mut self, x: NodeId) -> Result<NodeId, TapeError> {
        self.unary(Unary::Tanh, x)
    }

    /// sigmoid(x)
    pub fn sigmoid(&mut self, x: NodeId) -> Result<NodeId, TapeError> {
        self.unary(Unary::Sigmoid, x)
    }

    /// softplus(x)
    pub fn softplus(&mut self, x: NodeId) -> Result<NodeId, TapeError> {
        self.unary(Unary::Softplus, x)
    }

    /// |x|
    pub fn abs(&mut self, x: NodeId) -> Result<NodeId, TapeError> {
        self.unary(Unary::Abs, x)
    }

    /// x^2
    pub fn square(&mut self, x: NodeId) -> Result<NodeId, TapeError> {
        self.unary(Unary::Square, x)
    }

    /// max(x, 0)
    pub fn relu(&mut self, x: NodeId) -> Result<NodeId, TapeError> {
        self.unary(Unary::Relu, x)
    }

    /// ln Γ(x)
    pub fn lgamma(&mut self, x: NodeId) -> Result<NodeId, TapeError> {
        self.unary(Unary::LnGamma, x)
    }

    /// x^p for a constant p.
    pub fn powf(&mut self, x: NodeId, p: f64) -> Result<NodeId, TapeError> {
        self.unary(Unary::PowConst(p), x)
    }

    /// c x for a constant c.
    pub fn scale(&mut self, x: NodeId, c: f64) -> Result<NodeId, TapeError> {
        self.unary(Unary::Scale(c), x)
    }

    /// x + c for a constant c.
    pub fn shift(&mut self, x: NodeId, c: f64) -> Result<NodeId, TapeError> {
        self.unary(Unary::Shift(c), x)
    }
}
