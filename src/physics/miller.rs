//! Miller-index lists: read from a file (`h k l` per line, or a CSV whose first three columns are
//! h,k,l, with an optional header row and `#` comments), or generated as the unique reflections
//! to a resolution limit. Generation keeps one index per orbit of the point group (Friedel mates
//! stay separate, since anomalous scattering breaks Friedel's law) and drops systematic absences.

use crate::physics::scattering_tables::{Field, TableError, lex_rows, syntax};
use crate::physics::symmetry::{SpaceGroup, TDEN};
use crate::physics::unit_cell::UnitCell;

/// Parse an hkl list; `file` names it in errors.
pub fn parse_hkl(file: &str, text: &str) -> Result<Vec<[i32; 3]>, TableError> {
    let mut out = Vec::new();
    for (index, row) in lex_rows(file, text)?.iter().enumerate() {
        if index == 0 && matches!(row.fields.first(), Some(Field::Word(_))) {
            continue;
        }
        let numbers = row.fields.iter().take(3).map(|f| match f {
            Field::Number(x) if x.fract() == 0.0 && x.abs() < 1e6 => Ok(*x as i32),
            _ => Err(syntax(
                file,
                row.line,
                "expected integer h, k, l in the first three columns".into(),
            )),
        });
        let hkl: Vec<i32> = numbers.collect::<Result<_, _>>()?;
        let hkl: [i32; 3] = hkl
            .try_into()
            .map_err(|_| syntax(file, row.line, "expected three indices h k l".into()))?;
        out.push(hkl);
    }
    Ok(out)
}

/// True when symmetry forces F(h) = 0: some operator maps h onto itself with a phase != 1.
pub fn is_systematically_absent(group: &SpaceGroup, h: [i32; 3]) -> bool {
    group.ops.iter().any(|op| {
        let rotated: [i32; 3] = std::array::from_fn(|j| (0..3).map(|i| h[i] * op.rot[i][j]).sum());
        let shift: i32 = (0..3).map(|i| h[i] * op.tran[i]).sum();
        rotated == h && shift.rem_euclid(TDEN) != 0
    })
}

/// Unique, non-absent reflections with d >= `d_min` (Angstrom), sorted by h, k, l.
pub fn unique_to_d_min(cell: &UnitCell, group: &SpaceGroup, d_min: f64) -> Vec<[i32; 3]> {
    let max_stol_sq = 1.0 / (4.0 * d_min * d_min);
    let limits = cell.lengths.map(|l| (l / d_min).ceil() as i32 + 1);
    let mut out = Vec::new();
    for h in -limits[0]..=limits[0] {
        for k in -limits[1]..=limits[1] {
            for l in -limits[2]..=limits[2] {
                let hkl = [h, k, l];
                if hkl != [0, 0, 0]
                    && cell.stol_sq(hkl) <= max_stol_sq
                    && is_orbit_representative(group, hkl)
                    && !is_systematically_absent(group, hkl)
                {
                    out.push(hkl);
                }
            }
        }
    }
    out
}

/// True when `h` is the largest index of its orbit under the rotations h -> h R.
fn is_orbit_representative(group: &SpaceGroup, h: [i32; 3]) -> bool {
    group.ops.iter().all(|op| {
        let image: [i32; 3] = std::array::from_fn(|j| (0..3).map(|i| h[i] * op.rot[i][j]).sum());
        image <= h
    })
}
