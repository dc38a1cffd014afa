//! `spreadc nanobragg ARGS...`: a drop-in for the nanoBragg command line (see
//! `spread::physics::nanobragg`). Reads the `-hkl` file, renders, writes `-floatfile`, `-intfile` and,
//! unless `-nonoise`, `-noisefile`. Exit 0 on success, 1 for bad model input (cell, HKL file), 2 for
//! usage and IO errors.

use spread::physics::geometry::detector::Panel;
use spread::physics::nanobragg::args::{self, NanoBraggArgs, OPTIONS};
use spread::physics::nanobragg::smv::{self, SmvHeader};
use spread::physics::nanobragg::{NanoBraggError, Simulation};
use spread::physics::noise::{NoiseModel, add_noise};
use std::process::ExitCode;

/// Arguments: everything after `nanobragg`, passed through verbatim.
#[derive(clap::Args)]
pub struct Args {
    /// nanoBragg options, e.g. -cell 50 50 50 90 90 90 -N 5 -lambda 1 -floatfile out.f32
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    pub argv: Vec<String>,
}

fn usage() {
    println!("spreadc nanobragg: nanoBragg-compatible image simulation. Options:");
    for (name, n) in OPTIONS {
        println!("  {name}{}", " VALUE".repeat(n));
    }
}

fn write(path: &str, bytes: &[u8]) -> Result<(), ExitCode> {
    std::fs::write(path, bytes).map_err(|e| {
        eprintln!("error: cannot write {path}: {e}");
        ExitCode::from(2)
    })
}

fn setup(a: &NanoBraggArgs) -> Result<Simulation, ExitCode> {
    let text = match &a.hkl {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
            eprintln!("error: cannot read -hkl {path}: {e}");
            ExitCode::from(2)
        })?),
        None => None,
    };
    let hkl = a.hkl.as_deref().zip(text.as_deref());
    Simulation::from_args(a, hkl).map_err(|e| {
        eprintln!("error: {e}");
        match e {
            NanoBraggError::Args(_) | NanoBraggError::Unsupported(_) => ExitCode::from(2),
            _ => ExitCode::from(1),
        }
    })
}

fn header(a: &NanoBraggArgs, p: &Panel) -> SmvHeader {
    SmvHeader {
        pixel_mm: a.pixel_mm,
        distance_mm: a.distance_mm,
        wavelength_a: a.lambda_a,
        beam_center_mm: [
            a.beam_center_mm[0].unwrap_or((p.n_slow as f64 + 1.0) * a.pixel_mm / 2.0),
            a.beam_center_mm[1].unwrap_or((p.n_fast as f64 + 1.0) * a.pixel_mm / 2.0),
        ],
    }
}

/// The `-noisefile`: Poisson (and optional readout/calibration) noise on the float32 expectation.
fn write_noise(a: &NanoBraggArgs, p: &Panel, image: &[f64]) -> Result<(), ExitCode> {
    let expected: Vec<f32> = image.iter().map(|&v| v as f32).collect();
    let noise = NoiseModel {
        seed: a.seed,
        calibration_sigma: a.calibration_pct / 100.0,
        readout_sigma: a.readout_noise,
        adc_offset: a.adc_offset,
        ..NoiseModel::default()
    };
    let noisy = add_noise(&expected, &noise);
    write(&a.noisefile, &smv::encode(p, &header(a, p), &noisy.counts))?;
    println!(
        "{} photons on noise image ({} overloads)",
        noisy.photons, noisy.overloads
    );
    Ok(())
}

fn simulate(a: &NanoBraggArgs) -> Result<(), ExitCode> {
    let sim = setup(a)?;
    for note in &sim.notes {
        eprintln!("note: {note}");
    }
    let image = sim.render().map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(1)
    })?;
    write(&a.floatfile, &Simulation::float_file(&image))?;
    let p = &sim.model.panel;
    let ints = smv::integer_image(&image, a.intfile_scale, a.adc_offset);
    write(&a.intfile, &smv::encode(p, &header(a, p), &ints))?;
    let sum: f64 = image.iter().sum();
    let max = image.iter().copied().fold(0.0, f64::max);
    println!(
        "{} pixels, {} steps, sum {sum:.7e}, max {max:.7e}",
        image.len(),
        sim.steps
    );
    if !a.nonoise {
        write_noise(a, p, &image)?;
    }
    Ok(())
}

/// Run `spreadc nanobragg`.
pub fn run(args: &Args) -> ExitCode {
    if args
        .argv
        .iter()
        .any(|a| a == "-help" || a == "-h" || a == "--help")
    {
        usage();
        return ExitCode::SUCCESS;
    }
    let parsed = match args::parse(&args.argv) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match simulate(&parsed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}
