//! Sasaki (1989) Cromer-Liberman K-edge tables as extracted from CCTBX's `fpk.tbl`: `#` comment
//! lines, then rows `wavelength_A energy_eV fp fdp` on a 0.0001 Angstrom grid. Out comes a
//! [`SpectralTable`] in increasing energy (rows are re-ordered if the file runs in wavelength).
//! These are free-atom values (no XANES); interpolate them linearly in energy.

use super::{SpectralTable, TableError, lex_rows, read_text, syntax};
use std::path::Path;

/// Parse a Sasaki K-edge table; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<SpectralTable, TableError> {
    let mut points = Vec::new();
    for row in lex_rows(file, text)? {
        let values = row.numbers();
        if !row.is_numeric() || values.len() != 4 {
            return Err(syntax(
                file,
                row.line,
                format!(
                    "expected 'wavelength_A energy_eV fp fdp', got {} fields",
                    row.fields.len()
                ),
            ));
        }
        points.push((values[1], values[2], values[3]));
    }
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let energy = points.iter().map(|p| p.0).collect();
    let fp = points.iter().map(|p| p.1).collect();
    let fdp = points.iter().map(|p| p.2).collect();
    SpectralTable::new(file, energy, fp, fdp)
}

/// Read a Sasaki K-edge table from disk.
pub fn read(path: &Path) -> Result<SpectralTable, TableError> {
    parse(&path.display().to_string(), &read_text(path)?)
}
