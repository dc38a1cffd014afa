//! Readers for the tables of atomic scattering: Henke f1/f2 (`henke`), Sasaki K-edge f'/f''
//! (`sasaki`), Sherrell-style three-column f'/f'' curves and spectra (`sherrell`), and Gaussian
//! f0 coefficient sets (`wk1995`, also IT1992). Text goes in; typed tables come out.
//!
//! All readers share one logos lexer ([`lex_rows`]): numbers, words and separators, `#` comments.
//! Every error names the file and the 1-based line. Energy-indexed tables ([`SpectralTable`])
//! interpolate linearly in energy between tabulated points and refuse energies outside the table.

pub mod henke;
pub mod sasaki;
pub mod sherrell;
pub mod wk1995;

use logos::Logos;
use std::path::Path;

/// An error reading a table, naming the file and the line.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// A malformed line.
    #[error("{file}:{line}: {message}")]
    Syntax {
        /// File name (or label of an embedded table).
        file: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A table whose rows are fine one by one but not together (lengths, ordering).
    #[error("{file}: {message}")]
    Shape {
        /// File name.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The file could not be read.
    #[error("{file}: {source}")]
    Io {
        /// File name.
        file: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// An energy outside the tabulated range.
    #[error("{table}: energy {energy_ev} eV is outside the table ({min_ev}..{max_ev} eV)")]
    OutOfRange {
        /// Table name.
        table: String,
        /// Requested energy.
        energy_ev: f64,
        /// Lowest tabulated energy.
        min_ev: f64,
        /// Highest tabulated energy.
        max_ev: f64,
    },
    /// No table for an element or scattering type.
    #[error("no {kind} table for '{label}'")]
    Unknown {
        /// Which kind of table.
        kind: &'static str,
        /// The label asked for.
        label: String,
    },
}

/// Tokens of a numeric table.
#[derive(Logos, Debug, Clone, Copy, PartialEq)]
#[logos(skip r"[ \t\r\f]+")]
enum Token {
    #[regex(r"#[^\n]*", allow_greedy = true)]
    Comment,
    #[token("\n")]
    Newline,
    #[token(",")]
    #[token(";")]
    #[token("(")]
    #[token(")")]
    Separator,
    #[regex(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")]
    Number,
    #[regex(r"[A-Za-z_][A-Za-z0-9_+\-()'.=*/]*")]
    Word,
}

/// One field of a lexed row.
#[derive(Debug, Clone, PartialEq)]
pub enum Field<'a> {
    /// A number.
    Number(f64),
    /// A word (element symbol, column name).
    Word(&'a str),
}

/// A non-empty, non-comment line: its 1-based line number and fields.
#[derive(Debug, Clone)]
pub struct Row<'a> {
    /// 1-based line number in the file.
    pub line: usize,
    /// Fields in order; separators are dropped.
    pub fields: Vec<Field<'a>>,
}

impl Row<'_> {
    /// True when every field is a number.
    pub fn is_numeric(&self) -> bool {
        self.fields.iter().all(|f| matches!(f, Field::Number(_)))
    }

    /// The numbers of an all-numeric row.
    pub fn numbers(&self) -> Vec<f64> {
        self.fields
            .iter()
            .filter_map(|f| match f {
                Field::Number(x) => Some(*x),
                Field::Word(_) => None,
            })
            .collect()
    }
}

/// Split `text` into rows of fields, skipping blank lines and `#` comments.
pub fn lex_rows<'a>(file: &str, text: &'a str) -> Result<Vec<Row<'a>>, TableError> {
    let mut rows = Vec::new();
    let mut line = 1;
    let mut fields = Vec::new();
    let mut lexer = Token::lexer(text);
    while let Some(token) = lexer.next() {
        let slice = lexer.slice();
        match token {
            Ok(Token::Newline) => {
                if !fields.is_empty() {
                    rows.push(Row {
                        line,
                        fields: std::mem::take(&mut fields),
                    });
                }
                line += 1;
            }
            Ok(Token::Comment | Token::Separator) => {}
            Ok(Token::Number) => {
                let value = slice
                    .parse::<f64>()
                    .map_err(|e| syntax(file, line, format!("bad number '{slice}': {e}")))?;
                fields.push(Field::Number(value));
            }
            Ok(Token::Word) => fields.push(Field::Word(slice)),
            Err(()) => return Err(syntax(file, line, format!("unexpected text '{slice}'"))),
        }
    }
    if !fields.is_empty() {
        rows.push(Row { line, fields });
    }
    Ok(rows)
}

/// A syntax error at `file:line`.
pub(crate) fn syntax(file: &str, line: usize, message: String) -> TableError {
    TableError::Syntax {
        file: file.to_string(),
        line,
        message,
    }
}

/// Read a whole file, mapping IO errors to [`TableError::Io`] naming the file.
pub fn read_text(path: &Path) -> Result<String, TableError> {
    std::fs::read_to_string(path).map_err(|source| TableError::Io {
        file: path.display().to_string(),
        source,
    })
}

/// f'(E) and f''(E) (electrons) on an increasing energy grid (eV).
#[derive(Debug, Clone, PartialEq)]
pub struct SpectralTable {
    /// Name for error messages (file or element).
    pub name: String,
    /// Strictly increasing energies, eV.
    pub energy_ev: Vec<f64>,
    /// f' (anomalous real part), electrons.
    pub fp: Vec<f64>,
    /// f'' (anomalous imaginary part), electrons.
    pub fdp: Vec<f64>,
}

impl SpectralTable {
    /// Build a table, checking lengths and that energies strictly increase.
    pub fn new(
        name: &str,
        energy_ev: Vec<f64>,
        fp: Vec<f64>,
        fdp: Vec<f64>,
    ) -> Result<Self, TableError> {
        if energy_ev.len() != fp.len() || energy_ev.len() != fdp.len() || energy_ev.len() < 2 {
            let message = format!(
                "need at least two rows of equal length, got {}",
                energy_ev.len()
            );
            return Err(TableError::Shape {
                file: name.to_string(),
                message,
            });
        }
        if let Some(i) = energy_ev.windows(2).position(|w| w[1] <= w[0]) {
            let message = format!(
                "energies must increase: data row {} ({} eV) then {} eV",
                i + 1,
                energy_ev[i],
                energy_ev[i + 1]
            );
            return Err(TableError::Shape {
                file: name.to_string(),
                message,
            });
        }
        Ok(Self {
            name: name.to_string(),
            energy_ev,
            fp,
            fdp,
        })
    }

    /// (f', f'') at `energy_ev` by linear interpolation in energy; an error outside the table.
    pub fn at_ev(&self, energy_ev: f64) -> Result<(f64, f64), TableError> {
        let (i, t) = self.bracket(energy_ev)?;
        let fp = self.fp[i] + t * (self.fp[i + 1] - self.fp[i]);
        let fdp = self.fdp[i] + t * (self.fdp[i + 1] - self.fdp[i]);
        Ok((fp, fdp))
    }

    /// Index `i` and fraction `t` with E = E_i + t (E_{i+1} - E_i), 0 <= t <= 1.
    pub fn bracket(&self, energy_ev: f64) -> Result<(usize, f64), TableError> {
        let n = self.energy_ev.len();
        let (lo, hi) = (self.energy_ev[0], self.energy_ev[n - 1]);
        if !(lo..=hi).contains(&energy_ev) {
            return Err(TableError::OutOfRange {
                table: self.name.clone(),
                energy_ev,
                min_ev: lo,
                max_ev: hi,
            });
        }
        let upper = self
            .energy_ev
            .partition_point(|&e| e <= energy_ev)
            .clamp(1, n - 1);
        let i = upper - 1;
        Ok((
            i,
            (energy_ev - self.energy_ev[i]) / (self.energy_ev[i + 1] - self.energy_ev[i]),
        ))
    }

    /// The table with every energy moved by `shift_ev` (an edge offset).
    pub fn shifted(&self, shift_ev: f64) -> Self {
        let energy_ev = self.energy_ev.iter().map(|e| e + shift_ev).collect();
        Self {
            name: format!("{} shifted {shift_ev:+} eV", self.name),
            energy_ev,
            fp: self.fp.clone(),
            fdp: self.fdp.clone(),
        }
    }
}

/// Standard element symbol capitalisation: "FE" -> "Fe".
pub fn normalize_element(symbol: &str) -> String {
    let mut chars = symbol.trim().chars();
    match chars.next() {
        Some(first) => {
            first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
        }
        None => String::new(),
    }
}
