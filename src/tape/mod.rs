//! The reverse-mode automatic-differentiation tape that models are lowered to.
//!
//! In: leaves (latent values, parameters), constants (data) and tensor operators recorded in
//! evaluation order. Out: values, and gradients of a scalar with respect to every leaf.
//! Guarantees: nodes are tensors (never one per scalar); every op's VJP sits beside its
//! forward rule and is tested against central finite differences (tests/tape_*.rs).

pub mod complex;
pub mod elementwise;
pub mod fused;
pub mod fusion;
pub mod graph;
pub mod index;
pub mod linalg;
pub mod op;
pub mod reduce;
pub mod value;

pub use complex::ComplexOp;
pub use elementwise::{Binary, Unary};
pub use fused::FusedOp;
pub use fusion::Ternary;
pub use graph::{DataRef, NodeId, Tape, TapeError};
pub use index::Index;
pub use linalg::Activation;
pub use op::{Op, OpError};
pub use reduce::Reduce;
pub use value::Value;
