//! Change-of-basis operators C: x -> M x + c, as they appear at the end of Hall symbols: an origin
//! shift in twelfths `(0 0 1)` or a triplet `(x-y,x+y,z)`, `(x+1/4,y,z)` (the form cctbx.sgtbx
//! writes for non-reference settings, e.g. in DIALS .expt files). Operators move to the new basis
//! as S' = C S C^-1: R' = M R M^-1, t' = M t + c - R' c. Results must again be integer rotations
//! and translations in 1/24; anything else is an error, never a silent rounding.

use super::{SymOp, TDEN};

/// Tolerance when snapping a rational computed in f64 back to a multiple of 1/24.
const SNAP: f64 = 1e-9;

/// A change of basis x -> M x + c.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeOfBasis {
    m: [[f64; 3]; 3],
    c: [f64; 3],
}

impl ChangeOfBasis {
    /// A pure origin shift by `v` (in 1/24).
    pub fn shift(v: [i32; 3]) -> Self {
        Self {
            m: identity(),
            c: v.map(|x| f64::from(x) / f64::from(TDEN)),
        }
    }

    /// Parse the inside of the parentheses: three integers (twelfths) or a triplet.
    pub fn parse(text: &str) -> Result<Self, String> {
        if !text.contains(',') {
            let numbers: Vec<i32> = text
                .split_whitespace()
                .map(|n| {
                    n.parse::<i32>()
                        .map_err(|_| format!("origin shift '{n}' is not an integer (twelfths)"))
                })
                .collect::<Result<_, _>>()?;
            let shift: [i32; 3] = numbers
                .try_into()
                .map_err(|_| "origin shift needs three integers".to_string())?;
            return Ok(Self::shift(shift.map(|v| v * TDEN / 12)));
        }
        let rows: Vec<&str> = text.split(',').collect();
        let [a, b, c] = rows[..] else {
            return Err(format!("change of basis '{text}' needs three expressions"));
        };
        let parsed = [a, b, c].map(parse_expression);
        let mut out = Self {
            m: [[0.0; 3]; 3],
            c: [0.0; 3],
        };
        for (i, row) in parsed.into_iter().enumerate() {
            let (coefficients, constant) = row?;
            out.m[i] = coefficients;
            out.c[i] = constant;
        }
        if determinant(&out.m).abs() < SNAP {
            return Err(format!("change of basis '{text}' is singular"));
        }
        Ok(out)
    }

    /// True when M is the identity (an origin shift).
    pub fn is_shift(&self) -> bool {
        self.m == identity()
    }

    /// S' = C S C^-1.
    pub fn transform(&self, op: &SymOp) -> Result<SymOp, String> {
        let inverse = invert(&self.m);
        let rot_f = op.rot.map(|row| row.map(f64::from));
        let rot = mat_mul(&mat_mul(&self.m, &rot_f), &inverse);
        let rot = snap_matrix(&rot).ok_or("the change of basis gives a non-integer rotation")?;
        let t = op.tran.map(|v| f64::from(v) / f64::from(TDEN));
        let mt = mat_vec(&self.m, t);
        let rc = mat_vec(&rot.map(|row| row.map(f64::from)), self.c);
        let tran: [f64; 3] = std::array::from_fn(|i| mt[i] + self.c[i] - rc[i]);
        let tran = snap_translation(tran)
            .ok_or("the change of basis gives a translation that is not a multiple of 1/24")?;
        Ok(SymOp::new(rot, tran))
    }

    /// Images M e_i of the old unit translations: lattice translations of the new basis (in 1/24).
    pub fn lattice_translations(&self) -> Result<Vec<[i32; 3]>, String> {
        (0..3)
            .map(|j| {
                snap_translation(std::array::from_fn(|i| self.m[i][j]))
                    .ok_or_else(|| "the change of basis is not rational in 1/24".to_string())
            })
            .collect()
    }

    /// The new unit translations expressed in the old basis, M^-1 e_i, in 1/24 when rational.
    pub fn new_axes_in_old(&self) -> Result<Vec<[i32; 3]>, String> {
        let inverse = invert(&self.m);
        (0..3)
            .map(|j| {
                snap_translation(std::array::from_fn(|i| inverse[i][j]))
                    .ok_or_else(|| "the new cell is not rational in 1/24 of the old".to_string())
            })
            .collect()
    }
}

/// One expression `x-y`, `-x+z+1/4`, `1/2*x+y` as (coefficients of x, y, z; constant).
fn parse_expression(text: &str) -> Result<([f64; 3], f64), String> {
    let (mut coefficients, mut constant) = ([0.0; 3], 0.0);
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let mut rest = compact.as_str();
    if rest.is_empty() {
        return Err("empty expression in a change of basis".into());
    }
    while !rest.is_empty() {
        let sign = if let Some(r) = rest.strip_prefix('-') {
            rest = r;
            -1.0
        } else {
            rest = rest.strip_prefix('+').unwrap_or(rest);
            1.0
        };
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '/' || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        let value = if number.is_empty() {
            None
        } else {
            Some(parse_rational(number)?)
        };
        let after = after.strip_prefix('*').unwrap_or(after);
        match after.chars().next().and_then(|c| {
            ["x", "y", "z"]
                .iter()
                .position(|v| v.starts_with(c.to_ascii_lowercase()))
        }) {
            Some(axis) => {
                coefficients[axis] += sign * value.unwrap_or(1.0);
                rest = &after[1..];
            }
            None => {
                constant += sign
                    * value.ok_or_else(|| {
                        format!("cannot read '{text}' as a change-of-basis expression")
                    })?;
                rest = after;
            }
        }
        if !rest.is_empty() && !rest.starts_with(['+', '-']) {
            return Err(format!(
                "cannot read '{text}' as a change-of-basis expression"
            ));
        }
    }
    Ok((coefficients, constant))
}

/// `3`, `1/4`, `0.5`.
fn parse_rational(text: &str) -> Result<f64, String> {
    let bad = || format!("'{text}' is not a number");
    match text.split_once('/') {
        Some((p, q)) => {
            let (p, q) = (
                p.parse::<f64>().map_err(|_| bad())?,
                q.parse::<f64>().map_err(|_| bad())?,
            );
            if q == 0.0 { Err(bad()) } else { Ok(p / q) }
        }
        None => text.parse::<f64>().map_err(|_| bad()),
    }
}

/// The 3x3 identity.
fn identity() -> [[f64; 3]; 3] {
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
}

/// det(m).
fn determinant(m: &[[f64; 3]; 3]) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

/// m^-1 by cofactors (m is checked non-singular when parsed).
fn invert(m: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let det = determinant(m);
    std::array::from_fn(|i| {
        std::array::from_fn(|j| {
            let (r0, r1) = ((j + 1) % 3, (j + 2) % 3);
            let (c0, c1) = ((i + 1) % 3, (i + 2) % 3);
            (m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0]) / det
        })
    })
}

/// a b.
fn mat_mul(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    std::array::from_fn(|i| std::array::from_fn(|j| (0..3).map(|k| a[i][k] * b[k][j]).sum()))
}

/// m v.
fn mat_vec(m: &[[f64; 3]; 3], v: [f64; 3]) -> [f64; 3] {
    std::array::from_fn(|i| (0..3).map(|k| m[i][k] * v[k]).sum())
}

/// The integer matrix equal to `m`, if it is one.
fn snap_matrix(m: &[[f64; 3]; 3]) -> Option<[[i32; 3]; 3]> {
    let snapped = m.map(|row| row.map(|v| v.round()));
    let close = m
        .iter()
        .flatten()
        .zip(snapped.iter().flatten())
        .all(|(a, b)| (a - b).abs() < SNAP);
    close.then(|| snapped.map(|row| row.map(|v| v as i32)))
}

/// `t` in 1/24, if every component is a multiple of 1/24.
fn snap_translation(t: [f64; 3]) -> Option<[i32; 3]> {
    let scaled = t.map(|v| v * f64::from(TDEN));
    scaled
        .iter()
        .all(|v| (v - v.round()).abs() < SNAP * f64::from(TDEN))
        .then(|| scaled.map(|v| v.round() as i32))
}
