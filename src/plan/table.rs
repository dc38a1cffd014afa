//! `table("file.csv", col: real, ..., n_rows = N)` sources: comma-separated text with a header.
//!
//! In: the data directory, the file name and the declared columns (real or int) with the sizes
//! the model fixed. Out: a `Table` holding each declared column as an f64 vector (ints exactly).
//! Guarantees: a missing file or column, a ragged row, a cell that is not a number (or not an
//! integer for an int column) and a row count that differs from `n_rows` are errors naming the
//! file, the line and the column; undeclared columns are read past and listed in `ignored`.

use super::error::PlanError;
use crate::check::types::{Base, Type};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A loaded table.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// The file read.
    pub path: PathBuf,
    /// Data rows.
    pub n_rows: usize,
    /// Declared columns by name (1-d, shared: tapes read them in place).
    pub columns: HashMap<String, std::sync::Arc<ndarray::ArrayD<f64>>>,
    /// Columns of the file the model does not declare (not loaded).
    pub ignored: Vec<String>,
}

/// Reads `dir/file` and checks it against the declared columns and sizes.
pub fn load(
    dir: &Path,
    file: &str,
    declared: &[(String, Type)],
    sizes: &[(String, u64)],
) -> Result<Table, PlanError> {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).map_err(|e| PlanError::Data {
        path: path.display().to_string(),
        line: None,
        detail: format!("cannot read: {e}"),
    })?;
    let err = |line: Option<usize>, detail: String| PlanError::Data {
        path: path.display().to_string(),
        line,
        detail,
    };
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((header_no, header)) = lines.next() else {
        return Err(err(None, "is empty (expected a header line)".into()));
    };
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    let mut wanted = Vec::new();
    for (name, ty) in declared {
        let Some(pos) = names.iter().position(|n| n == name) else {
            return Err(err(
                Some(header_no + 1),
                format!("no column `{name}` (the header has: {})", names.join(", ")),
            ));
        };
        let int = match ty.base {
            Base::Int => true,
            Base::Real if ty.shape.is_empty() => false,
            _ => {
                return Err(err(
                    None,
                    format!(
                        "column `{name}`: only real and int scalar columns are supported, got {ty}"
                    ),
                ));
            }
        };
        wanted.push((name.clone(), pos, int, Vec::new()));
    }
    let mut n_rows = 0;
    for (no, line) in lines {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() != names.len() {
            return Err(err(
                Some(no + 1),
                format!("has {} cells, the header has {}", cells.len(), names.len()),
            ));
        }
        for (name, pos, int, values) in &mut wanted {
            values.push(parse_cell(cells[*pos], *int).map_err(|what| {
                err(
                    Some(no + 1),
                    format!("column `{name}`: `{}` is not {what}", cells[*pos]),
                )
            })?);
        }
        n_rows += 1;
    }
    if let Some((_, n)) = sizes.iter().find(|(k, _)| k == "n_rows")
        && *n as usize != n_rows
    {
        return Err(err(
            None,
            format!("the model says n_rows = {n} but the file has {n_rows} data rows"),
        ));
    }
    if n_rows == 0 {
        return Err(err(None, "has a header but no data rows".into()));
    }
    let ignored = names
        .iter()
        .filter(|n| !declared.iter().any(|(d, _)| d == *n))
        .map(|n| n.to_string())
        .collect();
    let columns = wanted
        .into_iter()
        .map(|(n, _, _, v)| {
            let column = ndarray::Array1::from_vec(v).into_dyn();
            (n, std::sync::Arc::new(column))
        })
        .collect();
    Ok(Table {
        path,
        n_rows,
        columns,
        ignored,
    })
}

fn parse_cell(cell: &str, int: bool) -> Result<f64, &'static str> {
    if int {
        cell.parse::<i64>()
            .map(|v| v as f64)
            .map_err(|_| "an integer")
    } else {
        cell.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or("a finite number")
    }
}
