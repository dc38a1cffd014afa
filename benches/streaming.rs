//! Peak memory of streaming a `--data DIR` at 1x and 10x the number of images (goal: ≤ 1.2x),
//! against reading every image into memory first (what streaming avoids).
//!
//! `cargo bench --bench streaming`. The parent writes synthetic datasets (the CuNiR indexed
//! experiments with 200 shoeboxes of 11x11 pixels per image), then re-runs itself once per
//! (size, mode) so each measurement has its own peak RSS (VmHWM from /proc/self/status).
//! Last, .refl decoding time of the real CuNiR tables against a plain copy of their bytes.

use spread::formats::dataset_dir::Dataset;
use spread::formats::expt::{read_expt, write_expt};
use spread::formats::refl::{Column, ReflectionTable, ShoeboxColumn, parse_refl, write_refl};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const BOXES_PER_IMAGE: usize = 200;
const SIDE: i32 = 11;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, dir, mode] = args.as_slice()
        && flag == "--child"
    {
        child(Path::new(dir), mode == "collect");
        return;
    }
    let root = std::env::temp_dir().join(format!("spread-bench-streaming-{}", std::process::id()));
    let pairs_1x = 10;
    let sizes = [("1x", pairs_1x), ("10x", 10 * pairs_1x)];
    println!(
        "streaming benchmark: {BOXES_PER_IMAGE} shoeboxes of {SIDE}x{SIDE} px per image, 5 images per file pair"
    );
    let mut peaks = Vec::new();
    for (label, pairs) in sizes {
        let dir = root.join(label);
        make_dataset(&dir, pairs);
        let stream = measure(&dir, "stream");
        let collect = measure(&dir, "collect");
        println!(
            "{label:>4}: {:>4} images  stream peak {:>8.1} MiB ({:.2} s)  collect-all peak {:>8.1} MiB  collect/stream {:.2}x",
            pairs * 5,
            stream.0,
            stream.1,
            collect.0,
            collect.0 / stream.0
        );
        peaks.push(stream.0);
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!(
        "stream peak 10x / 1x = {:.3} (goal <= 1.2)",
        peaks[1] / peaks[0]
    );
    let _ = std::fs::remove_dir_all(&root);
    parse_throughput();
}

/// .refl decoding speed against copying the same bytes (the floor any reader pays).
fn parse_throughput() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dials");
    for name in ["integrated.refl", "indexed.refl"] {
        let Ok(bytes) = std::fs::read(fixtures.join(name)) else {
            continue;
        };
        let reps = (200_000_000 / bytes.len()).max(1);
        let start = Instant::now();
        for _ in 0..reps {
            std::hint::black_box(parse_refl(std::hint::black_box(&bytes), Path::new(name)).is_ok());
        }
        let parse = start.elapsed().as_secs_f64() / reps as f64;
        let start = Instant::now();
        for _ in 0..reps {
            std::hint::black_box(std::hint::black_box(&bytes).to_vec());
        }
        let copy = start.elapsed().as_secs_f64() / reps as f64;
        let mb = bytes.len() as f64 / 1e6;
        println!(
            "parse {name}: {:.3} ms ({:.0} MB/s), memcpy {:.3} ms, parse/memcpy {:.1}x",
            parse * 1e3,
            mb / parse,
            copy * 1e3,
            parse / copy
        );
    }
}

/// Runs this binary as a child on `dir`; returns (peak RSS MiB, seconds).
fn measure(dir: &Path, mode: &str) -> (f64, f64) {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("streaming"));
    let out = Command::new(exe).arg("--child").arg(dir).arg(mode).output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut fields = text
        .split_whitespace()
        .map(|f| f.parse::<f64>().unwrap_or(f64::NAN));
    (
        fields.next().unwrap_or(f64::NAN),
        fields.next().unwrap_or(f64::NAN),
    )
}

/// Streams (or collects) every image, touching every pixel; prints peak RSS MiB and seconds.
fn child(dir: &Path, collect: bool) {
    let start = Instant::now();
    let Ok(dataset) = Dataset::open(dir) else {
        return;
    };
    let mut kept = Vec::new();
    let mut total = 0.0f64;
    for image in dataset.images().flatten() {
        total += image.counts.iter().map(|&c| f64::from(c)).sum::<f64>();
        if collect {
            kept.push(image);
        }
    }
    std::hint::black_box((total, kept.len()));
    println!("{} {}", peak_rss_mib(), start.elapsed().as_secs_f64());
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or("VmHWM: 0 kB");
    let kb: f64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// Writes `pairs` copies of a 5-image experiment list with a synthetic shoebox table each.
fn make_dataset(dir: &Path, pairs: usize) {
    let _ = std::fs::create_dir_all(dir);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dials");
    let Ok(list) = read_expt(&fixtures.join("indexed.expt")) else {
        return;
    };
    let table = synthetic_table(
        &list
            .experiments
            .iter()
            .map(|e| e.identifier.clone())
            .collect::<Vec<_>>(),
    );
    for p in 0..pairs {
        let _ = write_expt(&list, &dir.join(format!("run{p:04}.expt")));
        let _ = write_refl(&table, &dir.join(format!("run{p:04}.refl")));
    }
}

fn synthetic_table(identifiers: &[String]) -> ReflectionTable {
    let n = identifiers.len() * BOXES_PER_IMAGE;
    let mut table = ReflectionTable::new(n);
    for (i, id) in identifiers.iter().enumerate() {
        table.identifiers.insert(i as i64, id.clone());
    }
    let npx = (SIDE * SIDE) as usize;
    let data: Vec<f32> = (0..npx).map(|k| (k % 17) as f32).collect();
    let mask = vec![5u8; npx];
    let background = vec![1.0f32; npx];
    let mut boxes = ShoeboxColumn::default();
    let mut ids = Vec::with_capacity(n);
    let mut hkl = Vec::with_capacity(n);
    for row in 0..n {
        let x = (row % 100) as i32 * 20;
        let bbox = [x, x + SIDE, 100, 100 + SIDE, 0, 1];
        let _ = boxes.push(0, bbox, Some((&data, &mask, &background)));
        ids.push((row / BOXES_PER_IMAGE) as i32);
        hkl.push([row as i32, 1, 2]);
    }
    let _ = table.insert("id", Column::Int(ids));
    let _ = table.insert("miller_index", Column::MillerIndex(hkl));
    let _ = table.insert("shoebox", Column::Shoebox(boxes));
    table
}
