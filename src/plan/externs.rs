//! The registry of physics operators (`extern` functions of the stdlib modules): name → an
//! implementation that records tape nodes from its evaluated arguments.
//!
//! In: registrations (`Registry::register`). Out: lookups by the IR's extern names. Guarantees:
//! the planner checks every extern a program calls against the registry before anything runs,
//! so an operator without an implementation is a `PlanError::MissingExtern` naming the operator
//! and its source span, never a failure in the middle of a fit.

use super::eval::Val;
use crate::tape::{Tape, TapeError};
use std::collections::HashMap;
use std::sync::Arc;

/// One evaluated argument of an extern call.
#[derive(Debug, Clone)]
pub enum ExternArg {
    /// A tensor on the tape (leading axes are the plates in `Val::plates`).
    Tensor(Val),
    /// A text constant (element symbols, reference-curve names, variant choices).
    Text(String),
    /// A data record or collection, by the name it has in the model.
    Record(String),
}

/// A physics operator callable from a model.
pub trait Extern: Send + Sync {
    /// Records the operator on the tape and returns its result.
    fn call(&self, t: &mut Tape, args: &[ExternArg]) -> Result<Val, TapeError>;
}

/// Operators by name.
#[derive(Clone, Default)]
pub struct Registry {
    ops: HashMap<String, Arc<dyn Extern>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.ops.keys().collect();
        names.sort();
        f.debug_struct("Registry").field("ops", &names).finish()
    }
}

impl Registry {
    /// The operators this build implements that need no data record (the anomalous curves).
    pub fn builtin() -> Self {
        let mut registry = Registry::default();
        super::externs_anomalous::register(&mut registry);
        registry
    }

    /// Adds or replaces an operator.
    pub fn register(&mut self, name: &str, op: Arc<dyn Extern>) -> &mut Self {
        self.ops.insert(name.into(), op);
        self
    }

    /// The operator of this name.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Extern>> {
        self.ops.get(name)
    }
}
