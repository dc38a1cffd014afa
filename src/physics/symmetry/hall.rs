//! Hall (1981) space-group notation, as extended by Grosse-Kunstleve (1999): `L N_A^T ... (V)`.
//! In: a symbol such as `-P 2ac 2n` or `P 31 2 (0 0 4)`. Out: generators (lattice centrings,
//! the optional centre of inversion, one Seitz operator per matrix symbol), already moved by the
//! origin shift V (in twelfths). The default-axis rules are Hall's: first axis c; a second 2-fold
//! along a after a 2- or 4-fold, along a-b after a 3- or 6-fold (taking c as the reference when that
//! 3-fold is the body diagonal, as in `P 3* 2`); a third 3-fold along a+b+c. The closing part may
//! also be a change-of-basis triplet such as `(x-y,x+y,z)` (see `change_of_basis`).

use super::change_of_basis::ChangeOfBasis;
use super::{SymOp, SymmetryError, TDEN, closure};

/// Parse a Hall symbol into generators of its group.
pub fn generators(symbol: &str) -> Result<Vec<SymOp>, SymmetryError> {
    let err = |message: String| SymmetryError::Hall {
        symbol: symbol.to_string(),
        message,
    };
    let (body, basis) = split_change_of_basis(symbol).map_err(err)?;
    let mut tokens = body.split_whitespace();
    let lattice = tokens.next().ok_or_else(|| err("empty symbol".into()))?;
    let mut generators = lattice_generators(lattice).map_err(err)?;
    let mut previous: Option<(i32, Axis)> = None;
    for (index, token) in tokens.enumerate() {
        let matrix = parse_matrix(token, index, previous).map_err(err)?;
        previous = Some((matrix.order, matrix.axis));
        generators.push(matrix.op);
    }
    change_basis(&generators, &basis).map_err(err)
}

/// The generators in the new basis, plus the lattice translations the new basis brings.
fn change_basis(generators: &[SymOp], basis: &ChangeOfBasis) -> Result<Vec<SymOp>, String> {
    let mut out = generators
        .iter()
        .map(|op| basis.transform(op))
        .collect::<Result<Vec<_>, _>>()?;
    if basis.is_shift() {
        return Ok(out);
    }
    // The new cell must be a cell of the old lattice: each new unit translation, seen in the old
    // basis, has to be a lattice translation (integer or a centring vector) of the old group.
    let old = closure(generators).ok_or("the generators do not form a space group")?;
    for axis in basis.new_axes_in_old()? {
        let found = old
            .iter()
            .any(|op| op.rot == SymOp::IDENTITY.rot && op.tran == SymOp::new(op.rot, axis).tran);
        if !found {
            return Err("the change of basis does not describe a cell of this lattice".into());
        }
    }
    for translation in basis.lattice_translations()? {
        out.push(SymOp::new(SymOp::IDENTITY.rot, translation));
    }
    Ok(out)
}

/// A rotation axis: along a basis vector, a face diagonal (' or ") of a principal axis, or a+b+c.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Axis {
    X,
    Y,
    Z,
    Prime(usize),
    DoublePrime(usize),
    BodyDiagonal,
}

/// One parsed matrix symbol.
struct Matrix {
    order: i32,
    axis: Axis,
    op: SymOp,
}

/// The body and the change of basis of `P 31 2 (0 0 4)` or `C 2y (x-y,x+y,z)`.
fn split_change_of_basis(symbol: &str) -> Result<(&str, ChangeOfBasis), String> {
    let Some(open) = symbol.find('(') else {
        return Ok((symbol, ChangeOfBasis::shift([0; 3])));
    };
    let close = symbol
        .rfind(')')
        .filter(|&close| close > open)
        .ok_or("unclosed '(' in the change of basis")?;
    if !symbol[close + 1..].trim().is_empty() {
        return Err("text after the change of basis".into());
    }
    Ok((
        &symbol[..open],
        ChangeOfBasis::parse(&symbol[open + 1..close])?,
    ))
}

/// Centring translations (and -1 when the lattice symbol starts with '-').
fn lattice_generators(lattice: &str) -> Result<Vec<SymOp>, String> {
    let (centric, letter) = match lattice.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, lattice),
    };
    let h = TDEN / 2;
    let (t1, t2) = (TDEN / 3, 2 * TDEN / 3);
    let translations: Vec<[i32; 3]> = match letter.to_ascii_uppercase().as_str() {
        "P" => vec![],
        "A" => vec![[0, h, h]],
        "B" => vec![[h, 0, h]],
        "C" => vec![[h, h, 0]],
        "I" => vec![[h, h, h]],
        "R" => vec![[t2, t1, t1], [t1, t2, t2]],
        "S" => vec![[t1, t1, t2], [t2, t2, t1]],
        "T" => vec![[t1, t2, t1], [t2, t1, t2]],
        "F" => vec![[0, h, h], [h, 0, h], [h, h, 0]],
        other => return Err(format!("unknown lattice symbol '{other}'")),
    };
    let mut out: Vec<SymOp> = translations
        .into_iter()
        .map(|t| SymOp::new(SymOp::IDENTITY.rot, t))
        .collect();
    if centric {
        out.push(SymOp::new(negate(SymOp::IDENTITY.rot), [0; 3]));
    }
    Ok(out)
}

/// Parse one matrix symbol such as `-2xc`, `31`, `2"`, `3*`, `-1ab`.
fn parse_matrix(
    token: &str,
    index: usize,
    previous: Option<(i32, Axis)>,
) -> Result<Matrix, String> {
    let (improper, rest) = match token.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, token),
    };
    let mut chars = rest.chars();
    let order = match chars.next() {
        Some(c @ ('1' | '2' | '3' | '4' | '6')) => c as i32 - '0' as i32,
        _ => {
            return Err(format!(
                "'{token}': expected a rotation order 1, 2, 3, 4 or 6"
            ));
        }
    };
    let (mut axis, mut screw, mut tran) = (None, 0, [0; 3]);
    for c in chars {
        match c {
            'x' | 'y' | 'z' | '\'' | '"' | '*' if axis.is_none() => {
                axis = Some(explicit_axis(c, previous)?)
            }
            '1'..='5' if screw == 0 && (c as i32 - '0' as i32) < order => {
                screw = c as i32 - '0' as i32
            }
            'a' | 'b' | 'c' | 'n' | 'u' | 'v' | 'w' | 'd' => add_translation(&mut tran, c),
            _ => return Err(format!("'{token}': unexpected '{c}'")),
        }
    }
    let axis = match axis {
        Some(axis) => axis,
        None => default_axis(order, index, previous)
            .ok_or_else(|| format!("'{token}': cannot infer its axis"))?,
    };
    let mut rot = rotation(order, axis)
        .ok_or_else(|| format!("'{token}': no {order}-fold along this axis"))?;
    if screw != 0 {
        let unit = principal_index(axis)
            .ok_or_else(|| format!("'{token}': screw along a diagonal axis"))?;
        tran[unit] += screw * TDEN / order;
    }
    if improper {
        rot = negate(rot);
    }
    Ok(Matrix {
        order,
        axis,
        op: SymOp::new(rot, tran),
    })
}

/// An axis written out: x, y, z, or ', " relative to the preceding axis, or *.
fn explicit_axis(c: char, previous: Option<(i32, Axis)>) -> Result<Axis, String> {
    let reference = || match previous.and_then(|(_, axis)| principal_index(axis)) {
        Some(i) => Ok(i),
        None => Err(format!("'{c}' needs a preceding rotation along x, y or z")),
    };
    Ok(match c {
        'x' => Axis::X,
        'y' => Axis::Y,
        'z' => Axis::Z,
        '\'' => Axis::Prime(reference()?),
        '"' => Axis::DoublePrime(reference()?),
        _ => Axis::BodyDiagonal,
    })
}

/// Hall's default axis for the `index`-th matrix symbol.
fn default_axis(order: i32, index: usize, previous: Option<(i32, Axis)>) -> Option<Axis> {
    match (index, order, previous) {
        (_, 1, _) | (0, _, _) => Some(Axis::Z),
        (1, 2, Some((2 | 4, _))) => Some(Axis::X),
        (1, 2, Some((3 | 6, Axis::BodyDiagonal))) => Some(Axis::Prime(2)),
        (1, 2, Some((3 | 6, axis))) => principal_index(axis).map(Axis::Prime),
        (2, 3, _) => Some(Axis::BodyDiagonal),
        _ => None,
    }
}

/// 0, 1, 2 for x, y, z; None for diagonal axes.
fn principal_index(axis: Axis) -> Option<usize> {
    match axis {
        Axis::X => Some(0),
        Axis::Y => Some(1),
        Axis::Z => Some(2),
        _ => None,
    }
}

/// Add the translation of letter `c` (a b c n u v w d) in 1/24.
fn add_translation(tran: &mut [i32; 3], c: char) {
    let (h, q) = (TDEN / 2, TDEN / 4);
    let delta = match c {
        'a' => [h, 0, 0],
        'b' => [0, h, 0],
        'c' => [0, 0, h],
        'n' => [h, h, h],
        'u' => [q, 0, 0],
        'v' => [0, q, 0],
        'w' => [0, 0, q],
        _ => [q, q, q],
    };
    (0..3).for_each(|i| tran[i] += delta[i]);
}

/// The proper rotation of `order` about `axis`, if Hall defines it.
fn rotation(order: i32, axis: Axis) -> Option<[[i32; 3]; 3]> {
    let about_z = match order {
        1 => [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
        2 => [[-1, 0, 0], [0, -1, 0], [0, 0, 1]],
        3 => [[0, -1, 0], [1, -1, 0], [0, 0, 1]],
        4 => [[0, -1, 0], [1, 0, 0], [0, 0, 1]],
        _ => [[1, -1, 0], [1, 0, 0], [0, 0, 1]],
    };
    match axis {
        Axis::Z => Some(about_z),
        Axis::X => Some(relabel(about_z, 1)),
        Axis::Y => Some(relabel(about_z, 2)),
        Axis::Prime(p) if order == 2 => {
            Some(relabel([[0, -1, 0], [-1, 0, 0], [0, 0, -1]], (p + 1) % 3))
        }
        Axis::DoublePrime(p) if order == 2 => {
            Some(relabel([[0, 1, 0], [1, 0, 0], [0, 0, -1]], (p + 1) % 3))
        }
        Axis::BodyDiagonal if order == 3 => Some([[0, 0, 1], [1, 0, 0], [0, 1, 0]]),
        _ => None,
    }
}

/// Move a matrix written about z to another axis by cycling the coordinate labels `k` steps.
fn relabel(m: [[i32; 3]; 3], k: usize) -> [[i32; 3]; 3] {
    let mut out = [[0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            out[(i + k) % 3][(j + k) % 3] = m[i][j];
        }
    }
    out
}

/// -m.
fn negate(m: [[i32; 3]; 3]) -> [[i32; 3]; 3] {
    m.map(|row| row.map(|v| -v))
}
