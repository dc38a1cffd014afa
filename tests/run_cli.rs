//! `spreadc run` end to end through the binary: the generic models against closed forms and a
//! long NUTS reference, resume and thread-count determinism, the non-finite error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn out_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("run_cli")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Runs `spreadc run MODEL --data DATA --out OUT ARGS...` from the crate root.
fn spreadc(model: &str, data: &str, out: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spreadc"))
        .current_dir(root())
        .args(["run", model, "--data", data, "--out"])
        .arg(out)
        .args(args)
        .output()
        .unwrap()
}

fn ok(model: &str, data: &str, out: &Path, args: &[&str]) -> serde_json::Value {
    let o = spreadc(model, data, out, args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(out.join("summary.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// (mean, sd) of element `name` (e.g. `theta[3]`) in a summary.json.
fn post(summary: &serde_json::Value, name: &str) -> (f64, f64) {
    for q in summary["quantities"].as_array().unwrap() {
        for e in q["elements"].as_array().unwrap() {
            if e["name"] == name {
                return (e["mean"].as_f64().unwrap(), e["sd"].as_f64().unwrap());
            }
        }
    }
    panic!("{name} not in summary.json")
}

fn column(path: &str, name: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(root().join(path)).unwrap();
    let mut lines = text.lines();
    let k = lines
        .next()
        .unwrap()
        .split(',')
        .position(|c| c == name)
        .unwrap();
    lines
        .map(|l| l.split(',').nth(k).unwrap().parse().unwrap())
        .collect()
}

/// mu ~ N(0, 10), y_i ~ N(mu, 2): posterior N(m, s) in closed form; mean and sd within 2%.
#[test]
fn normal_normal_matches_closed_form() {
    let y = column("examples/normal_normal/obs.csv", "y");
    let precision = 1.0 / 100.0 + y.len() as f64 / 4.0;
    let (m, s) = (
        y.iter().sum::<f64>() / 4.0 / precision,
        precision.powf(-0.5),
    );
    let out = out_dir("normal_normal");
    let summary = ok(
        "models/normal_normal.spread",
        "examples/normal_normal",
        &out,
        &["--seed", "1", "--draws", "4000"],
    );
    let (mean, sd) = post(&summary, "mu");
    assert!((mean - m).abs() < 0.02 * m.abs(), "mean {mean} vs {m}");
    assert!((sd - s).abs() < 0.02 * s, "sd {sd} vs {s}");
}

/// Mean-field SVI on the non-centred model against long NUTS (tests/fixtures/infer). Stated
/// against the NUTS posterior sd: mu within 0.1 sd; each theta_j within 0.25 sd (mean-field
/// ignores the mu-tau-eta correlations and shrinks school effects towards mu; seeds 1-3 gave at
/// most 0.21 sd). The centred form (a funnel, which mean-field fits slowly) must run and put mu
/// within 0.25 NUTS sd (its mean-field optimum, from 20000-step runs, is 4.15 vs NUTS 4.41, i.e.
/// 0.08 sd; the margin covers the default 10000 steps not having fully converged).
#[test]
fn eight_schools_matches_nuts_and_both_variants_run() {
    let nuts: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/infer/eight_schools_nuts.json")).unwrap();
    let f = |k: &str| nuts[k].as_f64().unwrap();
    let out = out_dir("eight_schools_nc");
    let args = [
        "--set",
        "parametrization=noncentered",
        "--seed",
        "1",
        "--draws",
        "4000",
    ];
    let s = ok(
        "models/eight_schools.spread",
        "examples/eight_schools",
        &out,
        &args,
    );
    let (mu, _) = post(&s, "mu");
    assert!((mu - f("mu_mean")).abs() < 0.1 * f("mu_sd"), "mu {mu}");
    for j in 0..8 {
        let (theta, _) = post(&s, &format!("theta[{j}]"));
        let (want, sd) = (
            nuts["theta_mean"][j].as_f64().unwrap(),
            nuts["theta_sd"][j].as_f64().unwrap(),
        );
        assert!(
            (theta - want).abs() < 0.25 * sd,
            "theta[{j}] {theta} vs {want} (sd {sd})"
        );
    }
    let out = out_dir("eight_schools_c");
    let s = ok(
        "models/eight_schools.spread",
        "examples/eight_schools",
        &out,
        &["--set", "parametrization=centered"],
    );
    let (mu, _) = post(&s, "mu");
    let (tau, _) = post(&s, "tau");
    assert!(
        (mu - f("mu_mean")).abs() < 0.25 * f("mu_sd") && tau > 0.0,
        "centred: mu {mu} tau {tau}"
    );
    assert_eq!(s["settings"]["variants"]["parametrization"], "centered");
}

/// y = a[g] + b[g] x + noise: each group's posterior means within 0.5 posterior sd of that
/// group's least-squares fit (closed form; 10 rows per group, so the population prior barely
/// shrinks them), and the data-generating values (examples/hierarchical_regression/SOURCES.md)
/// within 3 posterior sd.
#[test]
fn hierarchical_regression_matches_least_squares() {
    let (x, y, g) = (
        column("examples/hierarchical_regression/groups.csv", "x"),
        column("examples/hierarchical_regression/groups.csv", "y"),
        column("examples/hierarchical_regression/groups.csv", "group"),
    );
    let out = out_dir("hier");
    let s = ok(
        "models/hierarchical_regression.spread",
        "examples/hierarchical_regression",
        &out,
        &["--seed", "2"],
    );
    let truth = [(1.0, 0.8), (-0.5, 1.2), (2.0, 0.5), (0.3, 1.0)];
    for (k, (a_true, b_true)) in truth.iter().enumerate() {
        let rows: Vec<(f64, f64)> = (0..x.len())
            .filter(|&i| g[i] as usize == k)
            .map(|i| (x[i], y[i]))
            .collect();
        let n = rows.len() as f64;
        let (mx, my) = (
            rows.iter().map(|r| r.0).sum::<f64>() / n,
            rows.iter().map(|r| r.1).sum::<f64>() / n,
        );
        let b_ols = rows.iter().map(|r| (r.0 - mx) * (r.1 - my)).sum::<f64>()
            / rows.iter().map(|r| (r.0 - mx).powi(2)).sum::<f64>();
        let a_ols = my - b_ols * mx;
        let (a, a_sd) = post(&s, &format!("a[{k}]"));
        let (b, b_sd) = post(&s, &format!("b[{k}]"));
        assert!((a - a_ols).abs() < 0.5 * a_sd, "a[{k}] {a} vs OLS {a_ols}");
        assert!((b - b_ols).abs() < 0.5 * b_sd, "b[{k}] {b} vs OLS {b_ols}");
        assert!(
            (a - a_true).abs() < 3.0 * a_sd && (b - b_true).abs() < 3.0 * b_sd,
            "group {k}"
        );
    }
    let (noise, noise_sd) = post(&s, "noise_sd");
    assert!((noise - 0.5).abs() < 3.0 * noise_sd, "noise_sd {noise}");
}

/// 200 steps straight == 100 steps + --resume to 200 (same learning-rate horizon), to the bit;
/// and --threads 1 == --threads 2.
#[test]
fn resume_and_threads_are_bit_identical() {
    let m = "models/eight_schools.spread";
    let d = "examples/eight_schools";
    let read = |o: &Path| std::fs::read_to_string(o.join("summary.json")).unwrap();
    let straight = out_dir("straight");
    ok(m, d, &straight, &["--steps", "200", "--threads", "1"]);
    let split = out_dir("split");
    ok(
        m,
        d,
        &split,
        &["--steps", "100", "--lr-horizon", "200", "--threads", "2"],
    );
    assert_ne!(read(&straight), read(&split));
    ok(
        m,
        d,
        &split,
        &["--steps", "200", "--resume", "--threads", "2"],
    );
    assert_eq!(read(&straight), read(&split));
    assert_eq!(
        std::fs::read_to_string(straight.join("elbo.csv")).unwrap(),
        std::fs::read_to_string(split.join("elbo.csv")).unwrap()
    );
    let two = out_dir("threads2");
    ok(m, d, &two, &["--steps", "200", "--threads", "2"]);
    assert_eq!(read(&straight), read(&two));
    let o = spreadc(
        m,
        d,
        &split,
        &[
            "--steps",
            "300",
            "--resume",
            "--set",
            "parametrization=noncentered",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("the --set values differ"));
}

#[test]
fn non_finite_value_names_span_plate_and_step() {
    let out = out_dir("nonfinite");
    let o = spreadc(
        "tests/fixtures/run/nonfinite/model.spread",
        "tests/fixtures/run/nonfinite",
        &out,
        &["--steps", "5"],
    );
    assert_eq!(o.status.code(), Some(1));
    insta::assert_snapshot!("run_non_finite", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn non_finite_value_of_a_deferred_let_names_the_same_span_and_row() {
    // 2000 rows: `z` is recorded deferred and fused into the likelihood's sum, so it is checked
    // when the log-density comes out not finite; the error must be the eager one's.
    let out = out_dir("nonfinite_large");
    let o = spreadc(
        "tests/fixtures/run/nonfinite_large/model.spread",
        "tests/fixtures/run/nonfinite_large",
        &out,
        &["--steps", "5"],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(
            "error: step 0: non-finite value from operator `log` at \
             tests/fixtures/run/nonfinite_large/model.spread:9:3 `let z = log(i.y)` [i 1500]"
        ),
        "{err}"
    );
}

#[test]
fn json_lines_report_steps_and_result() {
    let out = out_dir("json");
    let o = spreadc(
        "models/normal_normal.spread",
        "examples/normal_normal",
        &out,
        &["--steps", "300", "--json"],
    );
    assert!(o.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.iter().filter(|l| l["event"] == "step").count(), 100);
    let done = lines.last().unwrap();
    assert_eq!(done["event"], "done");
    assert_eq!(done["steps"], 300);
    assert!(
        out.join("posterior.npz").exists()
            && out.join("elbo.csv").exists()
            && out.join("checkpoint.msgpack").exists()
    );
}

/// posterior.npz under `--npz-max-mib`: the smallest quantities first while they fit, the
/// rest named in a note, in posterior_dims.json and in summary.json, which keeps their summaries.
#[test]
fn posterior_npz_leaves_out_what_passes_its_size_limit() {
    let out = out_dir("npz_limit");
    let args = ["--steps", "300", "--draws", "200000", "--npz-max-mib", "8"];
    let o = spreadc(
        "models/eight_schools.spread",
        "examples/eight_schools",
        &out,
        &args,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    // 200,000 draws × 8 bytes: 1.5 MiB per scalar (mu, tau, mean_effect: 4.6 MiB), 12.2 MiB
    // per school vector (eta, theta), so only the scalars fit under 8 MiB.
    assert!(
        stderr.contains("leaves out the draws of 2 quantities over its 8.0 MiB limit")
            && stderr.contains("`eta` (8 values, 12.2 MiB)")
            && stderr.contains("`theta` (8 values, 12.2 MiB)"),
        "{stderr}"
    );
    let file = std::fs::File::open(out.join("posterior.npz")).unwrap();
    let mut names = ndarray_npy::NpzReader::new(file).unwrap().names().unwrap();
    names.sort();
    assert_eq!(names, ["mean_effect", "mu", "tau"]);
    let dims: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("posterior_dims.json")).unwrap())
            .unwrap();
    let omitted: Vec<&str> = dims["omitted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(omitted, ["eta", "theta"]);
    assert!(dims["dims"].get("theta").is_none());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["posterior_npz"]["max_bytes"], 8 << 20);
    assert_eq!(summary["posterior_npz"]["omitted"][1]["bytes"], 12_800_000);
    let (theta_mean, _) = post(&summary, "theta[0]");
    assert!(theta_mean.is_finite());
    // With no limit every quantity is written, and every draw is held: eta's summaries, which
    // the limited run computed school block by school block without holding its draws
    // (`LatentDraws::streamed`), are the same to the bit.
    let all = out_dir("npz_no_limit");
    ok(
        "models/eight_schools.spread",
        "examples/eight_schools",
        &all,
        &["--steps", "300", "--draws", "200000", "--npz-max-mib", "0"],
    );
    let full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(all.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["quantities"], full["quantities"]);
    assert_eq!(
        full["posterior_npz"]["omitted"].as_array().map(Vec::len),
        Some(0)
    );
    let file = std::fs::File::open(all.join("posterior.npz")).unwrap();
    assert_eq!(
        ndarray_npy::NpzReader::new(file)
            .unwrap()
            .names()
            .unwrap()
            .len(),
        5
    );
}

/// `--scan`: a bad request is an error naming the flag (exit 2, before any step); a good one
/// leaves the normal-normal fit where its closed form is and records every scan, with the end
/// check's profile peaking at the grid point nearest the posterior mean.
#[test]
fn profile_scan_is_checked_recorded_and_harmless_at_the_right_mode() {
    let model = "models/eight_schools.spread";
    let data = "examples/eight_schools";
    let bad = [
        ("nosuch=0:1:0.1", "the model has no latent `nosuch`"),
        ("eta=0:1:0.1", "profile scan: `eta` has 8 elements"),
        ("tau=-1:1:0.5", "outside the support of `tau`"),
        ("mu=1:0:0.1", "expected LO < HI"),
        ("mu=0:1", "expected SITE=LO:HI:STEP"),
    ];
    for (flag, want) in bad {
        let out = out_dir(&format!("scan_bad_{}", flag.len()));
        let o = spreadc(model, data, &out, &["--steps", "5", "--scan", flag]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{flag}: {err}");
        assert!(err.contains(want), "{flag}: {err}");
        assert!(
            !out.join("elbo.csv").exists(),
            "{flag}: no step before the error"
        );
    }
    let y = column("examples/normal_normal/obs.csv", "y");
    let precision = 1.0 / 100.0 + y.len() as f64 / 4.0;
    let m = y.iter().sum::<f64>() / 4.0 / precision;
    let out = out_dir("scan_normal_normal");
    let summary = ok(
        "models/normal_normal.spread",
        "examples/normal_normal",
        &out,
        &[
            "--seed",
            "1",
            "--steps",
            "1000",
            "--scan",
            "mu=-10:10:0.5",
            "--scan-at",
            "50,200",
            "--scan-draws",
            "64",
        ],
    );
    let scans = summary["convergence"]["profile_scans"].as_array().unwrap();
    assert_eq!(scans.len(), 2);
    assert_eq!(scans[0]["step"], 50);
    assert_eq!(scans[1]["step"], 200);
    let end = &summary["convergence"]["end_profile"];
    assert_eq!(end["may_move"], false);
    let values: Vec<f64> = serde_json::from_value(end["values"].clone()).unwrap();
    let gains: Vec<f64> = serde_json::from_value(end["gains"].clone()).unwrap();
    assert_eq!(values.len(), 41);
    let best = values[gains
        .iter()
        .enumerate()
        .fold(0, |b, (i, g)| if *g > gains[b] { i } else { b })];
    assert!(
        (best - m).abs() <= 0.25 + 1e-9,
        "profile peak {best}, posterior mean {m}"
    );
    let (mean, _) = post(&summary, "mu");
    assert!((mean - m).abs() < 0.02 * m.abs().max(1.0), "{mean} vs {m}");
}

/// `--hold`: an unknown latent or a bad form is an error naming the flag, before any step; a
/// held latent's guide stays at its start (the prior's location) for the held steps and moves
/// once released.
/// `--search-misfit` needs `--search`, at least one start, and Poisson observations in the
/// searched plate (the goodness-of-fit check names instances by their counts).
#[test]
fn search_misfit_is_checked() {
    // The rubredoxin model with Normal pixels: `rot` searchable, but no counts to check.
    let dir = out_dir("search_misfit_model");
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(root().join("models/rubredoxin_fe.spread")).unwrap();
    assert!(text.contains("~ Poisson(expected)"));
    let model = dir.join("normal_pixels.spread");
    std::fs::write(
        &model,
        text.replace("~ Poisson(expected)", "~ Normal(expected, 3.0)"),
    )
    .unwrap();
    std::fs::copy(root().join("models/1brf.pdb"), dir.join("1brf.pdb")).unwrap();
    let (model, data) = (model.to_str().unwrap(), "examples/rubredoxin_small");
    for (args, want) in [
        (&["--search-misfit", "8"][..], "--search <SITES:K>"),
        (
            &["--search", "rot:4", "--search-misfit", "0"][..],
            "--search-misfit",
        ),
        (
            &["--search", "rot:4", "--search-misfit", "8"][..],
            "--search-misfit 8: the goodness-of-fit check that names the instances needs the \
             model's Poisson observations inside plate `image`",
        ),
    ] {
        let out = out_dir(&format!("search_misfit_bad_{}", args.len()));
        let o = spreadc(model, data, &out, &[&["--steps", "5"][..], args].concat());
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn hold_is_checked_and_holds() {
    let model = "models/normal_normal.spread";
    let data = "examples/normal_normal";
    for (flag, want) in [
        (
            "nosuch:10",
            "--hold nosuch:10: the model has no latent `nosuch`",
        ),
        ("mu", "expected SITES:N"),
        ("mu:x", "expected SITES:N"),
    ] {
        let out = out_dir(&format!("hold_bad_{}", flag.len()));
        let o = spreadc(model, data, &out, &["--steps", "5", "--hold", flag]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{flag}: {err}");
        assert!(err.contains(want), "{flag}: {err}");
    }
    let guide_of_mu = |out: &std::path::Path| {
        let st = spread::infer::svi::SviState::load(&out.join("checkpoint.msgpack")).unwrap();
        let b = st.layout.blocks.iter().flatten().next().unwrap().clone();
        st.params[b.offset..b.offset + b.len()].to_vec()
    };
    let held = out_dir("hold_mu");
    ok(model, data, &held, &["--steps", "5", "--hold", "mu:5"]);
    let released = out_dir("hold_mu_released");
    ok(model, data, &released, &["--steps", "5", "--hold", "mu:2"]);
    let m = std::fs::read_to_string(model).unwrap();
    assert!(
        m.contains("const prior_mean = 0.0"),
        "mu's guide starts at 0"
    );
    let (held, released) = (guide_of_mu(&held), guide_of_mu(&released));
    assert_eq!(held[0], 0.0, "held mu's location: {held:?}");
    assert!(released[0] != 0.0, "released after 2 steps: {released:?}");
}

/// A checkpoint is resumed only on the data it was fitted to: with one spectrum of the
/// rubredoxin stills changed (a file of a `dials(...)` source, not a table), `--resume` is
/// refused and names the data files; on the unchanged copy it goes on.
#[test]
fn resume_refuses_changed_physics_data() {
    let data = out_dir("resume_data");
    std::fs::create_dir_all(data.join("spectra")).unwrap();
    let src = root().join("examples/rubredoxin_small");
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, data.join(p.file_name().unwrap())).unwrap();
        }
    }
    let mut spectra: Vec<PathBuf> = std::fs::read_dir(src.join("spectra"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    spectra.sort();
    for p in &spectra {
        std::fs::copy(p, data.join("spectra").join(p.file_name().unwrap())).unwrap();
    }
    let m = "models/rubredoxin_fe.spread";
    let d = data.to_str().unwrap();
    let out = out_dir("resume_data_fit");
    let args = ["--steps", "2", "--particles", "1", "--draws", "10"];
    ok(m, d, &out, &args);
    let resumed = [
        "--steps",
        "3",
        "--particles",
        "1",
        "--draws",
        "10",
        "--resume",
    ];
    let first = data.join("spectra").join(spectra[0].file_name().unwrap());
    let text = std::fs::read_to_string(&first).unwrap();
    std::fs::write(&first, format!("{text}\n")).unwrap();
    let o = spreadc(m, d, &out, &resumed);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("the data files differ"), "{err}");
    std::fs::write(&first, text).unwrap();
    ok(m, d, &out, &resumed);
}
