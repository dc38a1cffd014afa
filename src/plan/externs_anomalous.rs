//! The anomalous-scattering externs of stdlib/anomalous.spread as registry entries:
//! `reference_curve`, `shifted_curve`, `kramers_kronig`, `oxidation_state` and `smoothness`.
//!
//! In: evaluated arguments (table or element names as text, channel energies and f'' or a shift
//! as tensors without plate axes). Out: a tape node: a constant (2, K) curve, a
//! `ShiftedCurveOp` node, or a `KramersKronigOp` node. Guarantees: the values and gradients are
//! those of src/ops (tested there against finite differences); a wrong argument kind, a value
//! that varies over a plate, or an unknown table is an `Op` error naming the operator and the
//! argument.

use super::eval::Val;
use super::externs::{Extern, ExternArg, Registry};
use super::reference;
use crate::ops::{KramersKronigOp, ShiftedCurveOp, SmoothnessOp, anomalous};
use crate::tape::{Tape, TapeError, Value};
use std::sync::Arc;

fn fail(op: &'static str, detail: String) -> TapeError {
    TapeError::Op {
        op,
        label: format!("extern {op}"),
        detail,
    }
}

fn text<'a>(op: &'static str, args: &'a [ExternArg], i: usize) -> Result<&'a str, TapeError> {
    match args.get(i) {
        Some(ExternArg::Text(s)) => Ok(s),
        other => Err(fail(
            op,
            format!("argument {i} must be text, got {other:?}"),
        )),
    }
}

/// Argument `i` as a tensor with no plate axes.
fn tensor<'a>(op: &'static str, args: &'a [ExternArg], i: usize) -> Result<&'a Val, TapeError> {
    match args.get(i) {
        Some(ExternArg::Tensor(v) | ExternArg::Data(v)) if v.plates.is_empty() => Ok(v),
        Some(ExternArg::Tensor(_) | ExternArg::Data(_)) => Err(fail(
            op,
            format!("argument {i} varies over a plate; this operator takes dataset-level values"),
        )),
        other => Err(fail(
            op,
            format!("argument {i} must be a tensor, got {other:?}"),
        )),
    }
}

fn energies(op: &'static str, t: &Tape, v: &Val) -> Result<Vec<f64>, TapeError> {
    match t.value(v.node) {
        Value::Real(a) => Ok(a.iter().copied().collect()),
        Value::Complex(_) => Err(fail(op, "channel energies must be real".into())),
    }
}

/// `reference_curve(table, energy_ev)`: f' (row 0) and f'' (row 1) of a built-in table.
struct ReferenceCurve;

impl Extern for ReferenceCurve {
    fn call(&self, t: &mut Tape, args: &[ExternArg]) -> Result<Val, TapeError> {
        const OP: &str = "reference_curve";
        let table = reference::table(text(OP, args, 0)?).map_err(|e| fail(OP, e.to_string()))?;
        let e = energies(OP, t, tensor(OP, args, 1)?)?;
        let curve = anomalous::reference_curve(&table, &e).map_err(|e| fail(OP, e.to_string()))?;
        Ok(Val {
            node: t.constant_real(curve),
            plates: vec![],
        })
    }
}

/// `shifted_curve(table, energy_ev, shift_ev)`: the table read at E − shift.
struct ShiftedCurve;

impl Extern for ShiftedCurve {
    fn call(&self, t: &mut Tape, args: &[ExternArg]) -> Result<Val, TapeError> {
        const OP: &str = "shifted_curve";
        let table = reference::table(text(OP, args, 0)?).map_err(|e| fail(OP, e.to_string()))?;
        let e = energies(OP, t, tensor(OP, args, 1)?)?;
        let shift = tensor(OP, args, 2)?.node;
        let node = t.fused(Arc::new(ShiftedCurveOp::new(table, e)), &[shift])?;
        Ok(Val {
            node,
            plates: vec![],
        })
    }
}

/// `kramers_kronig(energy_ev, fdp, reference)`: f' from f'' relative to a reference pair
/// (f'_ref, f''_ref) that is consistent over all energies: f' = f'_ref + KK(f'' − f''_ref) on the
/// channel grid. `reference` names a built-in measured curve ("sherrell_fe_ox": its own f' came
/// from the same f'' by KK, so a deviation confined to the window is transformed exactly) or an
/// element (its Henke free-atom curve, whose f'' differs from a measured edge over a range wider
/// than a 100 eV window: f' is then off by several electrons; tests/physics_sf_kramers_kronig.rs).
struct KramersKronig;

impl Extern for KramersKronig {
    fn call(&self, t: &mut Tape, args: &[ExternArg]) -> Result<Val, TapeError> {
        const OP: &str = "kramers_kronig";
        let e = energies(OP, t, tensor(OP, args, 0)?)?;
        let fdp = tensor(OP, args, 1)?.node;
        let name = text(OP, args, 2)?;
        let op = match reference::table(name) {
            Ok(table) => crate::physics::anomalous::shifted_reference(&table, &e, 0.0)
                .map_err(|e| fail(OP, e.to_string()))
                .and_then(|curves| {
                    KramersKronigOp::new(&e, curves).map_err(|e| fail(OP, e.to_string()))
                })?,
            Err(_) => KramersKronigOp::with_henke(&e, name).map_err(|e| fail(OP, e.to_string()))?,
        };
        let node = t.fused(Arc::new(op), &[fdp])?;
        Ok(Val {
            node,
            plates: vec![],
        })
    }
}

/// `oxidation_state(site, weight, first, second)`: the weight itself (the run reads the call).
struct OxidationState;

impl Extern for OxidationState {
    fn call(&self, _t: &mut Tape, args: &[ExternArg]) -> Result<Val, TapeError> {
        const OP: &str = "oxidation_state";
        for i in [0, 2, 3] {
            text(OP, args, i)?;
        }
        Ok(tensor(OP, args, 1)?.clone())
    }
}

/// `smoothness(values, sigma)`: the log density of a Gaussian random walk of step `sigma` over
/// neighbouring channels, −Σ (v[k+1] − v[k])² / (2σ²) summed over rows (Sauter 2020's restraint).
struct Smoothness;

impl Extern for Smoothness {
    fn call(&self, t: &mut Tape, args: &[ExternArg]) -> Result<Val, TapeError> {
        const OP: &str = "smoothness";
        let values = tensor(OP, args, 0)?.node;
        let sigma = tensor(OP, args, 1)?.node;
        if t.needs_grad(sigma) {
            return Err(fail(
                OP,
                "argument 1 (sigma) depends on a latent; the restraint's width must be a constant"
                    .into(),
            ));
        }
        let sigma = match t.value(sigma) {
            Value::Real(a) if a.len() == 1 => a.iter().copied().next().unwrap_or(f64::NAN),
            other => {
                return Err(fail(
                    OP,
                    format!("argument 1 (sigma) must be one real number, got {other:?}"),
                ));
            }
        };
        let op = SmoothnessOp::new(sigma).map_err(|e| fail(OP, e.to_string()))?;
        let node = t.fused(Arc::new(op), &[values])?;
        Ok(Val {
            node,
            plates: vec![],
        })
    }
}

/// Registers the operators.
pub fn register(registry: &mut Registry) {
    registry
        .register("oxidation_state", Arc::new(OxidationState))
        .register("reference_curve", Arc::new(ReferenceCurve))
        .register("shifted_curve", Arc::new(ShiftedCurve))
        .register("kramers_kronig", Arc::new(KramersKronig))
        .register("smoothness", Arc::new(Smoothness));
}
