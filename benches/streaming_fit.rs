//! Peak memory of a *fit* (`spreadc run`'s plan + SVI steps) at 1x and 10x the images
//! (goal: 10x / 1x ≤ 1.2), the fit-side counterpart of `benches/streaming.rs` (the reader).
//!
//! `cargo bench --bench streaming_fit`. Two workloads, each at 1x and 10x:
//! - `physics`: models/rubredoxin_fe.spread (`--set images_per_step=4`) over copies of
//!   examples/rubredoxin_small (8 images, 299 shoeboxes of 11x11 pixels, 100-channel spectra per
//!   copy; every copy its own file pair and experiment identifiers): 8 copies (64 images) and 80
//!   copies (640 images).
//! - `amortized`: the same with the per-shoebox `background` guide amortized by
//!   `shoebox_encoder(log1p(shoebox.pixels))`, so the guide has no parameters per shoebox and
//!   what is left to grow with the images is the per-image guide and metadata.
//! - `pixels`: a minimal model over `dials(...)` (one scale per image, a Poisson observe of every
//!   shoebox's pixels, `subsample 4` images) on pixel-heavy synthetic images (the CuNiR indexed
//!   experiments, 200 shoeboxes of 11x11 pixels per image, 5 images per file pair): 50 and 500
//!   images.
//!
//! The parent writes the datasets and re-runs itself once per measurement (`--fit MODEL DIR
//! SETS`), so each has its own peak RSS (VmHWM of /proc/self/status). A child compiles and plans
//! the model over the data (`spread::run::load`: reads and validates every image), takes
//! `FIT_STEPS` SVI steps (`SPREAD_BENCH_STEPS=N` for more), and prints its peak RSS, the peak at the end of loading, the load and
//! fit times and the final ELBO. `--copies DIR N` only writes N copies of rubredoxin_small into
//! DIR (to run `spreadc run` on by hand). Set `SPREAD_BENCH_FILTER=physics` (or `amortized`, `pixels`) to run one.

use spread::formats::expt::{read_expt, write_expt};
use spread::formats::refl::{Column, ReflectionTable, ShoeboxColumn, read_refl, write_refl};
use spread::infer::reduce::SingleProcess;
use spread::infer::svi::{SviConfig, SviState, run};
use spread::plan::Registry;
use spread::run::{RunConfig, load};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// SVI steps per measurement (`SPREAD_BENCH_STEPS` overrides).
const FIT_STEPS: u64 = 5;

fn fit_steps() -> u64 {
    std::env::var("SPREAD_BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(FIT_STEPS)
}
/// Shoeboxes per synthetic image and their side (pixels).
const BOXES_PER_IMAGE: usize = 200;
const SIDE: i32 = 11;

/// The minimal pixel model of the `pixels` workload.
const PIXEL_MODEL: &str = "\
data shots = dials(\"*.expt\", \"*.refl\", n_channels = 1)
plate image in shots.images subsample 4 {
  latent log_scale ~ Normal(0.0, 1.0)
  plate shoebox in image.shoeboxes {
    observe shoebox.pixels ~ Poisson(8.0 * exp(log_scale))
  }
}
";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, model, dir, sets @ ..] = args.as_slice()
        && flag == "--fit"
    {
        fit_child(Path::new(model), Path::new(dir), sets);
        return;
    }
    // `--copies DIR N`: only write N copies of rubredoxin_small into DIR (for runs by hand).
    if let [_, flag, dir, n] = args.as_slice()
        && flag == "--copies"
    {
        copy_rubredoxin(Path::new(dir), n.parse().unwrap_or(1));
        return;
    }
    let root = std::env::temp_dir().join(format!("spread-bench-fit-{}", std::process::id()));
    let filter = std::env::var("SPREAD_BENCH_FILTER").unwrap_or_default();
    println!(
        "fit memory benchmark: {} SVI steps after loading (peak RSS = VmHWM)",
        fit_steps()
    );
    let rubredoxin = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/rubredoxin_fe.spread");
    if filter.is_empty() || filter == "physics" {
        physics_workload("physics", &rubredoxin, &root.join("physics"));
    }
    if filter.is_empty() || filter == "amortized" {
        let dir = root.join("amortized");
        if let Some(model) = amortized_model(&rubredoxin, &dir) {
            physics_workload("amortized", &model, &dir);
        }
    }
    if filter.is_empty() || filter == "pixels" {
        pixel_workload(&root.join("pixels"));
    }
    let _ = std::fs::remove_dir_all(&root);
}

fn physics_workload(workload: &str, model: &Path, root: &Path) {
    let sets = ["images_per_step=4".to_string()];
    let peaks: Vec<f64> = [("1x", 8), ("10x", 80)]
        .into_iter()
        .map(|(label, copies)| {
            let dir = root.join(label);
            copy_rubredoxin(&dir, copies);
            let m = measure(model, &dir, &sets);
            report(workload, label, &m);
            let _ = std::fs::remove_dir_all(&dir);
            m.peak_mib
        })
        .collect();
    ratio(workload, &peaks);
}

/// models/rubredoxin_fe.spread with an encoder guide on `background`, written into `dir`.
fn amortized_model(rubredoxin: &Path, dir: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(rubredoxin).ok()?;
    let (import, latent) = (
        "use flows.{affine_correction}",
        "latent background[3] ~ Normal(0.0, 10.0)\n",
    );
    if !text.contains(import) || !text.contains(latent) {
        println!(
            "amortized: skipped (models/rubredoxin_fe.spread no longer has `{import}` and `background`)"
        );
        return None;
    }
    let text = text
        .replace(import, "use flows.{affine_correction, shoebox_encoder}")
        .replace(
            latent,
            "latent background[3] ~ Normal(0.0, 10.0) guide shoebox_encoder(log1p(shoebox.pixels))\n",
        );
    let _ = std::fs::create_dir_all(dir);
    let path = dir.join("rubredoxin_amortized.spread");
    std::fs::write(&path, text).ok()?;
    Some(path)
}

fn pixel_workload(root: &Path) {
    let _ = std::fs::create_dir_all(root);
    let model = root.join("pixels.spread");
    if std::fs::write(&model, PIXEL_MODEL).is_err() {
        return;
    }
    let peaks: Vec<f64> = [("1x", 10), ("10x", 100)]
        .into_iter()
        .map(|(label, pairs)| {
            let dir = root.join(label);
            synthetic_dataset(&dir, pairs);
            let m = measure(&model, &dir, &[]);
            report("pixels", label, &m);
            let _ = std::fs::remove_dir_all(&dir);
            m.peak_mib
        })
        .collect();
    ratio("pixels", &peaks);
}

/// What one child measured.
#[derive(Default)]
struct Measurement {
    peak_mib: f64,
    load_peak_mib: f64,
    load_s: f64,
    fit_s: f64,
    elbo: f64,
    images: f64,
}

fn report(workload: &str, label: &str, m: &Measurement) {
    println!(
        "{workload:>9} {label:>4}: {:>4} images  fit peak {:>7.1} MiB  (after load {:>7.1} MiB)  load {:.2} s  fit {:.2} s  ELBO {:.3}",
        m.images, m.peak_mib, m.load_peak_mib, m.load_s, m.fit_s, m.elbo
    );
}

fn ratio(workload: &str, peaks: &[f64]) {
    if let [one, ten] = peaks {
        println!(
            "{workload:>9} fit peak 10x / 1x = {:.3} (goal <= 1.2)",
            ten / one
        );
    }
}

/// Runs this binary as a child fitting `model` over `dir`.
fn measure(model: &Path, dir: &Path, sets: &[String]) -> Measurement {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("streaming_fit"));
    let out = Command::new(exe)
        .arg("--fit")
        .arg(model)
        .arg(dir)
        .args(sets)
        .output();
    let Ok(out) = out else {
        return Measurement::default();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.trim().is_empty() {
        eprintln!("fit child failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: Vec<f64> = text
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(f64::NAN))
        .collect();
    let at = |k: usize| v.get(k).copied().unwrap_or(f64::NAN);
    Measurement {
        peak_mib: at(0),
        load_peak_mib: at(1),
        load_s: at(2),
        fit_s: at(3),
        elbo: at(4),
        images: at(5),
    }
}

/// Plans `model` over `dir` and takes `fit_steps()` SVI steps; prints the measurements.
fn fit_child(model: &Path, dir: &Path, sets: &[String]) {
    let cfg = RunConfig {
        model: model.to_path_buf(),
        data: dir.to_path_buf(),
        sets: sets
            .iter()
            .filter_map(|s| s.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..RunConfig::default()
    };
    let start = Instant::now();
    let planned = match load(&cfg, &Registry::builtin()) {
        Ok((_, planned, _)) => planned,
        Err(e) => return eprintln!("{e}"),
    };
    let (load_s, load_peak) = (start.elapsed().as_secs_f64(), vm_mib("VmHWM:"));
    let images: usize = planned
        .physics
        .dials
        .iter()
        .map(|(_, d)| d.images.len())
        .sum();
    let model = &planned.model;
    let svi = SviConfig {
        steps: fit_steps(),
        seed: 0,
        ..SviConfig::default()
    };
    let start = Instant::now();
    let state = match run(
        model,
        &svi,
        SviState::new(model, 0),
        &SingleProcess,
        &mut |_| {},
    ) {
        Ok(s) => s,
        Err(e) => return eprintln!("{e}"),
    };
    let elbo = state.elbo.last().copied().unwrap_or(f64::NAN);
    println!(
        "{} {load_peak} {load_s} {} {elbo} {images}",
        vm_mib("VmHWM:"),
        start.elapsed().as_secs_f64()
    );
}

/// A `Vm*` figure of /proc/self/status in MiB.
fn vm_mib(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// `copies` copies of examples/rubredoxin_small, each with its own file pair, identifiers and
/// spectra, plus the atomic model.
fn copy_rubredoxin(dir: &Path, copies: usize) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rubredoxin_small");
    let _ = std::fs::create_dir_all(dir.join("spectra"));
    let _ = std::fs::copy(src.join("1brf.pdb"), dir.join("1brf.pdb"));
    let (Ok(list), Ok(table)) = (
        read_expt(&src.join("simulated.expt")),
        read_refl(&src.join("simulated.refl")),
    ) else {
        return eprintln!("cannot read {}", src.display());
    };
    for c in 0..copies {
        let rename = |id: &str| format!("{id}-c{c:04}");
        let mut list = list.clone();
        for e in &mut list.experiments {
            let spectrum = src.join("spectra").join(format!("{}.lam", e.identifier));
            e.identifier = rename(&e.identifier);
            let to = dir.join("spectra").join(format!("{}.lam", e.identifier));
            let _ = std::fs::copy(spectrum, to);
        }
        let mut table = table.clone();
        for id in table.identifiers.values_mut() {
            *id = rename(id);
        }
        let _ = write_expt(&list, &dir.join(format!("copy{c:04}.expt")));
        let _ = write_refl(&table, &dir.join(format!("copy{c:04}.refl")));
    }
}

/// `pairs` copies of a 5-image experiment list with a synthetic shoebox table each.
fn synthetic_dataset(dir: &Path, pairs: usize) {
    let _ = std::fs::create_dir_all(dir);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dials");
    let Ok(list) = read_expt(&fixtures.join("indexed.expt")) else {
        return eprintln!("cannot read the CuNiR fixture");
    };
    let ids: Vec<String> = list
        .experiments
        .iter()
        .map(|e| e.identifier.clone())
        .collect();
    let table = synthetic_table(&ids);
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
    let (mut ids, mut hkl) = (Vec::with_capacity(n), Vec::with_capacity(n));
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
