//! MTZ output of refined structure factors (CCP4 merged reflection files).
//!
//! In: an [`Mtz`] (cell, space group with its symmetry operators, Miller indices and labelled
//! columns such as F/SIGF, I/SIGI or anomalous pairs F(+)/SIGF(+)/F(-)/SIGF(-)). Out: the bytes
//! of an MTZ file: `MTZ ` stamp, header word offset, little-endian machine stamp, reflection
//! records of f32 from word 21, then 80-character header records (VERS, TITLE, NCOL, CELL, SORT,
//! SYMINF, SYMM, RESO, VALM NAN, COLUMN, NDIF, PROJECT, CRYSTAL, DATASET, DCELL, DWAVEL, END)
//! and `MTZENDOFHEADERS`. Missing values are NaN (VALM NAN). Written by hand because no Rust
//! crate writes MTZ; the layout follows the CCP4 MTZ format description and is checked by
//! reading our files with gemmi (tests/python/read_mtz_gemmi.py).

use std::fmt::Write as _;
use std::path::Path;

/// A space group as MTZ records it.
#[derive(Debug, Clone, PartialEq)]
pub struct MtzSpaceGroup {
    /// International Tables number.
    pub number: u32,
    /// Hermann-Mauguin symbol, e.g. `P 21 21 21`.
    pub name: String,
    /// Point group symbol, e.g. `PG222`.
    pub point_group: String,
    /// Lattice centring letter (`P`, `C`, `I`, `F`, `R`, ...).
    pub lattice: char,
    /// Symmetry operators as x,y,z triplets (identity first); primitive ones first.
    pub operators: Vec<String>,
    /// How many of `operators` are primitive.
    pub primitive_operators: usize,
}

/// One data column: MTZ label, MTZ type letter and one value per reflection.
#[derive(Debug, Clone, PartialEq)]
pub struct MtzColumn {
    /// Label, e.g. `F`, `SIGF`, `F(+)`.
    pub label: String,
    /// MTZ type: F amplitude, Q sigma, J intensity, G/L anomalous F/sigma, K/M anomalous I/sigma.
    pub kind: char,
    /// Values (NaN = missing).
    pub values: Vec<f32>,
}

/// A merged reflection file.
#[derive(Debug, Clone, PartialEq)]
pub struct Mtz {
    /// Title line.
    pub title: String,
    /// a, b, c (Å), alpha, beta, gamma (degrees).
    pub cell: [f64; 6],
    /// Space group.
    pub space_group: MtzSpaceGroup,
    /// Wavelength of the dataset, Å.
    pub wavelength_a: f64,
    /// Project, crystal and dataset names.
    pub names: [String; 3],
    /// Miller indices.
    pub hkl: Vec<[i32; 3]>,
    /// Data columns (after H, K, L).
    pub columns: Vec<MtzColumn>,
}

/// An MTZ that cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum MtzError {
    /// A column's length differs from the number of reflections.
    #[error("MTZ column `{label}` has {found} values for {expected} reflections")]
    ColumnLength {
        /// The column.
        label: String,
        /// Reflections.
        expected: usize,
        /// Values.
        found: usize,
    },
    /// A label or name does not fit an 80-character record.
    #[error("MTZ field `{field}`: `{value}` is longer than {max} characters or contains spaces")]
    Label {
        /// Which field.
        field: &'static str,
        /// The value.
        value: String,
        /// Its limit.
        max: usize,
    },
    /// The file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl Mtz {
    /// 1/d² of a reflection from the cell (reciprocal metric tensor).
    pub fn inverse_d_squared(&self, hkl: [i32; 3]) -> f64 {
        let [a, b, c, al, be, ga] = self.cell;
        let (ca, cb, cg) = (
            al.to_radians().cos(),
            be.to_radians().cos(),
            ga.to_radians().cos(),
        );
        let (sa, sb, sg) = (
            al.to_radians().sin(),
            be.to_radians().sin(),
            ga.to_radians().sin(),
        );
        let v = a * b * c * (1.0 - ca * ca - cb * cb - cg * cg + 2.0 * ca * cb * cg).sqrt();
        let (h, k, l) = (f64::from(hkl[0]), f64::from(hkl[1]), f64::from(hkl[2]));
        let s11 = (b * c * sa).powi(2);
        let s22 = (a * c * sb).powi(2);
        let s33 = (a * b * sg).powi(2);
        let s12 = a * b * c * c * (ca * cb - cg);
        let s23 = a * a * b * c * (cb * cg - ca);
        let s13 = a * b * b * c * (cg * ca - cb);
        (s11 * h * h + s22 * k * k + s33 * l * l + 2.0 * (s12 * h * k + s23 * k * l + s13 * h * l))
            / (v * v)
    }

    fn check(&self) -> Result<(), MtzError> {
        for col in &self.columns {
            if col.values.len() != self.hkl.len() {
                return Err(MtzError::ColumnLength {
                    label: col.label.clone(),
                    expected: self.hkl.len(),
                    found: col.values.len(),
                });
            }
            check_label("column label", &col.label, 30)?;
        }
        for name in &self.names {
            check_label("project/crystal/dataset name", name, 64)?;
        }
        Ok(())
    }
}

fn check_label(field: &'static str, value: &str, max: usize) -> Result<(), MtzError> {
    if value.is_empty()
        || value.len() > max
        || value.contains(char::is_whitespace)
        || !value.is_ascii()
    {
        return Err(MtzError::Label {
            field,
            value: value.to_string(),
            max,
        });
    }
    Ok(())
}

/// The MTZ file bytes.
pub fn mtz_to_bytes(mtz: &Mtz) -> Result<Vec<u8>, MtzError> {
    mtz.check()?;
    let ncol = 3 + mtz.columns.len();
    let nref = mtz.hkl.len();
    let mut out = Vec::with_capacity(80 + 4 * ncol * nref + 80 * (30 + ncol));
    out.extend_from_slice(b"MTZ ");
    // Header position in 4-byte words, 1-based: after the 20-word preamble and the data.
    let header_word = 21 + ncol * nref;
    out.extend_from_slice(&(header_word as i32).to_le_bytes());
    // Machine stamp 0x4441: IEEE little-endian reals and integers, ASCII characters.
    out.extend_from_slice(&[0x44, 0x41, 0x00, 0x00]);
    out.resize(80, 0);
    for (i, hkl) in mtz.hkl.iter().enumerate() {
        hkl.iter()
            .for_each(|&x| out.extend_from_slice(&(x as f32).to_le_bytes()));
        for col in &mtz.columns {
            out.extend_from_slice(&col.values[i].to_le_bytes());
        }
    }
    for record in header_records(mtz) {
        out.extend_from_slice(format!("{record:<80.80}").as_bytes());
    }
    Ok(out)
}

fn header_records(mtz: &Mtz) -> Vec<String> {
    let mut r = vec![
        "VERS MTZ:V1.1".to_string(),
        format!("TITLE {}", mtz.title),
        format!(
            "NCOL {:8} {:12} {:8}",
            3 + mtz.columns.len(),
            mtz.hkl.len(),
            0
        ),
        format!("CELL {}", cell_text(&mtz.cell)),
        // Reflections are written in the caller's order, so no sort order is claimed.
        "SORT    0   0   0   0   0".to_string(),
    ];
    r.extend(symmetry_records(&mtz.space_group));
    let (lo, hi) = resolution_range(mtz);
    r.push(format!("RESO {lo:.8} {hi:.8}"));
    r.push("VALM NAN".to_string());
    let hkl_col = |k: usize| mtz.hkl.iter().map(move |h| h[k] as f32);
    for (k, label) in ["H", "K", "L"].iter().enumerate() {
        r.push(column_record(label, 'H', hkl_col(k), 0));
    }
    for col in &mtz.columns {
        r.push(column_record(
            &col.label,
            col.kind,
            col.values.iter().copied(),
            1,
        ));
    }
    r.extend(dataset_records(mtz));
    r.push("END".to_string());
    r.push("MTZENDOFHEADERS".to_string());
    r
}

fn cell_text(cell: &[f64; 6]) -> String {
    cell.iter().fold(String::new(), |mut s, v| {
        let _ = write!(s, " {v:9.4}");
        s
    })
}

fn symmetry_records(sg: &MtzSpaceGroup) -> Vec<String> {
    let syminf = format!(
        "SYMINF {:3} {:2} {} {:5} '{}' {}",
        sg.operators.len(),
        sg.primitive_operators,
        sg.lattice,
        sg.number,
        sg.name,
        sg.point_group
    );
    let symm = sg
        .operators
        .iter()
        .map(|op| format!("SYMM {}", op.to_uppercase()));
    std::iter::once(syminf).chain(symm).collect()
}

fn column_record(
    label: &str,
    kind: char,
    values: impl Iterator<Item = f32>,
    dataset: u32,
) -> String {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 0.0) };
    format!("COLUMN {label:<30} {kind} {lo:17.4} {hi:17.4} {dataset:4}")
}

fn dataset_records(mtz: &Mtz) -> Vec<String> {
    let [project, crystal, dataset] = &mtz.names;
    let cell = cell_text(&mtz.cell);
    vec![
        "NDIF        2".to_string(),
        "PROJECT       0 HKL_base".to_string(),
        "CRYSTAL       0 HKL_base".to_string(),
        "DATASET       0 HKL_base".to_string(),
        format!("DCELL         0{cell}"),
        "DWAVEL        0    0.00000".to_string(),
        format!("PROJECT       1 {project}"),
        format!("CRYSTAL       1 {crystal}"),
        format!("DATASET       1 {dataset}"),
        format!("DCELL         1{cell}"),
        format!("DWAVEL        1 {:10.5}", mtz.wavelength_a),
    ]
}

/// Smallest and largest 1/d² over the reflections (0, 0 when there are none).
fn resolution_range(mtz: &Mtz) -> (f64, f64) {
    let values = mtz.hkl.iter().map(|&h| mtz.inverse_d_squared(h));
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if lo.is_finite() { (lo, hi) } else { (0.0, 0.0) }
}

/// Writes an MTZ file.
pub fn write_mtz(mtz: &Mtz, path: &Path) -> Result<(), MtzError> {
    let bytes = mtz_to_bytes(mtz)?;
    std::fs::write(path, bytes).map_err(|source| MtzError::Io {
        path: path.to_path_buf(),
        source,
    })
}
