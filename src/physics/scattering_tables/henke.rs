//! Henke, Gullikson & Davis (1993) tables (`.nff`): a header line `fe, Z=26, (Energy (eV),f1,f2)`
//! then rows `E f1 f2`. Out comes a [`HenkeTable`] with f' = f1 - Z and f'' = f2 (the CCTBX
//! convention: f1 already holds the relativistic Z* correction, which therefore stays in f').
//!
//! Rows whose f1 is -9999 (no value below 29 eV) are skipped and counted in `skipped_rows`.
//! Interpolation is linear in energy (as CCTBX's `henke.table(el).at_ev(E)`), in f64; CCTBX does
//! the same arithmetic in f32, which [`HenkeTable::at_ev_f32`] reproduces bit for bit.
//! Tables for 49 elements (H-Kr and common heavier ones) are embedded; others load from a file.

use super::{Field, SpectralTable, TableError, lex_rows, normalize_element, read_text, syntax};
use std::path::Path;

/// Marker of a missing f1 value in the Henke files.
const MISSING_F1: f64 = -9999.0;

/// A Henke table of one element.
#[derive(Debug, Clone)]
pub struct HenkeTable {
    /// Element symbol, e.g. "Fe".
    pub element: String,
    /// Atomic number.
    pub z: u32,
    /// f' = f1 - Z and f'' = f2 against energy.
    pub table: SpectralTable,
    /// Rows dropped because f1 was missing (-9999).
    pub skipped_rows: usize,
}

impl HenkeTable {
    /// Parse the text of an `.nff` file; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, TableError> {
        let rows = lex_rows(file, text)?;
        let header = rows
            .first()
            .ok_or_else(|| syntax(file, 1, "empty Henke file".into()))?;
        let (element, z) = parse_header(file, header.line, &header.fields)?;
        let (mut energy, mut fp, mut fdp, mut skipped_rows) =
            (Vec::new(), Vec::new(), Vec::new(), 0);
        for row in &rows[1..] {
            let values = row.numbers();
            if !row.is_numeric() || values.len() != 3 {
                return Err(syntax(
                    file,
                    row.line,
                    format!("expected 'E f1 f2', got {} fields", row.fields.len()),
                ));
            }
            if values[1] == MISSING_F1 {
                skipped_rows += 1;
                continue;
            }
            energy.push(values[0]);
            fp.push(values[1] - f64::from(z));
            fdp.push(values[2]);
        }
        let table = SpectralTable::new(file, energy, fp, fdp)?;
        Ok(Self {
            element,
            z,
            table,
            skipped_rows,
        })
    }

    /// Read an `.nff` file from disk.
    pub fn read(path: &Path) -> Result<Self, TableError> {
        Self::parse(&path.display().to_string(), &read_text(path)?)
    }

    /// The embedded table of `element` (any capitalisation), if this build carries it.
    pub fn embedded(element: &str) -> Result<Self, TableError> {
        let symbol = normalize_element(element);
        let lower = symbol.to_ascii_lowercase();
        let text = EMBEDDED
            .iter()
            .find(|(name, _)| *name == lower)
            .map(|(_, text)| *text);
        let text = text.ok_or(TableError::Unknown {
            kind: "Henke",
            label: symbol,
        })?;
        Self::parse(&format!("henke/{lower}.nff"), text)
    }

    /// [`HenkeTable::embedded`], parsed once per element for the life of the process.
    pub fn embedded_shared(element: &str) -> Result<std::sync::Arc<Self>, TableError> {
        use std::collections::HashMap;
        use std::sync::{Arc, Mutex, OnceLock};
        static TABLES: OnceLock<Mutex<HashMap<String, Arc<HenkeTable>>>> = OnceLock::new();
        let tables = TABLES.get_or_init(|| Mutex::new(HashMap::new()));
        let key = normalize_element(element);
        if let Some(t) = tables.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(t);
        }
        let table = Arc::new(Self::embedded(element)?);
        if let Ok(mut m) = tables.lock() {
            m.insert(key, table.clone());
        }
        Ok(table)
    }

    /// (f', f'') at `energy_ev`, linear in energy, f64 arithmetic.
    pub fn at_ev(&self, energy_ev: f64) -> Result<(f64, f64), TableError> {
        self.table.at_ev(energy_ev)
    }

    /// (f', f'') as CCTBX computes them: f32 table values and f32 interpolation arithmetic.
    pub fn at_ev_f32(&self, energy_ev: f64) -> Result<(f64, f64), TableError> {
        let (i, _) = self.table.bracket(energy_ev)?;
        let t = &self.table;
        let e = energy_ev as f32;
        let (e0, e1) = (t.energy_ev[i] as f32, t.energy_ev[i + 1] as f32);
        let lerp = |y0: f32, y1: f32| y0 + (e - e0) * (y1 - y0) / (e1 - e0);
        let z = self.z as f32;
        let f1 = lerp(
            (t.fp[i] + f64::from(self.z)) as f32,
            (t.fp[i + 1] + f64::from(self.z)) as f32,
        );
        let f2 = lerp(t.fdp[i] as f32, t.fdp[i + 1] as f32);
        Ok((f64::from(f1 - z), f64::from(f2)))
    }
}

/// Element and Z from the header fields `fe Z=26 Energy eV f1 f2`.
fn parse_header(file: &str, line: usize, fields: &[Field]) -> Result<(String, u32), TableError> {
    let bad = || {
        syntax(
            file,
            line,
            "expected a header like 'fe, Z=26, (Energy (eV),f1,f2)'".into(),
        )
    };
    let element = match fields.first() {
        Some(Field::Word(w)) => normalize_element(w),
        _ => return Err(bad()),
    };
    // "Z=26" lexes as one word, "Z= 7" as the word "Z=" and the number 7.
    let z = fields
        .iter()
        .zip(fields.iter().skip(1).map(Some).chain([None]))
        .find_map(|(f, next)| match (f, next) {
            (Field::Word("Z="), Some(Field::Number(z))) => Some(*z as u32),
            (Field::Word(w), _) => w.strip_prefix("Z=").and_then(|z| z.parse::<u32>().ok()),
            _ => None,
        });
    Ok((element, z.ok_or_else(bad)?))
}

/// Embedded `.nff` files, from cctbx/reference/henke/tables @ 8a8adcb6 (cctbx BSD-style licence).
macro_rules! embedded_tables {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("henke/", $name, ".nff")))),*]
    };
}

/// Lower-case symbol and file text of each embedded table.
static EMBEDDED: &[(&str, &str)] = embedded_tables!(
    "h", "he", "li", "be", "b", "c", "n", "o", "f", "ne", "na", "mg", "al", "si", "p", "s", "cl",
    "ar", "k", "ca", "sc", "ti", "v", "cr", "mn", "fe", "co", "ni", "cu", "zn", "ga", "ge", "as",
    "se", "br", "kr", "rb", "sr", "mo", "cd", "i", "xe", "cs", "ba", "pt", "au", "hg", "pb", "u"
);
