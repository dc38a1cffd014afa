//! SVI steps per second for the example models with 1 and 2 threads, and the speedup.
//!
//! Goal: 1 → 2 threads ≥ 1.8x on models whose plates carry real work. The thread pool is
//! built explicitly per measurement; results are bit-identical across thread counts (see
//! tests/infer_runtime.rs), so only time differs. Run: `cargo bench --bench svi`.

use ndarray::{Array1, Array2};
use spread::infer::examples::{eight_schools, hierarchical_regression, linear_regression};
use spread::infer::model::{GuideKind, Model};
use spread::infer::reduce::SingleProcess;
use spread::infer::svi::{SviConfig, SviState, run};
use std::time::Instant;

/// Steps per second: median of `SPREAD_BENCH_REPS` (default 5) runs of `steps` steps each.
fn steps_per_second(model: &Model, steps: u64, threads: usize) -> f64 {
    let reps = env_usize("SPREAD_BENCH_REPS", 5).max(1);
    let pool = match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("thread pool: {e}");
            return f64::NAN;
        }
    };
    let cfg = SviConfig {
        steps,
        seed: 1,
        particles: 1,
        ..SviConfig::default()
    };
    let mut rates: Vec<f64> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            let done = pool.install(|| {
                run(
                    model,
                    &cfg,
                    SviState::new(model, 1),
                    &SingleProcess,
                    &mut |_| {},
                )
            });
            if let Err(e) = done {
                eprintln!("run failed: {e}");
            }
            steps as f64 / start.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[reps / 2]
}

/// A positive integer from the environment (for short profiling runs under callgrind).
fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn regression_data() -> (Array2<f64>, Array1<f64>) {
    let x = Array2::from_shape_fn((40, 3), |(i, j)| ((i * (j + 2)) as f64 * 0.37).sin());
    let y = Array1::from_shape_fn(40, |i| (i as f64 * 0.3).cos());
    (x, y)
}

fn main() {
    let y = [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0];
    let sigma = [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0];
    let (x, yr) = regression_data();
    let chunked = |m: Result<Model, spread::infer::model::ModelError>, rows: usize| {
        m.map(|mut m| {
            m.plates[0].chunk = Some(rows);
            m
        })
    };
    let models: Vec<(&str, Result<Model, _>, u64)> = vec![
        (
            "eight_schools, tape per school",
            eight_schools(&y, &sigma),
            2000,
        ),
        (
            "eight_schools, chunk 8",
            chunked(eight_schools(&y, &sigma), 8),
            2000,
        ),
        (
            "linear_regression full-rank (40x3)",
            linear_regression(&x, &yr, 3.0, 0.8, GuideKind::FullRank),
            500,
        ),
        (
            "hier_regression 1000x20, tape per group",
            hierarchical_regression(1000, 20, 7),
            40,
        ),
        (
            "hier_regression 1000x20, chunk 125",
            chunked(hierarchical_regression(1000, 20, 7), 125),
            400,
        ),
        (
            "hier_regression 1000x200, chunk 125",
            chunked(hierarchical_regression(1000, 200, 7), 125),
            100,
        ),
    ];
    println!(
        "{:<44} {:>12} {:>12} {:>9} {:>14}",
        "model", "1 thread/s", "2 threads/s", "speedup", "us/step (1t)"
    );
    let filter = std::env::var("SPREAD_BENCH_FILTER").unwrap_or_default();
    for (name, model, steps) in models.into_iter().filter(|(n, _, _)| n.contains(&filter)) {
        let Ok(model) = model else {
            eprintln!("{name}: model failed to build");
            continue;
        };
        let steps = (steps / env_usize("SPREAD_BENCH_DIVIDE", 1).max(1) as u64).max(1);
        // SPREAD_BENCH_THREADS=1 or 2 runs one pool size only, so `/usr/bin/time` can report
        // the user+sys CPU time of each on a shared machine.
        let only = env_usize("SPREAD_BENCH_THREADS", 0);
        let rate = |t: usize| {
            if only == 0 || only == t {
                steps_per_second(&model, steps, t)
            } else {
                f64::NAN
            }
        };
        let (one, two) = (rate(1), rate(2));
        println!(
            "{name:<44} {one:>12.1} {two:>12.1} {:>8.2}x {:>14.1}",
            two / one,
            1e6 / one
        );
    }
}
