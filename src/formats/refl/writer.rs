//! Writing `.refl` bytes in DIALS' msgpack layout.
//!
//! In: a [`ReflectionTable`]. Out: the bytes DIALS' `reflection_table_msgpack_adapter` reads:
//! `["dials::af::reflection_table", version, {"identifiers": {int: str}, "nrows": n,
//! "data": {name: [type, [n, bin]]}}]`, header keys in DIALS' order, columns in table order.
//! Guarantees: `parse_refl(refl_to_bytes(t)) == t` for every table without skipped columns
//! (except that a version-1 table holding u8-mask shoeboxes is written, and read back, as
//! version 2).

use super::{REFL_MAGIC, ReflectionTable};
use rmp::encode;
use std::path::Path;

/// Encodes a table as `.refl` bytes.
pub fn refl_to_bytes(table: &ReflectionTable) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail, so the io::Results below are always Ok.
    let _ = encode_table(table, &mut out);
    out
}

fn encode_table(table: &ReflectionTable, out: &mut Vec<u8>) -> Result<(), encode::ValueWriteError> {
    encode::write_array_len(out, 3)?;
    encode::write_str(out, REFL_MAGIC)?;
    encode::write_uint(out, written_version(table))?;
    encode::write_map_len(out, 3)?;
    encode::write_str(out, "identifiers")?;
    encode::write_map_len(out, table.identifiers.len() as u32)?;
    for (id, name) in &table.identifiers {
        encode::write_sint(out, *id)?;
        encode::write_str(out, name)?;
    }
    encode::write_str(out, "nrows")?;
    encode::write_uint(out, table.nrows as u64)?;
    encode::write_str(out, "data")?;
    encode::write_map_len(out, table.columns.len() as u32)?;
    let mut blob = Vec::new();
    for (name, column) in &table.columns {
        encode::write_str(out, name)?;
        encode::write_array_len(out, 2)?;
        encode::write_str(out, column.type_name())?;
        encode::write_array_len(out, 2)?;
        encode::write_uint(out, column.len() as u64)?;
        blob.clear();
        column.encode_fixed(&mut blob);
        encode::write_bin(out, &blob)?;
    }
    Ok(())
}

/// The table version to write: u8-mask (version-2) shoeboxes are unknown to readers of
/// version-1 tables, so a table holding any is written as version 2.
fn written_version(table: &ReflectionTable) -> u64 {
    let has_v2 = table
        .shoeboxes()
        .is_some_and(|s| s.headers().iter().any(|h| h.version == 2));
    if has_v2 {
        table.version.max(2)
    } else {
        table.version
    }
}

/// Writes a table to `path`.
pub fn write_refl(table: &ReflectionTable, path: &Path) -> std::io::Result<()> {
    std::fs::write(path, refl_to_bytes(table))
}
