//! The physics operators as fused tape nodes: each a [`FusedOp`](crate::tape::FusedOp) whose forward
//! calls the plain-Rust physics (src/physics) and whose VJP calls that code's analytic adjoint.
//!
//! In: static data at construction (atoms and hkl, channel energies, reference tables, detector
//! geometry and shoebox regions), tensor inputs for the differentiable arguments at run time.
//! Out: one tensor per node (structure factors per (hkl, channel), f'/f'' curves, expected photons
//! per pixel, a log density). Guarantees: no re-implementation of the physics here, only shape checks,
//! packing and the chain rule through scalars; every op is tested against central finite differences
//! through the tape (tests/ops_*.rs); a bad input is an `Err` naming the input and its expected shape.

pub mod anomalous;
pub mod background;
pub mod bragg_spot;
pub mod kramers_kronig;
pub mod response;
pub mod structure_factor;

pub use anomalous::{MixtureOp, ShiftedCurveOp, SigmoidEdgeOp, SmoothnessOp, StateMarginalOp};
pub use background::PlaneBackgroundOp;
pub use bragg_spot::{BraggSpotOp, MosaicInput};
pub use kramers_kronig::KramersKronigOp;
pub use response::ResponseOp;
pub use structure_factor::{StructureFactorOp, StructureFactorOutput};

use crate::tape::Value;
use ndarray::{ArrayD, IxDyn};

/// Why an operator could not be built from its static data.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// Structure-factor precomputation failed.
    #[error(transparent)]
    StructureFactor(#[from] crate::physics::structure_factor::StructureFactorError),
    /// A scattering table is missing or out of range.
    #[error(transparent)]
    Table(#[from] crate::physics::scattering_tables::TableError),
    /// The Kramers-Kronig grid is unusable.
    #[error(transparent)]
    KramersKronig(#[from] crate::physics::kramers_kronig::KramersKronigError),
    /// The spot model or a shoebox region is unusable.
    #[error(transparent)]
    Spot(#[from] crate::physics::spot::SpotError),
    /// Static data of inconsistent sizes.
    #[error("{op}: {detail}")]
    Shape {
        /// The operator being built.
        op: &'static str,
        /// What is inconsistent.
        detail: String,
    },
}

/// Input `i` as a real tensor, or an error naming it.
pub(crate) fn real_input<'a>(
    inputs: &[&'a Value],
    i: usize,
    name: &str,
) -> Result<&'a ArrayD<f64>, String> {
    match inputs.get(i) {
        Some(Value::Real(a)) => Ok(a),
        Some(Value::Complex(_)) => Err(format!("input {i} ({name}) must be real, found complex")),
        None => Err(format!(
            "missing input {i} ({name}); got {} inputs",
            inputs.len()
        )),
    }
}

/// Input `i` as a real tensor with exactly `len` elements (any shape), in standard order.
pub(crate) fn real_values(
    inputs: &[&Value],
    i: usize,
    name: &str,
    len: usize,
) -> Result<Vec<f64>, String> {
    let a = real_input(inputs, i, name)?;
    if a.len() != len {
        return Err(format!(
            "input {i} ({name}) must hold {len} values, got shape {:?}",
            a.shape()
        ));
    }
    Ok(a.iter().copied().collect())
}

/// Input `i` as a single real number (shape [] or any shape holding one element).
pub(crate) fn real_scalar(inputs: &[&Value], i: usize, name: &str) -> Result<f64, String> {
    Ok(real_values(inputs, i, name, 1)?[0])
}

/// The output gradient as a real tensor with the output's element count.
pub(crate) fn real_grad(grad: &Value, len: usize) -> Result<&ArrayD<f64>, String> {
    match grad {
        Value::Real(g) if g.len() == len => Ok(g),
        Value::Real(g) => Err(format!(
            "output gradient has shape {:?}, expected {len} values",
            g.shape()
        )),
        Value::Complex(_) => Err("output gradient must be real, found complex".into()),
    }
}

/// A real tensor of `shape` holding `values` (row-major), as a gradient for an input of that shape.
pub(crate) fn shaped(values: Vec<f64>, shape: &[usize]) -> Result<Value, String> {
    ArrayD::from_shape_vec(IxDyn(shape), values)
        .map(Value::Real)
        .map_err(|e| format!("gradient of shape {shape:?}: {e}"))
}
