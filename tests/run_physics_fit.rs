//! The planned physics model against the data `spreadc simulate` drew from it: at the true
//! latents (truth.json), the fit model's expected counts explain the bundled rubredoxin stills
//! as well as Poisson noise allows. The Poisson deviance D = 2 Σ [x ln(x/μ) − (x − μ)] over
//! the N used pixels is χ²-like with mean ≈ N; a geometry, spectrum, fluence or structure-factor
//! convention that differs between `simulate` and the planner's operators moves D/N far above 1.
//! The same with a flat-field error: data simulated with `--gain-gradient G` are explained at
//! the truth only when the model is told the error (`--set flat_field_gradient=G`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use spread::infer::engine::{Evaluator, ParticleSpec};
use spread::infer::guide::{ParamLayout, softplus_inv};
use spread::infer::model::Model;
use spread::infer::reduce::SingleProcess;
use spread::plan::Registry;
use spread::plan::eval::helmert_basis;
use spread::run::physics::without_observations;
use spread::run::{RunConfig, load};
use std::path::{Path, PathBuf};
use std::process::Command;

const DEG: f64 = std::f64::consts::PI / 180.0;
/// The model's unit of the domain tilts (`tilt_unit_deg` in models/rubredoxin_fe.spread).
const TILT_UNIT_DEG: f64 = 0.05;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Sets the guide of `site` (instance `inst`) to a point mass at the unconstrained `u`.
fn pin(
    model: &Model,
    layout: &ParamLayout,
    params: &mut [f64],
    site: &str,
    inst: usize,
    u: &[f64],
) {
    let i = model
        .site_index(site)
        .unwrap_or_else(|| panic!("no site {site}"));
    let b = layout.blocks[i].as_ref().unwrap();
    assert_eq!(b.event, u.len(), "{site}");
    let p = &mut params[b.instance_offset(inst)..][..b.per_instance];
    p[..u.len()].copy_from_slice(u);
    p[u.len()..].fill(softplus_inv(1e-9));
}

fn log_weight(model: &Model, layout: &ParamLayout, params: &[f64]) -> f64 {
    let ev = Evaluator {
        model,
        layout,
        params,
        spec: ParticleSpec {
            seed: 1,
            step: 0,
            particle: 0,
            analytic_kl: false,
        },
        proposal: None,
    };
    ev.particle(&SingleProcess).unwrap().log_weight
}

/// The model of `dir` (with `sets`) with every latent's guide pinned at the truth of
/// `dir/truth.json`, and the saturated Poisson log-likelihood of its used pixels.
struct AtTruth {
    model: Model,
    bare: Model,
    layout: ParamLayout,
    params: Vec<f64>,
    /// Σ [x ln x − x − ln x!] over the used pixels.
    saturated: f64,
    /// Used pixels.
    n: usize,
    images: usize,
}

impl AtTruth {
    fn new(dir: &Path, sets: &[(&str, &str)]) -> AtTruth {
        let cfg = RunConfig {
            model: root().join("models/rubredoxin_fe.spread"),
            data: dir.to_path_buf(),
            sets: sets
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..RunConfig::default()
        };
        let (_, planned, _) = load(&cfg, &Registry::builtin()).unwrap();
        let model = planned.model.clone();
        let truth: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("truth.json")).unwrap())
                .unwrap();
        let layout = ParamLayout::new(&model);
        let mut params = layout.init(&model);
        let ds = &truth["dataset"];
        let mosaic_deg = ds["mosaic_deg"].as_f64().unwrap();
        pin(&model, &layout, &mut params, "frac_oxidized", 0, &[12.0]); // logit: 1 - 6e-6
        pin(
            &model,
            &layout,
            &mut params,
            "mosaic_deg",
            0,
            &[mosaic_deg.ln()],
        );
        let data = &planned.physics.dials[0].1;
        let images = truth["images"].as_array().unwrap();
        let mut shoebox = 0;
        for (i, image) in images.iter().enumerate() {
            pin_image(&model, &layout, &mut params, i, image);
            for _ in 0..data.images[i].n_shoeboxes {
                pin(
                    &model,
                    &layout,
                    &mut params,
                    "background",
                    shoebox,
                    &[softplus_inv(2.0), 0.0, 0.0],
                );
                shoebox += 1;
            }
        }
        let (mut saturated, mut n) = (0.0, 0usize);
        for i in 0..data.images.len() {
            let image = data.shoeboxes(i).unwrap();
            for (&x, &used) in image.counts.iter().zip(&image.use_pixel) {
                if used {
                    let x = f64::from(x);
                    let xlx = if x > 0.0 { x * x.ln() } else { 0.0 };
                    saturated += xlx - x - statrs::function::gamma::ln_gamma(x + 1.0);
                    n += 1;
                }
            }
        }
        let bare = without_observations(&model).unwrap();
        AtTruth {
            model,
            bare,
            layout,
            params,
            saturated,
            n,
            images: images.len(),
        }
    }

    fn log_lik(&self, params: &[f64]) -> f64 {
        log_weight(&self.model, &self.layout, params) - log_weight(&self.bare, &self.layout, params)
    }

    /// The Poisson deviance per used pixel at `params`: D = 2 Σ [x ln x − x − ln x!] − 2 ln L.
    fn deviance_per_pixel(&self, params: &[f64]) -> f64 {
        2.0 * (self.saturated - self.log_lik(params)) / self.n as f64
    }
}

/// Pins image `i`'s rotation, scale and domain tilts at the truth of `image`.
fn pin_image(
    model: &Model,
    layout: &ParamLayout,
    params: &mut [f64],
    i: usize,
    image: &serde_json::Value,
) {
    let f = |v: &serde_json::Value| v.as_f64().unwrap();
    let rot: Vec<f64> = image["rot"].as_array().unwrap().iter().map(f).collect();
    pin(
        model,
        layout,
        params,
        "log_scale",
        i,
        &[f(&image["log_scale"])],
    );
    let z: Vec<f64> = image["tilts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| {
            t.as_array()
                .unwrap()
                .iter()
                .map(|x| f(x) / (TILT_UNIT_DEG * DEG))
        })
        .collect();
    // The model's free tilts are the n_domains - 1 contrasts Hᵀz of the domain tilts
    // (sum_to_zero maps them back by H); their common part goes into the image rotation
    // (to first order in these 1e-5 rad angles).
    let domains = z.len() / 3;
    let h = helmert_basis(domains - 1);
    let contrasts: Vec<f64> = (0..domains - 1)
        .flat_map(|j| {
            let h = &h;
            let z = &z;
            (0..3).map(move |k| (0..domains).map(|d| h[[d, j]] * z[3 * d + k]).sum::<f64>())
        })
        .collect();
    pin(model, layout, params, "tilt", i, &contrasts);
    let common: Vec<f64> = (0..3)
        .map(|k| {
            (0..domains).map(|d| z[3 * d + k]).sum::<f64>() / domains as f64 * TILT_UNIT_DEG * DEG
        })
        .collect();
    let rot: Vec<f64> = rot.iter().zip(&common).map(|(r, c)| r + c).collect();
    pin(model, layout, params, "rot", i, &rot);
}

#[test]
fn model_at_the_truth_explains_the_bundled_stills_to_poisson_noise() {
    let at = AtTruth::new(&root().join("examples/rubredoxin_small"), &[]);
    let per_pixel = at.deviance_per_pixel(&at.params);
    eprintln!("N = {} pixels, D/N = {per_pixel:.4}", at.n);
    assert!(at.n > 30_000, "{}", at.n);
    // For Poisson counts near 2 photons E[D]/N ≈ 1.1 and sd(D)/N ≈ 0.01 at this N.
    assert!((0.9..1.3).contains(&per_pixel), "D/N = {per_pixel}");
    // The same with the reduced Fe curves instead: the oxidation state is in these pixels.
    let mut reduced = at.params.clone();
    pin(
        &at.model,
        &at.layout,
        &mut reduced,
        "frac_oxidized",
        0,
        &[-12.0],
    );
    eprintln!(
        "ln L(ox) - ln L(red) = {:.2}",
        at.log_lik(&at.params) - at.log_lik(&reduced)
    );
    // Negative control: at the DIALS orientation (rot = 0) the spots miss their shoeboxes.
    let mut params = at.params.clone();
    for i in 0..at.images {
        pin(&at.model, &at.layout, &mut params, "rot", i, &[0.0; 3]);
    }
    let per_pixel_0 = at.deviance_per_pixel(&params);
    eprintln!("rot = 0: D/N = {per_pixel_0:.3}");
    assert!(
        per_pixel_0 > 2.0 * per_pixel,
        "D/N at rot = 0: {per_pixel_0}"
    );
}

/// Simulates `images` oxidized images (seed `seed`, more `spreadc simulate` flags `extra`)
/// into a fresh directory.
fn simulate_oxidized(name: &str, images: usize, seed: u64, extra: &[&str]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("run_physics_fit")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fixed = dir.with_extension("truth.json");
    std::fs::write(&fixed, r#"{"frac_oxidized": 1.0}"#).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_spreadc"))
        .current_dir(root())
        .args(["simulate", "models/rubredoxin_fe.spread", "--out"])
        .arg(&dir)
        .args(["--images", &images.to_string(), "--seed", &seed.to_string()])
        .arg("--truth")
        .arg(&fixed)
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    dir
}

/// `flat_field_gradient` is the simulator's flat-field error: on data simulated with
/// `--gain-gradient 0.4`, the model told G = 0.4 explains the counts at the truth to Poisson
/// noise (D/N as on data without the error), while the model without it (G = 0) and with the
/// gradient reversed (G = −0.4) sit far above: the fast axis, its direction and the factor
/// 1 + G x all agree with `spreadc simulate`.
#[test]
fn the_flat_field_gradient_is_the_simulated_flat_field_error() {
    let dir = simulate_oxidized("flat_field_04", 4, 31, &["--gain-gradient", "0.4"]);
    let per_pixel = |g: &str| {
        let at = AtTruth::new(&dir, &[("flat_field_gradient", g)]);
        assert!(at.n > 10_000, "{}", at.n);
        at.deviance_per_pixel(&at.params)
    };
    let (told, untold, reversed) = (per_pixel("0.4"), per_pixel("0.0"), per_pixel("-0.4"));
    eprintln!("D/N: G = 0.4 {told:.4}, G = 0 {untold:.4}, G = -0.4 {reversed:.4}");
    assert!((0.9..1.3).contains(&told), "D/N at the true G: {told}");
    assert!(untold > told + 0.1, "D/N without the flat field: {untold}");
    assert!(reversed > untold, "D/N with G reversed: {reversed}");
}

/// With the noise taken away (`spreadc simulate --expected-counts`: each pixel's expected
/// photons written as its count) the fitting model at the truth reproduces every count (a
/// Poisson deviance of zero up to rounding), and the likelihood of the edge
/// position, every other latent held at the truth, peaks at the simulated edge: the Sherrell
/// oxidized curve unshifted, `edge_ev` = 7120 eV in the shifted-reference form. So what moves
/// a fit's edge on noisy data is the noise and the inference, not a difference between the
/// simulator and the model (the noisy draw of the same configuration peaks elsewhere: the
/// negative control).
#[test]
fn noise_free_data_put_the_likelihood_peak_of_the_edge_at_the_truth() {
    let simulate = |name: &str, extra: &[&str]| simulate_oxidized(name, 6, 41, extra);
    // The log-likelihood of edge_ev at 7120 + d eV, the rest at the truth, at d = -h, 0, h:
    // the vertex of the parabola through them (eV) and its curvature's sd (eV).
    let vertex = |dir: &Path| {
        let at = AtTruth::new(dir, &[("fdp_model", "shifted_reference")]);
        let h = 0.2;
        let ll = |d: f64| {
            let mut p = at.params.clone();
            pin(&at.model, &at.layout, &mut p, "edge_ev", 0, &[7120.0 + d]);
            at.log_lik(&p)
        };
        let (lo, mid, hi) = (ll(-h), ll(0.0), ll(h));
        let curvature = (hi - 2.0 * mid + lo) / (h * h);
        let mut p = at.params.clone();
        pin(&at.model, &at.layout, &mut p, "edge_ev", 0, &[7120.0]);
        (
            -(hi - lo) / (2.0 * h) / curvature,
            (-1.0 / curvature).sqrt(),
            at.deviance_per_pixel(&p),
        )
    };
    let clean = simulate("expected_counts", &["--expected-counts"]);
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(clean.join("truth.json")).unwrap()).unwrap();
    assert_eq!(truth["expected_counts"], serde_json::Value::Bool(true));
    let (peak, sd, per_pixel) = vertex(&clean);
    eprintln!("expected counts: peak {peak:+.5} eV (sd {sd:.3} eV), D/N = {per_pixel:.2e}");
    // Not exactly 0: the pinned rotation is rot + the domains' mean tilt to first order, and the
    // counts are f32 (1.6e-8 measured; Poisson noise gives ~1.1).
    assert!(per_pixel < 1e-6, "D/N on noise-free counts: {per_pixel}");
    assert!(peak.abs() < 0.01 * sd, "peak {peak} eV, sd {sd} eV");
    let (noisy_peak, noisy_sd, _) = vertex(&simulate("poisson_counts", &[]));
    eprintln!("Poisson counts: peak {noisy_peak:+.4} eV (sd {noisy_sd:.3} eV)");
    assert!(
        noisy_peak.abs() > 0.05 * noisy_sd,
        "noisy peak {noisy_peak} eV"
    );
}
