//! Reading `.refl` bytes: `["dials::af::reflection_table", VERSION, {identifiers, nrows, data}]`.
//!
//! In: the whole file as bytes. Out: a [`ReflectionTable`]. The msgpack structure is walked with
//! `rmp`'s low-level decoders over a borrowed slice, so column blobs are decoded straight into
//! typed vectors without an intermediate value tree, and no length read from the file is
//! trusted for an allocation before the bytes behind it have been checked to exist.

use super::columns::Column;
use super::shoebox::ShoeboxColumn;
use super::{REFL_MAGIC, ReflError, ReflectionTable, SkippedColumn};
use rmp::Marker;
use std::collections::BTreeMap;
use std::path::Path;

/// Nesting limit when skipping an unknown column's payload.
const MAX_SKIP_DEPTH: usize = 64;

/// Reads a `.refl` file.
pub fn read_refl(path: &Path) -> Result<ReflectionTable, ReflError> {
    read_refl_located(path).map(|(table, _)| table)
}

/// Reads a `.refl` file and where each column's values sit in it (to read rows again later).
pub fn read_refl_located(path: &Path) -> Result<(ReflectionTable, ColumnBlobs), ReflError> {
    let bytes = std::fs::read(path).map_err(|source| ReflError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_refl_located(&bytes, path)
}

/// Parses the bytes of a `.refl` file; `path` is used only in error messages.
pub fn parse_refl(bytes: &[u8], path: &Path) -> Result<ReflectionTable, ReflError> {
    parse_refl_located(bytes, path).map(|(table, _)| table)
}

/// Byte ranges of the column blobs (the `bin` payload of each read column) in a `.refl` file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ColumnBlobs {
    /// Total length of the file.
    pub file_len: u64,
    /// (column name, offset of its blob's first byte, blob length).
    pub blobs: Vec<(String, u64, u64)>,
}

impl ColumnBlobs {
    /// Offset and length of the blob of column `name`.
    pub fn get(&self, name: &str) -> Option<(u64, u64)> {
        self.blobs
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|&(_, at, len)| (at, len))
    }
}

/// As [`parse_refl`], also returning where each column's blob sits in `bytes`.
pub fn parse_refl_located(
    bytes: &[u8],
    path: &Path,
) -> Result<(ReflectionTable, ColumnBlobs), ReflError> {
    if is_pickle(bytes) {
        return Err(ReflError::Pickle {
            path: path.to_path_buf(),
        });
    }
    let mut cur = Cursor {
        all: bytes,
        rest: bytes,
        path,
        blobs: Vec::new(),
    };
    let found = format!("{} top-level items", cur.array_len("table")?);
    let tag = cur.str("table tag").map_err(|_| ReflError::Magic {
        path: path.to_path_buf(),
        found: "a non-string first item".to_string(),
    })?;
    if tag != REFL_MAGIC || found != "3 top-level items" {
        return Err(ReflError::Magic {
            path: path.to_path_buf(),
            found: format!(
                "`{}` with {found}",
                tag.chars().take(64).collect::<String>()
            ),
        });
    }
    let version = cur.uint("version")?;
    if version != 1 && version != 2 {
        return Err(ReflError::Version {
            path: path.to_path_buf(),
            version,
        });
    }
    let mut table = cur.header()?;
    table.version = version;
    let blobs = ColumnBlobs {
        file_len: bytes.len() as u64,
        blobs: cur.blobs,
    };
    Ok((table, blobs))
}

/// Python pickles start with PROTO (0x80 + protocol 2..5) or, for protocols 0/1, with a
/// MARK `(` or GLOBAL `c` opcode; neither can start a msgpack array.
fn is_pickle(bytes: &[u8]) -> bool {
    match bytes {
        [0x80, p, ..] => (2..=5).contains(p),
        [b'(', ..] => true,
        [b'c', rest @ ..] => rest
            .iter()
            .take(64)
            .all(|b| b.is_ascii_graphic() || *b == b'\n'),
        _ => false,
    }
}

/// A position in the file plus the file, for error messages.
struct Cursor<'a> {
    all: &'a [u8],
    rest: &'a [u8],
    path: &'a Path,
    /// (column, offset, length) of every column blob read so far.
    blobs: Vec<(String, u64, u64)>,
}

impl<'a> Cursor<'a> {
    fn offset(&self) -> usize {
        self.all.len() - self.rest.len()
    }

    fn truncated(&self, field: &str) -> ReflError {
        ReflError::Truncated {
            path: self.path.to_path_buf(),
            offset: self.offset(),
            field: field.to_string(),
        }
    }

    fn malformed(&self, field: &str, what: String) -> ReflError {
        ReflError::Malformed {
            path: self.path.to_path_buf(),
            offset: self.offset(),
            field: field.to_string(),
            what,
        }
    }

    /// Maps an rmp error: end of input is truncation, anything else a type mismatch.
    fn value_error<E: std::fmt::Display>(&self, field: &str, start: &'a [u8], err: E) -> ReflError {
        let text = err.to_string();
        let eof = text.contains("fill whole buffer")
            || text.contains("UnexpectedEof")
            || start.is_empty();
        if eof {
            return self.truncated(field);
        }
        let marker = Marker::from_u8(start[0]);
        self.malformed(field, format!("unexpected msgpack {marker:?} ({text})"))
    }

    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], ReflError> {
        if self.rest.len() < n {
            return Err(self.truncated(field));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array_len(&mut self, field: &str) -> Result<u32, ReflError> {
        let start = self.rest;
        rmp::decode::read_array_len(&mut self.rest).map_err(|e| self.value_error(field, start, e))
    }

    fn map_len(&mut self, field: &str) -> Result<u32, ReflError> {
        let start = self.rest;
        rmp::decode::read_map_len(&mut self.rest).map_err(|e| self.value_error(field, start, e))
    }

    fn uint(&mut self, field: &str) -> Result<u64, ReflError> {
        let start = self.rest;
        rmp::decode::read_int(&mut self.rest).map_err(|e| self.value_error(field, start, e))
    }

    fn int(&mut self, field: &str) -> Result<i64, ReflError> {
        let start = self.rest;
        rmp::decode::read_int(&mut self.rest).map_err(|e| self.value_error(field, start, e))
    }

    fn str(&mut self, field: &str) -> Result<&'a str, ReflError> {
        let start = self.rest;
        let len = rmp::decode::read_str_len(&mut self.rest)
            .map_err(|e| self.value_error(field, start, e))?;
        let raw = self.take(len as usize, field)?;
        std::str::from_utf8(raw)
            .map_err(|_| self.malformed(field, "string is not UTF-8".to_string()))
    }

    fn bin(&mut self, field: &str) -> Result<&'a [u8], ReflError> {
        let start = self.rest;
        let len = rmp::decode::read_bin_len(&mut self.rest)
            .map_err(|e| self.value_error(field, start, e))?;
        self.take(len as usize, field)
    }

    /// Skips one msgpack value of any type (the payload of an unknown column).
    fn skip(&mut self, field: &str, depth: usize) -> Result<(), ReflError> {
        if depth > MAX_SKIP_DEPTH {
            return Err(self.malformed(field, "values nested too deeply".to_string()));
        }
        let first = *self.rest.first().ok_or_else(|| self.truncated(field))?;
        self.rest = &self.rest[1..];
        let (bytes, items) = self.extent(Marker::from_u8(first), field)?;
        self.take(bytes, field)?;
        for _ in 0..items {
            self.skip(field, depth + 1)?;
        }
        Ok(())
    }

    /// A big-endian length of `n` bytes.
    fn length(&mut self, n: usize, field: &str) -> Result<usize, ReflError> {
        let raw = self.take(n, field)?;
        Ok(raw
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b)))
    }

    /// Payload bytes and nested items that follow a marker (its length bytes consumed).
    fn extent(&mut self, marker: Marker, field: &str) -> Result<(usize, usize), ReflError> {
        Ok(match marker {
            Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => {
                (0, 0)
            }
            Marker::U8 | Marker::I8 => (1, 0),
            Marker::U16 | Marker::I16 => (2, 0),
            Marker::U32 | Marker::I32 | Marker::F32 => (4, 0),
            Marker::U64 | Marker::I64 | Marker::F64 => (8, 0),
            Marker::FixStr(n) => (usize::from(n), 0),
            Marker::Str8 | Marker::Bin8 => (self.length(1, field)?, 0),
            Marker::Str16 | Marker::Bin16 => (self.length(2, field)?, 0),
            Marker::Str32 | Marker::Bin32 => (self.length(4, field)?, 0),
            Marker::FixArray(n) => (0, usize::from(n)),
            Marker::Array16 => (0, self.length(2, field)?),
            Marker::Array32 => (0, self.length(4, field)?),
            Marker::FixMap(n) => (0, 2 * usize::from(n)),
            Marker::Map16 => (0, 2 * self.length(2, field)?),
            Marker::Map32 => (0, 2 * self.length(4, field)?),
            Marker::FixExt1 => (2, 0),
            Marker::FixExt2 => (3, 0),
            Marker::FixExt4 => (5, 0),
            Marker::FixExt8 => (9, 0),
            Marker::FixExt16 => (17, 0),
            Marker::Ext8 => (self.length(1, field)? + 1, 0),
            Marker::Ext16 => (self.length(2, field)? + 1, 0),
            Marker::Ext32 => (self.length(4, field)? + 1, 0),
            Marker::Reserved => {
                return Err(self.malformed(field, "reserved msgpack marker 0xc1".to_string()));
            }
        })
    }

    /// Reads the header map: identifiers, nrows, data (in any order; data needs nrows first).
    fn header(&mut self) -> Result<ReflectionTable, ReflError> {
        let n = self.map_len("header")?;
        let mut table = ReflectionTable::new(0);
        let mut nrows = None;
        for _ in 0..n {
            let key = self.str("header key")?;
            match key {
                "nrows" => nrows = Some(self.nrows()?),
                "identifiers" => table.identifiers = self.identifiers()?,
                "data" => {
                    let rows = nrows.ok_or_else(|| {
                        self.malformed("data", "`data` comes before `nrows`".to_string())
                    })?;
                    self.columns(rows, &mut table)?;
                }
                other => {
                    return Err(self.malformed("header", format!("unknown header key `{other}`")));
                }
            }
        }
        table.nrows =
            nrows.ok_or_else(|| self.malformed("nrows", "header has no `nrows`".to_string()))?;
        Ok(table)
    }

    fn nrows(&mut self) -> Result<usize, ReflError> {
        let n = self.uint("nrows")?;
        usize::try_from(n)
            .map_err(|_| self.malformed("nrows", format!("{n} rows do not fit in memory")))
    }

    fn identifiers(&mut self) -> Result<BTreeMap<i64, String>, ReflError> {
        let n = self.map_len("identifiers")?;
        let mut ids = BTreeMap::new();
        for _ in 0..n {
            let id = self.int("identifiers key")?;
            let name = self.str("identifiers value")?;
            ids.insert(id, name.to_string());
        }
        Ok(ids)
    }

    fn columns(&mut self, nrows: usize, table: &mut ReflectionTable) -> Result<(), ReflError> {
        let n = self.map_len("data")?;
        for _ in 0..n {
            let name = self.str("column name")?;
            let pair = self.array_len(name)?;
            let type_name = self.str(name)?;
            if pair != 2 {
                return Err(self.malformed(
                    name,
                    format!("column is an array of {pair}, expected [type, values]"),
                ));
            }
            let known = type_name == "Shoebox<>" || Column::element_size(type_name).is_some();
            if !known {
                self.skip(name, 0)?;
                table.skipped_columns.push(SkippedColumn {
                    name: name.to_string(),
                    type_name: type_name.to_string(),
                });
                continue;
            }
            let column = self.column(name, type_name, nrows)?;
            table.columns.push((name.to_string(), column));
        }
        Ok(())
    }

    /// Reads `[rows, blob]` and decodes it as `type_name`.
    fn column(&mut self, name: &str, type_name: &str, nrows: usize) -> Result<Column, ReflError> {
        let pair = self.array_len(name)?;
        if pair != 2 {
            return Err(self.malformed(
                name,
                format!("values are an array of {pair}, expected [rows, bytes]"),
            ));
        }
        let rows = self.uint(name)?;
        if rows != nrows as u64 {
            return Err(ReflError::ColumnLength {
                path: self.path.to_path_buf(),
                column: name.to_string(),
                expected: nrows,
                found: usize::try_from(rows).unwrap_or(usize::MAX),
            });
        }
        let blob = self.bin(name)?;
        let at = (self.offset() - blob.len()) as u64;
        self.blobs.push((name.to_string(), at, blob.len() as u64));
        if type_name == "Shoebox<>" {
            return Ok(Column::Shoebox(ShoeboxColumn::decode(
                blob, nrows, self.path,
            )?));
        }
        let size = Column::element_size(type_name).unwrap_or(1);
        if nrows.checked_mul(size) != Some(blob.len()) {
            return Err(self.malformed(
                name,
                format!(
                    "{} bytes of `{type_name}` data, expected {nrows} rows x {size} bytes",
                    blob.len()
                ),
            ));
        }
        Column::decode_fixed(type_name, blob)
            .ok_or_else(|| self.malformed(name, format!("unknown column type `{type_name}`")))
    }
}
