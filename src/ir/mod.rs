//! The IR: what the runtime interprets. A model's log-joint as a flat list of plate-annotated
//! statements, its guide as one entry per latent, and typed expression trees.
//!
//! In: a checked program (`lower`). Out: `Program`, printable in a stable text form (`print`) and
//! serializable with serde. Guarantees: variants and constants are already applied (a `match`
//! keeps only the selected arm; a switched-off correction flow is gone), so the runtime never sees
//! a choice it must make; every expression node carries its type, shape, plates and ad level;
//! physics operators are named extern calls, looked up by name at run time.
//!
//! How a runtime interprets it:
//! - `log_joint` runs in order. A statement with `plate: Some(p)` runs once per element of `p` and of
//!   each ancestor plate (a loop or a batched tensor axis, the runtime's choice); `None` runs once.
//!   Under a subsampled plate, observe log-likelihoods and latent prior terms inside it are scaled by
//!   size / subsample.
//! - `Var(name)` is, in this order: a parameter or local let of the enclosing function; a latent,
//!   param or let of the model (the value of the current plate element); a data binding; the current
//!   record of the data plate of that name (`image`, `shoebox`, `row`).
//! - `Reduce { plate, body }` evaluates `body` for every element of `plate` (nested inside the
//!   current elements of the enclosing plates) and combines them; `Stack` adds a leading axis.
//!   Over a subsampled plate it sees the mini-batch: `stack` has `subsample` rows, `sum` should be
//!   scaled by size / subsample and `mean` is the batch mean (unbiased estimates of the full ones).
//! - `Latent` samples from the guide (`guide` lists one `GuideSite` per latent) and adds
//!   log prior - log guide; `support` says which bijection maps the unconstrained guide sample.
//! - `Observe` adds the log-likelihood of `data`, summed over its shape; with a `Correction`, the
//!   likelihood is pushed through the named flow and `penalty` times the flow's penalty is added.
//! - `Extern(name, args)` calls the operator registered under `name`; `ExternSig` gives its types.

mod compile;
mod lower;
mod print;

use crate::check::distributions::Support;
use crate::check::types::{Ad, Dim, Rec, Type};
use crate::check::value::Value;
use crate::diagnostics::Span;
use crate::syntax::ast::{BinOp, ReduceOp, UnOp};
use serde::Serialize;

pub use compile::{Compiled, Options, compile, compile_file};
pub use lower::lower;
pub use print::print;

/// A whole model, ready to run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Program {
    /// Root module name.
    pub name: String,
    /// Constants of the model after `--set` (informational: their uses are already folded).
    pub consts: Vec<(String, Value)>,
    /// Variants: name, choices, selected choice.
    pub variants: Vec<(String, Vec<String>, String)>,
    /// Data bindings to load.
    pub data: Vec<DataSource>,
    /// Plates, parents before children; `Stmt::plate` indexes this list.
    pub plates: Vec<Plate>,
    /// Signatures of the physics operators the model calls.
    pub externs: Vec<ExternSig>,
    /// User functions the model calls (named `module.name`).
    pub functions: Vec<Function>,
    /// Flow and encoder declarations used.
    pub nets: Vec<Net>,
    /// The log-joint density: statements in execution order.
    pub log_joint: Vec<Stmt>,
    /// The guide: one entry per latent.
    pub guide: Vec<GuideSite>,
}

/// A data binding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataSource {
    /// Name used in expressions.
    pub name: String,
    /// `pdb`, `dials` or `table`.
    pub source: String,
    /// Paths or globs, relative to `--data`.
    pub paths: Vec<String>,
    /// Declared columns of a table.
    pub columns: Vec<(String, Type)>,
    /// Sizes the model fixed (e.g. n_channels = 100); the loader must verify them.
    pub sizes: Vec<(String, u64)>,
}

/// A plate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plate {
    /// Name; for data plates also the name of the current record in expressions.
    pub name: String,
    /// Enclosing plate.
    pub parent: Option<usize>,
    /// What it ranges over.
    pub size: PlateSize,
    /// Mini-batch size; the likelihood inside is scaled by size / subsample.
    pub subsample: Option<u64>,
}

/// The range of a plate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum PlateSize {
    /// One element: a scope only.
    Single,
    /// A fixed size (known, or a data size symbol).
    Fixed(Dim),
    /// The records of a data collection.
    Data {
        /// The collection expression (e.g. `image.shoeboxes`).
        collection: Expr,
        /// Record kind.
        record: Rec,
        /// Size symbol.
        size: Dim,
    },
}

/// A physics operator's signature.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExternSig {
    /// Registry name.
    pub name: String,
    /// Declaring stdlib or user module.
    pub module: String,
    /// Parameters; bare-name dimensions are size variables.
    pub params: Vec<(String, Type)>,
    /// Result.
    pub ret: Type,
}

/// A user function.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Function {
    /// `module.name`.
    pub name: String,
    /// Parameters.
    pub params: Vec<(String, Type)>,
    /// Result type.
    pub ret: Type,
    /// Local lets, in order.
    pub lets: Vec<(String, Expr)>,
    /// Result.
    pub body: Expr,
}

/// A flow or encoder.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Net {
    /// Name.
    pub name: String,
    /// Flow (true) or encoder (false).
    pub is_flow: bool,
    /// Settings with defaults filled in.
    pub settings: Vec<(String, Value)>,
}

/// A statement of the log-joint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stmt {
    /// Innermost enclosing plate (index into `Program::plates`), None at top level.
    pub plate: Option<usize>,
    /// Source location, for runtime errors.
    pub span: Span,
    /// What it does.
    pub kind: StmtKind,
}

/// Statement kinds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum StmtKind {
    /// Sample a latent (one per element of the enclosing plates) and add its prior log-density.
    Latent {
        /// Name.
        name: String,
        /// Shape per plate element.
        shape: Vec<Dim>,
        /// Prior.
        dist: Dist,
        /// Support (which bijection the guide needs).
        support: Support,
    },
    /// A point-estimated parameter.
    Param {
        /// Name.
        name: String,
        /// Shape per plate element.
        shape: Vec<Dim>,
        /// `real`, `positive` or `unit_interval`.
        constraint: String,
        /// Initial value.
        init: Expr,
    },
    /// Bind a value.
    Let {
        /// Name.
        name: String,
        /// Value.
        value: Expr,
    },
    /// Add the log-likelihood of data.
    Observe {
        /// The data.
        data: Expr,
        /// Likelihood.
        dist: Dist,
        /// Correction flow applied to the likelihood, with its penalty.
        correction: Option<Correction>,
    },
    /// Add a term (summed over its elements) to the log density: a restraint.
    Factor {
        /// The term.
        value: Expr,
    },
}

impl StmtKind {
    /// The statement's root expressions (distribution arguments, values, data), in source order.
    pub fn exprs(&self) -> Vec<&Expr> {
        match self {
            StmtKind::Latent { dist, .. } => dist.args.iter().collect(),
            StmtKind::Param { init, .. } => vec![init],
            StmtKind::Let { value, .. } | StmtKind::Factor { value } => vec![value],
            StmtKind::Observe { data, dist, .. } => dist.args.iter().chain([data]).collect(),
        }
    }
}

/// A distribution with its arguments in parameter order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dist {
    /// Name.
    pub name: String,
    /// Arguments.
    pub args: Vec<Expr>,
}

/// A correction flow on a likelihood.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Correction {
    /// Flow declaration name.
    pub flow: String,
    /// Settings (declaration merged with overrides).
    pub settings: Vec<(String, Value)>,
    /// Context inputs of the conditioner (data).
    pub context: Vec<Expr>,
    /// Penalty weight.
    pub penalty: f64,
}

/// The guide of one latent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GuideSite {
    /// Latent name.
    pub latent: String,
    /// Plate of the latent.
    pub plate: Option<usize>,
    /// Guide family.
    pub kind: GuideKind,
}

/// Guide families.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum GuideKind {
    /// Independent Normal in the unconstrained space.
    MeanField,
    /// A point mass (MAP).
    Map,
    /// Mean-field over a partially centred copy of a Normal latent, its centring learned
    /// (Gorinova, Moore & Hoffman 2020, "automatic reparameterisation").
    PartialCentring,
    /// A correlated Normal with covariance W Wᵀ + diag(D²), W of the given rank.
    LowRank {
        /// Columns of W.
        rank: usize,
    },
    /// A correlated Normal with a full Cholesky factor.
    FullRank,
    /// An amortized encoder reading data inputs.
    Encoder {
        /// Encoder declaration name.
        name: String,
        /// Inputs (data).
        inputs: Vec<Expr>,
    },
}

/// A typed expression node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Expr {
    /// Type and shape.
    pub ty: Type,
    /// Data (off the tape) or Param (on the tape).
    pub ad: Ad,
    /// Plates the value varies over.
    pub plates: Vec<usize>,
    /// What it computes.
    pub kind: ExprKind,
}

/// Expression kinds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum ExprKind {
    /// A value known before fitting.
    Const(Value),
    /// A model value, data binding, plate record or function local, by name.
    Var(String),
    /// A field of a record.
    Field(Box<Expr>, String),
    /// A method of a record (`xtal.sites("FE")`).
    Method(Box<Expr>, String, Vec<Expr>),
    /// Leading-axis indexing.
    Index(Box<Expr>, Vec<Expr>),
    /// Unary operation.
    Unary(UnOp, Box<Expr>),
    /// Element-wise binary operation with broadcasting.
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// A built-in function.
    Builtin(String, Vec<Expr>),
    /// A physics operator, found by name in the runtime's registry.
    Extern(String, Vec<Expr>),
    /// A user function (`module.name`).
    Call(String, Vec<Expr>),
    /// A list literal (stacked along a new leading axis).
    Vector(Vec<Expr>),
    /// A reduction over the elements of a plate.
    Reduce {
        /// Operation.
        op: ReduceOp,
        /// Plate reduced over.
        plate: usize,
        /// Value inside the plate.
        body: Box<Expr>,
    },
    /// `[body for var in collection]`: `body` at every record of a collection (with `var` bound
    /// to it), stacked along a new leading axis; data only.
    Set {
        /// The record variable.
        var: String,
        /// The collection (`image.shoeboxes`, `shots.images`).
        collection: Box<Expr>,
        /// The value at one record.
        body: Box<Expr>,
    },
}
