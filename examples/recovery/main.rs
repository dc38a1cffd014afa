//! Recovery study of issue 6: does `spreadc run` find the truth `spreadc simulate` put in, and are
//! its intervals calibrated? Drives the `spreadc` binary (SPREADC, else target/release/spreadc):
//!
//!     cargo build --release
//!     cargo run --release --example recovery -- [--quick | --full] [--work DIR] [--reuse]
//!
//! 1. Truth recovery: oxidized and reduced datasets of increasing size (same seed per size), each
//!    fitted with the default mixture model (P(correct state)) and with `--set fdp_model=edge`
//!    (edge_ev against two references, see `edge_reference`).
//! 2. Calibration: replicate small datasets (Fe state alternating), mixture model: coverage of the
//!    68% (q16..q84) and 90% (q05..q95) intervals of per-image `log_scale`, `rot` and of
//!    `mosaic_deg`, and P(correct state) across replicates.
//! 3. A markdown report with every command, seed and wall time: printed, and written to
//!    examples/recovery/RESULTS.md (default mode), RESULTS_full.md (--full) or DIR/RESULTS.md
//!    (--quick, which only checks that the pipeline works and asserts no study goal).
//!
//! Every command's wall time is kept next to its log (`NAME.wall`); `--reuse` skips a command
//! whose output and wall time are already in the work folder, e.g. to re-render the report.

use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

const MODEL: &str = "models/rubredoxin_fe.spread";
/// Sherrell 2014 rubredoxin K edges (the model file's comment).
const SHERRELL_OX_EV: f64 = 7120.0;
const SHERRELL_RED_EV: f64 = 7118.2;
/// The f'' asymptotes the model passes to `fdp_edge` (below, above).
const EDGE_BELOW: f64 = 0.5;
const EDGE_ABOVE: f64 = 3.9;
const TABLE_HEADER: &str = "| images | shoeboxes | truth | fit |";

type Res<T> = Result<T, String>;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Quick,
    Default,
    Full,
}

/// Sizes, steps and replicate counts of one mode.
struct Plan {
    sizes: Vec<usize>,
    steps: usize,
    /// Extra mixture fits (images, Fe state, steps) with the steps scaled to the images, so that
    /// each image gets about as many updates (`images_per_step` = 32 per step) as in a
    /// 300-step fit of 8 images.
    long: Vec<(usize, State, usize)>,
    replicates: usize,
    rep_images: usize,
    rep_steps: usize,
}

impl Plan {
    fn of(mode: Mode) -> Plan {
        match mode {
            Mode::Quick => Plan {
                sizes: vec![4],
                steps: 150,
                long: vec![],
                replicates: 2,
                rep_images: 4,
                rep_steps: 150,
            },
            Mode::Default => Plan {
                sizes: vec![8, 50, 125],
                steps: 300,
                long: vec![(125, State::Reduced, 1200)],
                replicates: 20,
                rep_images: 4,
                rep_steps: 300,
            },
            Mode::Full => Plan {
                sizes: vec![8, 50, 125, 500],
                steps: 400,
                long: vec![
                    (125, State::Oxidized, 1200),
                    (125, State::Reduced, 1200),
                    (500, State::Oxidized, 4800),
                    (500, State::Reduced, 4800),
                ],
                replicates: 40,
                rep_images: 8,
                rep_steps: 300,
            },
        }
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum State {
    Oxidized,
    Reduced,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Oxidized => "oxidized",
            State::Reduced => "reduced",
        }
    }
    fn short(self) -> &'static str {
        match self {
            State::Oxidized => "ox",
            State::Reduced => "red",
        }
    }
    fn frac(self) -> f64 {
        match self {
            State::Oxidized => 1.0,
            State::Reduced => 0.0,
        }
    }
    fn sherrell_edge(self) -> f64 {
        match self {
            State::Oxidized => SHERRELL_OX_EV,
            State::Reduced => SHERRELL_RED_EV,
        }
    }
}

/// Where the binary, the crate and the scratch folder are.
struct Ctx {
    root: PathBuf,
    spreadc: PathBuf,
    work: PathBuf,
    reuse: bool,
    /// Commands skipped by --reuse.
    reused: std::cell::Cell<usize>,
}

/// A finished command: how it reads in the report, and its wall time.
struct Timed {
    cmd: String,
    secs: f64,
}

struct Dataset {
    name: String,
    dir: PathBuf,
    images: usize,
    shoeboxes: usize,
    seed: u64,
    state: State,
    truth: Value,
    sim: Timed,
}

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Mixture,
    Edge,
}

struct Fit {
    variant: Variant,
    steps: usize,
    summary: Value,
    /// Mean ELBO of the last 50 steps minus that of the 50 before (elbo.csv): > 0 still rising.
    elbo_trend: f64,
    /// P(oxidized) from state_probabilities.csv (mixture fits).
    p_ox: Option<f64>,
    run: Timed,
}

impl Fit {
    fn p_correct(&self, state: State) -> Option<f64> {
        self.p_ox.map(|p| match state {
            State::Oxidized => p,
            State::Reduced => 1.0 - p,
        })
    }
}

/// Posterior summary of one scalar element of summary.json.
#[derive(Clone, Copy)]
struct Post {
    mean: f64,
    sd: f64,
    q05: f64,
    q16: f64,
    q84: f64,
    q95: f64,
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("recovery: {e}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Res<()> {
    let (mode, work, reuse) = parse_args()?;
    let ctx = context(mode, work, reuse)?;
    let plan = Plan::of(mode);
    let started = Instant::now();
    let load0 = load_average();
    let part1 = part1(&ctx, &plan)?;
    let part2 = part2(&ctx, &plan)?;
    let total = started.elapsed().as_secs_f64();
    let report = Report {
        mode,
        plan: &plan,
        ctx: &ctx,
        part1: &part1,
        part2: &part2,
        total,
        loads: (load0, load_average()),
    };
    let md = report.render()?;
    println!("{md}");
    let path = results_path(&ctx, mode);
    std::fs::write(&path, &md).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("recovery: wrote {} ({total:.0} s)", path.display());
    Ok(())
}

fn parse_args() -> Res<(Mode, Option<PathBuf>, bool)> {
    let mut mode = Mode::Default;
    let mut work = None;
    let mut reuse = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => mode = Mode::Quick,
            "--full" => mode = Mode::Full,
            "--reuse" => reuse = true,
            "--work" => work = Some(PathBuf::from(args.next().ok_or("--work needs a folder")?)),
            "-h" | "--help" => {
                return Err("usage: recovery [--quick | --full] [--work DIR] [--reuse]".into());
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok((mode, work, reuse))
}

fn context(mode: Mode, work: Option<PathBuf>, reuse: bool) -> Res<Ctx> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let spreadc = match std::env::var_os("SPREADC") {
        Some(p) => PathBuf::from(p),
        None => root.join("target/release/spreadc"),
    };
    if !spreadc.is_file() {
        return Err(format!(
            "no spreadc at {} (run `cargo build --release` or set SPREADC)",
            spreadc.display()
        ));
    }
    let mode_dir = format!("{mode:?}").to_lowercase();
    let work = work.unwrap_or_else(|| root.join("target/recovery").join(mode_dir));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    for s in [State::Oxidized, State::Reduced] {
        let body = format!("{{\"frac_oxidized\": {:.1}}}\n", s.frac());
        let p = work.join(format!("truth_{}.json", s.short()));
        std::fs::write(&p, body).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(Ctx {
        root,
        spreadc,
        work,
        reuse,
        reused: std::cell::Cell::new(0),
    })
}

fn results_path(ctx: &Ctx, mode: Mode) -> PathBuf {
    match mode {
        Mode::Quick => ctx.work.join("RESULTS.md"),
        Mode::Default => ctx.root.join("examples/recovery/RESULTS.md"),
        Mode::Full => ctx.root.join("examples/recovery/RESULTS_full.md"),
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

// ---------------------------------------------------------------------------------------------
// Running spreadc

impl Ctx {
    /// How a path reads in the report: `$W/...` under the work folder, else as given.
    fn show(&self, p: &Path) -> String {
        match p.strip_prefix(&self.work) {
            Ok(rel) => format!("$W/{}", rel.display()),
            Err(_) => p.display().to_string(),
        }
    }

    /// With --reuse, the wall time recorded when `cmd` ran (`SECS<tab>CMD` in `log`.wall).
    fn recorded(&self, log: &Path, cmd: &str) -> Option<f64> {
        let text = std::fs::read_to_string(log.with_extension("wall")).ok()?;
        let (secs, recorded_cmd) = text.trim_end().split_once('\t')?;
        let same = self.reuse && recorded_cmd == cmd;
        secs.parse().ok().filter(|_| same)
    }

    fn command_line(&self, args: &[String]) -> String {
        let shown: Vec<String> = args.iter().map(|a| self.show(Path::new(a))).collect();
        format!("spreadc {}", shown.join(" "))
    }

    /// Clears `dir` unless --reuse will take the recorded result of `args`.
    fn clear(&self, dir: &Path, args: &[String], log: &Path) {
        if self.recorded(log, &self.command_line(args)).is_none() {
            let _ = std::fs::remove_dir_all(dir);
            let _ = std::fs::remove_file(log.with_extension("wall"));
        }
    }

    /// Runs spreadc from the crate root; stdout and stderr go to `log`, the wall time to
    /// `log` with extension `wall`.
    fn spreadc(&self, args: &[String], log: &Path) -> Res<Timed> {
        let cmd = self.command_line(args);
        if let Some(secs) = self.recorded(log, &cmd) {
            self.reused.set(self.reused.get() + 1);
            return Ok(Timed { cmd, secs });
        }
        let t = Instant::now();
        let out = Command::new(&self.spreadc)
            .current_dir(&self.root)
            .args(args)
            .output()
            .map_err(|e| format!("{}: {e}", self.spreadc.display()))?;
        let secs = t.elapsed().as_secs_f64();
        let mut text = out.stdout.clone();
        text.extend_from_slice(&out.stderr);
        std::fs::write(log, &text).map_err(|e| format!("{}: {e}", log.display()))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: String = err.lines().rev().take(12).collect::<Vec<_>>().join("\n");
            return Err(format!("`{cmd}` failed ({}):\n{tail}", out.status));
        }
        let wall = log.with_extension("wall");
        std::fs::write(&wall, format!("{secs}\t{cmd}\n"))
            .map_err(|e| format!("{}: {e}", wall.display()))?;
        Ok(Timed { cmd, secs })
    }

    fn simulate(&self, name: &str, images: usize, seed: u64, state: State) -> Res<Dataset> {
        let dir = self.work.join(name);
        let truth_fixed = self.work.join(format!("truth_{}.json", state.short()));
        let args = strings(&[
            "simulate",
            MODEL,
            "--out",
            &path_str(&dir),
            "--images",
            &images.to_string(),
            "--seed",
            &seed.to_string(),
            "--truth",
            &path_str(&truth_fixed),
        ]);
        let log = self.work.join(format!("{name}.simulate.log"));
        self.clear(&dir, &args, &log);
        let sim = self.spreadc(&args, &log)?;
        let truth = read_json(&dir.join("truth.json"))?;
        check_truth(&truth, images, state)?;
        let shoeboxes = count_shoeboxes(&truth)?;
        eprintln!(
            "recovery: {name}: {images} images, {shoeboxes} shoeboxes ({:.1} s)",
            sim.secs
        );
        Ok(Dataset {
            name: name.into(),
            dir,
            images,
            shoeboxes,
            seed,
            state,
            truth,
            sim,
        })
    }

    /// Fits `ds` into `NAME.fit_{mixture|edge}{label}`.
    fn fit(
        &self,
        ds: &Dataset,
        variant: Variant,
        steps: usize,
        seed: u64,
        label: &str,
    ) -> Res<Fit> {
        let tag = match variant {
            Variant::Mixture => format!("mixture{label}"),
            Variant::Edge => format!("edge{label}"),
        };
        let out = self.work.join(format!("{}.fit_{tag}", ds.name));
        let mut args = strings(&[
            "run",
            MODEL,
            "--data",
            &path_str(&ds.dir),
            "--out",
            &path_str(&out),
            "--steps",
            &steps.to_string(),
            "--particles",
            "1",
            "--seed",
            &seed.to_string(),
        ]);
        if variant == Variant::Edge {
            args.extend(strings(&["--set", "fdp_model=edge"]));
        }
        let log = self.work.join(format!("{}.fit_{tag}.log", ds.name));
        self.clear(&out, &args, &log);
        let run = self.spreadc(&args, &log)?;
        let summary = read_json(&out.join("summary.json"))?;
        let p_ox = match variant {
            Variant::Mixture => Some(read_p_oxidized(&out)?),
            Variant::Edge => None,
        };
        let fit = Fit {
            variant,
            steps,
            elbo_trend: elbo_trend(&out)?,
            summary,
            p_ox,
            run,
        };
        check_fit(&fit, ds)?;
        eprintln!("recovery: {}.fit_{tag}: {}", ds.name, fit_line(&fit, ds));
        Ok(fit)
    }
}

fn fit_line(fit: &Fit, ds: &Dataset) -> String {
    let what = match (fit.p_correct(ds.state), edge_post(fit)) {
        (Some(p), _) => format!("P({}) = {p:.4}", ds.state.name()),
        (None, Ok(e)) => format!("edge_ev = {:.2} ± {:.2}", e.mean, e.sd),
        (None, Err(e)) => e,
    };
    format!("{what} ({:.1} s)", fit.run.secs)
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

fn read_json(p: &Path) -> Res<Value> {
    let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
}

// ---------------------------------------------------------------------------------------------
// Reading and checking outputs

fn check_truth(truth: &Value, images: usize, state: State) -> Res<()> {
    let n = truth["images"].as_array().map_or(0, Vec::len);
    if n != images {
        return Err(format!("truth.json lists {n} images, expected {images}"));
    }
    if truth["state"].as_str() != Some(state.name()) {
        return Err(format!(
            "truth.json state {} is not {}",
            truth["state"],
            state.name()
        ));
    }
    Ok(())
}

fn count_shoeboxes(truth: &Value) -> Res<usize> {
    let images = truth["images"].as_array().ok_or("truth.json: no images")?;
    images
        .iter()
        .map(|im| {
            im["n_shoeboxes"]
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| "truth.json: image without n_shoeboxes".to_string())
        })
        .sum()
}

/// P(oxidized) of site FE from state_probabilities.csv; checks it is a probability and that the
/// two states add up to 1.
fn read_p_oxidized(out: &Path) -> Res<f64> {
    let p = out.join("state_probabilities.csv");
    let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    let mut lines = text.lines();
    if lines.next() != Some("site,state,probability") {
        return Err(format!("{}: unexpected header", p.display()));
    }
    let (mut ox, mut red) = (None, None);
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        let [site, state, prob] = cells[..] else {
            return Err(format!("{}: bad row {line:?}", p.display()));
        };
        let v: f64 = prob
            .parse()
            .map_err(|e| format!("{}: {line:?}: {e}", p.display()))?;
        match (site, state) {
            ("FE", "oxidized") => ox = Some(v),
            ("FE", "reduced") => red = Some(v),
            _ => {}
        }
    }
    let (Some(ox), Some(red)) = (ox, red) else {
        return Err(format!("{}: no FE oxidized/reduced rows", p.display()));
    };
    if !(0.0..=1.0).contains(&ox) || !(0.0..=1.0).contains(&red) || (ox + red - 1.0).abs() > 1e-6 {
        return Err(format!("{}: P(ox) = {ox}, P(red) = {red}", p.display()));
    }
    Ok(ox)
}

/// Mean ELBO of the last 50 steps minus the mean of the 50 before, from OUT/elbo.csv.
fn elbo_trend(out: &Path) -> Res<f64> {
    let p = out.join("elbo.csv");
    let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    let elbo: Vec<f64> = text
        .lines()
        .skip(1)
        .map(|l| {
            l.split(',')
                .nth(1)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{}: bad row {l:?}", p.display()))
        })
        .collect::<Res<_>>()?;
    if elbo.len() < 100 {
        return Ok(f64::NAN);
    }
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let n = elbo.len();
    Ok(mean(&elbo[n - 50..]) - mean(&elbo[n - 100..n - 50]))
}

/// Root mean square of (posterior mean − truth) of the per-image log_scale.
fn log_scale_rms(fit: &Fit, truth: &Value) -> Res<f64> {
    let images = truth["images"].as_array().ok_or("truth.json: no images")?;
    let mut sum = 0.0;
    for (i, im) in images.iter().enumerate() {
        let p = post(&fit.summary, "log_scale", &format!("log_scale[{i}]"))?;
        let d = p.mean - truth_num(&im["log_scale"], "log_scale")?;
        sum += d * d;
    }
    Ok((sum / images.len().max(1) as f64).sqrt())
}

/// The summary.json entry of one scalar element, e.g. `edge_ev` or `log_scale[3]`.
fn post(summary: &Value, quantity: &str, element: &str) -> Res<Post> {
    let qs = summary["quantities"]
        .as_array()
        .ok_or("summary.json: no quantities")?;
    let q = qs
        .iter()
        .find(|q| q["name"] == quantity)
        .ok_or_else(|| format!("summary.json: no quantity {quantity}"))?;
    let e = q["elements"]
        .as_array()
        .and_then(|es| es.iter().find(|e| e["name"] == element))
        .ok_or_else(|| format!("summary.json: no element {element}"))?;
    let f = |k: &str| {
        e[k].as_f64()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("summary.json: {element}.{k} is not a finite number"))
    };
    Ok(Post {
        mean: f("mean")?,
        sd: f("sd")?,
        q05: f("q05")?,
        q16: f("q16")?,
        q84: f("q84")?,
        q95: f("q95")?,
    })
}

fn edge_post(fit: &Fit) -> Res<Post> {
    post(&fit.summary, "edge_ev", "edge_ev")
}

fn check_fit(fit: &Fit, ds: &Dataset) -> Res<()> {
    let steps = fit.summary["steps"].as_u64();
    if steps != Some(fit.steps as u64) {
        return Err(format!(
            "summary.json: steps {steps:?}, expected {}",
            fit.steps
        ));
    }
    let used = fit.summary["physics"]["data"][0]["shoeboxes"]["used"].as_u64();
    if used != Some(ds.shoeboxes as u64) {
        return Err(format!(
            "{}: the fit used {used:?} shoeboxes, truth.json has {}",
            ds.name, ds.shoeboxes
        ));
    }
    match fit.variant {
        Variant::Edge => edge_post(fit).map(|_| ()),
        Variant::Mixture => (0..ds.images).try_for_each(|i| {
            post(&fit.summary, "log_scale", &format!("log_scale[{i}]")).map(|_| ())
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// The reference edge: the model's sigmoid edge closest (least squares over the channels) to the
// f''(E) the data were simulated from (truth.json `fdp`).

fn sigmoid_sse(energy: &[f64], fdp: &[f64], edge: f64, width: f64) -> f64 {
    energy
        .iter()
        .zip(fdp)
        .map(|(e, f)| {
            let s = 1.0 / (1.0 + (-(e - edge) / width).exp());
            let m = EDGE_BELOW + (EDGE_ABOVE - EDGE_BELOW) * s;
            (m - f) * (m - f)
        })
        .sum()
}

/// Grid search for (edge, width) minimising `sigmoid_sse` around `centre`, `span` each way.
fn grid_min(
    energy: &[f64],
    fdp: &[f64],
    centre: (f64, f64),
    span: (f64, f64),
    n: usize,
) -> (f64, f64) {
    let mut best = (f64::INFINITY, centre);
    for i in 0..=n {
        let edge = centre.0 - span.0 + 2.0 * span.0 * i as f64 / n as f64;
        for j in 0..=n {
            let width = (centre.1 - span.1 + 2.0 * span.1 * j as f64 / n as f64).max(0.05);
            let sse = sigmoid_sse(energy, fdp, edge, width);
            if sse < best.0 {
                best = (sse, (edge, width));
            }
        }
    }
    best.1
}

/// (edge_ev, width_ev) of the least-squares sigmoid edge to the dataset's true f''.
fn edge_reference(truth: &Value) -> Res<(f64, f64)> {
    let nums = |k: &str| -> Res<Vec<f64>> {
        truth[k]
            .as_array()
            .ok_or_else(|| format!("truth.json: no {k}"))?
            .iter()
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| format!("truth.json: {k} is not numeric"))
            })
            .collect()
    };
    let (energy, fdp) = (nums("energy_ev")?, nums("fdp")?);
    if energy.len() != fdp.len() || energy.is_empty() {
        return Err("truth.json: energy_ev and fdp differ in length".into());
    }
    let mut best = grid_min(&energy, &fdp, (7120.0, 5.0), (20.0, 4.95), 200);
    for span in [(0.4, 0.4), (0.02, 0.02)] {
        best = grid_min(&energy, &fdp, best, span, 80);
    }
    Ok(best)
}

// ---------------------------------------------------------------------------------------------
// Part 1: truth recovery

struct SizeResult {
    ox: Dataset,
    red: Dataset,
    mix_ox: Fit,
    mix_red: Fit,
    edge_ox: Fit,
    edge_red: Fit,
    /// The `Plan::long` fits of this size.
    long: Vec<(State, Fit)>,
}

fn part1(ctx: &Ctx, plan: &Plan) -> Res<Vec<SizeResult>> {
    plan.sizes
        .iter()
        .map(|&n| {
            let seed = 6000 + n as u64;
            let ox = ctx.simulate(&format!("p1_n{n}_ox"), n, seed, State::Oxidized)?;
            let red = ctx.simulate(&format!("p1_n{n}_red"), n, seed, State::Reduced)?;
            let mix_ox = ctx.fit(&ox, Variant::Mixture, plan.steps, 0, "")?;
            let mix_red = ctx.fit(&red, Variant::Mixture, plan.steps, 0, "")?;
            let edge_ox = ctx.fit(&ox, Variant::Edge, plan.steps, 0, "")?;
            let edge_red = ctx.fit(&red, Variant::Edge, plan.steps, 0, "")?;
            let mut long = Vec::new();
            for &(_, state, steps) in plan.long.iter().filter(|l| l.0 == n) {
                let ds = if state == State::Oxidized { &ox } else { &red };
                long.push((state, ctx.fit(ds, Variant::Mixture, steps, 0, "_long")?));
            }
            Ok(SizeResult {
                mix_ox,
                mix_red,
                edge_ox,
                edge_red,
                long,
                ox,
                red,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Part 2: calibration

struct Replicate {
    ds: Dataset,
    fit: Fit,
}

fn part2(ctx: &Ctx, plan: &Plan) -> Res<Vec<Replicate>> {
    (0..plan.replicates)
        .map(|r| {
            let state = if r % 2 == 0 {
                State::Oxidized
            } else {
                State::Reduced
            };
            let seed = 9000 + r as u64;
            let ds = ctx.simulate(
                &format!("p2_r{r:02}_{}", state.short()),
                plan.rep_images,
                seed,
                state,
            )?;
            let fit = ctx.fit(&ds, Variant::Mixture, plan.rep_steps, r as u64, "")?;
            Ok(Replicate { ds, fit })
        })
        .collect()
}

/// Coverage counts of one quantity: (intervals, inside 68%, inside 90%).
#[derive(Default, Clone, Copy)]
struct Coverage {
    n: usize,
    in68: usize,
    in90: usize,
}

impl Coverage {
    fn add(&mut self, p: Post, truth: f64) {
        self.n += 1;
        self.in68 += usize::from(p.q16 <= truth && truth <= p.q84);
        self.in90 += usize::from(p.q05 <= truth && truth <= p.q95);
    }
}

fn truth_num(v: &Value, what: &str) -> Res<f64> {
    v.as_f64()
        .ok_or_else(|| format!("truth.json: {what} is not a number"))
}

/// The true value of the model's `rot[k]` for one image of truth.json: the simulator's
/// rotation plus the mean tilt of the image's domains (to first order in these 1e-4 rad
/// angles), since the model centres its domain tilts and so puts their common part into `rot`.
fn model_rot(image: &Value, k: usize) -> Res<f64> {
    let tilts = image["tilts"]
        .as_array()
        .filter(|t| !t.is_empty())
        .ok_or("truth.json: an image has no domain tilts")?;
    let mut common = 0.0;
    for t in tilts {
        common += truth_num(&t[k], "tilts")?;
    }
    Ok(truth_num(&image["rot"][k], "rot")? + common / tilts.len() as f64)
}

/// Coverage of per-image log_scale, per-image rot (3 axes) and dataset mosaic_deg.
fn coverage(reps: &[Replicate]) -> Res<[Coverage; 3]> {
    let mut cov = [Coverage::default(); 3];
    for r in reps {
        let (s, t) = (&r.fit.summary, &r.ds.truth);
        for i in 0..r.ds.images {
            let im = &t["images"][i];
            let ls = post(s, "log_scale", &format!("log_scale[{i}]"))?;
            cov[0].add(ls, truth_num(&im["log_scale"], "log_scale")?);
            for k in 0..3 {
                let p = post(s, "rot", &format!("rot[{i},{k}]"))?;
                cov[1].add(p, model_rot(im, k)?);
            }
        }
        let m = post(s, "mosaic_deg", "mosaic_deg")?;
        cov[2].add(m, truth_num(&t["dataset"]["mosaic_deg"], "mosaic_deg")?);
    }
    Ok(cov)
}

// ---------------------------------------------------------------------------------------------
// The report

struct Report<'a> {
    mode: Mode,
    plan: &'a Plan,
    ctx: &'a Ctx,
    part1: &'a [SizeResult],
    part2: &'a [Replicate],
    total: f64,
    loads: (String, String),
}

fn pct(k: usize, n: usize) -> String {
    if n == 0 {
        "–".into()
    } else {
        format!("{:.1}%", 100.0 * k as f64 / n as f64)
    }
}

/// One binomial standard error of a coverage of nominal `p` over `n` intervals, in points.
fn binomial_se(p: f64, n: usize) -> f64 {
    100.0 * (p * (1.0 - p) / n.max(1) as f64).sqrt()
}

fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn git_head(root: &Path) -> String {
    Command::new("git")
        .current_dir(root)
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into())
}

fn state_row(md: &mut String, ds: &Dataset, fit: &Fit) -> Res<()> {
    let p = fit.p_correct(ds.state).unwrap_or(f64::NAN);
    let frac = post(&fit.summary, "frac_oxidized", "frac_oxidized")?;
    let _ = writeln!(
        md,
        "| {} | {} | {} | mixture | {} | {p:.5} | {:.3} ± {:.3} | {:.3} | {:+.0} | {:.0} | `{}` |",
        ds.images,
        ds.shoeboxes,
        ds.state.name(),
        fit.steps,
        frac.mean,
        frac.sd,
        log_scale_rms(fit, &ds.truth)?,
        fit.elbo_trend,
        fit.run.secs,
        fit.run.cmd
    );
    Ok(())
}

impl Report<'_> {
    fn render(&self) -> Res<String> {
        let mut md = String::new();
        self.header(&mut md);
        self.state_table(&mut md)?;
        self.edge_table(&mut md)?;
        self.calibration(&mut md)?;
        self.datasets(&mut md);
        self.goals(&mut md)?;
        Ok(md)
    }

    fn header(&self, md: &mut String) {
        let flag = match self.mode {
            Mode::Quick => " -- --quick",
            Mode::Default => "",
            Mode::Full => " -- --full",
        };
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let _ = writeln!(md, "# Recovery study (issue 6): {:?} mode\n", self.mode);
        let reused = self.ctx.reused.get();
        let timing = if reused == 0 {
            format!(
                "load average {} at the start and {} at the end; {:.0} s in total",
                self.loads.0, self.loads.1, self.total
            )
        } else {
            format!(
                "rendered with `--reuse`: {reused} commands were not re-run, their wall times \
                 are the ones recorded when they ran ({:.0} s of rendering)",
                self.total
            )
        };
        let _ = writeln!(
            md,
            "Generated by `cargo run --release --example recovery{flag}` on {} (checkout at git {}), \
             {cores} cores, {timing}. The machine \
             is shared with other work: wall times are noisy. Commands run from the crate root \
             with `spreadc` = `{}` and `$W` = `{}`; `$W/truth_ox.json` is `{{\"frac_oxidized\": \
             1.0}}`, `$W/truth_red.json` is `{{\"frac_oxidized\": 0.0}}`. Every fit uses 1 \
             particle, the default learning-rate schedule (0.1, falling 500x over the run) and \
             the model's `images_per_step = 32`.\n",
            today(),
            git_head(&self.ctx.root),
            self.ctx.spreadc.display(),
            self.ctx.work.display(),
        );
    }

    fn state_table(&self, md: &mut String) -> Res<()> {
        let _ = writeln!(
            md,
            "## 1. Truth recovery\n\nSame simulation seed for the oxidized and reduced dataset \
             of each size (same orientations, spectra and scales; the Fe state differs). {} SVI \
             steps, fit seed 0.\n\n### State: default model (ox_red_mixture), P(true state)\n",
            self.plan.steps
        );
        let _ = writeln!(
            md,
            "{TABLE_HEADER} steps | P(true state) | frac_oxidized (mean ± sd) | log_scale rms error | ELBO trend | wall s | command |\n|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for s in self.part1 {
            let long = s.long.iter().map(|(st, f)| {
                let ds = if *st == State::Oxidized {
                    &s.ox
                } else {
                    &s.red
                };
                (ds, f)
            });
            for (ds, fit) in [(&s.ox, &s.mix_ox), (&s.red, &s.mix_red)]
                .into_iter()
                .chain(long)
            {
                state_row(md, ds, fit)?;
            }
        }
        let _ = writeln!(
            md,
            "\nlog_scale rms error: posterior mean − truth over the images. ELBO trend: mean ELBO \
             of the last 50 steps − mean of the 50 before (clearly > 0: still climbing, not \
             converged)."
        );
        Ok(())
    }

    fn edge_table(&self, md: &mut String) -> Res<()> {
        let _ = writeln!(
            md,
            "\n### Edge: `--set fdp_model=edge`, edge_ev\n\nThe data are simulated from \
             Sherrell's measured curves, so no edge_ev is true. Two references: Sherrell's \
             nominal edges ({SHERRELL_OX_EV:.1} eV oxidized, {SHERRELL_RED_EV:.1} eV reduced), \
             and the least-squares fit of the model's own edge form ({EDGE_BELOW} + \
             ({EDGE_ABOVE} − {EDGE_BELOW})·sigmoid((E − edge)/width)) to the f''(E) the data \
             were simulated from (truth.json `fdp`, 100 channels): the best that form can do \
             on the curve alone (the fit weighs channels by the data instead).\n"
        );
        let _ = writeln!(
            md,
            "{TABLE_HEADER} edge_ev mean ± sd | 90% interval (width) | − Sherrell | − LS ref | edge_width_ev (LS ref) | wall s | command |\n|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for s in self.part1 {
            for (ds, fit) in [(&s.ox, &s.edge_ox), (&s.red, &s.edge_red)] {
                let e = edge_post(fit)?;
                let w = post(&fit.summary, "edge_width_ev", "edge_width_ev")?;
                let (lsref, lswidth) = edge_reference(&ds.truth)?;
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | edge | {:.3} ± {:.3} | {:.2} – {:.2} ({:.2}) | {:+.3} | {:+.3} | {:.2} ± {:.2} ({lswidth:.2}) | {:.0} | `{}` |",
                    ds.images,
                    ds.shoeboxes,
                    ds.state.name(),
                    e.mean,
                    e.sd,
                    e.q05,
                    e.q95,
                    e.q95 - e.q05,
                    e.mean - ds.state.sherrell_edge(),
                    e.mean - lsref,
                    w.mean,
                    w.sd,
                    fit.run.secs,
                    fit.run.cmd
                );
            }
        }
        self.edge_shift(md)
    }

    fn edge_shift(&self, md: &mut String) -> Res<()> {
        let _ = writeln!(
            md,
            "\nShift oxidized − reduced (the sd adds the two posterior sds in quadrature):\n\n\
             | images | shoeboxes (ox / red) | Δ edge_ev fit | Sherrell Δ | LS-ref Δ | LS refs (ox / red, width) |\n|---|---|---|---|---|---|"
        );
        for s in self.part1 {
            let (o, r) = (edge_post(&s.edge_ox)?, edge_post(&s.edge_red)?);
            let (ro, wo) = edge_reference(&s.ox.truth)?;
            let (rr, wr) = edge_reference(&s.red.truth)?;
            let _ = writeln!(
                md,
                "| {} | {} / {} | {:.3} ± {:.3} | {:.1} | {:.3} | {ro:.3} / {rr:.3} eV ({wo:.2} / {wr:.2}) |",
                s.ox.images,
                s.ox.shoeboxes,
                s.red.shoeboxes,
                o.mean - r.mean,
                o.sd.hypot(r.sd),
                SHERRELL_OX_EV - SHERRELL_RED_EV,
                ro - rr,
            );
        }
        Ok(())
    }

    fn calibration(&self, md: &mut String) -> Res<()> {
        let reps = self.part2;
        let cov = coverage(reps)?;
        let _ = writeln!(
            md,
            "\n## 2. Calibration\n\n{} replicate datasets of {} images (simulation seeds \
             9000 + r, the Fe oxidized for even r, reduced for odd r), each fitted with the \
             mixture model for {} steps with fit seed r. Intervals from summary.json: 68% = \
             q16..q84, 90% = q05..q95 (1000 draws of the fitted mean-field guide). The ± is one \
             binomial standard error at the nominal rate (intervals within a replicate are not \
             independent, so it is a lower bound).\n",
            reps.len(),
            self.plan.rep_images,
            self.plan.rep_steps
        );
        let _ = writeln!(
            md,
            "| quantity | truth from | intervals | 68% coverage | 90% coverage |\n|---|---|---|---|---|"
        );
        let rows = [
            ("log_scale[i]", "images[i].log_scale"),
            (
                "rot[i,k]",
                "images[i].rot[k] + mean of images[i].tilts[·][k]",
            ),
            ("mosaic_deg", "dataset.mosaic_deg"),
        ];
        for (c, (q, from)) in cov.iter().zip(rows) {
            let _ = writeln!(
                md,
                "| {q} | {from} | {} | {} (± {:.1}) | {} (± {:.1}) |",
                c.n,
                pct(c.in68, c.n),
                binomial_se(0.68, c.n),
                pct(c.in90, c.n),
                binomial_se(0.90, c.n)
            );
        }
        self.replicate_table(md);
        Ok(())
    }

    fn replicate_table(&self, md: &mut String) {
        let ps: Vec<f64> = self
            .part2
            .iter()
            .filter_map(|r| r.fit.p_correct(r.ds.state))
            .collect();
        let n = ps.len();
        let ge95 = ps.iter().filter(|&&p| p >= 0.95).count();
        let gt50 = ps.iter().filter(|&&p| p > 0.5).count();
        let mean = ps.iter().sum::<f64>() / n.max(1) as f64;
        let min = ps.iter().copied().fold(f64::INFINITY, f64::min);
        let _ = writeln!(
            md,
            "\nP(true state) across the {n} replicates: mean {mean:.3}, min {min:.3}; ≥ 0.95 in \
             {ge95} of {n}, > 0.5 (the true state is the more probable) in {gt50} of {n}.\n"
        );
        let _ = writeln!(
            md,
            "{TABLE_HEADER} P(true state) | log_scale in 68% / 90% | sim s | fit s | fit command |\n|---|---|---|---|---|---|---|---|---|"
        );
        for r in self.part2 {
            let c = coverage(std::slice::from_ref(r)).map_or([Coverage::default(); 3], |c| c);
            let _ = writeln!(
                md,
                "| {} | {} | {} | mixture | {:.4} | {}/{} / {}/{} | {:.1} | {:.0} | `{}` |",
                r.ds.images,
                r.ds.shoeboxes,
                r.ds.state.name(),
                r.fit.p_correct(r.ds.state).unwrap_or(f64::NAN),
                c[0].in68,
                c[0].n,
                c[0].in90,
                c[0].n,
                r.ds.sim.secs,
                r.fit.run.secs,
                r.fit.run.cmd
            );
        }
    }

    fn datasets(&self, md: &mut String) {
        let _ = writeln!(
            md,
            "\n## Datasets\n\n| dataset | images | shoeboxes | truth | seed | wall s | command |\n|---|---|---|---|---|---|---|"
        );
        let p1 = self.part1.iter().flat_map(|s| [&s.ox, &s.red]);
        for ds in p1.chain(self.part2.iter().map(|r| &r.ds)) {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {:.1} | `{}` |",
                ds.name,
                ds.images,
                ds.shoeboxes,
                ds.state.name(),
                ds.seed,
                ds.sim.secs,
                ds.sim.cmd
            );
        }
    }

    fn goals(&self, md: &mut String) -> Res<()> {
        let _ = writeln!(md, "\n## Goals\n\n| goal | measured | met |\n|---|---|---|");
        let mut min_p = f64::INFINITY;
        let mut worst_edge: (f64, f64) = (0.0, 0.0);
        for s in self.part1 {
            for (ds, fit) in [(&s.ox, &s.mix_ox), (&s.red, &s.mix_red)] {
                min_p = min_p.min(fit.p_correct(ds.state).unwrap_or(f64::NAN));
            }
            for (ds, fit) in [(&s.ox, &s.edge_ox), (&s.red, &s.edge_red)] {
                let e = edge_post(fit)?.mean;
                let d_sh = (e - ds.state.sherrell_edge()).abs();
                let d_ls = (e - edge_reference(&ds.truth)?.0).abs();
                worst_edge = (worst_edge.0.max(d_sh), worst_edge.1.max(d_ls));
            }
        }
        let max_sb = self.part1.iter().map(|s| s.ox.shoeboxes).max().unwrap_or(0);
        let yes = |b: bool| if b { "yes" } else { "no" };
        let _ = writeln!(
            md,
            "| P(true state) ≥ 0.95 at ≤ 20,000 shoeboxes (part 1, {} steps, up to {max_sb}) | min {min_p:.4} | {} |",
            self.plan.steps,
            yes(min_p >= 0.95)
        );
        for s in self.part1 {
            for (state, fit) in &s.long {
                let p = fit.p_correct(*state).unwrap_or(f64::NAN);
                let _ = writeln!(
                    md,
                    "| the same, {} images {}, {} steps | {p:.4} | {} |",
                    s.ox.images,
                    state.name(),
                    fit.steps,
                    yes(p >= 0.95)
                );
            }
        }
        let _ = writeln!(
            md,
            "| edge_ev within 0.3 eV (part 1, every size and state) | worst \\|Δ\\| {:.2} eV vs Sherrell, {:.2} eV vs LS ref | {} / {} |",
            worst_edge.0,
            worst_edge.1,
            yes(worst_edge.0 <= 0.3),
            yes(worst_edge.1 <= 0.3)
        );
        let cov = coverage(self.part2)?;
        for (c, q) in cov.iter().zip(["log_scale", "rot", "mosaic_deg"]) {
            let (c68, c90) = (
                100.0 * c.in68 as f64 / c.n.max(1) as f64,
                100.0 * c.in90 as f64 / c.n.max(1) as f64,
            );
            let ok = (c68 - 68.0).abs() <= 5.0 && (c90 - 90.0).abs() <= 5.0;
            let _ = writeln!(
                md,
                "| {q} coverage within ±5 points of 68% and 90% | {c68:.1}% / {c90:.1}% (n = {}) | {} |",
                c.n,
                yes(ok)
            );
        }
        Ok(())
    }
}
