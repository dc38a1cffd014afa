//! Gaussian form-factor coefficient sets: Waasmaier & Kirfel (1995) (5 Gaussians + c, 213
//! scattering types: every element H-Cf and the common ions) and International Tables (1992)
//! (4 Gaussians + c), embedded from CCTBX's eltbx with the values CCTBX computes with.
//! Rows `label,n,a_1..a_n,b_1..b_n,c`; out come [`GaussianCoefficients`] keyed by CCTBX labels
//! ("Fe", "Fe2+", "O1-", "Hiso"). The evaluation f0(s) lives in `form_factor`.

use super::{Field, TableError, lex_rows, read_text, syntax};
use std::path::Path;

/// f0(s) = sum_i a_i exp(-b_i s^2) + c for one scattering type.
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianCoefficients {
    /// Scattering-type label, e.g. "Fe3+".
    pub label: String,
    /// Amplitudes a_i (electrons).
    pub a: Vec<f64>,
    /// Widths b_i (Angstrom^2).
    pub b: Vec<f64>,
    /// Constant c (electrons).
    pub c: f64,
}

/// Which embedded coefficient set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaussianSet {
    /// Waasmaier & Kirfel 1995.
    Wk1995,
    /// International Tables 1992.
    It1992,
}

/// Parse a coefficient file of rows `label,n,a..,b..,c` (a header row of words is skipped).
pub fn parse(file: &str, text: &str) -> Result<Vec<GaussianCoefficients>, TableError> {
    let mut out = Vec::new();
    for row in lex_rows(file, text)? {
        let label = match row.fields.first() {
            Some(Field::Word(w)) if *w == "label" || *w == "type" => continue,
            Some(Field::Word(w)) => w.to_string(),
            _ => {
                return Err(syntax(
                    file,
                    row.line,
                    "expected a scattering-type label first".into(),
                ));
            }
        };
        let numbers: Vec<f64> = row.fields[1..]
            .iter()
            .map(|f| match f {
                Field::Number(x) => Ok(*x),
                Field::Word(w) => Err(syntax(
                    file,
                    row.line,
                    format!("expected a number, got '{w}'"),
                )),
            })
            .collect::<Result<_, _>>()?;
        out.push(coefficients(file, row.line, label, &numbers)?);
    }
    Ok(out)
}

/// One row's numbers `n, a.., b.., c` as coefficients.
fn coefficients(
    file: &str,
    line: usize,
    label: String,
    numbers: &[f64],
) -> Result<GaussianCoefficients, TableError> {
    let n = numbers.first().copied().unwrap_or(-1.0);
    if n < 0.0 || n.fract() != 0.0 || numbers.len() != 2 * n as usize + 2 {
        return Err(syntax(
            file,
            line,
            format!(
                "'{label}': expected n then 2n+1 numbers, got {} numbers",
                numbers.len()
            ),
        ));
    }
    let n = n as usize;
    Ok(GaussianCoefficients {
        label,
        a: numbers[1..=n].to_vec(),
        b: numbers[n + 1..=2 * n].to_vec(),
        c: numbers[2 * n + 1],
    })
}

/// Read a coefficient file from disk.
pub fn read(path: &Path) -> Result<Vec<GaussianCoefficients>, TableError> {
    parse(&path.display().to_string(), &read_text(path)?)
}

/// The embedded coefficient set.
pub fn embedded(set: GaussianSet) -> Result<Vec<GaussianCoefficients>, TableError> {
    match set {
        GaussianSet::Wk1995 => parse("wk1995.csv", include_str!("wk1995.csv")),
        GaussianSet::It1992 => parse("it1992.csv", include_str!("it1992.csv")),
    }
}
