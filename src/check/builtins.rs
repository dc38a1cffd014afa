//! Built-in functions: element-wise math, complex parts, axis reductions, small constructors.
//!
//! In: a name and checked arguments. Out: the result type, or (code, message).
//! The runtime implements each by the same name; all are element-wise unless said otherwise.

use super::Typed;
use super::static_dim;
use super::types::{Base, Dim, Type, broadcast, promote};
use super::value::Value;
use crate::diagnostics::Code;
use crate::syntax::ast::Arg;

/// Real-to-real functions that also take complex arguments.
const COMPLEX_OK: &[&str] = &["exp", "log", "sqrt", "sin", "cos"];
/// Real-only element-wise functions.
const REAL_ONLY: &[&str] = &[
    "log1p", "expm1", "sigmoid", "softplus", "tanh", "erf", "lgamma",
];
/// Numeric to real: magnitudes and parts.
const TO_REAL: &[&str] = &["abs", "abs2", "real", "imag", "arg"];
/// Every built-in name with its form, for `explain` and notes.
pub const FORMS: &[&str] = &[
    "exp log sqrt sin cos (real or complex, element-wise)",
    "log1p expm1 sigmoid softplus tanh erf lgamma (real, element-wise)",
    "abs abs2 real imag arg (to real), conj (complex)",
    "complex(re, im), min(a, b), max(a, b)",
    "sum(x), mean(x) (all axes), sum(x, axis), mean(x, axis)",
    "dot(a, b), norm(x) (last axis), linspace(start, stop, n)",
    "sum_to_zero(c) (rows n-1 to n that sum to zero, an isometry)",
];

/// True if `name` is a built-in function.
pub fn is_builtin(name: &str) -> bool {
    COMPLEX_OK.contains(&name)
        || REAL_ONLY.contains(&name)
        || TO_REAL.contains(&name)
        || [
            "conj",
            "complex",
            "min",
            "max",
            "sum",
            "mean",
            "dot",
            "norm",
            "linspace",
            "sum_to_zero",
        ]
        .contains(&name)
}

type Checked = Result<Type, (Code, String)>;

/// The result type of a built-in call.
pub fn builtin_type(name: &str, args: &[Arg<Typed>], sizes: &[(String, u64)]) -> Checked {
    let tys: Vec<&Type> = args.iter().map(|a| &a.value.meta.ty).collect();
    let arity = match name {
        "complex" | "min" | "max" | "dot" => 2,
        "linspace" => 3,
        "sum" | "mean" if tys.len() == 2 => 2,
        _ => 1,
    };
    if tys.len() != arity {
        return Err((
            Code::E0303,
            format!("`{name}` takes {arity} argument(s), got {}", tys.len()),
        ));
    }
    if args.iter().any(|a| a.name.is_some()) {
        return Err((
            Code::E0305,
            format!("`{name}` takes positional arguments only"),
        ));
    }
    match name {
        "complex" | "min" | "max" => binary(name, tys[0], tys[1]),
        "sum" | "mean" => reduce(name, tys[0], args.get(1)),
        "dot" => dot(tys[0], tys[1]),
        "norm" => real_tensor(name, tys[0]).map(|t| {
            Type::tensor(
                Base::Real,
                t.shape[..t.shape.len().saturating_sub(1)].to_vec(),
            )
        }),
        "linspace" => linspace(args, sizes),
        "sum_to_zero" => sum_to_zero(tys[0]),
        _ => elementwise(name, tys[0]),
    }
}

fn numeric(name: &str, t: &Type) -> Result<(), (Code, String)> {
    if t.is_numeric() {
        Ok(())
    } else {
        Err((Code::E0305, format!("`{name}` needs numbers, got {t}")))
    }
}

fn real_tensor<'a>(name: &str, t: &'a Type) -> Result<&'a Type, (Code, String)> {
    if matches!(t.base, Base::Int | Base::Real) {
        Ok(t)
    } else {
        Err((Code::E0305, format!("`{name}` needs reals, got {t}")))
    }
}

fn elementwise(name: &str, t: &Type) -> Checked {
    numeric(name, t)?;
    let complex = t.base == Base::Complex;
    let base = if TO_REAL.contains(&name) {
        Base::Real
    } else if name == "conj" || (complex && COMPLEX_OK.contains(&name)) {
        Base::Complex
    } else if complex {
        return Err((
            Code::E0305,
            format!("`{name}` is defined for reals only, got {t}"),
        ));
    } else {
        Base::Real
    };
    Ok(Type::tensor(base, t.shape.clone()))
}

fn binary(name: &str, a: &Type, b: &Type) -> Checked {
    real_tensor(name, a)?;
    real_tensor(name, b)?;
    let shape = broadcast(&a.shape, &b.shape).ok_or((
        Code::E0302,
        format!("`{name}`: shapes of {a} and {b} do not broadcast"),
    ))?;
    let base = if name == "complex" {
        Base::Complex
    } else {
        promote(&a.base, &b.base).unwrap_or(Base::Real)
    };
    Ok(Type::tensor(base, shape))
}

fn reduce(name: &str, t: &Type, axis: Option<&Arg<Typed>>) -> Checked {
    numeric(name, t)?;
    let base = if name == "mean" && t.base == Base::Int {
        Base::Real
    } else {
        t.base.clone()
    };
    let Some(axis) = axis else {
        return Ok(Type::scalar(base));
    };
    let Some(Value::Int(k)) = axis.value.meta.value else {
        return Err((
            Code::E0305,
            format!("the axis of `{name}` must be an int constant"),
        ));
    };
    let k = usize::try_from(k).ok().filter(|&k| k < t.shape.len());
    let Some(k) = k else {
        return Err((
            Code::E0306,
            format!("axis out of range for a value of type {t}"),
        ));
    };
    let mut shape = t.shape.clone();
    shape.remove(k);
    Ok(Type::tensor(base, shape))
}

fn dot(a: &Type, b: &Type) -> Checked {
    real_tensor("dot", a)?;
    real_tensor("dot", b)?;
    let ok = a.shape.len() == 1 && b.shape.len() == 1 && broadcast(&a.shape, &b.shape).is_some();
    if !ok {
        return Err((
            Code::E0302,
            format!("`dot` needs two vectors of one length, got {a} and {b}"),
        ));
    }
    Ok(Type::scalar(
        promote(&a.base, &b.base).unwrap_or(Base::Real),
    ))
}

/// `sum_to_zero(c)`: a (m, ...) tensor to (m + 1, ...), the rows summing to zero.
fn sum_to_zero(t: &Type) -> Checked {
    real_tensor("sum_to_zero", t)?;
    match t.shape.first() {
        Some(Dim::Known(m)) if *m >= 1 => {
            let mut shape = t.shape.clone();
            shape[0] = Dim::Known(m + 1);
            Ok(Type::tensor(Base::Real, shape))
        }
        Some(Dim::Known(_)) | None => Err((
            Code::E0305,
            format!("`sum_to_zero` needs at least one row of free coordinates, got {t}"),
        )),
        Some(_) => Err((
            Code::E0312,
            format!("the rows of `sum_to_zero` must be known before fitting, got {t}"),
        )),
    }
}

fn linspace(args: &[Arg<Typed>], sizes: &[(String, u64)]) -> Checked {
    for a in &args[..2] {
        let t = &a.value.meta.ty;
        if !matches!(t.base, Base::Int | Base::Real) || !t.shape.is_empty() {
            return Err((
                Code::E0305,
                format!("`linspace` needs real scalars for start and stop, got {t}"),
            ));
        }
    }
    match static_dim(&args[2].value, sizes) {
        Some(d @ Dim::Known(_)) | Some(d @ Dim::Sym(_)) => Ok(Type::tensor(Base::Real, vec![d])),
        _ => Err((
            Code::E0312,
            "the number of points of `linspace` must be known before fitting".to_string(),
        )),
    }
}
