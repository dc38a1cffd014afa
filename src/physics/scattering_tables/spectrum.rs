//! Per-shot X-ray spectra in the diffBragg `.lam` form: rows `wavelength_A, weight` (comma or
//! whitespace separated, optional header). Out comes a [`Spectrum`] in increasing energy with
//! non-negative weights; a negative or non-finite weight is an error naming the line.

use super::{TableError, lex_rows, read_text, syntax};
use crate::physics::constants::energy_ev;
use std::path::Path;

/// Spectrum channels: energies (eV, increasing) and their weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Spectrum {
    /// Channel energies in eV, increasing.
    pub energy_ev: Vec<f64>,
    /// Channel weights (photons, arbitrary scale), non-negative.
    pub weight: Vec<f64>,
}

/// Parse a `.lam` spectrum; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Spectrum, TableError> {
    let mut channels = Vec::new();
    for (index, row) in lex_rows(file, text)?.iter().enumerate() {
        if index == 0 && !row.is_numeric() {
            continue;
        }
        let values = row.numbers();
        if !row.is_numeric() || values.len() != 2 {
            return Err(syntax(
                file,
                row.line,
                "expected 'wavelength_A, weight'".into(),
            ));
        }
        if values[0] <= 0.0 || !values[1].is_finite() || values[1] < 0.0 {
            return Err(syntax(
                file,
                row.line,
                format!("need wavelength > 0 and weight >= 0, got {values:?}"),
            ));
        }
        channels.push((energy_ev(values[0]), values[1]));
    }
    channels.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(Spectrum {
        energy_ev: channels.iter().map(|c| c.0).collect(),
        weight: channels.iter().map(|c| c.1).collect(),
    })
}

/// Read a `.lam` spectrum from disk.
pub fn read(path: &Path) -> Result<Spectrum, TableError> {
    parse(&path.display().to_string(), &read_text(path)?)
}
