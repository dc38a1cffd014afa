//! Check: names, types, shapes, plates and ad levels of a resolved program.
//!
//! In: the modules from `resolve` (dependencies first, root last) and `--set` overrides.
//! Out: a typed `Program` (`Expr<Typed>` everywhere: type, shape, plates, Data/Param, folded value)
//! or diagnostics. Checking goes on after an error: an erroneous expression gets the error type,
//! which silences errors that would only repeat the first one.
//! Guarantees: every expression of an accepted program has a type whose shape broadcasts with its
//! uses; no value leaves its plate without a reduction; every observe sits in its data's plates.

mod builtins;
mod calls;
pub use calls::EXTERN_PREFIX;
pub mod distributions;
mod expr;
mod items;
pub mod schema;
mod scope;
mod stmt;
pub mod types;
pub mod value;

use crate::diagnostics::{Code, Diagnostic, Span};
use crate::resolve::Unit;
use crate::syntax::ast::{Expr, Stmt};
use schema::Tables;
use scope::{Binding, Entry};
use std::collections::HashMap;
use types::{Ad, Base, Dim, Rec, Type};
use value::Value;

/// What the checker knows about every expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Typed {
    /// Type and shape.
    pub ty: Type,
    /// Data or Param.
    pub ad: Ad,
    /// Ids of the (non-singleton) plates the value varies over, sorted.
    pub plates: Vec<usize>,
    /// The value, when known before fitting.
    pub value: Option<Value>,
}

impl Typed {
    fn data(ty: Type) -> Typed {
        Typed {
            ty,
            ad: Ad::Data,
            plates: Vec::new(),
            value: None,
        }
    }

    fn known(ty: Type, value: Value) -> Typed {
        Typed {
            ty,
            ad: Ad::Data,
            plates: Vec::new(),
            value: Some(value),
        }
    }

    fn error() -> Typed {
        Typed::data(Type::error())
    }
}

/// What a plate ranges over.
#[derive(Debug, Clone, PartialEq)]
pub enum PlateRange {
    /// One element: a scope only.
    Single,
    /// A fixed number of elements.
    Sized(Dim),
    /// The records of a data collection, written as `collection`.
    Data {
        /// The collection as written (`shots.images`).
        collection: Box<Expr<Typed>>,
        /// Kind of the records.
        record: Rec,
        /// Number of records.
        size: Dim,
    },
}

/// A plate of the program.
#[derive(Debug, Clone, PartialEq)]
pub struct Plate {
    /// Name (also the record variable of a data plate).
    pub name: String,
    /// Enclosing plate.
    pub parent: Option<usize>,
    /// Range.
    pub range: PlateRange,
    /// Mini-batch size, if subsampled.
    pub subsample: Option<u64>,
    /// Declaration.
    pub span: Span,
}

impl Plate {
    /// Number of elements.
    pub fn size(&self) -> Dim {
        match &self.range {
            PlateRange::Single => Dim::Known(1),
            PlateRange::Sized(d) => d.clone(),
            PlateRange::Data { size, .. } => size.clone(),
        }
    }
}

/// A data binding.
#[derive(Debug, Clone, PartialEq)]
pub struct DataBinding {
    /// Name.
    pub name: String,
    /// Source kind.
    pub source: String,
    /// File names or globs.
    pub paths: Vec<String>,
    /// Declared table columns.
    pub columns: Vec<(String, Type)>,
    /// Type of the binding.
    pub ty: Type,
    /// Sizes fixed by the model, verified when the data are loaded: (key, size).
    pub sizes: Vec<(String, u64)>,
}

/// The signature of a function: parameters and result.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    /// Name.
    pub name: String,
    /// Module that declares it.
    pub module: String,
    /// Parameters.
    pub params: Vec<(String, Type)>,
    /// Result.
    pub ret: Type,
    /// Whether the program calls it.
    pub used: bool,
}

/// A user function with its checked body.
#[derive(Debug, Clone, PartialEq)]
pub struct FnDef {
    /// Signature.
    pub sig: Signature,
    /// Local lets.
    pub lets: Vec<(String, Expr<Typed>)>,
    /// Result expression.
    pub body: Expr<Typed>,
}

/// A flow or encoder declaration with its settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Net {
    /// Name.
    pub name: String,
    /// True for a flow, false for an encoder.
    pub is_flow: bool,
    /// Settings with defaults filled in.
    pub settings: Vec<(String, Value)>,
}

/// The checked program.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    /// Root module name.
    pub name: String,
    /// Constants of the root module (after `--set`).
    pub consts: Vec<(String, Value)>,
    /// Variants of the root module: name, choices, selected choice.
    pub variants: Vec<(String, Vec<String>, String)>,
    /// Data bindings.
    pub data: Vec<DataBinding>,
    /// Plates, parents before children.
    pub plates: Vec<Plate>,
    /// Physics operators implemented in Rust.
    pub externs: Vec<Signature>,
    /// User functions.
    pub fns: Vec<FnDef>,
    /// Flows and encoders.
    pub nets: Vec<Net>,
    /// The root module's statements, typed.
    pub body: Vec<Stmt<Typed>>,
    /// Table columns.
    pub tables: Tables,
    /// Data sizes fixed by the model: (size symbol, size).
    pub sizes: Vec<(String, u64)>,
}

/// Checks the modules (root last) with `--set name=value` overrides.
pub fn check(
    units: &[Unit],
    sets: &[(String, String)],
) -> Result<(Program, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut checker = Checker::new(sets);
    for (index, unit) in units.iter().enumerate() {
        checker.unit(index, unit, index + 1 == units.len());
    }
    checker.report_unused_sets();
    let errors = checker.diags.iter().any(Diagnostic::is_error);
    checker.diags.truncate(MAX_DIAGNOSTICS);
    if errors {
        return Err(checker.diags);
    }
    Ok((checker.program, checker.diags))
}

/// More diagnostics than this are cut off: the first ones are what a reader fixes first.
pub const MAX_DIAGNOSTICS: usize = 100;

/// The state of one checking run.
pub(crate) struct Checker {
    diags: Vec<Diagnostic>,
    /// Exported entries of each checked module.
    exports: Vec<HashMap<String, Entry>>,
    /// The module being checked: its names.
    scope: HashMap<String, Entry>,
    /// Imported names of the current module: use-site span and whether used.
    imports: HashMap<String, (Span, bool)>,
    /// Function parameters and lets while checking a function body.
    locals: Vec<HashMap<String, (Type, Ad)>>,
    /// True while checking an encoder guide's inputs, where `[f(s) for s in ...]` sets may stand.
    set_allowed: bool,
    in_fn: bool,
    /// Functions declared later in the current module (to explain E0208).
    later_fns: Vec<String>,
    /// Current plate stack (all plates) and the non-singleton plates visible to expressions.
    stack: Vec<usize>,
    visible: Vec<usize>,
    sets: Vec<(String, String, bool)>,
    module_name: String,
    is_root: bool,
    program: Program,
}

impl Checker {
    fn new(sets: &[(String, String)]) -> Checker {
        let program = Program {
            name: String::new(),
            consts: Vec::new(),
            variants: Vec::new(),
            data: Vec::new(),
            plates: Vec::new(),
            externs: Vec::new(),
            fns: Vec::new(),
            nets: Vec::new(),
            body: Vec::new(),
            tables: Vec::new(),
            sizes: Vec::new(),
        };
        Checker {
            diags: Vec::new(),
            exports: Vec::new(),
            scope: HashMap::new(),
            imports: HashMap::new(),
            locals: Vec::new(),
            set_allowed: false,
            in_fn: false,
            later_fns: Vec::new(),
            stack: Vec::new(),
            visible: Vec::new(),
            sets: sets
                .iter()
                .map(|(k, v)| (k.clone(), v.clone(), false))
                .collect(),
            module_name: String::new(),
            is_root: false,
            program,
        }
    }

    /// Checks one module and records its exports.
    fn unit(&mut self, index: usize, unit: &Unit, is_root: bool) {
        self.scope = HashMap::new();
        self.imports = HashMap::new();
        self.module_name = unit.name.clone();
        self.is_root = is_root;
        if is_root {
            self.program.name = unit.name.clone();
        }
        self.import(unit);
        self.items(&unit.ast);
        self.report_unused_imports();
        let exported: HashMap<String, Entry> = self
            .scope
            .iter()
            .filter(|(n, e)| e.exportable() && !self.imports.contains_key(*n))
            .map(|(n, e)| (n.clone(), e.clone()))
            .collect();
        debug_assert_eq!(self.exports.len(), index);
        self.exports.push(exported);
    }

    /// Brings `use`d items into scope.
    fn import(&mut self, unit: &Unit) {
        for item in &unit.ast.items {
            let crate::syntax::ast::Item::Use(u) = item else {
                continue;
            };
            let Some(&dep) = unit.deps.get(&u.module.name) else {
                continue;
            };
            for name in &u.items {
                let Some(entry) = self
                    .exports
                    .get(dep)
                    .and_then(|e| e.get(&name.name))
                    .cloned()
                else {
                    continue;
                };
                let entry = Entry {
                    span: name.span,
                    ..entry
                };
                if self.declare(&name.name, entry) {
                    self.imports.insert(name.name.clone(), (name.span, false));
                }
            }
        }
    }

    fn report_unused_imports(&mut self) {
        let mut unused: Vec<(String, Span)> = self
            .imports
            .iter()
            .filter(|(_, (_, used))| !used)
            .map(|(n, (s, _))| (n.clone(), *s))
            .collect();
        unused.sort_by_key(|(_, s)| s.start);
        for (name, span) in unused {
            self.diags.push(
                Diagnostic::warning(
                    Code::E0206,
                    format!("`{name}` is imported but never used"),
                    span,
                    "unused import",
                )
                .with_help("remove it from the `use` list"),
            );
        }
    }

    fn report_unused_sets(&mut self) {
        let mut known: Vec<String> = self.program.consts.iter().map(|(n, _)| n.clone()).collect();
        known.extend(
            self.program
                .variants
                .iter()
                .filter(|(n, _, _)| !n.contains('.'))
                .map(|(n, _, _)| n.clone()),
        );
        for (name, _, used) in &self.sets {
            if !used {
                let d = Diagnostic::global(
                    Code::E0601,
                    format!("--set {name}: the model has no const or variant `{name}`"),
                )
                .with_note(format!(
                    "settable names: {}",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ));
                self.diags.push(d);
            }
        }
    }

    /// Adds a name to the module scope; reports a duplicate and returns false if taken.
    fn declare(&mut self, name: &str, entry: Entry) -> bool {
        if let Some(previous) = self.scope.get(name) {
            let d = Diagnostic::error(
                Code::E0202,
                format!("`{name}` is declared twice"),
                entry.span,
                "second declaration",
            )
            .with_label(previous.span, "first declared here")
            .with_help("give one of them another name");
            self.diags.push(d);
            return false;
        }
        self.scope.insert(name.to_string(), entry);
        true
    }

    /// Looks a name up: function locals, then the module scope (marking imports as used).
    fn lookup(&mut self, name: &str) -> Option<Binding> {
        for frame in self.locals.iter().rev() {
            if let Some((ty, ad)) = frame.get(name) {
                return Some(Binding::Local(ty.clone(), *ad));
            }
        }
        let entry = self.scope.get(name)?;
        if let Some((_, used)) = self.imports.get_mut(name) {
            *used = true;
        }
        Some(entry.binding.clone())
    }

    /// A "did you mean" help for an unknown name, if a close one exists.
    fn suggest(&self, name: &str) -> Option<String> {
        let mut candidates: Vec<&String> = self.scope.keys().collect();
        for frame in &self.locals {
            candidates.extend(frame.keys());
        }
        let best = candidates
            .into_iter()
            .map(|c| (edit_distance(name, c), c))
            .filter(|(d, c)| *d <= 2.max(c.len() / 4))
            .min();
        best.map(|(_, c)| format!("did you mean `{c}`?"))
    }

    fn error(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// The non-singleton plates among the current stack.
    fn plate_set(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .stack
            .iter()
            .copied()
            .filter(|&p| self.program.plates[p].range != PlateRange::Single)
            .collect();
        v.sort_unstable();
        v
    }

    fn plate_names(&self, plates: &[usize]) -> String {
        let names: Vec<String> = plates
            .iter()
            .map(|&p| format!("`{}`", self.program.plates[p].name))
            .collect();
        names.join(", ")
    }
}

/// Levenshtein distance, for suggestions (short names only, so quadratic is fine).
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The size a typed expression stands for when used as a dimension, if known before fitting.
pub fn static_dim(e: &Expr<Typed>, sizes: &[(String, u64)]) -> Option<Dim> {
    let fixed = |d: Dim| match &d {
        Dim::Sym(s) => sizes
            .iter()
            .find(|(k, _)| k == s)
            .map(|(_, n)| Dim::Known(*n))
            .unwrap_or(d),
        _ => d,
    };
    static_dim_raw(e).map(fixed)
}

/// Replaces data-size symbols that the model fixed with their sizes.
pub fn bind_sizes(ty: Type, sizes: &[(String, u64)]) -> Type {
    let shape = ty.shape.into_iter().map(|d| match &d {
        Dim::Sym(s) => sizes
            .iter()
            .find(|(k, _)| k == s)
            .map(|(_, n)| Dim::Known(*n))
            .unwrap_or(d),
        _ => d,
    });
    Type {
        base: ty.base,
        shape: shape.collect(),
    }
}

fn static_dim_raw(e: &Expr<Typed>) -> Option<Dim> {
    if let Some(Value::Int(n)) = &e.meta.value {
        return u64::try_from(*n).ok().map(Dim::Known);
    }
    if e.meta.ad != Ad::Data || e.meta.ty != Type::scalar(Base::Int) {
        return None;
    }
    use crate::syntax::ast::ExprKind;
    match &e.kind {
        ExprKind::Field(x, f) => match &x.meta.ty.base {
            Base::Record(r) => Some(Dim::Sym(format!("{}.{}", rec_key(r), f.name))),
            _ => None,
        },
        ExprKind::Method(_, m, args) => {
            match args.first().and_then(|a| a.value.meta.value.as_ref()) {
                Some(Value::Str(el)) => Some(Dim::Sym(format!("crystal.{}(\"{el}\")", m.name))),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The prefix of symbolic sizes of a record kind.
pub fn rec_key(r: &Rec) -> String {
    match r {
        Rec::Crystal => "crystal".into(),
        Rec::Shots => "shots".into(),
        Rec::Image => "image".into(),
        Rec::Shoebox => "shoebox".into(),
        Rec::Table(t) => t.clone(),
        Rec::Row(t) => format!("{t}.row"),
    }
}

/// The number of records in a collection of this kind, as a symbolic size.
pub fn collection_size(r: &Rec) -> Dim {
    Dim::Sym(match r {
        Rec::Image => "shots.n_images".into(),
        Rec::Shoebox => "image.n_shoeboxes".into(),
        Rec::Row(t) => format!("{t}.n_rows"),
        other => format!("{}.n", rec_key(other)),
    })
}
