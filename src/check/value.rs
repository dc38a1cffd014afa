//! Values known before fitting: constants, variant choices, folded arithmetic on them.

use serde::Serialize;
use std::fmt;

/// A value known at compile time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Value {
    /// An int.
    Int(i64),
    /// A real.
    Real(f64),
    /// A complex number (re, im).
    Complex(f64, f64),
    /// A bool.
    Bool(bool),
    /// Text.
    Str(String),
    /// The selected choice of a variant.
    Choice(String),
    /// A list (e.g. hidden layer widths).
    List(Vec<Value>),
}

impl Value {
    /// The value as a real, if numeric and real.
    pub fn as_real(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Real(r) => Some(*r),
            _ => None,
        }
    }

    /// The value as (re, im), if numeric.
    pub fn as_complex(&self) -> Option<(f64, f64)> {
        match self {
            Value::Complex(re, im) => Some((*re, *im)),
            other => other.as_real().map(|r| (r, 0.0)),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Real(r) => write!(f, "{r:?}"),
            Value::Complex(re, im) => write!(f, "({re:?} + {im:?}i)"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Str(s) => write!(f, "\"{s}\""),
            Value::Choice(c) => write!(f, "'{c}"),
            Value::List(items) => {
                let parts: Vec<String> = items.iter().map(Value::to_string).collect();
                write!(f, "[{}]", parts.join(", "))
            }
        }
    }
}
