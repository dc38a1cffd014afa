//! The planner's overhead: SVI steps per second of eight schools (non-centred) planned from
//! models/eight_schools.spread against the same model hand-built with the program API
//! (src/infer/examples.rs), with 1 and 2 threads. Also the other generic models, planned.
//!
//! The planned model is vectorized over its plates (one tensor per latent), the hand-built one
//! runs one tape per school in parallel; the ratio column is planned / hand-built steps/s (> 1:
//! the planned model is faster). With one particle a planned step is one tape, so a second
//! thread only helps when a step has several particles (they run in parallel). Run:
//! `cargo bench --bench run`.

use spread::infer::examples::eight_schools;
use spread::infer::model::Model;
use spread::infer::reduce::SingleProcess;
use spread::infer::svi::{SviConfig, SviState, run};
use spread::plan::Registry;
use spread::run::{RunConfig, load};
use std::path::Path;
use std::time::Instant;

/// Steps per second (1 particle): median of 5 runs of `steps` steps each.
fn steps_per_second(model: &Model, steps: u64, threads: usize) -> f64 {
    rate(model, steps, threads, 1)
}

/// Steps per second with `particles` ELBO particles per step.
fn rate(model: &Model, steps: u64, threads: usize, particles: usize) -> f64 {
    let Ok(pool) = rayon::ThreadPoolBuilder::new().num_threads(threads).build() else {
        return f64::NAN;
    };
    let cfg = SviConfig {
        steps,
        seed: 1,
        particles,
        ..SviConfig::default()
    };
    let mut rates: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            if let Err(e) = pool.install(|| {
                run(
                    model,
                    &cfg,
                    SviState::new(model, 1),
                    &SingleProcess,
                    &mut |_| {},
                )
            }) {
                eprintln!("run failed: {e}");
            }
            steps as f64 / start.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[2]
}

fn planned(model: &str, data: &str, sets: &[(&str, &str)]) -> Option<Model> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cfg = RunConfig {
        model: root.join(model),
        data: root.join(data),
        sets: sets
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..RunConfig::default()
    };
    match load(&cfg, &Registry::builtin()) {
        Ok((_, p, _)) => Some(p.model),
        Err(e) => {
            eprintln!("{model}: {e}");
            None
        }
    }
}

fn main() {
    let y = [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0];
    let sigma = [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0];
    let Ok(hand) = eight_schools(&y, &sigma) else {
        return;
    };
    let Some(plan) = planned(
        "models/eight_schools.spread",
        "examples/eight_schools",
        &[("parametrization", "noncentered")],
    ) else {
        return;
    };
    let steps = 2000;
    println!(
        "{:<38} {:>8} {:>14} {:>14} {:>10}",
        "model", "threads", "planned st/s", "hand st/s", "ratio"
    );
    for threads in [1, 2] {
        let (p, h) = (
            steps_per_second(&plan, steps, threads),
            steps_per_second(&hand, steps, threads),
        );
        println!(
            "{:<38} {threads:>8} {p:>14.0} {h:>14.0} {:>9.2}x",
            "eight_schools (non-centred)",
            p / h
        );
    }
    let (one, two) = (rate(&plan, steps, 1, 4), rate(&plan, steps, 2, 4));
    let name = "eight_schools, 4 particles";
    println!(
        "{name:<38} {:>8} {one:>14.0} {two:>14.0} {:>9.2}x  (2 threads / 1)",
        "1 | 2",
        two / one
    );
    for (model, data) in [
        ("models/normal_normal.spread", "examples/normal_normal"),
        (
            "models/hierarchical_regression.spread",
            "examples/hierarchical_regression",
        ),
    ] {
        let Some(m) = planned(model, data, &[]) else {
            continue;
        };
        let (one, two) = (
            steps_per_second(&m, steps, 1),
            steps_per_second(&m, steps, 2),
        );
        println!(
            "{model:<38} {:>8} {one:>14.0} {two:>14.0} {:>9.2}x  (2 threads / 1)",
            "1 | 2",
            two / one
        );
    }
}
