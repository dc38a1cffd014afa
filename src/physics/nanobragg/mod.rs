//! nanoBragg as a library: turn its command line into a `SpotModel` and render the whole image.
//!
//! In: parsed `NanoBraggArgs` and, for `-hkl`, the table's text. Out: a `Simulation` whose `render`
//! gives photons per pixel (row-major, slow·n_fast + fast) and whose SMV encoders give the integer and
//! noise images. Guarantees: nanoBragg's conventions as recorded in the oracle README (MOSFLM/BEAM,
//! misset order, sources averaged with weight 1/n, steps = sources·domains·oversample², P and Ω once per
//! pixel, the water term's double r_e²Φ); anything nanoBragg would do that this does not (tricubic
//! interpolation, a missing `-dispsteps`) is an error, never a silent difference.

pub mod args;
pub mod hkl;
pub mod smv;

use crate::physics::background::water_bracket;
use crate::physics::beam::{Beam, BeamError, dispersion_wavelengths, equal_weight_channels};
use crate::physics::crystal::{CellError, UnitCell, nanobragg_real_space};
use crate::physics::geometry::detector::{DetectorError, MosflmDetector, Panel};
use crate::physics::geometry::{Mat3, norm};
use crate::physics::mosaic::MosaicDomains;
use crate::physics::polarization::Polarization;
use crate::physics::spot::{ConstantF, Region, SpotError, SpotModel, render};
use args::NanoBraggArgs;
use hkl::{HklError, HklTable};
use thiserror::Error;

/// Why a nanoBragg run could not be set up.
#[derive(Debug, Error, PartialEq)]
pub enum NanoBraggError {
    /// Bad command line.
    #[error(transparent)]
    Args(#[from] args::ArgError),
    /// Bad detector.
    #[error(transparent)]
    Detector(#[from] DetectorError),
    /// Bad cell.
    #[error(transparent)]
    Cell(#[from] CellError),
    /// Bad beam.
    #[error(transparent)]
    Beam(#[from] BeamError),
    /// Bad HKL file.
    #[error(transparent)]
    Hkl(#[from] HklError),
    /// A required option is missing or a combination is not supported.
    #[error("{0}")]
    Unsupported(String),
}

/// A ready-to-render nanoBragg image.
#[derive(Debug, Clone)]
pub struct Simulation {
    /// The spot model (|F|² comes from `hkl` or `default_f`).
    pub model: SpotModel,
    /// The `-hkl` table, if any.
    pub hkl: Option<HklTable>,
    /// `-default_F`.
    pub default_f: f64,
    /// nanoBragg's steps = sources · domains · oversample².
    pub steps: usize,
    /// Things worth telling the user (e.g. the automatic oversample).
    pub notes: Vec<String>,
}

/// nanoBragg's automatic oversample: ceil(3 · max_axis(N·|a|) / (λ0 · distance / pixel)).
fn auto_oversample(real_space_m: &[[f64; 3]; 3], n_cells: [f64; 3], args: &NanoBraggArgs) -> usize {
    let size = (0..3)
        .map(|i| norm(real_space_m[i]) * n_cells[i])
        .fold(0.0, f64::max);
    // nanoBragg's operation order: an exact tie (case gauss_oversample: 3·800 Å / 600 Å) rounds up to 5.
    let reciprocal_pixel_m =
        args.lambda_a * 1e-10 * (args.distance_mm * 1e-3) / (args.pixel_mm * 1e-3);
    ((3.0 * size / reciprocal_pixel_m).ceil() as usize).max(1)
}

/// The crystal basis from `-cell` and `-misset`.
fn real_space(args: &NanoBraggArgs) -> Result<Mat3, NanoBraggError> {
    let c = args.cell.ok_or_else(|| {
        NanoBraggError::Unsupported("-cell a b c alpha beta gamma is required".into())
    })?;
    let cell = UnitCell::new([c[0], c[1], c[2]], [c[3], c[4], c[5]])?;
    Ok(nanobragg_real_space(&cell, args.misset_deg))
}

/// The `-hkl` table, refusing the N ≤ 2 case where nanoBragg would interpolate.
fn hkl_table(
    args: &NanoBraggArgs,
    hkl: Option<(&str, &str)>,
) -> Result<Option<HklTable>, NanoBraggError> {
    let Some((name, text)) = hkl else {
        return Ok(None);
    };
    if args.n_cells.iter().any(|&n| n <= 2.0) && !args.nointerpolate {
        return Err(NanoBraggError::Unsupported(
            "with some N <= 2 nanoBragg interpolates F tricubically, which spreadc does not; pass -nointerpolate".into(),
        ));
    }
    Ok(Some(HklTable::parse(name, text, args.default_f)?))
}

/// The beam: nanoBragg's source list, Kahn factor and fluence.
fn beam(args: &NanoBraggArgs) -> Result<Beam, NanoBraggError> {
    let dispsteps = match (args.dispsteps, args.dispersion_pct) {
        (Some(n), _) => n,
        (None, 0.0) => 1,
        _ => {
            return Err(NanoBraggError::Unsupported(
                "-dispersion needs -dispsteps".into(),
            ));
        }
    };
    let wavelengths = dispersion_wavelengths(args.lambda_a, args.dispersion_pct, dispsteps)?;
    let mut beam = Beam::nanobragg(equal_weight_channels(&wavelengths)?, args.kahn);
    if let Some(f) = args.fluence {
        beam.fluence = f;
    }
    Ok(beam)
}

/// Mosaic domains for `-mosaic`/`-mosaic_dom`/`-mosaic_seed` (with a note on how they differ).
fn domains(args: &NanoBraggArgs, notes: &mut Vec<String>) -> MosaicDomains {
    match args.mosaic {
        (spread, n, seed) if spread > 0.0 && n > 1 => {
            notes.push(format!(
                "-mosaic {spread}: {n} domains with Gaussian tilts of {spread} deg rms per axis from seed {seed}; \
                 nanoBragg draws its domains differently, so images agree in distribution only"
            ));
            MosaicDomains::isotropic(spread, n, seed, false)
        }
        _ => MosaicDomains::single(),
    }
}

impl Simulation {
    /// Build from parsed arguments; `hkl` is (file name, text) when `-hkl` was given.
    pub fn from_args(
        args: &NanoBraggArgs,
        hkl: Option<(&str, &str)>,
    ) -> Result<Self, NanoBraggError> {
        let real_space_m = real_space(args)?;
        let table = hkl_table(args, hkl)?;
        let beam = beam(args)?;
        let panel = Panel::mosflm(&MosflmDetector {
            distance_mm: args.distance_mm,
            pixel_mm: args.pixel_mm,
            n_fast: args.detpixels[0],
            n_slow: args.detpixels[1],
            xbeam_mm: args.beam_center_mm[0],
            ybeam_mm: args.beam_center_mm[1],
        })?;
        let mut notes = Vec::new();
        if args
            .cell
            .is_some_and(|c| c[3..].iter().all(|&angle| angle != 90.0))
        {
            notes.push(
                "triclinic cell: nanoBragg builds these differently (its vectors differ by ~1e-3 A from \
                 the documented construction used here), so images may differ slightly"
                    .into(),
            );
        }
        let oversample = args.oversample.unwrap_or_else(|| {
            let n = auto_oversample(&real_space_m, args.n_cells, args);
            notes.push(format!(
                "oversample not given: using nanoBragg's recommended {n}"
            ));
            n
        });
        let domains = domains(args, &mut notes);
        let steps = beam.channels.len() * domains.len() * oversample * oversample;
        let polarization = if args.nopolar {
            Polarization::disabled()
        } else {
            Polarization::new(beam.incident, beam.polar_vector, beam.kahn)
        };
        // nanoBragg adds I_bg once per pixel inside the bracket it divides by steps.
        let background = water_bracket(args.water_um, beam.fluence) / steps as f64;
        let model = SpotModel {
            panel,
            beam,
            polarization,
            real_space_m,
            rotation: [0.0; 3],
            domains,
            shape: args.shape,
            n_cells: args.n_cells,
            oversample,
            scale: 1.0,
            background,
        };
        Ok(Self {
            model,
            hkl: table,
            default_f: args.default_f,
            steps,
            notes,
        })
    }

    /// Photons per pixel over the whole detector (double precision).
    pub fn render(&self) -> Result<Vec<f64>, SpotError> {
        let region = Region::full(&self.model.panel);
        let mut out = vec![0.0; region.len()];
        match &self.hkl {
            Some(t) => render(&self.model, t, &region, &mut out)?,
            None => render(&self.model, &ConstantF(self.default_f), &region, &mut out)?,
        }
        Ok(out)
    }

    /// The `-floatfile` bytes: float32 little-endian, no header.
    pub fn float_file(image: &[f64]) -> Vec<u8> {
        image
            .iter()
            .flat_map(|&v| (v as f32).to_le_bytes())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim(argv: &str) -> Result<Simulation, NanoBraggError> {
        let a = args::parse(
            &argv
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>(),
        )?;
        Simulation::from_args(&a, None)
    }

    #[test]
    fn automatic_oversample_matches_the_oracle_readme() {
        // README: nanoBragg would have picked 2 for gauss_mono and 5 for gauss_oversample.
        let g = sim("-cell 50 50 50 90 90 90 -misset 10 20 30 -N 10 -gauss_xtal -lambda 1 -distance 100 -pixel 0.1 -detpixels 128").unwrap();
        assert_eq!(g.model.oversample, 2);
        let h = sim("-cell 40 55 70 90 90 90 -misset 5 -12 33 -N 6 -lambda 1.3 -distance 80 -pixel 0.1 -detpixels 200").unwrap();
        assert_eq!(h.model.oversample, 2);
        let e = sim("-cell 40 40 40 90 90 90 -misset 0 45 10 -N 10 -lambda 1.89 -distance 60 -pixel 0.11 -detpixels 128").unwrap();
        assert_eq!(e.model.oversample, 2);
        let o = sim("-cell 60 70 80 90 105 90 -misset 10 20 30 -N 10 -lambda 1 -distance 60 -pixel 0.1 -detpixels 256").unwrap();
        assert_eq!(o.model.oversample, 5);
        assert_eq!(o.steps, 25);
    }

    #[test]
    fn unsupported_combinations_are_errors() {
        assert!(matches!(sim("-N 5"), Err(NanoBraggError::Unsupported(_))));
        assert!(matches!(
            sim("-cell 50 50 50 90 90 90 -dispersion 1"),
            Err(NanoBraggError::Unsupported(_))
        ));
        let a = args::parse(
            &["-cell", "50", "50", "50", "90", "90", "90", "-N", "2"].map(String::from),
        )
        .unwrap();
        let e = Simulation::from_args(&a, Some(("t.hkl", "0 0 0 1\n")));
        assert!(matches!(e, Err(NanoBraggError::Unsupported(_))));
    }
}
