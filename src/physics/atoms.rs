//! Atomic models from PDB and mmCIF files (through pdbtbx). In: a file. Out: a [`Crystal`] with
//! the unit cell, the space group and every atom (element, formal charge, occupancy, isotropic B,
//! anisotropic U when given, cartesian and fractional position). All models and alternate
//! conformers are kept with their occupancies, as CCTBX's structure-factor calculation does.
//!
//! PDB records are padded to 80 columns before parsing: pdbtbx rejects short records (the 1BRF
//! file has a DBREF line whose trailing blanks were stripped), and the PDB format defines them
//! as 80 columns wide, so padding changes nothing a record means.

use crate::physics::scattering_tables::normalize_element;
use crate::physics::symmetry::{SpaceGroup, SymmetryError};
use crate::physics::unit_cell::{CellError, UnitCell};
use std::io::BufReader;
use std::path::Path;

/// One atom of the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Atom {
    /// Serial number in the file.
    pub serial: usize,
    /// Atom name, e.g. "CA", "FE".
    pub name: String,
    /// Element symbol, capitalised ("Fe").
    pub element: String,
    /// Formal charge (0 when the file gives none).
    pub charge: i32,
    /// Occupancy.
    pub occupancy: f64,
    /// Isotropic B in Angstrom^2.
    pub b_iso: f64,
    /// Anisotropic U (cartesian, Angstrom^2), when the file gives it.
    pub u_aniso: Option<[[f64; 3]; 3]>,
    /// Position in Angstrom.
    pub cartesian: [f64; 3],
    /// Fractional coordinates.
    pub fractional: [f64; 3],
}

/// A crystal: cell, symmetry and atoms of the asymmetric unit.
#[derive(Debug, Clone)]
pub struct Crystal {
    /// The unit cell.
    pub cell: UnitCell,
    /// The space group.
    pub space_group: SpaceGroup,
    /// All atoms of all models and conformers.
    pub atoms: Vec<Atom>,
    /// Warnings pdbtbx reported on a file it still read.
    pub warnings: Vec<String>,
}

/// Errors reading an atomic model.
#[derive(Debug, thiserror::Error)]
pub enum AtomsError {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Io {
        /// File.
        file: String,
        /// Cause.
        source: std::io::Error,
    },
    /// pdbtbx refused the file.
    #[error("{file}: {}", messages.join("; "))]
    Parse {
        /// File.
        file: String,
        /// pdbtbx's messages.
        messages: Vec<String>,
    },
    /// A required record is missing or unusable.
    #[error("{file}: {message}")]
    Content {
        /// File.
        file: String,
        /// What is missing.
        message: String,
    },
    /// Bad unit cell.
    #[error("{file}: {source}")]
    Cell {
        /// File.
        file: String,
        /// Cause.
        source: CellError,
    },
    /// Unknown space-group symbol.
    #[error("{file}: {source}")]
    Symmetry {
        /// File.
        file: String,
        /// Cause.
        source: SymmetryError,
    },
}

/// Read a PDB (`.pdb`, `.ent`) or mmCIF (`.cif`, `.mmcif`) file.
pub fn read(path: &Path) -> Result<Crystal, AtomsError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| AtomsError::Io {
        file: file.clone(),
        source,
    })?;
    let is_cif = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("cif" | "mmcif")
    );
    parse(&file, &text, is_cif)
}

/// Parse the text of a PDB or mmCIF file; `file` names it in errors.
pub fn parse(file: &str, text: &str, is_cif: bool) -> Result<Crystal, AtomsError> {
    let (format, text, cryst1_group) = if is_cif {
        (pdbtbx::Format::Mmcif, text.to_string(), None)
    } else {
        let (group, text) = take_cryst1_space_group(file, text)?;
        (pdbtbx::Format::Pdb, pad_records(&text), group)
    };
    let mut options = pdbtbx::ReadOptions::new();
    options
        .set_format(format)
        .set_level(pdbtbx::StrictnessLevel::Loose);
    let (pdb, warnings) = options
        .read_raw(BufReader::new(text.as_bytes()))
        .map_err(|errors| AtomsError::Parse {
            file: file.to_string(),
            messages: errors.iter().map(|e| e.to_string()).collect(),
        })?;
    let cell = read_cell(file, &pdb)?;
    let space_group = match cryst1_group {
        Some(group) => group,
        None => read_space_group(file, &pdb)?,
    };
    let atoms = pdb
        .atoms()
        .map(|atom| convert_atom(file, atom, &cell))
        .collect::<Result<Vec<_>, _>>()?;
    if atoms.is_empty() {
        return Err(content(file, "no atoms".into()));
    }
    Ok(Crystal {
        cell,
        space_group,
        atoms,
        warnings: warnings.iter().map(|w| w.to_string()).collect(),
    })
}

/// Every record padded with blanks to 80 columns, except CRYST1: pdbtbx reads its optional Z
/// field (columns 67-70) as a number whenever the line reaches that far.
fn pad_records(text: &str) -> String {
    text.lines()
        .map(|line| {
            if line.starts_with("CRYST1") {
                format!("{line}\n")
            } else {
                format!("{line:<80}\n")
            }
        })
        .collect()
}

/// The space group of the CRYST1 record (columns 56-66), resolved here because pdbtbx 0.12
/// panics on symbols it does not know; pdbtbx is then handed `P 1` in its place.
fn take_cryst1_space_group(
    file: &str,
    text: &str,
) -> Result<(Option<SpaceGroup>, String), AtomsError> {
    let mut group = None;
    let mut out = String::with_capacity(text.len());
    for (number, line) in text.lines().enumerate() {
        match (line.starts_with("CRYST1"), line.get(55..)) {
            (true, Some(tail)) => {
                let symbol = tail.get(..11).unwrap_or(tail).trim();
                let found = SpaceGroup::from_hm(symbol).map_err(|source| AtomsError::Symmetry {
                    file: format!("{file}:{}", number + 1),
                    source,
                })?;
                group = Some(found);
                out += &format!(
                    "{:<55}{:<11}{}\n",
                    &line[..55],
                    "P 1",
                    tail.get(11..).unwrap_or("")
                );
            }
            _ => out += &format!("{line}\n"),
        }
    }
    Ok((group, out))
}

/// A content error.
fn content(file: &str, message: String) -> AtomsError {
    AtomsError::Content {
        file: file.to_string(),
        message,
    }
}

/// The unit cell from CRYST1 / _cell.
fn read_cell(file: &str, pdb: &pdbtbx::PDB) -> Result<UnitCell, AtomsError> {
    let cell = pdb
        .unit_cell
        .as_ref()
        .ok_or_else(|| content(file, "no unit cell (CRYST1 or _cell)".into()))?;
    UnitCell::new(
        [cell.a(), cell.b(), cell.c()],
        [cell.alpha(), cell.beta(), cell.gamma()],
    )
    .map_err(|source| AtomsError::Cell {
        file: file.to_string(),
        source,
    })
}

/// The space group from CRYST1 / _symmetry.
fn read_space_group(file: &str, pdb: &pdbtbx::PDB) -> Result<SpaceGroup, AtomsError> {
    let symmetry = pdb
        .symmetry
        .as_ref()
        .ok_or_else(|| content(file, "no space group (CRYST1 or _symmetry)".into()))?;
    SpaceGroup::from_hm(symmetry.herman_mauguin_symbol()).map_err(|source| AtomsError::Symmetry {
        file: file.to_string(),
        source,
    })
}

/// Our atom from pdbtbx's.
fn convert_atom(file: &str, atom: &pdbtbx::Atom, cell: &UnitCell) -> Result<Atom, AtomsError> {
    let element = atom.element().ok_or_else(|| {
        content(
            file,
            format!(
                "atom {} ({}) has no element",
                atom.serial_number(),
                atom.name()
            ),
        )
    })?;
    let cartesian = [atom.x(), atom.y(), atom.z()];
    Ok(Atom {
        serial: atom.serial_number(),
        name: atom.name().to_string(),
        element: normalize_element(element.symbol()),
        charge: atom.charge() as i32,
        occupancy: atom.occupancy(),
        b_iso: atom.b_factor(),
        u_aniso: atom.anisotropic_temperature_factors(),
        cartesian,
        fractional: cell.fractionalize(cartesian),
    })
}
