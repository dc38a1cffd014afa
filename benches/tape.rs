//! Tape throughput: a long elementwise chain and an MLP, forward and forward+backward.
//!
//! Prints time per pass, GFLOP/s, the fraction of peak (2 cores × 16 f64 FLOP/cycle × the
//! clock read from /proc/cpuinfo; the tape runs on one core, so one core's peak is shown too),
//! and the reverse/forward cost ratio (goal ≤ 3x). Run: `cargo bench --bench tape`.

use ndarray::{ArrayD, IxDyn};
use spread::tape::{Activation, NodeId, Tape};
use std::time::Instant;

fn clock_ghz() -> f64 {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.lines()
        .find(|l| l.starts_with("cpu MHz"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(2.5, |mhz| mhz / 1000.0)
}

fn filled(shape: &[usize], seed: f64) -> ArrayD<f64> {
    let n: usize = shape.iter().product();
    ArrayD::from_shape_vec(
        IxDyn(shape),
        (0..n)
            .map(|i| ((i as f64 + seed) * 0.618).sin() * 0.5)
            .collect(),
    )
    .unwrap_or_default()
}

/// Median seconds of `reps` runs of f.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[reps / 2]
}

/// x → ((x ⊙ a + b) ⊙ a + b) ... : `depth` multiply-add pairs, 2 FLOP per element per pair.
fn chain(t: &mut Tape, x: &ArrayD<f64>, a: &ArrayD<f64>, b: &ArrayD<f64>, depth: usize) -> NodeId {
    let (mut h, an, bn) = (
        t.leaf_real(x.clone()),
        t.leaf_real(a.clone()),
        t.constant_real(b.clone()),
    );
    for _ in 0..depth {
        let m = t.mul(h, an).unwrap_or(h);
        h = t.add(m, bn).unwrap_or(m);
    }
    t.sum(h).unwrap_or(h)
}

fn mlp(t: &mut Tape, x: &ArrayD<f64>, weights: &[(ArrayD<f64>, ArrayD<f64>)]) -> NodeId {
    let mut h = t.constant_real(x.clone());
    for (w, b) in weights {
        let (wn, bn) = (t.leaf_real(w.clone()), t.leaf_real(b.clone()));
        h = t.dense(h, wn, bn, Activation::Tanh).unwrap_or(h);
    }
    t.sum(h).unwrap_or(h)
}

fn report(
    name: &str,
    flops_fwd: f64,
    flops_bwd: f64,
    fwd: f64,
    both: f64,
    peak: f64,
    bytes_fwd: Option<f64>,
) {
    let (gf, gb) = (flops_fwd / fwd / 1e9, (flops_fwd + flops_bwd) / both / 1e9);
    println!(
        "{name:<36} forward {:>8.3} ms {gf:>6.2} GFLOP/s ({:>5.1}% of 2-core peak, {:>5.1}% of 1 core) | fwd+bwd {:>8.3} ms {gb:>6.2} GFLOP/s ({:>5.1}%) | reverse/forward {:.2}x",
        fwd * 1e3,
        100.0 * gf / peak,
        200.0 * gf / peak,
        both * 1e3,
        100.0 * gb / peak,
        (both - fwd) / fwd
    );
    if let Some(b) = bytes_fwd {
        println!(
            "{:<36} forward streams {:.1} GB/s: one FLOP per 24 bytes, so this chain is memory-bound",
            "",
            b / fwd / 1e9
        );
    }
}

fn main() {
    let ghz = clock_ghz();
    let peak = 2.0 * 16.0 * ghz;
    println!("peak = 2 cores x 16 f64 FLOP/cycle x {ghz:.3} GHz = {peak:.1} GFLOP/s");
    let mut tape = Tape::new();
    for (n, depth) in [(1 << 16, 64), (1 << 20, 16)] {
        let (x, a, b) = (filled(&[n], 0.0), filled(&[n], 1.0), filled(&[n], 2.0));
        let fwd = time(9, || {
            tape.clear();
            chain(&mut tape, &x, &a, &b, depth);
        });
        let both = time(9, || {
            tape.clear();
            let r = chain(&mut tape, &x, &a, &b, depth);
            let _ = tape.backward(r);
        });
        tape.clear();
        let root = chain(&mut tape, &x, &a, &b, depth);
        let replay_fwd = time(9, || {
            let _ = tape.replay();
        });
        let replay_both = time(9, || {
            let _ = tape.replay();
            let _ = tape.backward(root);
        });
        // Backward: mul gives 2 products, add passes g through, accumulation into a and h adds 2.
        let flops = 2.0 * (n * depth) as f64;
        report(
            &format!("chain n={n} depth={depth} record"),
            flops,
            2.0 * flops,
            fwd,
            both,
            peak,
            Some(12.0 * flops),
        );
        report(
            &format!("chain n={n} depth={depth} replay"),
            flops,
            2.0 * flops,
            replay_fwd,
            replay_both,
            peak,
            Some(12.0 * flops),
        );
    }
    let sizes = [64, 256, 256, 16];
    let batch = 256;
    let weights: Vec<_> = sizes
        .windows(2)
        .enumerate()
        .map(|(i, w)| (filled(&[w[0], w[1]], i as f64), filled(&[w[1]], 9.0)))
        .collect();
    let x = filled(&[batch, sizes[0]], 3.0);
    let fwd = time(21, || {
        tape.clear();
        mlp(&mut tape, &x, &weights);
    });
    let both = time(21, || {
        tape.clear();
        let r = mlp(&mut tape, &x, &weights);
        let _ = tape.backward(r);
    });
    tape.clear();
    let root = mlp(&mut tape, &x, &weights);
    let replay_fwd = time(21, || {
        let _ = tape.replay();
    });
    let replay_both = time(21, || {
        let _ = tape.replay();
        let _ = tape.backward(root);
    });
    let matmul: f64 = sizes
        .windows(2)
        .map(|w| 2.0 * (batch * w[0] * w[1]) as f64)
        .sum();
    report(
        &format!("mlp {sizes:?} b={batch} record"),
        matmul,
        2.0 * matmul,
        fwd,
        both,
        peak,
        None,
    );
    report(
        &format!("mlp {sizes:?} b={batch} replay"),
        matmul,
        2.0 * matmul,
        replay_fwd,
        replay_both,
        peak,
        None,
    );
}
