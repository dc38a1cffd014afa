//! Sherrell-style f'/f'' curves: rows `energy_eV fp fdp` (whitespace or comma separated, `#`
//! comments, an optional header row of column names), as in `pf-rd-ox_fftkk.out` and `Fe.dat`.
//! Also named-column tables (`energy_eV,ox_fp,ox_fdp,red_fp,red_fdp`) from which curves are picked
//! by column name. Out come [`SpectralTable`]s, interpolated linearly in energy.

use super::{Field, SpectralTable, TableError, lex_rows, read_text, syntax};
use std::path::Path;

/// Columns of a numeric table with an optional header of names.
#[derive(Debug, Clone)]
pub struct Columns {
    /// Column names (empty when the file has no header row).
    pub names: Vec<String>,
    /// 1-based line of the header row (0 without one).
    pub header_line: usize,
    /// The columns, each as long as the table.
    pub values: Vec<Vec<f64>>,
}

impl Columns {
    /// The column called `name`.
    pub fn column(&self, file: &str, name: &str) -> Result<&[f64], TableError> {
        let index = self.names.iter().position(|n| n == name);
        let index = index.ok_or_else(|| {
            syntax(
                file,
                self.header_line,
                format!("no column '{name}' (have {})", self.names.join(", ")),
            )
        })?;
        Ok(&self.values[index])
    }
}

/// Parse a numeric table whose rows all have the same number of fields.
pub fn parse_columns(file: &str, text: &str) -> Result<Columns, TableError> {
    let rows = lex_rows(file, text)?;
    let (mut names, mut header_line) = (Vec::new(), 0);
    let mut values: Vec<Vec<f64>> = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        if index == 0 && !row.is_numeric() {
            names = row
                .fields
                .iter()
                .map(|f| match f {
                    Field::Word(w) => w.to_string(),
                    Field::Number(x) => x.to_string(),
                })
                .collect();
            header_line = row.line;
            continue;
        }
        let numbers = row.numbers();
        if !row.is_numeric() {
            return Err(syntax(file, row.line, "expected only numbers".into()));
        }
        if values.is_empty() {
            values = vec![Vec::new(); numbers.len()];
        }
        if numbers.len() != values.len() {
            return Err(syntax(
                file,
                row.line,
                format!("expected {} fields, got {}", values.len(), numbers.len()),
            ));
        }
        values
            .iter_mut()
            .zip(numbers)
            .for_each(|(column, x)| column.push(x));
    }
    Ok(Columns {
        names,
        header_line,
        values,
    })
}

/// Parse a three-column `energy_eV fp fdp` curve.
pub fn parse(file: &str, text: &str) -> Result<SpectralTable, TableError> {
    let columns = parse_columns(file, text)?;
    if columns.values.len() != 3 {
        let message = format!(
            "expected three columns (energy_eV fp fdp), got {}",
            columns.values.len()
        );
        return Err(TableError::Shape {
            file: file.to_string(),
            message,
        });
    }
    let [energy, fp, fdp] = [0, 1, 2].map(|i| columns.values[i].clone());
    SpectralTable::new(file, energy, fp, fdp)
}

/// Read a three-column curve from disk.
pub fn read(path: &Path) -> Result<SpectralTable, TableError> {
    parse(&path.display().to_string(), &read_text(path)?)
}

/// Pick the curve (energy column, f' column, f'' column) by name from a named-column table.
pub fn curve(file: &str, columns: &Columns, names: [&str; 3]) -> Result<SpectralTable, TableError> {
    let [energy, fp, fdp] = names.map(|name| columns.column(file, name).map(<[f64]>::to_vec));
    SpectralTable::new(&format!("{file}:{}", names[1]), energy?, fp?, fdp?)
}
