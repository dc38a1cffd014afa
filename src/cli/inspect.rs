//! `spreadc inspect FILE... [--json]`: what is in DIALS experiment lists, reflection tables and
//! spectra (like `dials.show`). Exit 0 when every file was read, 1 when a file is malformed,
//! 2 when a file cannot be opened.

use spread::formats::dataset_dir::DataError;
use spread::formats::expt::ExptError;
use spread::formats::inspect::{
    ExptSummary, FileSummary, ReflSummary, SpectrumSummary, inspect_file,
};
use spread::formats::refl::ReflError;
use spread::formats::spectrum::SpectrumError;
use std::path::PathBuf;
use std::process::ExitCode;

/// Show what DIALS .expt/.refl files and .lam spectra contain.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Files to inspect (.expt, .refl, .lam), or a `--data` directory.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print machine-readable JSON (one object, or an array for several files).
    #[arg(long)]
    pub json: bool,
}

/// Runs the subcommand.
pub fn run(args: &Args) -> ExitCode {
    let mut summaries = Vec::new();
    let mut worst = 0u8;
    for path in &args.files {
        match inspect_file(path) {
            Ok(s) => summaries.push(s),
            Err(e) => {
                eprintln!("error: {e}");
                worst = worst.max(exit_code(&e));
            }
        }
    }
    if args.json {
        let text = match summaries.as_slice() {
            [one] => serde_json::to_string_pretty(one),
            many => serde_json::to_string_pretty(many),
        };
        match text {
            Ok(t) if !summaries.is_empty() => println!("{t}"),
            Ok(_) => {}
            Err(e) => eprintln!("error: {e}"),
        }
    } else {
        summaries.iter().for_each(print_summary);
    }
    ExitCode::from(worst)
}

/// 2 when the file could not be opened, 1 when its content is wrong.
fn exit_code(e: &DataError) -> u8 {
    let io = matches!(
        e,
        DataError::Io { .. }
            | DataError::MissingFile { .. }
            | DataError::Expt(ExptError::Io { .. })
            | DataError::Refl(ReflError::Io { .. })
            | DataError::Spectrum(SpectrumError::Io { .. })
    );
    if io { 2 } else { 1 }
}

fn print_summary(s: &FileSummary) {
    match s {
        FileSummary::Experiments(e) => print_expt(e),
        FileSummary::Reflections(r) => print_refl(r),
        FileSummary::Spectrum(sp) => print_spectrum(sp),
        FileSummary::Dataset(d) => {
            println!(
                "{}: data directory, {} file pairs, atomic model {}",
                d.dir,
                d.files.len(),
                d.atomic_model.as_deref().unwrap_or("none")
            );
            for [expt, refl] in &d.files {
                println!("  {expt} + {refl}");
            }
            print!("{}", d.report);
        }
    }
}

fn print_expt(e: &ExptSummary) {
    println!(
        "{}: experiment list, {} experiments, {} image sets",
        e.file, e.experiments, e.imagesets
    );
    for (i, b) in e.beams.iter().enumerate() {
        println!(
            "  beam {i}: wavelength {:.6} Å ({:.2} eV), direction {:?}",
            b.wavelength_a, b.energy_ev, b.direction
        );
    }
    for (i, d) in e.detectors.iter().enumerate() {
        println!(
            "  detector {i}: {} panels, hierarchy depth {}, {} pixels, distance {:.2}-{:.2} mm",
            d.panels, d.hierarchy_depth, d.pixels, d.distance_mm[0], d.distance_mm[1]
        );
    }
    for (i, c) in e.crystals.iter().enumerate() {
        let u = c.unit_cell;
        let mosaic = match (c.ml_half_mosaicity_deg, c.ml_domain_size_ang) {
            (Some(m), Some(d)) => format!(", ML half mosaicity {m:.4}°, domain {d:.0} Å"),
            _ => String::new(),
        };
        println!(
            "  crystal {i}: cell ({:.3}, {:.3}, {:.3}, {:.2}, {:.2}, {:.2}), Hall `{}`{mosaic}",
            u[0], u[1], u[2], u[3], u[4], u[5], c.space_group_hall_symbol
        );
    }
}

fn print_refl(r: &ReflSummary) {
    println!(
        "{}: reflection table version {}, {} rows, {} identifiers",
        r.file, r.version, r.rows, r.identifiers
    );
    for c in &r.columns {
        println!("  {:<28} {}", c.name, c.type_name);
    }
    for c in &r.skipped_columns {
        println!("  {:<28} {} (unknown type, skipped)", c.name, c.type_name);
    }
    let s = &r.shoeboxes;
    println!(
        "  shoeboxes: {} total, {} with pixels, {} pixels, data sum {}",
        s.total, s.with_pixels, s.pixel_count, s.data_sum
    );
    if s.pixel_count > 0 {
        let m = &s.mask;
        println!(
            "  mask: {} valid, {} invalid, {} foreground, {} background, {} strong, {} overlapped",
            m.valid, m.invalid, m.foreground, m.background, m.strong, m.overlapped
        );
    }
}

fn print_spectrum(s: &SpectrumSummary) {
    println!(
        "{}: spectrum, {} channels, {:.2}-{:.2} eV, mean wavelength {:.6} Å, total weight {}",
        s.file, s.channels, s.energy_ev[0], s.energy_ev[1], s.mean_wavelength_a, s.total_weight
    );
}
