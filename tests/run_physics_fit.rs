//! The planned physics model against the data `spreadc simulate` drew from it: at the true
//! latents (truth.json), the fit model's expected counts explain the bundled rubredoxin stills
//! as well as Poisson noise allows. The Poisson deviance D = 2 Σ [x ln(x/μ) − (x − μ)] over
//! the N used pixels is χ²-like with mean ≈ N; a geometry, spectrum, fluence or structure-factor
//! convention that differs between `simulate` and the planner's operators moves D/N far above 1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use spread::infer::engine::{Evaluator, ParticleSpec};
use spread::infer::guide::{ParamLayout, softplus_inv};
use spread::infer::model::Model;
use spread::infer::reduce::SingleProcess;
use spread::plan::Registry;
use spread::plan::eval::helmert_basis;
use spread::run::physics::without_observations;
use spread::run::{RunConfig, load};
use std::path::Path;

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

#[test]
fn model_at_the_truth_explains_the_bundled_stills_to_poisson_noise() {
    let dir = root().join("examples/rubredoxin_small");
    let cfg = RunConfig {
        model: root().join("models/rubredoxin_fe.spread"),
        data: dir.clone(),
        ..RunConfig::default()
    };
    let (_, planned, _) = load(&cfg, &Registry::builtin()).unwrap();
    let model = &planned.model;
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("truth.json")).unwrap()).unwrap();
    let layout = ParamLayout::new(model);
    let mut params = layout.init(model);
    let ds = &truth["dataset"];
    let mosaic_deg = ds["mosaic_deg"].as_f64().unwrap();
    pin(model, &layout, &mut params, "frac_oxidized", 0, &[12.0]); // logit: 1 - 6e-6
    pin(
        model,
        &layout,
        &mut params,
        "mosaic_deg",
        0,
        &[mosaic_deg.ln()],
    );
    let data = &planned.physics.dials[0].1;
    let mut shoebox = 0;
    for (i, image) in truth["images"].as_array().unwrap().iter().enumerate() {
        let f = |v: &serde_json::Value| v.as_f64().unwrap();
        let rot: Vec<f64> = image["rot"].as_array().unwrap().iter().map(f).collect();
        pin(model, &layout, &mut params, "rot", i, &rot);
        pin(
            model,
            &layout,
            &mut params,
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
        pin(model, &layout, &mut params, "tilt", i, &contrasts);
        let common: Vec<f64> = (0..3)
            .map(|k| {
                (0..domains).map(|d| z[3 * d + k]).sum::<f64>() / domains as f64
                    * TILT_UNIT_DEG
                    * DEG
            })
            .collect();
        let rot: Vec<f64> = rot.iter().zip(&common).map(|(r, c)| r + c).collect();
        pin(model, &layout, &mut params, "rot", i, &rot);
        for _ in 0..data.images[i].n_shoeboxes {
            pin(
                model,
                &layout,
                &mut params,
                "background",
                shoebox,
                &[softplus_inv(2.0), 0.0, 0.0],
            );
            shoebox += 1;
        }
    }
    let bare = without_observations(model).unwrap();
    let log_lik = log_weight(model, &layout, &params) - log_weight(&bare, &layout, &params);
    // Poisson deviance from the log-likelihood: D = 2 Σ [x ln x − x − ln x!] − 2 ln L.
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
    let deviance = 2.0 * (saturated - log_lik);
    let per_pixel = deviance / n as f64;
    eprintln!("N = {n} pixels, D = {deviance:.1}, D/N = {per_pixel:.4}");
    assert!(n > 30_000, "{n}");
    // For Poisson counts near 2 photons E[D]/N ≈ 1.1 and sd(D)/N ≈ 0.01 at this N.
    assert!((0.9..1.3).contains(&per_pixel), "D/N = {per_pixel}");
    // The same with the reduced Fe curves instead: the oxidation state is in these pixels.
    let mut reduced = params.clone();
    pin(model, &layout, &mut reduced, "frac_oxidized", 0, &[-12.0]);
    let log_lik_red = log_weight(model, &layout, &reduced) - log_weight(&bare, &layout, &reduced);
    eprintln!("ln L(ox) - ln L(red) = {:.2}", log_lik - log_lik_red);
    // Negative control: at the DIALS orientation (rot = 0) the spots miss their shoeboxes.
    for i in 0..truth["images"].as_array().unwrap().len() {
        pin(model, &layout, &mut params, "rot", i, &[0.0; 3]);
    }
    let log_lik_0 = log_weight(model, &layout, &params) - log_weight(&bare, &layout, &params);
    let per_pixel_0 = 2.0 * (saturated - log_lik_0) / n as f64;
    eprintln!("rot = 0: D/N = {per_pixel_0:.3}");
    assert!(
        per_pixel_0 > 2.0 * per_pixel,
        "D/N at rot = 0: {per_pixel_0}"
    );
}
