//! `spreadc simulate MODEL --out DIR --images N --seed S [--truth truth.json] [--set k=v]`: draw a
//! synthetic dataset from a model and write it in the DIALS formats with truth.json.

use clap::Args as ClapArgs;
use spread::diagnostics::render_all;
use spread::ir::{self, Options};
use spread::simulate::{self, Fixed, Settings, Template};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `spreadc simulate`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The .spread model file.
    pub model: PathBuf,
    /// Output folder (NAME.expt, NAME.refl, spectra/, the atomic model, truth.json).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of images (stills).
    #[arg(long, default_value_t = 10)]
    pub images: usize,
    /// Seed of every random stream.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Latent values to fix (JSON object: dataset latent → number, `log_scale`, `background`).
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// Override a const or select a variant choice: --set shape=square.
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = super::check::parse_set)]
    pub sets: Vec<(String, String)>,
    /// Base name of the .expt/.refl pair.
    #[arg(long, default_value = "simulated")]
    pub name: String,
    /// Most shoeboxes written per image (the brightest predicted spots).
    #[arg(long, default_value_t = 40)]
    pub max_shoeboxes: usize,
    /// Resolution limit of the predicted reflections, Å.
    #[arg(long, default_value_t = 2.2)]
    pub d_min: f64,
    /// Detector point-spread (Gaussian sd, pixels) applied to the spot photons before the
    /// noise; the models here have none, so > 0 simulates an effect the fit lacks.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub psf_px: f64,
    /// Flat-field error G along the fast axis: the pixel at fast index x detects
    /// 1 + G (2 (x + 0.5) / 1920 − 1) times the modelled photons (−0.9 to 0.9; the models here
    /// have none, so ≠ 0 simulates an effect the fit lacks).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub gain_gradient: f64,
    /// Seed of the photon (Poisson) noise alone (default: --seed): new counts of the same
    /// crystal, orientations, spectra and latents, to tell a dataset's noise from its
    /// configuration.
    #[arg(long, value_name = "N")]
    pub noise_seed: Option<u64>,
    /// Write each pixel's expected photons (non-integer) instead of Poisson counts: the
    /// noise-free dataset, to see what a fit does with no noise (its likelihood at the truth is
    /// the model's maximum).
    #[arg(long, conflicts_with = "noise_seed")]
    pub expected_counts: bool,
}

fn settings(args: &Args) -> Result<Settings, (ExitCode, String)> {
    let opts = Options {
        search_path: Vec::new(),
        sets: args.sets.clone(),
    };
    let compiled = ir::compile_file(&args.model, &opts)
        .map_err(|e| (ExitCode::from(2), format!("{}: {e}", args.model.display())))?;
    let Some(program) = compiled.program.clone().filter(|_| !compiled.has_errors()) else {
        let text = render_all(&compiled.diagnostics, &compiled.sources, false);
        return Err((ExitCode::from(1), text));
    };
    let dir = args.model.parent().unwrap_or(Path::new("."));
    let factors = program
        .log_joint
        .iter()
        .filter(|s| matches!(s.kind, ir::StmtKind::Factor { .. }))
        .count();
    let corrected = program
        .log_joint
        .iter()
        .filter(|s| {
            matches!(
                &s.kind,
                ir::StmtKind::Observe {
                    correction: Some(_),
                    ..
                }
            )
        })
        .count();
    if corrected > 0 {
        eprintln!(
            "note: {corrected} correction flow(s) are not applied when simulating: counts are drawn \
             from the physics likelihood (a flow is learned from data, it has no values before a fit)"
        );
    }
    if factors > 0 {
        eprintln!(
            "note: {factors} factor statement(s) are not applied when simulating: the simulator \
             draws latents from their priors (or truth.json) alone"
        );
    }
    Settings::from_program(&program, &compiled.sources, dir)
        .map_err(|e| (ExitCode::from(1), e.to_string()))
}

/// Simulates and writes the dataset; exit 0 ok, 1 model errors, 2 usage or IO errors.
pub fn run(args: &Args) -> ExitCode {
    let settings = match settings(args) {
        Ok(s) => s,
        Err((code, text)) => {
            eprintln!("error: {text}");
            return code;
        }
    };
    let fixed = match &args.truth {
        Some(path) => match Fixed::read(path, &settings) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        None => Fixed::default(),
    };
    if !(args.psf_px.is_finite() && (0.0..=5.0).contains(&args.psf_px)) {
        eprintln!(
            "error: --psf-px {}: the point-spread sd must be 0 to 5 pixels",
            args.psf_px
        );
        return ExitCode::from(2);
    }
    if !(args.gain_gradient.is_finite() && (-0.9..=0.9).contains(&args.gain_gradient)) {
        eprintln!(
            "error: --gain-gradient {}: the flat-field error must be -0.9 to 0.9",
            args.gain_gradient
        );
        return ExitCode::from(2);
    }
    let template = Template {
        psf_sd_px: args.psf_px,
        gain_gradient: args.gain_gradient,
        noise_seed: args.noise_seed,
        expected_counts: args.expected_counts,
        max_shoeboxes: args.max_shoeboxes,
        d_min_a: args.d_min,
        ..Template::default()
    };
    let result = simulate::simulate(&settings, &template, args.images, args.seed, &fixed)
        .and_then(|sim| simulate::write(&args.out, &args.name, &sim, &settings.pdb).map(|()| sim));
    match result {
        Ok(sim) => {
            let t = &sim.truth;
            println!(
                "wrote {} images, {} shoeboxes to {} ({} {}, frac_oxidized {:.3})",
                sim.experiments.experiments.len(),
                sim.reflections.nrows,
                args.out.display(),
                t.metal,
                t.state,
                t.frac_oxidized
            );
            println!(
                "skipped predicted reflections: {} off the panel, {} weak, {} over the per-image cap",
                t.skipped.off_panel, t.skipped.weak, t.skipped.over_cap
            );
            if t.overloaded_pixels > 0 {
                println!(
                    "overloaded pixels (65535 ADU, written masked): {}",
                    t.overloaded_pixels
                );
            }
            ExitCode::SUCCESS
        }
        Err(e @ simulate::SimulateError::Io { .. }) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
