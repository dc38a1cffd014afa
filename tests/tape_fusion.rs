//! Elementwise fusion on the tape (src/tape/fusion.rs): large elementwise nodes are deferred
//! and evaluated, and differentiated, as fused trees over tiles.
//!
//! Values are checked against plain loops or the eager kernels (`Unary::forward`,
//! `Binary::forward`) on the same arrays; gradients against closed forms or central finite
//! differences on sampled elements. Every tensor here has at least `DEFER_MIN_LEN` elements,
//! so the fused path runs (asserted by `node_is_deferred`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ndarray::{ArrayD, Axis, IxDyn};
use spread::tape::graph::DEFER_MIN_LEN;
use spread::tape::{Binary, DataRef, NodeId, Tape, TapeError, Unary, Value};
use std::sync::Arc;

/// Deterministic values in [lo, hi).
fn filled(shape: &[usize], seed: u64, lo: f64, hi: f64) -> ArrayD<f64> {
    let n: usize = shape.iter().product();
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let v = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((state >> 11) as f64 / (1u64 << 53) as f64)
        })
        .collect();
    ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
}

fn real(t: &Tape, id: NodeId) -> ArrayD<f64> {
    t.real(id).unwrap().clone()
}

type Build = dyn Fn(&mut Tape, &[NodeId]) -> Result<NodeId, TapeError>;

/// The scalar a builder returns, on a fresh tape with leaves `inputs`.
fn loss(build: &Build, inputs: &[ArrayD<f64>]) -> f64 {
    let mut t = Tape::new();
    let ids: Vec<NodeId> = inputs.iter().map(|a| t.leaf_real(a.clone())).collect();
    let out = build(&mut t, &ids).unwrap();
    t.scalar_value(out).unwrap()
}

/// Tape gradients against central differences at `samples` elements of every input.
fn check_gradients(build: &Build, inputs: &[ArrayD<f64>], samples: usize, tol: f64) {
    let mut t = Tape::new();
    let ids: Vec<NodeId> = inputs.iter().map(|a| t.leaf_real(a.clone())).collect();
    let out = build(&mut t, &ids).unwrap();
    t.backward(out).unwrap();
    let h = 1e-6;
    for (k, input) in inputs.iter().enumerate() {
        let g = t.grad_real(ids[k]).unwrap();
        let n = input.len();
        let step = (n / samples).max(1);
        for i in (0..n).step_by(step).chain([n - 1]) {
            let (mut plus, mut minus) = (inputs.to_vec(), inputs.to_vec());
            plus[k].as_slice_mut().unwrap()[i] += h;
            minus[k].as_slice_mut().unwrap()[i] -= h;
            let fd = (loss(build, &plus) - loss(build, &minus)) / (2.0 * h);
            let a = g.as_slice().unwrap()[i];
            assert!(
                (a - fd).abs() < tol * (1.0 + fd.abs()),
                "input {k} element {i}: tape {a}, finite difference {fd}"
            );
        }
    }
}

fn weights(shape: &[usize]) -> ArrayD<f64> {
    filled(shape, 99, 0.5, 1.5)
}

/// Σ w ⊙ x with fixed weights, so the seed is not all ones.
fn weighted_sum(t: &mut Tape, x: NodeId) -> Result<NodeId, TapeError> {
    let w = t.constant_real(weights(t.shape(x)));
    let p = t.mul(x, w)?;
    t.sum(p)
}

/// The regression likelihood of the benchmarks, y ~ Normal(alpha[row] + b x, s), scaled by 3:
/// value and every gradient against closed forms.
#[test]
fn normal_regression_matches_closed_form() {
    let (rows, cols) = (16, 128);
    let alpha = filled(&[rows, 1], 1, -1.0, 1.0);
    let b = ArrayD::from_elem(IxDyn(&[]), 0.7);
    let x = filled(&[rows, cols], 2, -2.0, 2.0);
    let y = Arc::new(filled(&[rows, cols], 3, -3.0, 3.0));
    let s = ArrayD::from_elem(IxDyn(&[]), 1.3);
    let mut t = Tape::new();
    let (an, bn, xn, sn) = (
        t.leaf_real(alpha.clone()),
        t.leaf_real(b.clone()),
        t.leaf_real(x.clone()),
        t.leaf_real(s.clone()),
    );
    let yn = t.data(DataRef::of_view(&y, &y.view()).unwrap());
    let bx = t.mul(bn, xn).unwrap();
    let mean = t.add(an, bx).unwrap();
    let lp = t.normal_log_pdf(yn, mean, sn).unwrap();
    assert!(t.shape(lp).iter().product::<usize>() >= DEFER_MIN_LEN);
    let total = t.sum(lp).unwrap();
    let scaled = t.scale(total, 3.0).unwrap();
    t.backward(scaled).unwrap();

    let sd = 1.3;
    let (mut value, mut g_alpha, mut g_b, mut g_s) = (0.0, vec![0.0; rows], 0.0, 0.0);
    let mut g_x = ArrayD::zeros(IxDyn(&[rows, cols]));
    for r in 0..rows {
        for c in 0..cols {
            let m = alpha[[r, 0]] + 0.7 * x[[r, c]];
            let d = y[[r, c]] - m;
            value += -0.5 * (d / sd).powi(2) - sd.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln();
            g_alpha[r] += 3.0 * d / (sd * sd);
            g_b += 3.0 * d / (sd * sd) * x[[r, c]];
            g_x[[r, c]] = 3.0 * d / (sd * sd) * 0.7;
            g_s += 3.0 * (d * d / sd.powi(3) - 1.0 / sd);
        }
    }
    let close = |a: f64, b: f64, what: &str| {
        assert!(
            (a - b).abs() <= 1e-10 * (1.0 + b.abs()),
            "{what}: {a} vs {b}"
        );
    };
    close(t.scalar_value(scaled).unwrap(), 3.0 * value, "value");
    let ga = t.grad_real(an).unwrap();
    for r in 0..rows {
        close(ga[[r, 0]], g_alpha[r], "d alpha");
    }
    close(t.grad_real(bn).unwrap().sum(), g_b, "d b");
    close(t.grad_real(sn).unwrap().sum(), g_s, "d scale");
    let gx = t.grad_real(xn).unwrap();
    for (a, e) in gx.iter().zip(g_x.iter()) {
        close(*a, *e, "d x");
    }
}

/// Each unary op on a row broadcast down a matrix (a periodic input): values equal the eager
/// kernel's bit for bit, gradients match finite differences.
#[test]
fn every_unary_op_fused_with_a_broadcast_row() {
    let ops = [
        Unary::Neg,
        Unary::Exp,
        Unary::Log,
        Unary::Log1p,
        Unary::Sqrt,
        Unary::Sin,
        Unary::Cos,
        Unary::Tanh,
        Unary::Sigmoid,
        Unary::Softplus,
        Unary::Abs,
        Unary::Square,
        Unary::Relu,
        Unary::LnGamma,
        Unary::PowConst(1.7),
        Unary::Scale(-2.5),
        Unary::Shift(0.25),
    ];
    let row = filled(&[128], 5, 0.1, 0.6);
    let m = filled(&[12, 128], 6, 0.5, 1.5);
    for op in ops {
        let mut t = Tape::new();
        let (rn, mn) = (t.leaf_real(row.clone()), t.leaf_real(m.clone()));
        let sum = t.add(mn, rn).unwrap();
        let out = t.unary(op, sum).unwrap();
        let eager = op.forward(&Binary::Add.forward(&m, &row).unwrap());
        assert_eq!(real(&t, out), eager, "{op:?}");
        let build = move |t: &mut Tape, ids: &[NodeId]| {
            let s = t.add(ids[1], ids[0])?;
            let o = t.unary(op, s)?;
            weighted_sum(t, o)
        };
        check_gradients(&build, &[row.clone(), m.clone()], 10, 1e-5);
    }
}

/// Binary ops with a column (block) input, a one-number input and a middle-axis broadcast that
/// fits no direct pattern (read through a copy).
#[test]
fn binary_ops_over_every_broadcast_pattern() {
    let col = filled(&[8, 4, 1], 7, 0.5, 1.5);
    let one = ArrayD::from_elem(IxDyn(&[]), 1.1);
    let mid = filled(&[8, 1, 160], 8, 0.5, 1.5);
    let full = filled(&[8, 4, 160], 9, 0.5, 1.5);
    for op in [
        Binary::Add,
        Binary::Sub,
        Binary::Mul,
        Binary::Div,
        Binary::Pow,
    ] {
        let mut t = Tape::new();
        let ids: Vec<NodeId> = [&col, &one, &mid, &full]
            .iter()
            .map(|a| t.leaf_real((*a).clone()))
            .collect();
        let a = t.binary(op, ids[3], ids[0]).unwrap();
        let b = t.binary(op, a, ids[2]).unwrap();
        let c = t.binary(op, ids[1], b).unwrap();
        let expected = op
            .forward(
                &one,
                &op.forward(&op.forward(&full, &col).unwrap(), &mid).unwrap(),
            )
            .unwrap();
        assert_eq!(real(&t, c), expected, "{op:?}");
        let build = move |t: &mut Tape, ids: &[NodeId]| {
            let a = t.binary(op, ids[3], ids[0])?;
            let b = t.binary(op, a, ids[2])?;
            let c = t.binary(op, ids[1], b)?;
            weighted_sum(t, c)
        };
        check_gradients(
            &build,
            &[col.clone(), one.clone(), mid.clone(), full.clone()],
            8,
            2e-5,
        );
    }
}

/// An intermediate used twice, one also read by a non-elementwise op, and a chain longer than
/// one tree: values against loops, gradients against finite differences.
#[test]
fn shared_and_materialized_intermediates_and_long_chains() {
    let a = filled(&[16, 96], 10, -1.0, 1.0);
    let b = filled(&[16, 96], 11, -1.0, 1.0);
    let build = |t: &mut Tape, ids: &[NodeId]| {
        let m = t.mul(ids[0], ids[1])?; // used three times
        let p = t.shift(m, 1.0)?;
        let q = t.scale(m, 2.0)?;
        let rows = t.sum_axis(m, 1)?; // reads m's value: m is stored
        let mut chain = t.tanh(p)?;
        for k in 0..100 {
            chain = if k % 2 == 0 {
                t.scale(chain, 0.99)?
            } else {
                t.sin(chain)?
            };
        }
        let s1 = weighted_sum(t, chain)?;
        let s2 = t.sum(q)?;
        let s3 = t.sum(rows)?;
        let s = t.add(s1, s2)?;
        t.add(s, s3)
    };
    let w = weights(&[16, 96]);
    let mut expected = 0.0;
    for i in 0..a.len() {
        let m = a.as_slice().unwrap()[i] * b.as_slice().unwrap()[i];
        let mut c = (m + 1.0).tanh();
        for k in 0..100 {
            c = if k % 2 == 0 { c * 0.99 } else { c.sin() };
        }
        expected += w.as_slice().unwrap()[i] * c + 2.0 * m + m;
    }
    let got = loss(&build, &[a.clone(), b.clone()]);
    assert!(
        (got - expected).abs() < 1e-9 * expected.abs(),
        "{got} vs {expected}"
    );
    check_gradients(&build, &[a, b], 12, 1e-5);
}

/// A sum whose gradient is computed with its value is scaled by the seed that reaches it.
#[test]
fn fused_sum_gradient_scales_with_its_seed() {
    let x = filled(&[40, 40], 12, -1.0, 1.0);
    let build = |t: &mut Tape, ids: &[NodeId]| {
        let e = t.exp(ids[0])?;
        let s = t.sum(e)?;
        let s2 = t.square(s)?; // seed of the sum: 2 s
        t.scale(s2, 0.5)
    };
    check_gradients(&build, &[x], 20, 1e-6);
}

/// Data read in place: as a value it equals its rows; a non-contiguous view is refused.
#[test]
fn data_nodes_read_rows_in_place() {
    let y = Arc::new(filled(&[20, 64], 13, -1.0, 1.0));
    let rows = y.slice_axis(Axis(0), ndarray::Slice::from(3..19));
    let d = DataRef::of_view(&y, &rows).unwrap();
    let mut t = Tape::new();
    let n = t.data(d);
    assert_eq!(t.shape(n), &[16, 64]);
    let two = t.scalar(2.0);
    let doubled = t.mul(n, two).unwrap();
    assert_eq!(real(&t, doubled), rows.mapv(|v| 2.0 * v));
    assert_eq!(real(&t, n), rows.to_owned());
    let strided = y.slice_axis(Axis(1), ndarray::Slice::from(0..32));
    assert!(DataRef::of_view(&y, &strided).is_none());
}

/// Replay recomputes deferred nodes from the new leaf values.
#[test]
fn replay_recomputes_deferred_nodes() {
    let x0 = filled(&[32, 64], 14, -1.0, 1.0);
    let x1 = filled(&[32, 64], 15, -1.0, 1.0);
    let mut t = Tape::new();
    let x = t.leaf_real(x0);
    let e = t.exp(x).unwrap();
    let s = t.sum(e).unwrap();
    t.set_value(x, Value::Real(x1.clone())).unwrap();
    t.replay().unwrap();
    let expected: f64 = x1.iter().map(|v| v.exp()).sum();
    let got = t.scalar_value(s).unwrap();
    assert!(
        (got - expected).abs() < 1e-12 * expected,
        "{got} vs {expected}"
    );
}

/// A NaN inside a fused tree is found and named by its operator.
#[test]
fn non_finite_values_inside_a_tree_are_located() {
    let mut x = filled(&[32, 64], 16, 0.5, 1.0);
    x[[5, 7]] = -1.0;
    let mut t = Tape::new();
    let xn = t.leaf_real(x);
    let l = t.log(xn).unwrap();
    let s = t.shift(l, 1.0).unwrap();
    let total = t.sum(s).unwrap();
    assert!(t.scalar_value(total).unwrap().is_nan());
    match t.first_non_finite_value() {
        Some(TapeError::NonFinite { op, .. }) => assert_eq!(op, "log"),
        other => panic!("expected a non-finite log, found {other:?}"),
    }
}
