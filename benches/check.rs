//! Benchmark: `check` (parse, resolve, check, lower) of the stdlib and every model in models/.
//! Prints the median time per file and in total, and the ratio to the 50 ms goal for the whole set.
//! Run: cargo bench --bench check

use spread::ir::{self, Options};
use spread::resolve::STDLIB;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const GOAL_MS: f64 = 50.0;
const ROUNDS: usize = 30;

fn median(mut times: Vec<Duration>) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1e3
}

/// Median milliseconds to compile `bytes`, and whether it checked clean.
fn time_compile(name: &str, bytes: &[u8]) -> (f64, bool) {
    let opts = Options::default();
    let clean = !ir::compile(name, bytes, &opts).has_errors();
    let times = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            black_box(ir::compile(name, black_box(bytes), &opts));
            start.elapsed()
        })
        .collect();
    (median(times), clean)
}

/// Median milliseconds to parse `bytes` alone (no modules, no checking).
fn time_parse(bytes: &[u8]) -> f64 {
    let text = String::from_utf8_lossy(bytes);
    let times = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            let _ = black_box(spread::syntax::parse(0, black_box(&text)));
            start.elapsed()
        })
        .collect();
    median(times)
}

fn main() {
    let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, text) in STDLIB {
        inputs.push((format!("stdlib/{name}.spread"), text.as_bytes().to_vec()));
    }
    let mut models: Vec<PathBuf> = std::fs::read_dir("models").into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "spread")).collect();
    models.sort();
    for path in models {
        if let Ok(bytes) = std::fs::read(&path) {
            inputs.push((path.display().to_string(), bytes));
        }
    }
    println!("{:<40} {:>10} {:>8}", "file", "median ms", "clean");
    let mut total = 0.0;
    for (name, bytes) in &inputs {
        let (ms, clean) = time_compile(name, bytes);
        total += ms;
        println!("{name:<40} {ms:>10.3} {clean:>8}");
    }
    println!("{:<40} {total:>10.3}", "total (stdlib + models)");
    println!("goal {GOAL_MS} ms: total/goal = {:.3} ({:.0}x under budget)", total / GOAL_MS, GOAL_MS / total.max(1e-9));
    let parse_ms: f64 = inputs.iter().map(|(_, b)| time_parse(b)).sum();
    let kib = inputs.iter().map(|(_, b)| b.len()).sum::<usize>() as f64 / 1024.0;
    println!("parse alone: {parse_ms:.3} ms = {:.0}% of the pipeline; {:.3} ms per KiB of source end to end", 100.0 * parse_ms / total, total / kib);
}
