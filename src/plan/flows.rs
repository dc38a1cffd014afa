//! Planning of correction flows (`observe ... corrected by FLOW(context...) penalty W`) and the
//! network settings shared with encoder guides.
//!
//! In: the IR's `Correction` (merged settings, context expressions, penalty), the observation.
//! Out: an [`CorrectionSpec`] for the observe site. Refused with a clear message: a likelihood
//! other than Poisson, an affine coupling or a spline of more than one layer (stacked affine maps
//! of a scalar compose to one; a spline's flexibility is its `bins`), a spline of fewer than 2 or
//! more than `MAX_SPLINE_BINS` bins, context inputs whose per-element size is not fixed.

use super::error::PlanError;
use super::{Scope, closure, dim, masked_rows, record_dim};
use crate::check::value::Value as V;
use crate::infer::flow::{ContextInput, CorrectionSpec, FlowKind, MAX_PLANAR_LAYERS};
use crate::infer::mlp::Mlp;
use crate::infer::spline::{DEFAULT_SPLINE_BINS, MAX_SPLINE_BINS};
use crate::ir;
use crate::tape::linalg::Activation;
use std::sync::Arc;

/// A network's hidden widths and activation from its settings; `what` names it in errors
/// ("encoder `e`", "flow `f`").
pub(super) fn net_shape(
    settings: &[(String, V)],
    what: &str,
    at: &str,
    default_activation: Activation,
) -> Result<(Vec<usize>, Activation), PlanError> {
    let unsupported = |what: String| PlanError::Unsupported {
        at: at.into(),
        what,
    };
    let setting = |k: &str| settings.iter().find(|(n, _)| n == k).map(|(_, v)| v);
    let hidden = widths_setting(settings, "hidden", what, at)?.unwrap_or_default();
    let activation = match setting("activation") {
        None => default_activation,
        Some(V::Str(a) | V::Choice(a)) => match a.as_str() {
            "relu" => Activation::Relu,
            "tanh" => Activation::Tanh,
            "sigmoid" => Activation::Sigmoid,
            "softplus" => Activation::Softplus,
            other => {
                return Err(unsupported(format!(
                    "{what}: the activation `{other}` (the tape has relu, tanh, sigmoid, softplus)"
                )));
            }
        },
        Some(other) => return Err(unsupported(format!("{what}: activation {other:?}"))),
    };
    Ok((hidden, activation))
}

/// The layer widths of the setting `key` (`hidden`, `embed`), None when it is not set.
pub(super) fn widths_setting(
    settings: &[(String, V)],
    key: &str,
    what: &str,
    at: &str,
) -> Result<Option<Vec<usize>>, PlanError> {
    let bad = || PlanError::Unsupported {
        at: at.into(),
        what: format!("{what}: {key} widths must be a list of positive integers"),
    };
    match settings.iter().find(|(n, _)| n == key).map(|(_, v)| v) {
        None => Ok(None),
        Some(V::List(items)) => items
            .iter()
            .map(|v| v.as_real().filter(|x| *x >= 1.0).map(|x| x as usize))
            .collect::<Option<_>>()
            .map(Some)
            .ok_or_else(bad),
        Some(_) => Err(bad()),
    }
}

/// Where an observation lives, for its flow's context inputs.
pub(super) struct ObservedAt<'a> {
    /// The observed data expression.
    pub data: &'a ir::Expr,
    /// The likelihood family's name.
    pub family: &'a str,
    /// The plate chain of the observation.
    pub chain: &'a [usize],
    /// The shoebox plate when the data are `shoebox.pixels` (context rows are masked alike).
    pub pixels: Option<&'a super::records::RecordPlate>,
}

/// The correction flow of one observation.
pub(super) fn correction_spec(
    scope: &Arc<Scope>,
    c: &ir::Correction,
    obs: &ObservedAt,
    at: &str,
    label: &str,
) -> Result<CorrectionSpec, PlanError> {
    let what = format!("the correction flow `{}`", c.flow);
    let unsupported = |detail: String| PlanError::Unsupported {
        at: at.into(),
        what: detail,
    };
    if obs.family != "Poisson" {
        return Err(unsupported(format!(
            "{what} on a {} likelihood (flows correct Poisson counts through their Gaussian approximation)",
            obs.family
        )));
    }
    let setting = |k: &str| c.settings.iter().find(|(n, _)| n == k).map(|(_, v)| v);
    let layers = match setting("layers") {
        Some(V::Int(n)) if *n >= 1 => *n as usize,
        _ => 1,
    };
    let kind = match setting("kind") {
        Some(V::Str(k) | V::Choice(k)) if k == "planar" => {
            if layers > MAX_PLANAR_LAYERS {
                return Err(unsupported(format!(
                    "{what} with {layers} planar layers (at most {MAX_PLANAR_LAYERS})"
                )));
            }
            FlowKind::Planar { layers }
        }
        Some(V::Str(k) | V::Choice(k)) if k == "spline" => {
            spline_kind(setting("bins"), layers, &what).map_err(unsupported)?
        }
        Some(V::Str(k) | V::Choice(k)) if k == "gain" => {
            if layers > 1 {
                return Err(unsupported(format!(
                    "{what}: a gain flow has one layer (two gains compose to one); set layers = 1"
                )));
            }
            FlowKind::Gain
        }
        _ if layers > 1 => {
            return Err(unsupported(format!(
                "{what}: an affine coupling of the one-dimensional residual has one layer (stacked affine maps compose to one); set layers = 1 or use kind = planar"
            )));
        }
        _ => FlowKind::AffineCoupling,
    };
    let readout = setting("readout").and_then(V::as_real).unwrap_or(1.0);
    let (hidden, activation) = net_shape(&c.settings, &what, at, Activation::Tanh)?;
    let context: Vec<ContextInput> = c
        .context
        .iter()
        .map(|e| context_input(scope, e, obs, at, label))
        .collect::<Result<_, _>>()?;
    let given_expected = !matches!(setting("given_expected"), Some(V::Bool(false)));
    let width = usize::from(given_expected) + context.iter().map(|ci| ci.width).sum::<usize>();
    let mut widths = vec![width];
    widths.extend(hidden);
    widths.push(kind.outputs());
    Ok(CorrectionSpec {
        flow: c.flow.clone(),
        kind,
        conditioner: Mlp { widths, activation },
        context,
        penalty: c.penalty,
        readout,
        given_expected,
        check: None,
    })
}

/// A spline flow's kind from its `bins` setting: one layer, 2 to MAX_SPLINE_BINS bins.
fn spline_kind(bins: Option<&V>, layers: usize, what: &str) -> Result<FlowKind, String> {
    if layers > 1 {
        return Err(format!(
            "{what}: a spline flow has one layer here (its penalty's quadrature is cut at one spline's knots; for a more flexible map raise `bins`); set layers = 1"
        ));
    }
    match bins {
        None => Ok(FlowKind::Spline {
            bins: DEFAULT_SPLINE_BINS,
        }),
        Some(V::Int(n)) if (2..=MAX_SPLINE_BINS as i64).contains(n) => {
            Ok(FlowKind::Spline { bins: *n as usize })
        }
        Some(other) => Err(format!(
            "{what}: the setting `bins` = {} (a spline needs an int from 2 to {MAX_SPLINE_BINS})",
            shown(other)
        )),
    }
}

/// A setting value as written.
fn shown(v: &V) -> String {
    match v {
        V::Int(n) => n.to_string(),
        V::Real(x) => x.to_string(),
        V::Str(w) | V::Choice(w) => format!("`{w}`"),
        other => format!("{other:?}"),
    }
}

/// A context input: per observed element when its shape extends the data's, else one value
/// set per observation.
fn context_input(
    scope: &Arc<Scope>,
    e: &ir::Expr,
    obs: &ObservedAt,
    at: &str,
    label: &str,
) -> Result<ContextInput, PlanError> {
    let size = |d: &crate::check::types::Dim| dim(d, scope).or_else(|| record_dim(d, scope));
    // Per element when its shape extends the data's (a vectorized plate's rows are axes of
    // both at run time).
    let data = &obs.data.ty.shape;
    let per_row = e.ty.shape.len() >= data.len() && e.ty.shape[..data.len()] == data[..];
    let rest = if per_row {
        &e.ty.shape[data.len()..]
    } else {
        &e.ty.shape[..]
    };
    let width = rest
        .iter()
        .map(size)
        .product::<Option<usize>>()
        .ok_or_else(|| PlanError::Unsupported {
            at: at.into(),
            what: format!(
                "a flow context input of shape {:?} (its size per element must be the same for every observation)",
                e.ty.shape
            ),
        })?;
    let mut expr = closure(scope, e, obs.chain, None, label);
    if let (true, Some(plate)) = (per_row, obs.pixels) {
        expr = masked_rows(expr, plate);
    }
    Ok(ContextInput {
        expr,
        per_row,
        width,
    })
}
