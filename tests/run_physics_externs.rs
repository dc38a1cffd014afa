//! The anomalous externs as the planner calls them (Registry::builtin): values against the
//! Sherrell source file read here, gradients through the registered operators against central
//! finite differences, and plate-varying or mistyped arguments refused with the operator named.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ndarray::{ArrayD, IxDyn};
use spread::plan::{ExternArg, Registry, Val};
use spread::tape::{Tape, Value};
use std::path::Path;

fn energies() -> Vec<f64> {
    (0..100).map(|k| 7070.0 + k as f64).collect()
}

fn leaf(t: &mut Tape, v: &[f64], shape: &[usize]) -> Val {
    let node = t.leaf_real(ArrayD::from_shape_vec(IxDyn(shape), v.to_vec()).unwrap());
    Val {
        node,
        plates: vec![],
    }
}

/// Σ w·out of extern `name` at `x` (its one differentiable argument), and d/dx by the tape.
fn weighted(name: &str, x: &[f64], texts: &[(usize, &str)]) -> (f64, Vec<f64>) {
    let reg = Registry::builtin();
    let mut t = Tape::new();
    let e = leaf(&mut t, &energies(), &[100]);
    let xs = leaf(&mut t, x, if x.len() == 1 { &[] } else { &[100] });
    let mut args: Vec<ExternArg> = Vec::new();
    let n_args = texts.len() + 2;
    let mut tensors = vec![ExternArg::Tensor(e), ExternArg::Tensor(xs.clone())].into_iter();
    for i in 0..n_args {
        match texts.iter().find(|(k, _)| *k == i) {
            Some((_, s)) => args.push(ExternArg::Text(s.to_string())),
            None => args.push(tensors.next().unwrap()),
        }
    }
    let out = reg.get(name).unwrap().call(&mut t, &args).unwrap();
    let n = t.value(out.node).len();
    let w: Vec<f64> = (0..n)
        .map(|k| ((k * 7919) % 13) as f64 / 13.0 - 0.4)
        .collect();
    let shape = t.value(out.node).shape().to_vec();
    let wn = t.constant_real(ArrayD::from_shape_vec(IxDyn(&shape), w).unwrap());
    let prod = t.mul(out.node, wn).unwrap();
    let total: f64 = match t.value(prod) {
        Value::Real(a) => a.sum(),
        Value::Complex(_) => unreachable!(),
    };
    t.backward(prod).unwrap();
    (
        total,
        t.grad_real(xs.node).unwrap().iter().copied().collect(),
    )
}

fn central(name: &str, x: &[f64], texts: &[(usize, &str)], i: usize, h: f64) -> f64 {
    let mut up = x.to_vec();
    up[i] += h;
    let mut down = x.to_vec();
    down[i] -= h;
    (weighted(name, &up, texts).0 - weighted(name, &down, texts).0) / (2.0 * h)
}

#[test]
fn reference_curve_reads_the_sherrell_rows() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tables/Fe_ox_red_7000_7300.csv"),
    )
    .unwrap();
    let reg = Registry::builtin();
    let mut t = Tape::new();
    let e = leaf(&mut t, &energies(), &[100]);
    let args = [
        ExternArg::Text("sherrell_fe_red".into()),
        ExternArg::Tensor(e),
    ];
    let out = reg
        .get("reference_curve")
        .unwrap()
        .call(&mut t, &args)
        .unwrap();
    let Value::Real(curve) = t.value(out.node) else {
        panic!()
    };
    assert_eq!(curve.shape(), &[2, 100]);
    for line in text.lines().filter(|l| l.starts_with("71")) {
        let row: Vec<f64> = line.split(',').map(|x| x.parse().unwrap()).collect();
        if row[0] > 7169.0 {
            continue;
        }
        let k = (row[0] - 7070.0) as usize;
        assert_eq!(curve[[0, k]], row[3], "f' at {} eV", row[0]);
        assert_eq!(curve[[1, k]], row[4], "f'' at {} eV", row[0]);
    }
}

#[test]
fn shifted_curve_gradient_matches_central_differences() {
    let texts = [(0, "sherrell_fe_ox")];
    // The shift is placed between table nodes (1 eV grid) so the piecewise-linear curve is smooth.
    let x = [-1.37];
    let (_, g) = weighted("shifted_curve", &x, &texts);
    let fd = central("shifted_curve", &x, &texts, 0, 1e-4);
    assert!(
        (g[0] - fd).abs() <= 1e-6 * fd.abs().max(1.0),
        "{} vs {fd}",
        g[0]
    );
}

#[test]
fn kramers_kronig_gradient_matches_central_differences() {
    let texts = [(2, "FE")];
    let fdp: Vec<f64> = energies()
        .iter()
        .map(|e| 0.5 + 3.4 / (1.0 + (-(e - 7120.0) / 1.5).exp()))
        .collect();
    let (_, g) = weighted("kramers_kronig", &fdp, &texts);
    for i in [0, 37, 50, 51, 99] {
        let fd = central("kramers_kronig", &fdp, &texts, i, 1e-3);
        assert!(
            (g[i] - fd).abs() <= 1e-7 * fd.abs().max(1.0),
            "channel {i}: {} vs {fd}",
            g[i]
        );
    }
}

#[test]
fn bad_arguments_name_the_operator() {
    let reg = Registry::builtin();
    let mut t = Tape::new();
    let e = leaf(&mut t, &energies(), &[100]);
    let plated = Val {
        node: e.node,
        plates: vec![0],
    };
    let err = reg
        .get("reference_curve")
        .unwrap()
        .call(
            &mut t,
            &[
                ExternArg::Text("sherrell_fe_ox".into()),
                ExternArg::Tensor(plated),
            ],
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("reference_curve") && err.contains("varies over a plate"),
        "{err}"
    );
    let err = reg
        .get("reference_curve")
        .unwrap()
        .call(
            &mut t,
            &[ExternArg::Text("sherrell_mn".into()), ExternArg::Tensor(e)],
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("sherrell_fe_ox, sherrell_fe_red"), "{err}");
}
