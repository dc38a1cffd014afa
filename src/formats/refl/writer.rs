//! Writing `.refl` bytes in DIALS' msgpack layout.
//!
//! In: a [`ReflectionTable`]. Out: the bytes DIALS' `reflection_table_msgpack_adapter` reads:
//! `["dials::af::reflection_table", version, {"identifiers": {int: str}, "nrows": n,
//! "data": {name: [type, [n, bin]]}}]`, header keys in DIALS' order, columns in table order.
//! Guarantees: `parse_refl(refl_to_bytes(t)) == t` for every table without skipped columns.

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
    encode::write_uint(out, table.version)?;
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

/// Writes a table to `path`.
pub fn write_refl(table: &ReflectionTable, path: &Path) -> std::io::Result<()> {
    std::fs::write(path, refl_to_bytes(table))
}
