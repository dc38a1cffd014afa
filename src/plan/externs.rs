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
    /// A tensor computed from data alone (no gradient flows back through it).
    Data(Val),
    /// A data record or collection the planner has no loaded value for, by its name.
    Record(String),
    /// A `pdb(...)` atomic model.
    Crystal(Arc<crate::physics::atoms::Crystal>),
    /// The current shoebox of a plate over `image.shoeboxes`.
    Shoebox(ShoeboxRef),
}

impl ExternArg {
    /// What kind of argument this is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            ExternArg::Tensor(_) => "a tensor",
            ExternArg::Data(_) => "a data tensor",
            ExternArg::Text(_) => "text",
            ExternArg::Record(_) => "a record",
            ExternArg::Crystal(_) => "a crystal",
            ExternArg::Shoebox(_) => "a shoebox",
        }
    }
}

/// One shoebox of one image of a `dials(...)` source.
#[derive(Debug, Clone)]
pub struct ShoeboxRef {
    /// The loaded source.
    pub data: Arc<super::physics_data::DialsData>,
    /// Image index in `data.images`.
    pub image: usize,
    /// Shoebox index within the image.
    pub shoebox: usize,
    /// The image's shoeboxes (read on demand, held while the operator uses them).
    pub shoeboxes: Arc<crate::formats::image_index::ImageShoeboxes>,
}

impl ShoeboxRef {
    /// The shoebox: panel, bbox, Miller index.
    pub fn obs(&self) -> Result<&crate::formats::dataset_dir::ShoeboxObs, String> {
        self.shoeboxes
            .shoeboxes
            .get(self.shoebox)
            .ok_or_else(|| format!("image {} has no shoebox {}", self.image, self.shoebox))
    }
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
    /// Every operator this build implements: the anomalous curves and the pixel model.
    pub fn builtin() -> Self {
        let mut registry = Registry::default();
        super::externs_anomalous::register(&mut registry);
        super::externs_physics::register(&mut registry);
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
