//! Amortized (encoder) guides: an MLP from each row's data to its latent's normal guide. On a
//! normal-normal model the exact posterior of every row is known in closed form, so the learned
//! map must reproduce it (tests/fixtures/encoder: 30 rows, y drawn once with seed 3).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn encoder_guide_matches_the_closed_form_posterior_of_every_row() {
    let fixtures = root().join("tests/fixtures/encoder");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("infer_encoder");
    let _ = std::fs::remove_dir_all(&out);
    let o = Command::new(env!("CARGO_BIN_EXE_spreadc"))
        .args(["run"])
        .arg(fixtures.join("amortized_normal.spread"))
        .arg("--data")
        .arg(&fixtures)
        .arg("--out")
        .arg(&out)
        .args(["--steps", "4000", "--draws", "4000"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ys: Vec<f64> = std::fs::read_to_string(fixtures.join("groups.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.parse().unwrap())
        .collect();
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let theta = &summary["quantities"][0];
    assert_eq!(theta["name"], "theta");
    let (tau, noise) = (3.0f64, 2.0f64);
    let precision = 1.0 / (tau * tau) + 1.0 / (noise * noise);
    let sd = precision.powf(-0.5);
    let elements = theta["elements"].as_array().unwrap();
    assert_eq!(elements.len(), ys.len());
    let (mut worst_mean, mut worst_sd) = (0.0f64, 0.0f64);
    for (e, y) in elements.iter().zip(&ys) {
        let mean = (1.0 / (tau * tau) + y / (noise * noise)) / precision;
        worst_mean = worst_mean.max((e["mean"].as_f64().unwrap() - mean).abs() / sd);
        worst_sd = worst_sd.max((e["sd"].as_f64().unwrap() / sd - 1.0).abs());
    }
    eprintln!("worst |mean error| / sd = {worst_mean:.3}, worst |sd ratio - 1| = {worst_sd:.3}");
    // Measured: 0.07 and 0.02 (seed 0), 0.13 and 0.035 (seed 1); the prior alone is off by
    // up to 3.0 posterior sd on these rows; 4000 draws leave a Monte Carlo error of ~0.02 sd.
    assert!(worst_mean < 0.2, "worst mean error {worst_mean} sd");
    assert!(worst_sd < 0.06, "worst sd error {worst_sd}");
}

/// An image-level encoder pooling its shoeboxes (tests/fixtures/encoder_set): theta_i ~ N(0, 1)
/// and one z ~ N(theta_i, 1) per shoebox of image i, z a function of the shoebox's counts. The
/// exact posterior of theta_i is N(sum z / (n_i + 1), 1 / (n_i + 1)); the deep set sees only the
/// mean-pooled embedding of the z's and n_i, and must reproduce it for all 8 images of
/// examples/rubredoxin_small.
#[test]
fn pooled_encoder_matches_the_closed_form_posterior_of_every_image() {
    let (dials, summary) = run_on_rubredoxin_small(&fixture("pooled_normal.spread"), "2000", &[]);
    let (worst_mean, worst_sd, prior_off) = errors_against_closed_form(&dials, &summary);
    assert!(
        prior_off > 3.0,
        "the data must move the posterior: {prior_off}"
    );
    assert!(worst_mean < 0.2, "worst mean error {worst_mean} sd");
    assert!(worst_sd < 0.08, "worst sd error {worst_sd}");
}

/// A semi-amortized encoder (tests/fixtures/encoder_set/refined_normal.spread: the network
/// sees only n_i, so it cannot give the posterior of the pooled model above): with
/// `refine = true` the per-image offsets reach the closed form; with `refine = false` the same
/// network stays far from it (the amortization gap the refinement closes).
#[test]
fn refined_encoder_closes_the_amortization_gap() {
    let refined = fixture("refined_normal.spread");
    let (dials, summary) = run_on_rubredoxin_small(&refined, "1500", &[]);
    let (worst_mean, worst_sd, _) = errors_against_closed_form(&dials, &summary);
    assert!(
        worst_mean < 0.1,
        "refined: worst mean error {worst_mean} sd"
    );
    assert!(worst_sd < 0.06, "refined: worst sd error {worst_sd}");
    let text = std::fs::read_to_string(&refined).unwrap();
    assert!(text.contains("refine = true"));
    let amortized =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("refined_normal_refine_false.spread");
    std::fs::write(&amortized, text.replace("refine = true", "refine = false")).unwrap();
    let (_, summary) = run_on_rubredoxin_small(&amortized, "1500", &[]);
    let (gap, _, _) = errors_against_closed_form(&dials, &summary);
    assert!(gap > 1.0, "amortized only: worst mean error {gap} sd");
}

/// Worst |mean error| / exact sd, worst |sd ratio - 1| of theta over the images against
/// theta_i | z ~ N(sum z / (n_i + 1), 1 / (n_i + 1)), and the prior mean's worst distance
/// from the exact posterior (in its sds).
fn errors_against_closed_form(
    dials: &spread::plan::physics_data::DialsData,
    summary: &serde_json::Value,
) -> (f64, f64, f64) {
    let theta = &summary["quantities"][0];
    assert_eq!(theta["name"], "theta");
    let elements = theta["elements"].as_array().unwrap();
    assert_eq!(elements.len(), dials.images.len());
    let (mut worst_mean, mut worst_sd, mut prior_off) = (0.0f64, 0.0f64, 0.0f64);
    for (i, e) in elements.iter().enumerate() {
        let img = dials.shoeboxes(i).unwrap();
        let z: Vec<f64> = img
            .shoeboxes
            .iter()
            .map(|s| {
                let total: f64 = img.counts[s.offset..s.offset + s.pixel_count()]
                    .iter()
                    .map(|&c| f64::from(c))
                    .sum();
                (total.ln_1p() - 8.0) / 2.0
            })
            .collect();
        let n = z.len() as f64;
        let (mean, sd) = (z.iter().sum::<f64>() / (n + 1.0), (n + 1.0).powf(-0.5));
        let (m, s) = (e["mean"].as_f64().unwrap(), e["sd"].as_f64().unwrap());
        eprintln!("image {i}: n {n}, exact {mean:.4} ± {sd:.4}, fitted {m:.4} ± {s:.4}");
        worst_mean = worst_mean.max((m - mean).abs() / sd);
        worst_sd = worst_sd.max((s / sd - 1.0).abs());
        prior_off = prior_off.max(mean.abs() / sd);
    }
    eprintln!(
        "worst |mean error| / sd = {worst_mean:.3}, worst |sd ratio - 1| = {worst_sd:.3}, \
         prior mean off by up to {prior_off:.1} sd"
    );
    (worst_mean, worst_sd, prior_off)
}

/// A dataset-level encoder whose input is a set over the images (tests/fixtures/encoder_set/
/// pooled_images.spread) reaches the closed-form posterior of its latent.
#[test]
fn pooled_encoder_over_images_matches_the_closed_form_posterior() {
    let (dials, summary) = run_on_rubredoxin_small(&fixture("pooled_images.spread"), "1500", &[]);
    let z: Vec<f64> = dials
        .images
        .iter()
        .map(|i| i.n_shoeboxes as f64 / 40.0)
        .collect();
    let n = z.len() as f64;
    let (mean, sd) = (z.iter().sum::<f64>() / (n + 1.0), (n + 1.0).powf(-0.5));
    let mu = &summary["quantities"][0]["elements"][0];
    let (m, s) = (mu["mean"].as_f64().unwrap(), mu["sd"].as_f64().unwrap());
    eprintln!("exact {mean:.4} ± {sd:.4}, fitted {m:.4} ± {s:.4}");
    assert!(mean / sd > 2.0, "the data must move the posterior");
    assert!((m - mean).abs() / sd < 0.1, "mean {m} against {mean}");
    assert!((s / sd - 1.0).abs() < 0.06, "sd {s} against {sd}");
}

/// tests/fixtures/encoder_set/NAME.
fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/encoder_set").join(name)
}

/// Runs the model at `model` on examples/rubredoxin_small for `steps` steps (4000 posterior
/// draws) with `extra` flags; the data as the runtime loads them, and the summary.
fn run_on_rubredoxin_small(
    model: &Path,
    steps: &str,
    extra: &[&str],
) -> (spread::plan::physics_data::DialsData, serde_json::Value) {
    let data = root().join("examples/rubredoxin_small");
    let name = model.file_stem().unwrap().to_string_lossy();
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("infer_encoder_{name}"));
    let _ = std::fs::remove_dir_all(&out);
    let o = Command::new(env!("CARGO_BIN_EXE_spreadc"))
        .arg("run")
        .arg(model)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .args(["--steps", steps, "--draws", "4000"])
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dials = spread::plan::physics_data::load_dials(&data, 100).unwrap();
    let summary =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    (dials, summary)
}

/// The semi-amortized encoder on the pixel model: models/rubredoxin_fe.spread with each image's
/// `log_scale` guided by a deep set over its shoeboxes' total counts (`refine = true`), 300 steps
/// on examples/rubredoxin_small. Every image's scale is within 0.05 of the simulation's truth
/// (measured 0.019, against 0.024 for the mean-field guide and 0.42 for the same network without
/// refinement), and the oxidation state is right.
#[test]
fn refined_image_encoder_fits_the_pixel_model() {
    let text = std::fs::read_to_string(root().join("models/rubredoxin_fe.spread")).unwrap();
    let (latent, plate) = (
        "  latent log_scale ~ Normal(0.0, 1.0)\n",
        "plate image in shots.images subsample",
    );
    assert!(text.contains(latent) && text.contains(plate));
    let guided = text.replace(
        latent,
        &format!(
            "{latent}    guide scale_net([(log1p(sum(s.pixels)) - 7.0) / 2.0 for s in image.shoeboxes])\n"
        ),
    );
    let declared = guided.replacen(
        plate,
        &format!(
            "encoder scale_net {{ embed = [8], hidden = [16], activation = tanh, refine = true }}\n{plate}"
        ),
        1,
    );
    let model = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("rubredoxin_refined_scale.spread");
    std::fs::write(&model, declared).unwrap();
    let (_, summary) = run_on_rubredoxin_small(&model, "300", &["--particles", "1"]);
    let truth: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("examples/rubredoxin_small/truth.json")).unwrap(),
    )
    .unwrap();
    let fitted = summary["quantities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "log_scale")
        .expect("log_scale")["elements"]
        .as_array()
        .unwrap()
        .clone();
    let images = truth["images"].as_array().unwrap();
    assert_eq!(fitted.len(), images.len());
    let worst = fitted
        .iter()
        .zip(images)
        .map(|(f, t)| (f["mean"].as_f64().unwrap() - t["log_scale"].as_f64().unwrap()).abs())
        .fold(0.0f64, f64::max);
    eprintln!("worst |log_scale - truth| = {worst:.4}");
    assert!(worst < 0.05, "worst log_scale error {worst}");
    let states = summary["physics"]["states"].as_array().unwrap();
    let oxidized = states
        .iter()
        .find(|s| s["state"] == "oxidized")
        .expect("oxidized")["probability"]
        .as_f64()
        .unwrap();
    assert!(oxidized > 0.95, "P(oxidized) = {oxidized}");
}
