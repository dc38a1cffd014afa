//! Per-shot X-ray spectra: diffBragg-style `.lam` files (CSV of wavelength in Å and weight).
//!
//! In: the text of a `.lam` file (comma- or whitespace-separated, `#` comments and one optional
//! header line). Out: a [`Spectrum`] of channels with energies in eV. Guarantees: at least one
//! channel, every wavelength finite and positive, every weight finite and non-negative, and a
//! positive total weight; otherwise a [`SpectrumError`] names the file, the line and the field.

use std::path::{Path, PathBuf};

pub use crate::physics::constants::EV_ANGSTROM;

/// Everything that can go wrong reading a spectrum.
#[derive(Debug, thiserror::Error)]
pub enum SpectrumError {
    /// The file could not be read.
    #[error("{path}: cannot read spectrum: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line is not two numbers.
    #[error("{path}:{line}: field `{field}`: {what}")]
    Field {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// `wavelength` or `weight`.
        field: &'static str,
        /// What is wrong with it.
        what: String,
    },
    /// No channel, or all weights zero.
    #[error("{path}: {what}")]
    Empty {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: &'static str,
    },
}

/// A polychromatic spectrum: channels of wavelength (Å) with relative weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Spectrum {
    /// Wavelength of each channel, Å.
    pub wavelength_a: Vec<f64>,
    /// Relative weight of each channel (not normalized; see [`Spectrum::normalized_weights`]).
    pub weight: Vec<f64>,
}

impl Spectrum {
    /// A single-channel spectrum at the given wavelength (Å).
    pub fn monochromatic(wavelength_a: f64) -> Self {
        Spectrum {
            wavelength_a: vec![wavelength_a],
            weight: vec![1.0],
        }
    }

    /// Channel energies in eV.
    pub fn energy_ev(&self) -> Vec<f64> {
        self.wavelength_a.iter().map(|w| EV_ANGSTROM / w).collect()
    }

    /// Weights scaled to sum to one.
    pub fn normalized_weights(&self) -> Vec<f64> {
        let total: f64 = self.weight.iter().sum();
        self.weight.iter().map(|w| w / total).collect()
    }

    /// Weighted mean wavelength, Å.
    pub fn mean_wavelength_a(&self) -> f64 {
        let total: f64 = self.weight.iter().sum();
        self.wavelength_a
            .iter()
            .zip(&self.weight)
            .map(|(l, w)| l * w)
            .sum::<f64>()
            / total
    }
}

/// Reads a `.lam` spectrum file.
pub fn read_spectrum(path: &Path) -> Result<Spectrum, SpectrumError> {
    let text = std::fs::read_to_string(path).map_err(|source| SpectrumError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_spectrum(&text, path)
}

/// Parses the text of a `.lam` file; `path` is used only in error messages.
pub fn parse_spectrum(text: &str, path: &Path) -> Result<Spectrum, SpectrumError> {
    let mut spectrum = Spectrum {
        wavelength_a: Vec::new(),
        weight: Vec::new(),
    };
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|f| !f.is_empty());
        let first = fields.next().unwrap_or("");
        let is_header = spectrum.wavelength_a.is_empty() && first.parse::<f64>().is_err();
        if is_header {
            continue;
        }
        let field_error = |field, what: String| SpectrumError::Field {
            path: path.to_path_buf(),
            line: i + 1,
            field,
            what,
        };
        let wavelength = parse_number(first).map_err(|w| field_error("wavelength", w))?;
        let weight =
            parse_number(fields.next().unwrap_or("")).map_err(|w| field_error("weight", w))?;
        if wavelength <= 0.0 {
            return Err(field_error(
                "wavelength",
                format!("{wavelength} Å is not positive"),
            ));
        }
        if weight < 0.0 {
            return Err(field_error("weight", format!("{weight} is negative")));
        }
        spectrum.wavelength_a.push(wavelength);
        spectrum.weight.push(weight);
    }
    check_nonempty(spectrum, path)
}

fn parse_number(field: &str) -> Result<f64, String> {
    if field.is_empty() {
        return Err("missing".to_string());
    }
    let value: f64 = field
        .parse()
        .map_err(|_| format!("`{field}` is not a number"))?;
    if !value.is_finite() {
        return Err(format!("`{field}` is not finite"));
    }
    Ok(value)
}

fn check_nonempty(spectrum: Spectrum, path: &Path) -> Result<Spectrum, SpectrumError> {
    let empty = |what| SpectrumError::Empty {
        path: path.to_path_buf(),
        what,
    };
    if spectrum.weight.is_empty() {
        return Err(empty("no spectrum channels"));
    }
    if spectrum.weight.iter().sum::<f64>() <= 0.0 {
        return Err(empty("all spectrum weights are zero"));
    }
    Ok(spectrum)
}

/// Writes a spectrum in diffBragg's `.lam` layout (`# wavelengths, weights` header, CSV).
pub fn write_spectrum(spectrum: &Spectrum, path: &Path) -> std::io::Result<()> {
    use std::fmt::Write as _;
    let mut text = String::from("# wavelengths, weights\n");
    for (l, w) in spectrum.wavelength_a.iter().zip(&spectrum.weight) {
        // `{:e}` of f64 prints the shortest representation that parses back exactly.
        let _ = writeln!(text, "{l:e},{w:e}");
    }
    std::fs::write(path, text)
}
