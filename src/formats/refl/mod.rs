//! DIALS reflection tables (`.refl`, msgpack): typed columns, shoeboxes, experiment identifiers.
//!
//! In: the bytes of a `.refl` file (DIALS ≥ 2, table versions 1 and 2). Out: a
//! [`ReflectionTable`] whose columns are typed vectors and whose shoeboxes share one contiguous
//! pixel arena. Guarantees: every column has exactly `nrows` elements; unknown column types are
//! skipped and listed in [`ReflectionTable::skipped_columns`] (never silently); legacy pickle
//! files, foreign msgpack, unknown versions and truncated or inconsistent data are refused with a
//! [`ReflError`] naming the file, the byte offset and the field. Writing then reading a table
//! gives back the same bytes and the same values. [`read_refl_located`] also returns where each
//! column's values sit in the file ([`ColumnBlobs`]), so rows can be read again by byte range.

mod columns;
mod reader;
mod shoebox;
mod writer;

pub use columns::Column;
pub use reader::{ColumnBlobs, parse_refl, parse_refl_located, read_refl, read_refl_located};
pub use shoebox::{ShoeboxColumn, ShoeboxHeader, ShoeboxRef, mask_bits};
pub use writer::{refl_to_bytes, write_refl};

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The file-type tag DIALS writes as the first element of a reflection table.
pub const REFL_MAGIC: &str = "dials::af::reflection_table";

/// Everything that can go wrong reading a reflection table.
#[derive(Debug, thiserror::Error)]
pub enum ReflError {
    /// The file could not be read.
    #[error("{path}: cannot read reflection table: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A legacy (DIALS 1.x) Python pickle table.
    #[error(
        "{path}: this is a legacy Python pickle reflection table, which spread does not read; \
         load and save it with DIALS >= 2.0 to convert it to msgpack"
    )]
    Pickle {
        /// The file.
        path: PathBuf,
    },
    /// The first element is not the reflection table tag.
    #[error("{path}: not a DIALS reflection table: expected tag `{REFL_MAGIC}`, found {found}")]
    Magic {
        /// The file.
        path: PathBuf,
        /// What was there instead.
        found: String,
    },
    /// A table version other than 1 or 2.
    #[error(
        "{path}: field `version`: reflection table version {version} is not supported (expected 1 or 2)"
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// The version found.
        version: u64,
    },
    /// The file ends in the middle of a field.
    #[error("{path}: truncated at byte {offset} while reading field `{field}`")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Byte offset where more data was expected.
        offset: usize,
        /// The field being read.
        field: String,
    },
    /// A field has the wrong msgpack type or an impossible value.
    #[error("{path}: byte {offset}: field `{field}`: {what}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Byte offset of the field.
        offset: usize,
        /// The field being read.
        field: String,
        /// What is wrong.
        what: String,
    },
    /// A column does not hold `nrows` elements.
    #[error("{path}: column `{column}` has {found} rows, but the table has {expected}")]
    ColumnLength {
        /// The file (or `<memory>` for a table being built).
        path: PathBuf,
        /// The column.
        column: String,
        /// The table's `nrows`.
        expected: usize,
        /// The column's length.
        found: usize,
    },
    /// A shoebox is inconsistent (bad bbox, mask out of range, pixels past the end).
    #[error("{path}: column `shoebox` row {row}: {what}")]
    Shoebox {
        /// The file.
        path: PathBuf,
        /// The row of the shoebox.
        row: usize,
        /// What is wrong.
        what: String,
    },
    /// A column the caller needs is absent.
    #[error("{path}: required column `{column}` is missing")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
    },
}

/// A column that was present in the file but not read, because its type is unknown.
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedColumn {
    /// Column name.
    pub name: String,
    /// The DIALS type name found.
    pub type_name: String,
}

/// A reflection table: `nrows` rows, named typed columns, experiment identifiers.
#[derive(Debug, Clone, PartialEq)]
pub struct ReflectionTable {
    /// Table serialization version (1 or 2; both share one layout).
    pub version: u64,
    /// Number of rows.
    pub nrows: usize,
    /// Map from the `id` column's values to experiment identifiers.
    pub identifiers: BTreeMap<i64, String>,
    /// Columns in file order.
    pub columns: Vec<(String, Column)>,
    /// Columns of unknown type that were not read (the caller should warn about each).
    pub skipped_columns: Vec<SkippedColumn>,
}

impl ReflectionTable {
    /// An empty table of `nrows` rows (version 2, as current DIALS writes).
    pub fn new(nrows: usize) -> Self {
        ReflectionTable {
            version: 2,
            nrows,
            identifiers: BTreeMap::new(),
            columns: Vec::new(),
            skipped_columns: Vec::new(),
        }
    }

    /// The column of that name.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }

    /// Adds or replaces a column, keeping columns sorted by name as DIALS does.
    pub fn insert(&mut self, name: &str, column: Column) -> Result<(), ReflError> {
        if column.len() != self.nrows {
            return Err(ReflError::ColumnLength {
                path: PathBuf::from("<memory>"),
                column: name.to_string(),
                expected: self.nrows,
                found: column.len(),
            });
        }
        match self.columns.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) => self.columns[i].1 = column,
            Err(i) => self.columns.insert(i, (name.to_string(), column)),
        }
        Ok(())
    }

    /// The `shoebox` column, if present.
    pub fn shoeboxes(&self) -> Option<&ShoeboxColumn> {
        match self.column("shoebox") {
            Some(Column::Shoebox(s)) => Some(s),
            _ => None,
        }
    }
}
