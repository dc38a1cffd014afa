//! The abstract syntax tree, generic over what each expression knows (Gleam style).
//!
//! `Expr<()>` comes out of the parser; `Expr<Typed>` (see `check`) comes out of the checker with a
//! type, shape, plate set and ad level on every node. Every node carries its `Span`.

use crate::diagnostics::Span;

/// A name with its place.
#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    /// The name.
    pub name: String,
    /// Where it is written.
    pub span: Span,
}

/// One parsed file.
#[derive(Debug, Clone, PartialEq)]
pub struct Module<M> {
    /// The file's top-level items in source order.
    pub items: Vec<Item<M>>,
}

/// A top-level item.
// A file holds tens of items, built once: boxing the large variants would only add indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Item<M> {
    /// `use physics.{a, b}`
    Use(UseDecl),
    /// `const n = 8`
    Const(ConstDecl<M>),
    /// `variant shape = gauss | square`
    Variant(VariantDecl),
    /// `data xtal = pdb("1brf.pdb")`
    Data(DataDecl),
    /// `fn f(x: real) -> real = ...`
    Fn(FnDecl<M>),
    /// `extern fn structure_factor(...) -> complex[...]`
    Extern(ExternDecl),
    /// `flow name { ... }`
    Flow(NetDecl<M>),
    /// `encoder name { ... }`
    Encoder(NetDecl<M>),
    /// A model statement at top level.
    Stmt(Stmt<M>),
}

/// `use module.{items}`.
#[derive(Debug, Clone, PartialEq)]
pub struct UseDecl {
    /// Module name.
    pub module: Ident,
    /// Imported items.
    pub items: Vec<Ident>,
    /// Whole declaration.
    pub span: Span,
}

/// `const name: type = value`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConstDecl<M> {
    /// Name.
    pub name: Ident,
    /// Optional annotation.
    pub ty: Option<TypeExpr>,
    /// Default value, overridable by `--set`.
    pub value: Expr<M>,
    /// Whole declaration.
    pub span: Span,
}

/// `variant name = a | b | c`; the first choice is the default.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantDecl {
    /// Name.
    pub name: Ident,
    /// Choices in order.
    pub choices: Vec<Ident>,
    /// Whole declaration.
    pub span: Span,
}

/// `data name = source(args)`.
#[derive(Debug, Clone, PartialEq)]
pub struct DataDecl {
    /// Name.
    pub name: Ident,
    /// Source kind (`pdb`, `dials`, `table`).
    pub source: Ident,
    /// Paths and column declarations in order.
    pub args: Vec<DataArg>,
    /// Whole declaration.
    pub span: Span,
}

/// An argument of a data source.
#[derive(Debug, Clone, PartialEq)]
pub enum DataArg {
    /// A quoted path or glob.
    Path(String, Span),
    /// `name: type`, a column of a table.
    Column(Ident, TypeExpr),
    /// `n_channels = 100`: a data size fixed by the model and verified when the data are loaded.
    Size(Ident, Expr<()>),
}

/// A user function: parameters, local lets and a result expression.
#[derive(Debug, Clone, PartialEq)]
pub struct FnDecl<M> {
    /// Name.
    pub name: Ident,
    /// Parameters.
    pub params: Vec<ParamDecl>,
    /// Declared result type.
    pub ret: TypeExpr,
    /// Local `let`s of a block body.
    pub lets: Vec<(Ident, Expr<M>)>,
    /// Result.
    pub body: Expr<M>,
    /// Whole declaration.
    pub span: Span,
}

/// The signature of an operator implemented in Rust and found by name at run time.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternDecl {
    /// Name.
    pub name: Ident,
    /// Parameters.
    pub params: Vec<ParamDecl>,
    /// Result type.
    pub ret: TypeExpr,
    /// Whole declaration.
    pub span: Span,
}

/// `name: type` in a signature.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamDecl {
    /// Name.
    pub name: Ident,
    /// Type.
    pub ty: TypeExpr,
}

/// A written type: a base name and optional dimensions.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeExpr {
    /// `real`, `int`, `crystal`, ...
    pub base: Ident,
    /// Dimensions in brackets.
    pub dims: Vec<DimExpr>,
    /// Whole type.
    pub span: Span,
}

/// A written dimension.
#[derive(Debug, Clone, PartialEq)]
pub enum DimExpr {
    /// A literal size.
    Int(u64, Span),
    /// `_`: any size.
    Wild(Span),
    /// A const, a size variable of a signature, or a data size path (`shots.n_channels`).
    Name(String, Span),
}

/// `flow name { key = value ... }` or `encoder name { ... }`.
#[derive(Debug, Clone, PartialEq)]
pub struct NetDecl<M> {
    /// Name.
    pub name: Ident,
    /// Settings in order.
    pub settings: Vec<Arg<M>>,
    /// Whole declaration.
    pub span: Span,
}

/// A model statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Stmt<M> {
    /// What it is.
    pub kind: StmtKind<M>,
    /// Whole statement.
    pub span: Span,
}

/// The kinds of model statements.
// Statements are few and built once per compilation; boxing would only add indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum StmtKind<M> {
    /// `plate name ... { body }`
    Plate(PlateStmt<M>),
    /// `latent name[shape] ~ Dist(args) guide ...`
    Latent {
        /// Name.
        name: Ident,
        /// Shape per plate element.
        shape: Vec<Expr<M>>,
        /// Prior.
        dist: DistCall<M>,
        /// Guide, mean-field when absent.
        guide: Option<GuideSpec<M>>,
    },
    /// `param name[shape]: constraint = init`
    Param {
        /// Name.
        name: Ident,
        /// Shape per plate element.
        shape: Vec<Expr<M>>,
        /// `positive`, `unit`, or none (real).
        constraint: Option<Ident>,
        /// Initial value.
        init: Expr<M>,
    },
    /// `let name = value`
    Let {
        /// Name.
        name: Ident,
        /// Value.
        value: Expr<M>,
    },
    /// `observe data ~ Dist(args) corrected by ...`
    Observe {
        /// The observed data.
        data: Expr<M>,
        /// Likelihood.
        dist: DistCall<M>,
        /// Optional correction flow.
        correction: Option<Correction<M>>,
    },
    /// `factor value`: adds `value`, summed over its elements, to the log density (a restraint).
    Factor {
        /// The log-density term.
        value: Expr<M>,
    },
}

/// A plate block.
#[derive(Debug, Clone, PartialEq)]
pub struct PlateStmt<M> {
    /// Name; inside a data-driven plate it also names the current record.
    pub name: Ident,
    /// What the plate ranges over.
    pub range: PlateRange<M>,
    /// Optional subsample size (mini-batch).
    pub subsample: Option<Expr<M>>,
    /// Statements inside.
    pub body: Vec<Stmt<M>>,
}

/// What a plate ranges over.
#[derive(Debug, Clone, PartialEq)]
pub enum PlateRange<M> {
    /// `plate dataset { }`: one element, a scope only.
    Single,
    /// `plate image in shots.images`
    In(Expr<M>),
    /// `plate domain[n]`
    Sized(Expr<M>),
}

/// `Name(args)` after a `~`.
#[derive(Debug, Clone, PartialEq)]
pub struct DistCall<M> {
    /// Distribution name.
    pub name: Ident,
    /// Arguments, possibly named.
    pub args: Vec<Arg<M>>,
    /// Whole call.
    pub span: Span,
}

/// `guide kind(args)`.
#[derive(Debug, Clone, PartialEq)]
pub struct GuideSpec<M> {
    /// `mean_field`, `map`, or an encoder name.
    pub kind: Ident,
    /// Encoder inputs.
    pub args: Vec<Arg<M>>,
    /// Whole guide clause.
    pub span: Span,
}

/// `corrected by flow(args) penalty w if cond`.
#[derive(Debug, Clone, PartialEq)]
pub struct Correction<M> {
    /// The flow declaration used.
    pub flow: Ident,
    /// Overrides of the flow's settings (named) and its context inputs (unnamed data).
    pub args: Vec<Arg<M>>,
    /// Penalty weight.
    pub penalty: Expr<M>,
    /// Optional static condition turning the flow on.
    pub guard: Option<Expr<M>>,
    /// Whole clause.
    pub span: Span,
}

/// A call argument, optionally named.
#[derive(Debug, Clone, PartialEq)]
pub struct Arg<M> {
    /// `name =` when given.
    pub name: Option<Ident>,
    /// Value.
    pub value: Expr<M>,
}

/// An expression with its span and what the current stage knows about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr<M> {
    /// What it is.
    pub kind: ExprKind<M>,
    /// Where.
    pub span: Span,
    /// `()` after parsing, `Typed` after checking.
    pub meta: M,
}

/// Unary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum UnOp {
    /// `-x`
    Neg,
    /// `!b`
    Not,
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum BinOp {
    /// `||`
    Or,
    /// `&&`
    And,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `^`
    Pow,
}

impl BinOp {
    /// Binding strength: higher binds tighter.
    pub fn precedence(self) -> u8 {
        match self {
            BinOp::Or => 1,
            BinOp::And => 2,
            BinOp::Eq | BinOp::Ne => 3,
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => 4,
            BinOp::Add | BinOp::Sub => 5,
            BinOp::Mul | BinOp::Div => 6,
            BinOp::Pow => 7,
        }
    }

    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "||",
            BinOp::And => "&&",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Pow => "^",
        }
    }
}

/// Reductions over a plate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ReduceOp {
    /// Sum over elements.
    Sum,
    /// Mean over elements.
    Mean,
    /// Product over elements.
    Prod,
    /// log(sum(exp(x))) over elements.
    LogSumExp,
    /// A tensor with one leading row per element.
    Stack,
}

impl ReduceOp {
    /// The name as written.
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Mean => "mean",
            ReduceOp::Prod => "prod",
            ReduceOp::LogSumExp => "logsumexp",
            ReduceOp::Stack => "stack",
        }
    }
}

/// A `pattern => value` arm of a match.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchArm<M> {
    /// A choice name, or None for `_`.
    pub pattern: Option<Ident>,
    /// Value when the variant has that choice.
    pub value: Expr<M>,
}

/// The kinds of expressions.
#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind<M> {
    /// `8`
    Int(i64),
    /// `7120.0`
    Real(f64),
    /// `2.5i`
    Imag(f64),
    /// `true`
    Bool(bool),
    /// `"FE"`
    Str(String),
    /// A name.
    Name(String),
    /// `x.field`
    Field(Box<Expr<M>>, Ident),
    /// `x.method(args)`
    Method(Box<Expr<M>>, Ident, Vec<Arg<M>>),
    /// `x[i, j]`
    Index(Box<Expr<M>>, Vec<Expr<M>>),
    /// `f(args)`
    Call(Ident, Vec<Arg<M>>),
    /// `-x`, `!b`
    Unary(UnOp, Box<Expr<M>>),
    /// `a + b`
    Binary(BinOp, Box<Expr<M>>, Box<Expr<M>>),
    /// `[a, b, c]`
    Vector(Vec<Expr<M>>),
    /// `sum(x over plate)`
    Reduce(ReduceOp, Box<Expr<M>>, Ident),
    /// `[body for var in collection]`: body evaluated at every record of the collection, stacked
    /// along a new leading axis.
    Set(Box<Expr<M>>, Ident, Box<Expr<M>>),
    /// `match variant { a => x, _ => y }`
    Match(Ident, Vec<MatchArm<M>>),
}
