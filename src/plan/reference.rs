//! Built-in f'/f'' reference curves, by the names models use in `reference_curve("...")`.
//!
//! In: a table name. Out: a [`SpectralTable`] (energy eV, f', f'' in electrons, linear
//! interpolation). Guarantees: the curves are compiled into the binary (no data directory
//! needed); an unknown name is an error listing the known names.

use crate::physics::scattering_tables::{SpectralTable, TableError, sherrell};

const SHERRELL_FE: &str = include_str!("reference/Fe_ox_red_7000_7300.csv");
const SHERRELL_FE_FILE: &str = "Fe_ox_red_7000_7300.csv";

/// Names `table` accepts.
pub const NAMES: [&str; 2] = ["sherrell_fe_ox", "sherrell_fe_red"];

/// The built-in curve called `name`.
pub fn table(name: &str) -> Result<SpectralTable, TableError> {
    let columns = |prefix: &str| {
        let cols = sherrell::parse_columns(SHERRELL_FE_FILE, SHERRELL_FE)?;
        let (fp, fdp) = (format!("{prefix}_fp"), format!("{prefix}_fdp"));
        sherrell::curve(SHERRELL_FE_FILE, &cols, ["energy_eV", &fp, &fdp])
    };
    match name {
        "sherrell_fe_ox" => columns("ox"),
        "sherrell_fe_red" => columns("red"),
        other => Err(TableError::Shape {
            file: other.to_string(),
            message: format!(
                "no built-in reference curve of this name (known: {})",
                NAMES.join(", ")
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sherrell_edges_differ_between_states() {
        let ox = table("sherrell_fe_ox").unwrap();
        let red = table("sherrell_fe_red").unwrap();
        // Verbatim rows of the source file (pf-rd-ox/red_fftkk.out) at 7000 eV, where both agree.
        assert_eq!(ox.at_ev(7000.0).unwrap(), (-3.77698756134, 0.484014822083));
        assert_eq!(red.at_ev(7000.0).unwrap(), (-3.77698756134, 0.484014822083));
        // The reduced edge lies lower in energy, so at 7120 eV its f'' is larger.
        assert!(red.at_ev(7120.0).unwrap().1 > ox.at_ev(7120.0).unwrap().1);
        assert!(table("sherrell_mn").is_err());
    }
}
