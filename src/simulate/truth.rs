//! The latent values of a simulation: fixed ones from `--truth truth.json`, the rest drawn from
//! the model's priors, and the record written back as truth.json.
//!
//! In: [`Settings`] (priors), a [`Fixed`] set and a seed. Out: a [`Truth`] holding every
//! dataset-level latent, the metal site's state and f'/f'' curves, and (filled in by the
//! simulator) each image's draws. Guarantees: a key of truth.json that is not a latent of the
//! model (or one of the simulator's own keys) is an error naming the key, never ignored.

use super::{Settings, SimulateError, Skipped, stream_seed};
use crate::physics::atoms::Crystal;
use crate::physics::geometry::{Mat3, Vec3};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Beta, Distribution, Exp, Gamma, LogNormal, Normal, Uniform};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Latents fixed by the user.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fixed {
    /// Dataset-level scalar latents by name.
    pub dataset: BTreeMap<String, f64>,
    /// Every image's `log_scale`.
    pub log_scale: Option<f64>,
    /// Plane background of every shoebox (offset, fast slope, slow slope), photons.
    pub background: Option<[f64; 3]>,
    /// Every image's `rot` (radians).
    pub rot: Option<Vec3>,
}

/// The simulator's own truth.json keys besides the model's dataset latents.
const OWN_KEYS: [&str; 3] = ["log_scale", "background", "rot"];

fn three(v: &serde_json::Value) -> Option<[f64; 3]> {
    let list: Vec<f64> = v
        .as_array()?
        .iter()
        .map(|x| x.as_f64())
        .collect::<Option<_>>()?;
    <[f64; 3]>::try_from(list).ok()
}

impl Fixed {
    /// Reads `path`: a JSON object of latent name → number (`background`, `rot`: three numbers).
    pub fn read(path: &Path, settings: &Settings) -> Result<Self, SimulateError> {
        let err = |detail: String| SimulateError::Truth {
            path: path.to_path_buf(),
            detail,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| err(format!("not JSON: {e}")))?;
        let object = value
            .as_object()
            .ok_or_else(|| err("expected a JSON object of latent values".into()))?;
        let mut fixed = Fixed::default();
        for (key, v) in object {
            let number = || {
                v.as_f64()
                    .ok_or_else(|| err(format!("`{key}` must be a number")))
            };
            match key.as_str() {
                "log_scale" => fixed.log_scale = Some(number()?),
                "background" | "rot" => {
                    let v =
                        three(v).ok_or_else(|| err(format!("`{key}` must be three numbers")))?;
                    if key == "rot" {
                        fixed.rot = Some(v);
                    } else {
                        fixed.background = Some(v);
                    }
                }
                name if settings.dataset_priors.iter().any(|(n, _)| n == name) => {
                    fixed.dataset.insert(name.to_string(), number()?);
                }
                other => {
                    let known: Vec<&str> = settings
                        .dataset_priors
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .chain(OWN_KEYS)
                        .collect();
                    return Err(err(format!(
                        "`{other}` is not a latent the simulator sets (known: {})",
                        known.join(", ")
                    )));
                }
            }
        }
        Ok(fixed)
    }
}

/// One image's draws.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageTruth {
    /// Experiment identifier.
    pub identifier: String,
    /// Crystal orientation U written to the .expt (real-space rows = U · reference basis).
    pub orientation: Mat3,
    /// The `rot` latent: misorientation (radians) of the true crystal relative to the .expt.
    pub rot: Vec3,
    /// The `log_scale` latent.
    pub log_scale: f64,
    /// The mosaic domains' `tilt` latents (radians).
    pub tilts: Vec<Vec3>,
    /// Mean energy of the shot's spectrum envelope, eV.
    pub spectrum_mean_ev: f64,
    /// Shoeboxes written.
    pub n_shoeboxes: usize,
    /// Pixels of its shoeboxes that overloaded the 16-bit detector (written masked).
    pub overloaded_pixels: u64,
}

/// Every latent value a simulation used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Truth {
    /// Seed of the run.
    pub seed: u64,
    /// Dataset-level latents (fixed or drawn), by name.
    pub dataset: BTreeMap<String, f64>,
    /// Which dataset latents were fixed by truth.json (the rest were drawn from their priors).
    pub fixed: Vec<String>,
    /// The metal element.
    pub metal: String,
    /// "oxidized" or "reduced": the state holding the larger share of the metal.
    pub state: String,
    /// Fraction of the metal in the oxidized state.
    pub frac_oxidized: f64,
    /// Plane background of every shoebox (offset, fast slope, slow slope), photons.
    pub background: [f64; 3],
    /// Channel energies (eV), f' and f'' of the metal site used.
    pub energy_ev: Vec<f64>,
    /// f' per channel.
    pub fp: Vec<f64>,
    /// f'' per channel.
    pub fdp: Vec<f64>,
    /// Per-image draws.
    pub images: Vec<ImageTruth>,
    /// Predicted reflections not written, by reason.
    pub skipped: Skipped,
    /// Shoebox pixels whose counts reached the detector's 16-bit ceiling (65535 ADU), over all
    /// images: written with the mask's VALID bit cleared and outside the panel's trusted range
    /// (as DIALS marks overloads), since a clipped count is not a Poisson draw of its mean.
    pub overloaded_pixels: u64,
    /// The detector point-spread applied to the spot photons (Gaussian sd, pixels); written
    /// only when not 0, as no model fitted here has one (a misspecification to correct).
    #[serde(skip_serializing_if = "is_zero")]
    pub psf_sd_px: f64,
    /// The flat-field error along the fast axis (`Template::gain_gradient`); written only when
    /// not 0, as no model fitted here has one (a misspecification to correct).
    #[serde(skip_serializing_if = "is_zero")]
    pub gain_gradient: f64,
    /// The seed of the photon noise, written only when it is not the run's
    /// (`Template::noise_seed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise_seed: Option<u64>,
    /// Whether the counts are the expected photons, with no noise
    /// (`Template::expected_counts`); written only when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expected_counts: bool,
}

fn is_zero(value: &f64) -> bool {
    *value == 0.0
}

/// A draw from `prior`.
pub fn sample(prior: &super::Prior, rng: &mut StdRng, name: &str) -> Result<f64, SimulateError> {
    let a = |k: usize| prior.args.get(k).copied().unwrap_or(f64::NAN);
    let bad = |e: String| SimulateError::Model(format!("prior of `{name}`: {e}"));
    Ok(match prior.family.as_str() {
        "Normal" => Normal::new(a(0), a(1))
            .map_err(|e| bad(e.to_string()))?
            .sample(rng),
        "HalfNormal" => (a(0) * rng.sample::<f64, _>(rand_distr::StandardNormal)).abs(),
        "LogNormal" => LogNormal::new(a(0), a(1))
            .map_err(|e| bad(e.to_string()))?
            .sample(rng),
        "Beta" => Beta::new(a(0), a(1))
            .map_err(|e| bad(e.to_string()))?
            .sample(rng),
        "Gamma" => Gamma::new(a(0), 1.0 / a(1))
            .map_err(|e| bad(e.to_string()))?
            .sample(rng),
        "Exponential" => Exp::new(a(0)).map_err(|e| bad(e.to_string()))?.sample(rng),
        "Uniform" => Uniform::new(a(0), a(1))
            .map_err(|e| bad(e.to_string()))?
            .sample(rng),
        other => return Err(bad(format!("cannot sample a {other} prior"))),
    })
}

/// Default plane background when truth.json fixes none: the model's Normal(0, 10) prior admits
/// negative photon counts, so the simulator uses a flat positive level instead of drawing it.
const DEFAULT_BACKGROUND: [f64; 3] = [2.0, 0.0, 0.0];

impl Truth {
    /// Dataset-level latents: fixed ones as given, the others drawn from their priors.
    pub fn draw(settings: &Settings, fixed: &Fixed, seed: u64) -> Result<Self, SimulateError> {
        let mut rng = StdRng::seed_from_u64(stream_seed(seed, u64::MAX, 0));
        let mut dataset = BTreeMap::new();
        for (name, prior) in &settings.dataset_priors {
            let drawn = sample(prior, &mut rng, name)?;
            dataset.insert(
                name.clone(),
                fixed.dataset.get(name).copied().unwrap_or(drawn),
            );
        }
        let frac = *dataset
            .get("frac_oxidized")
            .ok_or_else(|| SimulateError::Model("no dataset latent `frac_oxidized`".into()))?;
        Ok(Truth {
            seed,
            dataset,
            fixed: fixed.dataset.keys().cloned().collect(),
            metal: settings.metal.clone(),
            state: if frac >= 0.5 { "oxidized" } else { "reduced" }.into(),
            frac_oxidized: frac,
            background: fixed.background.unwrap_or(DEFAULT_BACKGROUND),
            energy_ev: Vec::new(),
            fp: Vec::new(),
            fdp: Vec::new(),
            images: Vec::new(),
            skipped: Skipped::default(),
            overloaded_pixels: 0,
            psf_sd_px: 0.0,
            gain_gradient: 0.0,
            noise_seed: None,
            expected_counts: false,
        })
    }

    /// The mosaic spread latent in radians.
    pub fn mosaic_rad(&self) -> Result<f64, SimulateError> {
        self.dataset
            .get("mosaic_deg")
            .map(|d| d.to_radians())
            .ok_or_else(|| SimulateError::Model("no dataset latent `mosaic_deg`".into()))
    }

    /// f' and f'' of the metal site at `energies`, as the model computes them from the dataset
    /// latents (src/simulate/curves.rs); recorded here.
    pub fn metal_curves(
        &mut self,
        settings: &Settings,
        crystal: &Crystal,
        energies: &[f64],
    ) -> Result<(Vec<f64>, Vec<f64>), SimulateError> {
        let (fp, fdp) = super::curves::metal_curves(
            &settings.program,
            &settings.sources,
            crystal,
            energies,
            &self.dataset,
        )?;
        self.energy_ev = energies.to_vec();
        self.fp = fp.clone();
        self.fdp = fdp.clone();
        Ok((fp, fdp))
    }
}
