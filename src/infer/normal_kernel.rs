//! The normal log-density as one fused tape node (it is in every prior, guide and most
//! likelihoods, so its seven elementwise nodes are worth fusing).
//!
//! In: x, loc, scale (real, broadcasting). Out: log N(x; loc, scale) elementwise, with the
//! adjoint z = (x - loc)/scale: dx = -z/scale, dloc = z/scale, dscale = (z² - 1)/scale, each
//! summed back to its input's shape. Checked against the unfused formula and finite
//! differences in tests/infer_distributions.rs.

use crate::tape::value::{Shape, broadcast_shape, unbroadcast};
use crate::tape::{FusedOp, Value};
use ndarray::{ArrayD, IxDyn, Zip};

const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

/// Fused elementwise log N(x; loc, scale).
#[derive(Debug, Clone, Copy)]
pub struct NormalLogPdf;

fn views<'a>(v: &[&'a Value]) -> Result<([&'a ArrayD<f64>; 3], Shape), String> {
    let mut out = Vec::with_capacity(3);
    for i in 0..3 {
        match v.get(i) {
            Some(Value::Real(a)) => out.push(a),
            _ => return Err(format!("input {i} must be a real tensor")),
        }
    }
    let (x, loc, scale) = (out[0], out[1], out[2]);
    let shape = broadcast_shape(x.shape(), loc.shape())
        .and_then(|s| broadcast_shape(&s, scale.shape()))
        .ok_or_else(|| {
            format!(
                "cannot broadcast {:?}, {:?}, {:?}",
                x.shape(),
                loc.shape(),
                scale.shape()
            )
        })?;
    Ok(([x, loc, scale], shape))
}

/// An operand that is either a full contiguous tensor of the output's shape or one number:
/// the common cases, run over plain slices instead of broadcast iterators.
#[derive(Clone, Copy)]
enum Operand<'a> {
    Full(&'a [f64]),
    Scalar(f64),
}

impl Operand<'_> {
    #[inline]
    fn at(&self, i: usize) -> f64 {
        match self {
            Operand::Full(s) => s[i],
            Operand::Scalar(v) => *v,
        }
    }
}

fn operand<'a>(a: &'a ArrayD<f64>, shape: &[usize]) -> Option<Operand<'a>> {
    if a.len() == 1 {
        return a.iter().next().map(|&v| Operand::Scalar(v));
    }
    if a.shape() == shape {
        a.as_slice().map(Operand::Full)
    } else {
        None
    }
}

/// Slice-based forward and adjoint when every input is full or a single number.
fn fast_forward(x: Operand, m: Operand, s: Operand, n: usize) -> Vec<f64> {
    if let Operand::Scalar(sd) = s {
        // One logarithm for a shared scale (the usual likelihood) instead of one per element.
        let ln_sd = sd.ln();
        if let (Operand::Full(xs), Operand::Full(ms)) = (x, m) {
            return xs
                .iter()
                .zip(ms)
                .map(|(&x, &m)| {
                    let z = (x - m) / sd;
                    -0.5 * z * z - ln_sd - LN_SQRT_2PI
                })
                .collect();
        }
        return (0..n)
            .map(|i| {
                let z = (x.at(i) - m.at(i)) / sd;
                -0.5 * z * z - ln_sd - LN_SQRT_2PI
            })
            .collect();
    }
    (0..n)
        .map(|i| {
            let (sd, z) = (s.at(i), (x.at(i) - m.at(i)) / s.at(i));
            -0.5 * z * z - sd.ln() - LN_SQRT_2PI
        })
        .collect()
}

/// Where one input's elementwise adjoint goes: nowhere (not wanted), a full tensor, or a
/// sum (the input is a single number).
enum Sink {
    Skip,
    Full(Vec<f64>),
    Sum(f64),
}

impl Sink {
    fn new(wanted: bool, target: &ArrayD<f64>, n: usize) -> Sink {
        match (wanted, target.len() == 1 && n != 1) {
            (false, _) => Sink::Skip,
            // -0.0 is the start of `Iterator::sum` for f64, so sums match the unfused path.
            (true, true) => Sink::Sum(-0.0),
            (true, false) => Sink::Full(Vec::with_capacity(n)),
        }
    }

    #[inline]
    fn push(&mut self, v: f64) {
        match self {
            Sink::Skip => {}
            Sink::Full(out) => out.push(v),
            Sink::Sum(acc) => *acc += v,
        }
    }

    fn finish(self, target: &ArrayD<f64>, shape: &[usize]) -> Result<Option<Value>, String> {
        Ok(match self {
            Sink::Skip => None,
            Sink::Sum(v) => Some(Value::Real(ArrayD::from_elem(target.raw_dim(), v))),
            Sink::Full(g) => Some(Value::Real(
                ArrayD::from_shape_vec(IxDyn(shape), g).map_err(|e| e.to_string())?,
            )),
        })
    }
}

/// The likelihood's usual case (data x, a full mean, a fixed scale): only d/dloc, in one
/// tight loop over slices.
fn loc_adjoint(
    xs: &[f64],
    ms: &[f64],
    sd: f64,
    gs: &[f64],
    shape: &[usize],
) -> Result<Vec<Option<Value>>, String> {
    let gl: Vec<f64> = xs
        .iter()
        .zip(ms)
        .zip(gs)
        .map(|((&x, &m), &g)| {
            let z = (x - m) / sd;
            -(-g * z / sd)
        })
        .collect();
    let gl = ArrayD::from_shape_vec(IxDyn(shape), gl).map_err(|e| e.to_string())?;
    Ok(vec![None, Some(Value::Real(gl)), None])
}

/// The adjoint of the inputs that are wanted, in one pass over slices and without the
/// temporaries of the unwanted ones; None when an input is neither full nor a single number.
fn fast_vjp_wanted(
    [x, loc, scale]: [&ArrayD<f64>; 3],
    shape: &[usize],
    g: &ArrayD<f64>,
    wanted: &[bool],
) -> Option<Result<Vec<Option<Value>>, String>> {
    let (xo, mo, so) = (
        operand(x, shape)?,
        operand(loc, shape)?,
        operand(scale, shape)?,
    );
    let gs = g.as_slice()?;
    let want = |i: usize| wanted.get(i).copied().unwrap_or(true);
    if let ((Operand::Full(xs), Operand::Full(ms), Operand::Scalar(sd)), [false, true, false]) =
        ((xo, mo, so), [want(0), want(1), want(2)])
    {
        return Some(loc_adjoint(xs, ms, sd, gs, shape));
    }
    let n = gs.len();
    let mut sinks = [
        Sink::new(want(0), x, n),
        Sink::new(want(1), loc, n),
        Sink::new(want(2), scale, n),
    ];
    let need_scale = want(2);
    for (i, &g) in gs.iter().enumerate() {
        let sd = so.at(i);
        let z = (xo.at(i) - mo.at(i)) / sd;
        let gx = -g * z / sd;
        sinks[0].push(gx);
        sinks[1].push(-gx);
        if need_scale {
            sinks[2].push(g * (z * z - 1.0) / sd);
        }
    }
    let [sx, sl, ss] = sinks;
    Some((|| {
        Ok(vec![
            sx.finish(x, shape)?,
            sl.finish(loc, shape)?,
            ss.finish(scale, shape)?,
        ])
    })())
}

/// Returns (dx, dscale) elementwise; dloc = -dx.
fn fast_vjp(x: Operand, m: Operand, s: Operand, g: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut gx = Vec::with_capacity(g.len());
    let mut gs = Vec::with_capacity(g.len());
    for (i, &g) in g.iter().enumerate() {
        let sd = s.at(i);
        let z = (x.at(i) - m.at(i)) / sd;
        gx.push(-g * z / sd);
        gs.push(g * (z * z - 1.0) / sd);
    }
    (gx, gs)
}

/// Sums a full-shape gradient back to an operand's shape (a single number or the same shape).
fn reduce_to(g: Vec<f64>, target: &ArrayD<f64>, shape: &[usize]) -> Option<ArrayD<f64>> {
    if target.len() == 1 && shape.iter().product::<usize>() != 1 {
        return Some(ArrayD::from_elem(target.raw_dim(), g.iter().sum()));
    }
    ArrayD::from_shape_vec(IxDyn(shape), g).ok()
}

impl FusedOp for NormalLogPdf {
    fn name(&self) -> &'static str {
        "normal_log_prob"
    }

    fn vjp_wanted(
        &self,
        v: &[&Value],
        y: &Value,
        g: &Value,
        wanted: &[bool],
    ) -> Result<Vec<Option<Value>>, String> {
        let (inputs, shape) = views(v)?;
        if let Value::Real(gr) = g
            && let Some(out) = fast_vjp_wanted(inputs, &shape, gr, wanted)
        {
            return out;
        }
        self.vjp(v, y, g)
    }

    fn forward(&self, v: &[&Value]) -> Result<Value, String> {
        let ([x, loc, scale], shape) = views(v)?;
        let n = shape.iter().product();
        if let (Some(xo), Some(mo), Some(so)) = (
            operand(x, &shape),
            operand(loc, &shape),
            operand(scale, &shape),
        ) && let Ok(out) = ArrayD::from_shape_vec(IxDyn(&shape), fast_forward(xo, mo, so, n))
        {
            return Ok(Value::Real(out));
        }
        let dim = IxDyn(&shape);
        let (Some(xb), Some(lb), Some(sb)) = (
            x.broadcast(dim.clone()),
            loc.broadcast(dim.clone()),
            scale.broadcast(dim),
        ) else {
            return Err("broadcast failed".into());
        };
        let out = Zip::from(&xb).and(&lb).and(&sb).map_collect(|&x, &m, &s| {
            let z = (x - m) / s;
            -0.5 * z * z - s.ln() - LN_SQRT_2PI
        });
        Ok(Value::Real(out))
    }

    fn vjp(&self, v: &[&Value], _y: &Value, g: &Value) -> Result<Vec<Option<Value>>, String> {
        let ([x, loc, scale], shape) = views(v)?;
        let Value::Real(g) = g else {
            return Err("gradient must be real".into());
        };
        let fast = (
            operand(x, &shape),
            operand(loc, &shape),
            operand(scale, &shape),
            g.as_slice(),
        );
        if let (Some(xo), Some(mo), Some(so), Some(gs)) = fast {
            let (gx, gsd) = fast_vjp(xo, mo, so, gs);
            let gl: Vec<f64> = gx.iter().map(|v| -v).collect();
            let parts = (
                reduce_to(gx, x, &shape),
                reduce_to(gl, loc, &shape),
                reduce_to(gsd, scale, &shape),
            );
            if let (Some(a), Some(b), Some(c)) = parts {
                return Ok(vec![
                    Some(Value::Real(a)),
                    Some(Value::Real(b)),
                    Some(Value::Real(c)),
                ]);
            }
        }
        let dim = IxDyn(&shape);
        let (Some(xb), Some(lb), Some(sb)) = (
            x.broadcast(dim.clone()),
            loc.broadcast(dim.clone()),
            scale.broadcast(dim),
        ) else {
            return Err("broadcast failed".into());
        };
        let mut gx = ArrayD::zeros(IxDyn(&shape));
        let mut gs = ArrayD::zeros(IxDyn(&shape));
        Zip::from(&mut gx)
            .and(&mut gs)
            .and(&xb)
            .and(&lb)
            .and(&sb)
            .and(g)
            .for_each(|gx, gs, &x, &m, &s, &g| {
                let z = (x - m) / s;
                *gx = -g * z / s;
                *gs = g * (z * z - 1.0) / s;
            });
        let gl = gx.mapv(|v| -v);
        Ok(vec![
            Some(Value::Real(unbroadcast(gx, x.shape()))),
            Some(Value::Real(unbroadcast(gl, loc.shape()))),
            Some(Value::Real(unbroadcast(gs, scale.shape()))),
        ])
    }
}
