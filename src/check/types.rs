//! Types, shapes and ad levels of checked expressions, and the broadcasting rules.
//!
//! A type is a base (real, int, complex, bool, str, choice, a data record or a collection of
//! records) and a shape (a list of dimensions). A dimension is known (8), symbolic (bound to a data
//! size such as `shots.n_channels`, or a size variable `K` of a signature) or any (`_`).
//! Broadcasting (README, "Broadcasting"): shapes align from the right; a missing dimension or a
//! dimension of size 1 stretches; symbolic dimensions match only themselves; `_` matches anything.

use serde::Serialize;
use std::fmt;

/// One dimension of a shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum Dim {
    /// A size known before fitting.
    Known(u64),
    /// A size bound to the data or a size variable of a signature.
    Sym(String),
    /// Any size (`_` in signatures).
    Any,
}

/// The kinds of records data sources provide; each carries the name of its data binding.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum Rec {
    /// An atomic model from `pdb(...)`.
    Crystal,
    /// A DIALS experiment list with reflections from `dials(...)`.
    Shots,
    /// One still shot.
    Image,
    /// One shoebox (spot window) of an image.
    Shoebox,
    /// A table from `table(...)`, named by its binding.
    Table(String),
    /// One row of the named table.
    Row(String),
}

/// The base of a type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum Base {
    /// 64-bit float.
    Real,
    /// 64-bit integer.
    Int,
    /// Complex of two reals.
    Complex,
    /// Boolean.
    Bool,
    /// Text (file names, element symbols).
    Str,
    /// The selected choice of a variant.
    Choice,
    /// A data record.
    Record(Rec),
    /// A collection of records that a plate can range over.
    Collection(Rec),
    /// The type of an expression that already produced an error (silences follow-up errors).
    Error,
}

/// A checked type: base and shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Type {
    /// Element kind.
    pub base: Base,
    /// Dimensions, outermost first; empty for scalars.
    pub shape: Vec<Dim>,
}

/// Whether an expression needs gradients: `Param` if it depends on a latent or param.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Ad {
    /// Known from data and constants: computed once, off the tape.
    Data,
    /// Depends on latents or params: goes on the tape.
    Param,
}

impl Type {
    /// A scalar of this base.
    pub fn scalar(base: Base) -> Type {
        Type { base, shape: Vec::new() }
    }

    /// A tensor of this base and shape.
    pub fn tensor(base: Base, shape: Vec<Dim>) -> Type {
        Type { base, shape }
    }

    /// The error type.
    pub fn error() -> Type {
        Type::scalar(Base::Error)
    }

    /// True for the error type.
    pub fn is_error(&self) -> bool {
        self.base == Base::Error
    }

    /// True for int, real and complex.
    pub fn is_numeric(&self) -> bool {
        matches!(self.base, Base::Int | Base::Real | Base::Complex)
    }
}

/// The common base of two numeric bases (int -> real -> complex), if both are numeric.
pub fn promote(a: &Base, b: &Base) -> Option<Base> {
    use Base::*;
    match (a, b) {
        (Error, _) | (_, Error) => Some(Error),
        (Int, Int) => Some(Int),
        (Int | Real, Int | Real) => Some(Real),
        (Int | Real | Complex, Int | Real | Complex) => Some(Complex),
        _ => None,
    }
}

/// The broadcast shape of two shapes, if they broadcast.
pub fn broadcast(a: &[Dim], b: &[Dim]) -> Option<Vec<Dim>> {
    let n = a.len().max(b.len());
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let x = (i + a.len()).checked_sub(n).map(|j| &a[j]);
        let y = (i + b.len()).checked_sub(n).map(|j| &b[j]);
        out.push(match (x, y) {
            (Some(x), None) => x.clone(),
            (None, Some(y)) => y.clone(),
            (Some(x), Some(y)) => broadcast_dim(x, y)?,
            (None, None) => return None,
        });
    }
    Some(out)
}

fn broadcast_dim(x: &Dim, y: &Dim) -> Option<Dim> {
    match (x, y) {
        _ if x == y => Some(x.clone()),
        (Dim::Known(1) | Dim::Any, _) => Some(y.clone()),
        (_, Dim::Known(1) | Dim::Any) => Some(x.clone()),
        _ => None,
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(n) => write!(f, "{n}"),
            Dim::Sym(s) => write!(f, "{s}"),
            Dim::Any => write!(f, "_"),
        }
    }
}

impl fmt::Display for Rec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rec::Crystal => write!(f, "crystal"),
            Rec::Shots => write!(f, "shots"),
            Rec::Image => write!(f, "image"),
            Rec::Shoebox => write!(f, "shoebox"),
            Rec::Table(t) => write!(f, "table {t}"),
            Rec::Row(t) => write!(f, "row of {t}"),
        }
    }
}

impl fmt::Display for Base {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Base::Real => write!(f, "real"),
            Base::Int => write!(f, "int"),
            Base::Complex => write!(f, "complex"),
            Base::Bool => write!(f, "bool"),
            Base::Str => write!(f, "str"),
            Base::Choice => write!(f, "choice"),
            Base::Record(r) => write!(f, "{r}"),
            Base::Collection(r) => write!(f, "collection of {r}"),
            Base::Error => write!(f, "<error>"),
        }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.base)?;
        if !self.shape.is_empty() {
            let dims: Vec<String> = self.shape.iter().map(Dim::to_string).collect();
            write!(f, "[{}]", dims.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_aligns_from_the_right() {
        let k = |n| Dim::Known(n);
        assert_eq!(broadcast(&[k(3)], &[k(100), k(3)]), Some(vec![k(100), k(3)]));
        assert_eq!(broadcast(&[k(1), k(3)], &[k(4), k(1)]), Some(vec![k(4), k(3)]));
        assert_eq!(broadcast(&[k(3)], &[k(4)]), None);
        let s = Dim::Sym("shots.n_channels".into());
        assert_eq!(broadcast(&[s.clone()], &[k(1)]), Some(vec![s.clone()]));
        assert_eq!(broadcast(&[s], &[k(100)]), None);
    }

    #[test]
    fn numeric_promotion_goes_int_real_complex() {
        assert_eq!(promote(&Base::Int, &Base::Real), Some(Base::Real));
        assert_eq!(promote(&Base::Real, &Base::Complex), Some(Base::Complex));
        assert_eq!(promote(&Base::Bool, &Base::Real), None);
    }
}
