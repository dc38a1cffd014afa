//! The nanoBragg command line as data: every option `spreadc nanobragg` accepts, in nanoBragg's units.
//!
//! In: the argument list after `nanobragg` (single-dash options, several taking 3 or 6 values).
//! Out: `NanoBraggArgs`, or an `ArgError` naming the option. Guarantees: an unknown option, a missing or
//! non-numeric value is an error (nanoBragg silently ignores them, e.g. `-tophat_xtal`); options are
//! matched exactly, not by substring.
//!
//! A small hand parser rather than clap: nanoBragg's options are single-dash long names
//! (`-cell 50 50 50 90 90 90`, `-N 5`) with fixed multi-value arity, which clap's short/long model
//! cannot express without renaming them, and drop-in compatibility needs the names unchanged.

use thiserror::Error;

/// Why a nanoBragg command line was refused.
#[derive(Debug, Error, PartialEq)]
pub enum ArgError {
    /// An option nanoBragg-in-spread does not know.
    #[error("unknown option `{0}` (see `spreadc nanobragg -help` for the supported options)")]
    Unknown(String),
    /// An option given fewer values than it takes.
    #[error("option `{option}` takes {expected} value(s), got {got}")]
    MissingValue {
        /// The option.
        option: String,
        /// How many it takes.
        expected: usize,
        /// How many followed it.
        got: usize,
    },
    /// A value that is not a number.
    #[error("option `{option}`: `{value}` is not a number")]
    NotANumber {
        /// The option.
        option: String,
        /// The text given.
        value: String,
    },
    /// A value out of its valid range.
    #[error("option `{option}`: {reason}")]
    OutOfRange {
        /// The option.
        option: String,
        /// What is wrong.
        reason: String,
    },
    /// A positional argument where an option was expected.
    #[error("unexpected argument `{0}`: nanoBragg options start with `-`")]
    Positional(String),
}

/// Lattice shape flags.
pub use crate::physics::lattice::Shape;

/// Parsed nanoBragg options (units as on the command line: Å, mm, degrees, µm, %).
#[derive(Debug, Clone, PartialEq)]
pub struct NanoBraggArgs {
    /// `-cell a b c α β γ`.
    pub cell: Option<[f64; 6]>,
    /// `-misset m1 m2 m3` (degrees).
    pub misset_deg: [f64; 3],
    /// `-default_F`.
    pub default_f: f64,
    /// `-hkl FILE`.
    pub hkl: Option<String>,
    /// `-N`, `-Na`, `-Nb`, `-Nc`.
    pub n_cells: [f64; 3],
    /// Shape flag.
    pub shape: Shape,
    /// `-lambda` (Å), or from `-energy` (eV).
    pub lambda_a: f64,
    /// `-dispersion` (%).
    pub dispersion_pct: f64,
    /// `-dispsteps`.
    pub dispsteps: Option<usize>,
    /// `-distance` (mm).
    pub distance_mm: f64,
    /// `-pixel` (mm).
    pub pixel_mm: f64,
    /// Pixels along fast and slow (`-detpixels`, `-detpixels_f`, `-detpixels_s`).
    pub detpixels: [usize; 2],
    /// `-Xbeam`, `-Ybeam` (mm).
    pub beam_center_mm: [Option<f64>; 2],
    /// `-oversample`; `None` = nanoBragg's automatic choice.
    pub oversample: Option<usize>,
    /// `-polar` Kahn factor.
    pub kahn: f64,
    /// `-nopolar`.
    pub nopolar: bool,
    /// `-water` (µm).
    pub water_um: f64,
    /// `-fluence` (photons/m²).
    pub fluence: Option<f64>,
    /// `-mosaic` spread (degrees) and `-mosaic_dom`, `-mosaic_seed`.
    pub mosaic: (f64, usize, u64),
    /// `-floatfile`.
    pub floatfile: String,
    /// `-intfile`.
    pub intfile: String,
    /// `-noisefile`.
    pub noisefile: String,
    /// `-nonoise`.
    pub nonoise: bool,
    /// `-seed` (nanoBragg prints it negated).
    pub seed: u64,
    /// `-readout_noise` (ADU rms).
    pub readout_noise: f64,
    /// `-calibration_noise` (%).
    pub calibration_pct: f64,
    /// `-adc` offset (ADU).
    pub adc_offset: f64,
    /// `-scale` of the integer image (0 = autoscale to 55000 at the maximum).
    pub intfile_scale: f64,
    /// `-nointerpolate` given.
    pub nointerpolate: bool,
}

impl Default for NanoBraggArgs {
    fn default() -> Self {
        Self {
            cell: None,
            misset_deg: [0.0; 3],
            default_f: 0.0,
            hkl: None,
            n_cells: [1.0; 3],
            shape: Shape::Square,
            lambda_a: 1.0,
            dispersion_pct: 0.0,
            dispsteps: None,
            distance_mm: 100.0,
            pixel_mm: 0.1,
            detpixels: [1024, 1024],
            beam_center_mm: [None, None],
            oversample: None,
            kahn: 0.0,
            nopolar: false,
            water_um: 0.0,
            fluence: None,
            mosaic: (0.0, 1, 1234567),
            floatfile: "floatimage.bin".into(),
            intfile: "intimage.img".into(),
            noisefile: "noiseimage.img".into(),
            nonoise: false,
            seed: 1,
            readout_noise: 0.0,
            calibration_pct: 0.0,
            adc_offset: 40.0,
            intfile_scale: 0.0,
            nointerpolate: false,
        }
    }
}

/// Flags that take no value and change nothing in this implementation (output niceties).
const IGNORED_FLAGS: [&str; 3] = ["-nopgm", "-noprogress", "-printout"];

/// Every option with its number of values, for parsing and `-help`.
pub const OPTIONS: [(&str, usize); 42] = [
    ("-cell", 6),
    ("-misset", 3),
    ("-default_F", 1),
    ("-hkl", 1),
    ("-N", 1),
    ("-Na", 1),
    ("-Nb", 1),
    ("-Nc", 1),
    ("-square_xtal", 0),
    ("-gauss_xtal", 0),
    ("-round_xtal", 0),
    ("-tophat_spots", 0),
    ("-lambda", 1),
    ("-energy", 1),
    ("-dispersion", 1),
    ("-dispsteps", 1),
    ("-distance", 1),
    ("-pixel", 1),
    ("-detpixels", 1),
    ("-detpixels_f", 1),
    ("-detpixels_s", 1),
    ("-Xbeam", 1),
    ("-Ybeam", 1),
    ("-oversample", 1),
    ("-polar", 1),
    ("-nopolar", 0),
    ("-water", 1),
    ("-fluence", 1),
    ("-mosaic", 1),
    ("-mosaic_dom", 1),
    ("-mosaic_seed", 1),
    ("-floatfile", 1),
    ("-intfile", 1),
    ("-noisefile", 1),
    ("-nonoise", 0),
    ("-seed", 1),
    ("-readout_noise", 1),
    ("-calibration_noise", 1),
    ("-adc", 1),
    ("-scale", 1),
    ("-nointerpolate", 0),
    ("-nopgm", 0),
];

fn number(option: &str, text: &str) -> Result<f64, ArgError> {
    text.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| ArgError::NotANumber {
            option: option.into(),
            value: text.into(),
        })
}

fn count(option: &str, text: &str) -> Result<usize, ArgError> {
    let v = number(option, text)?;
    if v < 1.0 || v.fract() != 0.0 {
        return Err(ArgError::OutOfRange {
            option: option.into(),
            reason: format!("{text} is not a positive integer"),
        });
    }
    Ok(v as usize)
}

fn positive(option: &str, text: &str) -> Result<f64, ArgError> {
    let v = number(option, text)?;
    if v <= 0.0 {
        return Err(ArgError::OutOfRange {
            option: option.into(),
            reason: format!("{text} must be positive"),
        });
    }
    Ok(v)
}

/// Parse a nanoBragg argument list (without the program name).
pub fn parse(argv: &[String]) -> Result<NanoBraggArgs, ArgError> {
    let mut args = NanoBraggArgs::default();
    let mut i = 0;
    while i < argv.len() {
        let option = argv[i].as_str();
        if !option.starts_with('-') {
            return Err(ArgError::Positional(option.into()));
        }
        let arity = if IGNORED_FLAGS.contains(&option) {
            0
        } else {
            OPTIONS
                .iter()
                .find(|(name, _)| *name == option)
                .map(|&(_, n)| n)
                .ok_or_else(|| ArgError::Unknown(option.into()))?
        };
        let values = &argv[(i + 1).min(argv.len())..(i + 1 + arity).min(argv.len())];
        if values.len() < arity {
            return Err(ArgError::MissingValue {
                option: option.into(),
                expected: arity,
                got: values.len(),
            });
        }
        apply(&mut args, option, values)?;
        i += 1 + arity;
    }
    Ok(args)
}

fn apply(args: &mut NanoBraggArgs, option: &str, v: &[String]) -> Result<(), ArgError> {
    if apply_crystal(args, option, v)? || apply_beam_detector(args, option, v)? {
        return Ok(());
    }
    apply_output(args, option, v)
}

/// Crystal options; false when `option` is not one of them.
fn apply_crystal(args: &mut NanoBraggArgs, option: &str, v: &[String]) -> Result<bool, ArgError> {
    let num = |k: usize| number(option, &v[k]);
    match option {
        "-cell" => {
            let mut c = [0.0; 6];
            for (k, slot) in c.iter_mut().enumerate() {
                *slot = num(k)?;
            }
            args.cell = Some(c);
        }
        "-misset" => args.misset_deg = [num(0)?, num(1)?, num(2)?],
        "-default_F" => args.default_f = num(0)?,
        "-hkl" => args.hkl = Some(v[0].clone()),
        "-N" => args.n_cells = [positive(option, &v[0])?; 3],
        "-Na" => args.n_cells[0] = positive(option, &v[0])?,
        "-Nb" => args.n_cells[1] = positive(option, &v[0])?,
        "-Nc" => args.n_cells[2] = positive(option, &v[0])?,
        "-square_xtal" => args.shape = Shape::Square,
        "-gauss_xtal" => args.shape = Shape::Gauss,
        "-round_xtal" => args.shape = Shape::Round,
        "-tophat_spots" => args.shape = Shape::Tophat,
        _ => return Ok(false),
    }
    Ok(true)
}

/// Beam, detector and sampling options; false when `option` is not one of them.
fn apply_beam_detector(
    args: &mut NanoBraggArgs,
    option: &str,
    v: &[String],
) -> Result<bool, ArgError> {
    let num = |k: usize| number(option, &v[k]);
    match option {
        "-lambda" => args.lambda_a = positive(option, &v[0])?,
        "-energy" => {
            args.lambda_a = crate::physics::beam::EV_ANGSTROM_NANOBRAGG / positive(option, &v[0])?
        }
        "-dispersion" => args.dispersion_pct = num(0)?,
        "-dispsteps" => args.dispsteps = Some(count(option, &v[0])?),
        "-distance" => args.distance_mm = positive(option, &v[0])?,
        "-pixel" => args.pixel_mm = positive(option, &v[0])?,
        "-detpixels" => args.detpixels = [count(option, &v[0])?; 2],
        "-detpixels_f" => args.detpixels[0] = count(option, &v[0])?,
        "-detpixels_s" => args.detpixels[1] = count(option, &v[0])?,
        "-Xbeam" => args.beam_center_mm[0] = Some(num(0)?),
        "-Ybeam" => args.beam_center_mm[1] = Some(num(0)?),
        "-oversample" => args.oversample = Some(count(option, &v[0])?),
        "-polar" => args.kahn = num(0)?,
        "-nopolar" => args.nopolar = true,
        "-water" => args.water_um = num(0)?,
        "-fluence" => args.fluence = Some(positive(option, &v[0])?),
        "-mosaic" => args.mosaic.0 = num(0)?,
        "-mosaic_dom" => args.mosaic.1 = count(option, &v[0])?,
        "-mosaic_seed" => args.mosaic.2 = num(0)?.abs() as u64,
        _ => return Ok(false),
    }
    Ok(true)
}

/// Output and noise options (value-less output flags fall through and change nothing).
fn apply_output(args: &mut NanoBraggArgs, option: &str, v: &[String]) -> Result<(), ArgError> {
    let num = |k: usize| number(option, &v[k]);
    match option {
        "-floatfile" => args.floatfile = v[0].clone(),
        "-intfile" => args.intfile = v[0].clone(),
        "-noisefile" => args.noisefile = v[0].clone(),
        "-nonoise" => args.nonoise = true,
        "-seed" => args.seed = num(0)?.abs() as u64,
        "-readout_noise" => args.readout_noise = num(0)?,
        "-calibration_noise" => args.calibration_pct = num(0)?,
        "-adc" => args.adc_offset = num(0)?,
        "-scale" => args.intfile_scale = num(0)?,
        "-nointerpolate" => args.nointerpolate = true,
        _ => {} // -nopgm, -noprogress, -printout
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_a_case_command_line() {
        let a = parse(&argv("-cell 50 50 50 90 90 90 -misset 10 20 30 -default_F 100 -N 5 -square_xtal -lambda 1 -distance 100 -pixel 0.1 -detpixels 128 -oversample 1 -polar 0 -floatfile x.f32 -intfile s.img -nopgm -noprogress -nonoise")).unwrap();
        assert_eq!(a.cell, Some([50.0, 50.0, 50.0, 90.0, 90.0, 90.0]));
        assert_eq!(a.n_cells, [5.0; 3]);
        assert_eq!(a.detpixels, [128, 128]);
        assert_eq!(a.oversample, Some(1));
        assert!(a.nonoise);
    }

    #[test]
    fn errors_name_the_option() {
        assert_eq!(
            parse(&argv("-tophat_xtal")),
            Err(ArgError::Unknown("-tophat_xtal".into()))
        );
        assert!(matches!(
            parse(&argv("-cell 1 2 3")),
            Err(ArgError::MissingValue { .. })
        ));
        assert!(matches!(
            parse(&argv("-N five")),
            Err(ArgError::NotANumber { .. })
        ));
        assert!(matches!(
            parse(&argv("-detpixels 0")),
            Err(ArgError::OutOfRange { .. })
        ));
        assert!(matches!(
            parse(&argv("stray")),
            Err(ArgError::Positional(_))
        ));
    }
}
