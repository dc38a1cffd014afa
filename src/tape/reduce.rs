//! Reductions: sum (real or complex), mean and log-sum-exp, over all elements or one axis.
//!
//! A full reduction returns a 0-d tensor; an axis reduction drops that axis. The VJP
//! broadcasts the output gradient back over the reduced axis (times softmax for
//! log-sum-exp, which is computed with the max subtracted so it never overflows).

use super::graph::{NodeId, Tape, TapeError};
use super::op::{Op, OpError, as_real};
use super::value::Value;
use ndarray::{ArrayD, Axis, IxDyn, Zip};

/// Which reduction, and over which axis (None = all elements).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduce {
    /// Sum.
    Sum(Option<usize>),
    /// Arithmetic mean.
    Mean(Option<usize>),
    /// ln Σ exp(x).
    LogSumExp(Option<usize>),
}

impl Reduce {
    /// Operator name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Reduce::Sum(_) => "sum",
            Reduce::Mean(_) => "mean",
            Reduce::LogSumExp(_) => "logsumexp",
        }
    }

    fn axis(self) -> Option<usize> {
        match self {
            Reduce::Sum(a) | Reduce::Mean(a) | Reduce::LogSumExp(a) => a,
        }
    }

    fn check_axis(self, ndim: usize) -> Result<(), OpError> {
        match self.axis() {
            Some(a) if a >= ndim => Err(OpError::new(
                self.name(),
                format!("axis {a} out of range for {ndim}-d input"),
            )),
            _ => Ok(()),
        }
    }

    /// Number of elements reduced into each output element.
    fn count(self, shape: &[usize]) -> usize {
        match self.axis() {
            Some(a) => shape[a],
            None => shape.iter().product(),
        }
    }

    /// Output value.
    pub fn forward(self, x: &Value) -> Result<Value, OpError> {
        self.check_axis(x.shape().len())?;
        if let (Reduce::Sum(axis), Value::Complex(z)) = (self, x) {
            return Ok(Value::Complex(match axis {
                Some(a) => z.sum_axis(Axis(a)),
                None => ArrayD::from_elem(IxDyn(&[]), z.sum()),
            }));
        }
        let x = as_real(self.name(), x)?;
        let n = self.count(x.shape()) as f64;
        Ok(Value::Real(match self {
            Reduce::Sum(Some(a)) => x.sum_axis(Axis(a)),
            Reduce::Sum(None) => ArrayD::from_elem(IxDyn(&[]), x.sum()),
            Reduce::Mean(Some(a)) => x.sum_axis(Axis(a)) / n,
            Reduce::Mean(None) => ArrayD::from_elem(IxDyn(&[]), x.sum() / n),
            Reduce::LogSumExp(Some(a)) => lse_axis(x, a),
            Reduce::LogSumExp(None) => ArrayD::from_elem(IxDyn(&[]), lse(x.iter().copied())),
        }))
    }

    /// Gradient of the input.
    pub fn vjp(self, x: &Value, y: &Value, g: &Value) -> Result<Value, OpError> {
        let shape = IxDyn(x.shape());
        if let (Value::Complex(_), Value::Complex(g)) = (x, g) {
            return Ok(Value::Complex(spread(g, self.axis(), &shape)?));
        }
        let name = self.name();
        let (g, y) = (as_real(name, g)?, as_real(name, y)?);
        let gb = spread(g, self.axis(), &shape)?;
        Ok(Value::Real(match self {
            Reduce::Sum(_) => gb,
            Reduce::Mean(_) => gb.mapv(|v| v / self.count(x.shape()) as f64),
            Reduce::LogSumExp(axis) => {
                let yb = spread(y, axis, &shape)?;
                Zip::from(as_real(name, x)?)
                    .and(&gb)
                    .and(&yb)
                    .map_collect(|&x, &g, &y| g * (x - y).exp())
            }
        }))
    }
}

/// Broadcasts a reduced tensor back to the input shape (re-inserting the reduced axis).
fn spread<T: Clone>(
    g: &ArrayD<T>,
    axis: Option<usize>,
    shape: &IxDyn,
) -> Result<ArrayD<T>, OpError> {
    let view = match axis {
        Some(a) => g.view().insert_axis(Axis(a)),
        None => g.view(),
    };
    view.broadcast(shape.clone())
        .map(|v| v.to_owned())
        .ok_or_else(|| OpError::new("reduce", "gradient shape does not match the reduced input"))
}

/// ln Σ exp(v), stable; -inf for an empty or all -inf input.
pub fn lse(v: impl Iterator<Item = f64> + Clone) -> f64 {
    let m = v.clone().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + v.map(|x| (x - m).exp()).sum::<f64>().ln()
}

fn lse_axis(x: &ArrayD<f64>, axis: usize) -> ArrayD<f64> {
    let mut shape = x.shape().to_vec();
    shape.remove(axis);
    let mut out = ArrayD::zeros(IxDyn(&shape));
    Zip::from(&mut out)
        .and(x.lanes(Axis(axis)))
        .for_each(|o, lane| *o = lse(lane.iter().copied()));
    out
}

impl Tape {
    /// Sum of all elements (0-d result).
    pub fn sum(&mut self, x: NodeId) -> Result<NodeId, TapeError> {
        self.apply(Op::Reduce(Reduce::Sum(None)), &[x])
    }

    /// Sum along one axis.
    pub fn sum_axis(&mut self, x: NodeId, axis: usize) -> Result<NodeId, TapeError> {
        self.apply(Op::Reduce(Reduce::Sum(Some(axis))), &[x])
    }

    /// Mean of all elements.
    pub fn mean(&mut self, x: NodeId) -> Result<NodeId, TapeError> {
        self.apply(Op::Reduce(Reduce::Mean(None)), &[x])
    }

    /// Mean along one axis.
    pub fn mean_axis(&mut self, x: NodeId, axis: usize) -> Result<NodeId, TapeError> {
        self.apply(Op::Reduce(Reduce::Mean(Some(axis))), &[x])
    }

    /// ln Σ exp over all elements.
    pub fn logsumexp(&mut self, x: NodeId) -> Result<NodeId, TapeError> {
        self.apply(Op::Reduce(Reduce::LogSumExp(None)), &[x])
    }

    /// ln Σ exp along one axis.
    pub fn logsumexp_axis(&mut self, x: NodeId, axis: usize) -> Result<NodeId, TapeError> {
        self.apply(Op::Reduce(Reduce::LogSumExp(Some(axis))), &[x])
    }
}
