//! The planner: an IR `Program` plus a data directory → a runnable `infer::Model`.
//!
//! In: a checked program, its source map (for spans), `--data DIR` and an extern registry.
//! Out: a `Planned` model whose sites are the program's statements in order (latents with
//! priors, supports and guide kinds; params; lets; observes), each argument an expression
//! recorded on the tape by `eval`. Guarantees: every plate with an axis is vectorized (a
//! latent inside `plate school` is one tensor with a leading school axis; a let is computed once
//! per evaluation and reused by name); every extern is checked against the registry and every
//! data file loaded and validated before anything runs; a non-finite value of a statement names
//! its span (file:line:col), the plate indices of the first bad element, and the op.

pub mod error;
pub mod eval;
pub mod externs;
pub mod externs_anomalous;
pub mod externs_physics;
mod flows;
pub mod image_cache;
pub mod physics_data;
pub mod records;
pub mod reference;
pub mod table;

pub use error::PlanError;
pub use eval::{Eval, PlateInfo, Scope, Val};
pub use externs::{Extern, ExternArg, Registry};

use crate::check::distributions::Support;
use crate::check::types::Dim;
use crate::diagnostics::{SourceMap, Span};
use crate::infer::constraint::Constraint;
use crate::infer::dist::Family;
use crate::infer::model::{
    self, Env, FactorSite, GuideKind, LatentSite, LetSite, Model, ObserveSite, Site,
};
use crate::ir::{self, ExprKind, PlateSize, Program, StmtKind};
use crate::tape::{NodeId, Tape, TapeError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A planned program.
#[derive(Debug)]
pub struct Planned {
    /// The model the SVI runtime fits.
    pub model: Model,
    /// Plates, names and plates of every site.
    pub scope: Arc<Scope>,
    /// Data files read, in order.
    pub inputs: Vec<PathBuf>,
    /// Columns present in data files but not declared by the model, as `file: column`.
    pub ignored_columns: Vec<String>,
    /// Lets computed from data alone (not part of the posterior).
    pub data_lets: Vec<String>,
    /// The `pdb(...)` and `dials(...)` sources, loaded.
    pub physics: PhysicsData,
}

/// Loaded physics data sources by binding name.
#[derive(Debug, Default)]
pub struct PhysicsData {
    /// `pdb("file")` atomic models.
    pub crystals: Vec<(String, Arc<crate::physics::atoms::Crystal>)>,
    /// `dials(...)` stills.
    pub dials: Vec<(String, Arc<physics_data::DialsData>)>,
    /// The atomic-model files read.
    pub files: Vec<PathBuf>,
}

impl PhysicsData {
    /// The data files behind the physics sources (atomic models, experiment lists,
    /// reflection tables, spectra), for hashing into summary.json.
    pub fn inputs(&self) -> Vec<PathBuf> {
        let mut out = self.files.clone();
        for (_, d) in &self.dials {
            out.extend(d.files.iter().cloned());
        }
        out
    }

    /// Loads `d` if it is a physics source (true), leaving table sources to the caller (false).
    fn load(
        &mut self,
        d: &ir::DataSource,
        sources: &SourceMap,
        data_dir: &Path,
    ) -> Result<bool, PlanError> {
        let model_dir = sources
            .get(0)
            .and_then(|f| Path::new(&f.name).parent().map(Path::to_path_buf))
            .unwrap_or_default();
        match d.source.as_str() {
            "pdb" => {
                let file = d.paths.first().ok_or_else(|| PlanError::Unsupported {
                    at: format!("data `{}`", d.name),
                    what: "a pdb source without a file".into(),
                })?;
                let crystal = physics_data::load_pdb(data_dir, &model_dir, file)?;
                self.files
                    .push(physics_data::pdb_path(data_dir, &model_dir, file));
                self.crystals.push((d.name.clone(), Arc::new(crystal)));
            }
            "dials" => {
                let k = d
                    .sizes
                    .iter()
                    .find(|(n, _)| n == "n_channels")
                    .map(|(_, k)| *k as usize)
                    .ok_or_else(|| PlanError::Unsupported {
                        at: format!("data `{}`", d.name),
                        what: "a dials source without `n_channels = K`".into(),
                    })?;
                let data = physics_data::load_dials(data_dir, k)?;
                self.dials.push((d.name.clone(), Arc::new(data)));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// "models/x.spread:12:3" for a span.
pub fn locate(sources: &SourceMap, span: Span) -> String {
    let Some(f) = sources.get(span.file) else {
        return format!("<file {}>:{}", span.file, span.start);
    };
    let before = f.text.get(..span.start).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("{}:{line}:{col}", f.name)
}

/// Plans `program` over the data in `data_dir`.
pub fn plan(
    program: &Program,
    sources: &SourceMap,
    data_dir: &Path,
    externs: &Registry,
) -> Result<Planned, PlanError> {
    check_externs(program, sources, externs)?;
    let mut scope = Scope {
        externs: externs.clone(),
        ..Scope::default()
    };
    let mut inputs = Vec::new();
    let mut ignored_columns = Vec::new();
    let mut physics = PhysicsData::default();
    for d in &program.data {
        if physics.load(d, sources, data_dir)? {
            continue;
        }
        if d.source != "table" {
            return Err(PlanError::Unsupported {
                at: format!("data `{}`", d.name),
                what: format!("a `{}(...)` data source", d.source),
            });
        }
        let file = d.paths.first().ok_or_else(|| PlanError::Unsupported {
            at: format!("data `{}`", d.name),
            what: "a table without a file".into(),
        })?;
        let tb = table::load(data_dir, file, &d.columns, &d.sizes)?;
        inputs.push(tb.path.clone());
        ignored_columns.extend(
            tb.ignored
                .iter()
                .map(|c| format!("{}: {c}", tb.path.display())),
        );
        scope.tables.insert(d.name.clone(), tb);
    }
    assemble(
        program,
        sources,
        scope,
        physics,
        (inputs, ignored_columns),
        false,
    )
}

/// Plans a program whose physics sources are given, already loaded, in `physics` (bound by the
/// names of its `pdb(...)` / `dials(...)` data statements); a table source is an error. The
/// simulator evaluates a model's dataset-level lets this way before any data file exists.
pub fn plan_with_physics(
    program: &Program,
    sources: &SourceMap,
    externs: &Registry,
    physics: PhysicsData,
) -> Result<Planned, PlanError> {
    check_externs(program, sources, externs)?;
    if let Some(d) = program.data.iter().find(|d| d.source == "table") {
        return Err(PlanError::Unsupported {
            at: format!("data `{}`", d.name),
            what: "a table source when planning over in-memory physics data".into(),
        });
    }
    let scope = Scope {
        externs: externs.clone(),
        ..Scope::default()
    };
    assemble(
        program,
        sources,
        scope,
        physics,
        (Vec::new(), Vec::new()),
        true,
    )
}

/// The plates, functions and sites of `program` over loaded data (`files`: the table files read
/// and their ignored columns); `empty_plates`: admit plates with no instances.
fn assemble(
    program: &Program,
    sources: &SourceMap,
    mut scope: Scope,
    physics: PhysicsData,
    files: (Vec<PathBuf>, Vec<String>),
    empty_plates: bool,
) -> Result<Planned, PlanError> {
    let (inputs, ignored_columns) = files;
    scope.physics.crystals = physics.crystals.iter().cloned().collect();
    scope.physics.shots = physics.dials.iter().cloned().collect();
    let mut m = Model::default();
    for (id, p) in program.plates.iter().enumerate() {
        let info = match record_plate(program, id, &mut scope, &mut m)? {
            Some(info) => info,
            None => plate_info(p, &scope)?,
        };
        scope.plates.push(info);
        if let PlateSize::Data { collection, .. } = &p.size
            && let Some(tb) = table_of(collection)
        {
            scope
                .rows
                .insert(p.name.clone(), (scope.plates.len() - 1, tb));
        }
    }
    scope.functions = program
        .functions
        .iter()
        .map(|f| (f.name.clone(), f.clone()))
        .collect();
    for s in &program.log_joint {
        if let Some(name) = stmt_name(&s.kind) {
            let chain = axis_chain(program, &scope, s.plate);
            scope.sites.insert(name.to_string(), chain);
        }
    }
    check_reductions(program, sources, &scope)?;
    let scope = Arc::new(scope);
    for (k, s) in program.log_joint.iter().enumerate() {
        m.site(site(program, sources, &scope, k, s)?);
    }
    m.validate_with(empty_plates)?;
    crate::infer::prior_scale::resolve(&mut m);
    let data_lets = program
        .log_joint
        .iter()
        .filter_map(|s| match &s.kind {
            StmtKind::Let { name, value } if value.ad == crate::check::types::Ad::Data => {
                Some(name.clone())
            }
            _ => None,
        })
        .collect();
    Ok(Planned {
        model: m,
        scope,
        inputs,
        ignored_columns,
        data_lets,
        physics,
    })
}

fn stmt_name(kind: &StmtKind) -> Option<&str> {
    match kind {
        StmtKind::Latent { name, .. }
        | StmtKind::Param { name, .. }
        | StmtKind::Let { name, .. } => Some(name),
        StmtKind::Observe { .. } | StmtKind::Factor { .. } => None,
    }
}

/// The table binding a `t.rows` collection ranges over.
fn table_of(collection: &ir::Expr) -> Option<String> {
    match &collection.kind {
        ExprKind::Field(rec, f) if f == "rows" => match &rec.kind {
            ExprKind::Var(name) => Some(name.clone()),
            _ => None,
        },
        _ => None,
    }
}

fn plate_info(p: &ir::Plate, scope: &Scope) -> Result<PlateInfo, PlanError> {
    let unsupported = |what: String| PlanError::Unsupported {
        at: format!("plate `{}`", p.name),
        what,
    };
    if p.subsample.is_some() {
        return Err(unsupported("subsampling (mini-batches)".into()));
    }
    let size = match &p.size {
        PlateSize::Single => {
            return Ok(PlateInfo {
                name: p.name.clone(),
                size: 1,
                axis: false,
                engine: None,
            });
        }
        PlateSize::Fixed(d) => {
            dim(d, scope).ok_or_else(|| unsupported(format!("a plate of size {d:?}")))?
        }
        PlateSize::Data { collection, .. } => {
            let tb = table_of(collection).and_then(|t| scope.tables.get(&t));
            tb.map(|t| t.n_rows)
                .ok_or_else(|| unsupported("a plate over physics records".into()))?
        }
    };
    Ok(PlateInfo {
        name: p.name.clone(),
        size,
        axis: true,
        engine: None,
    })
}

/// `(binding, field)` of a plate over `binding.images` or `binding.shoeboxes`.
fn record_collection(p: &ir::Plate) -> Option<(String, String)> {
    let PlateSize::Data { collection, .. } = &p.size else {
        return None;
    };
    match &collection.kind {
        ExprKind::Field(rec, f) if f == "images" || f == "shoeboxes" => match &rec.kind {
            ExprKind::Var(name) => Some((name.clone(), f.clone())),
            _ => None,
        },
        _ => None,
    }
}

/// The innermost enclosing plate the engine iterates, starting at `plate`.
fn has_engine_ancestor(program: &Program, scope: &Scope, plate: Option<usize>) -> Option<usize> {
    let mut p = plate;
    while let Some(id) = p {
        if let Some(e) = scope.plates.get(id).and_then(|i| i.engine) {
            return Some(e);
        }
        p = program.plates[id].parent;
    }
    None
}

/// A plate over `shots.images` (a top-level engine plate, mini-batched) or over
/// `image.shoeboxes` (a ragged engine plate inside the image plate); None for other plates.
fn record_plate(
    program: &Program,
    id: usize,
    scope: &mut Scope,
    m: &mut Model,
) -> Result<Option<PlateInfo>, PlanError> {
    let p = &program.plates[id];
    let Some((binding, field)) = record_collection(p) else {
        return Ok(None);
    };
    let unsupported = |what: String| PlanError::Unsupported {
        at: format!("plate `{}`", p.name),
        what,
    };
    let outer = has_engine_ancestor(program, scope, p.parent);
    let mut between = p.parent;
    while let Some(q) = between {
        if scope.plates[q].engine.is_some() {
            break;
        }
        if scope.plates[q].axis {
            return Err(unsupported(format!(
                "a plate over physics records inside the vectorized plate `{}`",
                scope.plates[q].name
            )));
        }
        between = program.plates[q].parent;
    }
    let (engine, record, size) = match field.as_str() {
        "images" => {
            let data = scope.physics.shots.get(&binding).cloned().ok_or_else(|| {
                unsupported(format!(
                    "`{binding}.images`: `{binding}` is not a dials(...) source"
                ))
            })?;
            if outer.is_some() {
                return Err(unsupported(
                    "a plate over images inside another record plate".into(),
                ));
            }
            let n = data.images.len();
            let engine = m.plate(&p.name, n, None);
            // A mini-batch at least as large as the data is the whole data.
            m.plates[engine].subsample = p.subsample.map(|b| b as usize).filter(|&b| b < n);
            // Shoeboxes are read from disk on demand; hold one step's batch of images.
            data.cache
                .set_capacity(m.plates[engine].subsample.unwrap_or(n));
            (engine, records::RecordPlate::Images { engine, data }, n)
        }
        _ => {
            let Some(records::RecordPlate::Images {
                engine: image_engine,
                data,
            }) = scope.physics.records.get(&binding).cloned()
            else {
                return Err(unsupported(format!(
                    "`{binding}.shoeboxes`: `{binding}` is not a plate over dials images"
                )));
            };
            if outer != Some(image_engine) {
                return Err(unsupported(format!(
                    "a shoebox plate outside its image plate `{binding}`"
                )));
            }
            let offsets = Arc::new(data.shoebox_offsets());
            let engine = m.ragged_plate(&p.name, image_engine, offsets.to_vec());
            // At most B shoeboxes of each image per step, each image's likelihood scaled by n/B.
            m.plates[engine].subsample = p.subsample.map(|b| b as usize).filter(|&b| b >= 1);
            let size = m.plates[engine].size;
            let record = records::RecordPlate::Shoeboxes {
                engine,
                image_engine,
                offsets,
                data,
            };
            (engine, record, size)
        }
    };
    scope.physics.records.insert(p.name.clone(), record);
    Ok(Some(PlateInfo {
        name: p.name.clone(),
        size,
        axis: false,
        engine: Some(engine),
    }))
}

/// Reductions over plates the engine iterates (one instance at a time) are not supported.
fn check_reductions(
    program: &Program,
    sources: &SourceMap,
    scope: &Scope,
) -> Result<(), PlanError> {
    for s in &program.log_joint {
        let mut bad = None;
        for e in s.kind.exprs() {
            walk(e, &mut |x: &ir::Expr| {
                if let ExprKind::Reduce { plate, .. } = &x.kind
                    && scope.plates[*plate].engine.is_some()
                {
                    bad.get_or_insert(*plate);
                }
            });
        }
        if let Some(p) = bad {
            return Err(PlanError::Unsupported {
                at: locate(sources, s.span),
                what: format!(
                    "a reduction over the plate `{}` (its records are evaluated one at a time)",
                    scope.plates[p].name
                ),
            });
        }
    }
    Ok(())
}

/// A dimension's size: known, or a table's `n_rows`.
fn dim(d: &Dim, scope: &Scope) -> Option<usize> {
    match d {
        Dim::Known(n) => usize::try_from(*n).ok(),
        Dim::Sym(s) => {
            let (table, field) = s.split_once('.')?;
            (field == "n_rows").then(|| scope.tables.get(table).map(|t| t.n_rows))?
        }
        Dim::Any => None,
    }
}

/// The plates with an axis from outermost to `plate`.
fn axis_chain(program: &Program, scope: &Scope, plate: Option<usize>) -> Vec<usize> {
    let mut chain = Vec::new();
    let mut p = plate;
    while let Some(id) = p {
        if scope.plates[id].axis {
            chain.push(id);
        }
        p = program.plates[id].parent;
    }
    chain.sort_unstable();
    chain
}

fn check_externs(
    program: &Program,
    sources: &SourceMap,
    externs: &Registry,
) -> Result<(), PlanError> {
    for s in &program.log_joint {
        let mut called = Vec::new();
        s.kind
            .exprs()
            .into_iter()
            .for_each(|e| externs_called(program, e, &mut called));
        if let Some(name) = called.into_iter().find(|n| externs.get(n).is_none()) {
            return Err(PlanError::MissingExtern {
                name,
                at: locate(sources, s.span),
            });
        }
    }
    Ok(())
}

/// Externs `e` calls, directly or through user functions, in evaluation order.
fn externs_called(program: &Program, e: &ir::Expr, out: &mut Vec<String>) {
    walk(e, &mut |x: &ir::Expr| match &x.kind {
        ExprKind::Extern(name, _) => out.push(name.clone()),
        ExprKind::Call(name, _) => {
            if let Some(f) = program.functions.iter().find(|f| &f.name == name) {
                f.lets
                    .iter()
                    .map(|(_, e)| e)
                    .chain([&f.body])
                    .for_each(|b| externs_called(program, b, out));
            }
        }
        _ => {}
    });
}

/// Visits `e` and every sub-expression.
pub(crate) fn walk(e: &ir::Expr, f: &mut dyn FnMut(&ir::Expr)) {
    f(e);
    match &e.kind {
        ExprKind::Const(_) | ExprKind::Var(_) => {}
        ExprKind::Field(x, _) | ExprKind::Unary(_, x) | ExprKind::Reduce { body: x, .. } => {
            walk(x, f)
        }
        ExprKind::Method(x, _, args) | ExprKind::Index(x, args) => {
            walk(x, f);
            args.iter().for_each(|a| walk(a, f));
        }
        ExprKind::Binary(_, a, b)
        | ExprKind::Set {
            collection: a,
            body: b,
            ..
        } => {
            walk(a, f);
            walk(b, f);
        }
        ExprKind::Builtin(_, args)
        | ExprKind::Extern(_, args)
        | ExprKind::Call(_, args)
        | ExprKind::Vector(args) => args.iter().for_each(|a| walk(a, f)),
    }
}

/// A closure evaluating `e` and expanding it to the statement's plates and `rank` own axes
/// (None: keep the value's own rank).
fn closure(
    scope: &Arc<Scope>,
    e: &ir::Expr,
    chain: &[usize],
    rank: Option<usize>,
    label: &str,
) -> model::Expr {
    let (scope, e, chain, label) = (scope.clone(), e.clone(), chain.to_vec(), label.to_string());
    model::Expr::Call(Arc::new(move |t: &mut Tape, env: &Env| {
        let mut ev = Eval::new(&scope, env, &label);
        let v = ev.expr(t, &e)?;
        let own = t.shape(v.node).len().saturating_sub(v.plates.len());
        let node = ev.expand(t, &v, &chain, rank.unwrap_or(own).max(own))?;
        finite(t, &scope, node, &chain, &label)?;
        Ok(node)
    }))
}

/// A non-finite element becomes an error naming the first bad op, the span and the plates (for a
/// deferred value, when something that depends on it is found not finite: `Tape::check_finite`).
fn finite(
    t: &mut Tape,
    scope: &Arc<Scope>,
    node: NodeId,
    chain: &[usize],
    label: &str,
) -> Result<(), TapeError> {
    t.check_finite(node, || {
        let (scope, chain, label) = (scope.clone(), chain.to_vec(), label.to_string());
        Arc::new(move |shape: &[usize], flat: usize| {
            format!("{label} [{}]", scope.describe(&chain, shape, flat))
        })
    })
}

fn family(name: &str, at: &str) -> Result<Family, PlanError> {
    Ok(match name {
        "Normal" => Family::Normal,
        "HalfNormal" => Family::HalfNormal,
        "LogNormal" => Family::LogNormal,
        "StudentT" | "Cauchy" => Family::StudentT,
        "HalfCauchy" => Family::HalfCauchy,
        "Laplace" => Family::Laplace,
        "Exponential" => Family::Exponential,
        "Gamma" => Family::Gamma,
        "Beta" => Family::Beta,
        "Uniform" => Family::Uniform,
        "Poisson" => Family::Poisson,
        other => {
            return Err(PlanError::Unsupported {
                at: at.into(),
                what: format!("the {other} distribution"),
            });
        }
    })
}

/// Distribution arguments as closures; Cauchy(loc, scale) is StudentT(1, loc, scale).
fn dist_args(
    scope: &Arc<Scope>,
    dist: &ir::Dist,
    chain: &[usize],
    rank: usize,
    label: &str,
) -> Vec<model::Expr> {
    let mut args: Vec<model::Expr> = dist
        .args
        .iter()
        .map(|a| closure(scope, a, chain, Some(rank), label))
        .collect();
    if dist.name == "Cauchy" {
        args.insert(0, model::Expr::Const(1.0));
    }
    args
}

fn constraint(support: Support, dist: &ir::Dist, at: &str) -> Result<Constraint, PlanError> {
    let bound = |k: usize| match dist.args.get(k).map(|a| &a.kind) {
        Some(ExprKind::Const(c)) => c.as_real(),
        _ => None,
    };
    match support {
        Support::Real => Ok(Constraint::Real),
        Support::Positive => Ok(Constraint::Positive),
        Support::Unit => Ok(Constraint::Interval(0.0, 1.0)),
        Support::Interval => match (bound(0), bound(1)) {
            (Some(lo), Some(hi)) if lo < hi => Ok(Constraint::Interval(lo, hi)),
            _ => Err(PlanError::Unsupported {
                at: at.into(),
                what: "an interval latent with non-constant bounds".into(),
            }),
        },
        other => Err(PlanError::Unsupported {
            at: at.into(),
            what: format!("a latent with {} support", other.name()),
        }),
    }
}

fn shape(dims: &[Dim], scope: &Scope, at: &str) -> Result<Vec<usize>, PlanError> {
    dims.iter()
        .map(|d| {
            dim(d, scope).ok_or_else(|| PlanError::Unsupported {
                at: at.into(),
                what: format!("the dimension {d:?}"),
            })
        })
        .collect()
}

fn guide_kind(program: &Program, name: &str, at: &str) -> Result<GuideKind, PlanError> {
    match program
        .guide
        .iter()
        .find(|g| g.latent == name)
        .map(|g| &g.kind)
    {
        None | Some(ir::GuideKind::MeanField) => Ok(GuideKind::MeanField),
        Some(ir::GuideKind::Map) => Ok(GuideKind::Point),
        Some(ir::GuideKind::PartialCentring) => Ok(GuideKind::PartialCentring),
        Some(ir::GuideKind::LowRank { rank }) => Ok(GuideKind::LowRank(*rank)),
        Some(ir::GuideKind::FullRank) => Ok(GuideKind::FullRank),
        Some(ir::GuideKind::Encoder { .. }) => {
            let _ = at;
            Ok(GuideKind::Encoder)
        }
    }
}

/// Where an encoder's output goes.
struct EncoderTarget<'a> {
    chain: &'a [usize],
    rows: usize,
    own: usize,
    centre: f64,
    loc_unit: f64,
    raw_scale: f64,
}

/// Values per row of an encoder input (its own dims, sizes known before the fit).
fn input_width(e: &ir::Expr, scope: &Scope, at: &str) -> Result<usize, PlanError> {
    e.ty.shape
        .iter()
        .map(|d| {
            dim(d, scope)
                .or_else(|| record_dim(d, scope))
                .ok_or_else(|| PlanError::Unsupported {
                    at: at.into(),
                    what: format!(
                        "an encoder input of size {d:?} (sizes must be the same for every instance)"
                    ),
                })
        })
        .product()
}

/// `shots.n_channels`, and `shoebox.n_pixels` when every shoebox has the same pixel count.
fn record_dim(d: &Dim, scope: &Scope) -> Option<usize> {
    let Dim::Sym(s) = d else { return None };
    let (rec, field) = s.split_once('.')?;
    if let Some(data) = scope.physics.shots.get(rec) {
        return (field == "n_channels").then_some(data.energy_ev.len());
    }
    match (scope.physics.records.get(rec)?, field) {
        (records::RecordPlate::Shoeboxes { data, .. }, "n_pixels") => data.common_pixel_count,
        _ => None,
    }
}

/// True for a set of per-record values (`[f(s) for s in image.shoeboxes]`), whose leading axis
/// has one row per record of a collection.
fn is_set(e: &ir::Expr) -> bool {
    let sizes = [
        crate::check::collection_size(&crate::check::types::Rec::Shoebox),
        crate::check::collection_size(&crate::check::types::Rec::Image),
    ];
    matches!(&e.kind, ExprKind::Set { .. }) || e.ty.shape.first().is_some_and(|d| sizes.contains(d))
}

/// The network of `latent`'s encoder guide.
#[allow(clippy::too_many_arguments)]
fn encoder_spec(
    program: &Program,
    scope: &Arc<Scope>,
    latent: &str,
    target: EncoderTarget,
    at: &str,
    label: &str,
) -> Result<crate::infer::encoder::EncoderSpec, PlanError> {
    use crate::tape::linalg::Activation;
    let unsupported = |what: String| PlanError::Unsupported {
        at: at.into(),
        what,
    };
    let Some(ir::GuideKind::Encoder { name, inputs }) = program
        .guide
        .iter()
        .find(|g| g.latent == latent)
        .map(|g| &g.kind)
    else {
        return Err(unsupported(
            "an encoder guide without its declaration".into(),
        ));
    };
    let net = program
        .nets
        .iter()
        .find(|n| &n.name == name && !n.is_flow)
        .ok_or_else(|| unsupported(format!("the encoder `{name}` is not declared")))?;
    let refine = net
        .settings
        .iter()
        .any(|(k, v)| k == "refine" && matches!(v, crate::check::value::Value::Bool(true)));
    let (hidden, activation) = flows::net_shape(
        &net.settings,
        &format!("encoder `{name}`"),
        at,
        Activation::Relu,
    )?;
    let (mut width, mut element_width) = (0, 0);
    let (mut own, mut sets) = (Vec::new(), Vec::new());
    for e in inputs {
        if e.ad == crate::check::types::Ad::Param {
            return Err(unsupported(format!(
                "encoder `{name}`: an input that depends on latents"
            )));
        }
        if is_set(e) {
            let mut row = e.clone();
            row.ty.shape.remove(0);
            element_width += input_width(&row, scope, at)?;
            sets.push(e);
        } else {
            width += input_width(e, scope, at)?;
            own.push(e);
        }
    }
    let mut rho = vec![width];
    rho.extend(hidden);
    rho.push(2 * target.own);
    let net = if sets.is_empty() {
        crate::infer::encoder::EncoderNet::Mlp(crate::infer::mlp::Mlp {
            widths: rho,
            activation,
        })
    } else {
        if target.rows != 1 {
            return Err(unsupported(format!(
                "encoder `{name}`: a set input in a vectorized plate (sets are for plates over \
                 physics records, evaluated one record at a time)"
            )));
        }
        let mut phi = vec![element_width];
        // φ's widths (the checker's default is [32]).
        let what = format!("encoder `{name}`");
        phi.extend(flows::widths_setting(&net.settings, "embed", &what, at)?.unwrap_or(vec![32]));
        rho[0] += phi.last().copied().unwrap_or(0);
        crate::infer::encoder::EncoderNet::DeepSet(crate::infer::mlp::DeepSet {
            phi: crate::infer::mlp::Mlp {
                widths: phi,
                activation,
            },
            rho: crate::infer::mlp::Mlp {
                widths: rho,
                activation,
            },
        })
    };
    let closures = |xs: &[&ir::Expr]| -> Vec<crate::infer::model::Expr> {
        xs.iter()
            .map(|e| closure(scope, e, target.chain, None, label))
            .collect()
    };
    Ok(crate::infer::encoder::EncoderSpec {
        name: name.clone(),
        inputs: closures(&own),
        set_inputs: closures(&sets),
        feature_cache: Default::default(),
        net,
        rows: target.rows,
        centre: target.centre,
        loc_unit: target.loc_unit,
        raw_scale: target.raw_scale,
        refine,
    })
}

/// One statement as a site (all sites are global: plates are axes of their tensors).
fn site(
    program: &Program,
    sources: &SourceMap,
    scope: &Arc<Scope>,
    k: usize,
    s: &ir::Stmt,
) -> Result<Site, PlanError> {
    let at = locate(sources, s.span);
    let chain = axis_chain(program, scope, s.plate);
    let engine = has_engine_ancestor(program, scope, s.plate);
    let mut full = scope.plate_shape(&chain);
    let text = sources
        .slice(s.span)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let label = format!("{at} `{text}`");
    Ok(match &s.kind {
        StmtKind::Latent {
            name,
            shape: dims,
            dist,
            support,
        } => {
            let own = shape(dims, scope, &at)?;
            let prior = (
                family(&dist.name, &at)?,
                dist_args(scope, dist, &chain, own.len(), &label),
            );
            let rows: usize = full.iter().product();
            full.extend(&own);
            let init = prior_centre(&dist.name, &dist.args);
            let init_scale = prior_spread(&dist.name, &dist.args).map(|s| (0.1 * s).min(0.1));
            let constraint = constraint(*support, dist, &at)?;
            let guide = guide_kind(program, name, &at)?;
            let encoder = match guide {
                GuideKind::Encoder => Some(Arc::new(encoder_spec(
                    program,
                    scope,
                    name,
                    EncoderTarget {
                        chain: &chain,
                        rows,
                        own: own.iter().product(),
                        centre: init.map_or(0.0, |v| constraint.inverse(v)),
                        loc_unit: prior_spread(&dist.name, &dist.args).map_or(1.0, |s| s.min(1.0)),
                        raw_scale: crate::infer::guide::softplus_inv(init_scale.unwrap_or(0.1)),
                    },
                    &at,
                    &label,
                )?)),
                _ => None,
            };
            Site::Latent(LatentSite {
                name: name.clone(),
                plate: engine,
                shape: full,
                init,
                init_scale,
                encoder,
                prior: Some(prior),
                constraint,
                guide,
                label,
            })
        }
        StmtKind::Param {
            name,
            shape: dims,
            constraint: c,
            init,
        } => {
            full.extend(shape(dims, scope, &at)?);
            let (constraint, init) = param_init(c, init, &at)?;
            Site::Latent(LatentSite {
                name: name.clone(),
                plate: engine,
                shape: full,
                prior: None,
                constraint,
                guide: GuideKind::Point,
                init,
                init_scale: None,
                encoder: None,
                label,
            })
        }
        StmtKind::Let { name, value } => Site::Let(LetSite {
            name: name.clone(),
            plate: engine,
            value: closure(scope, value, &chain, None, &label),
            label,
        }),
        StmtKind::Observe {
            data,
            dist,
            correction,
        } => {
            let rank = data.ty.shape.len();
            let mut args = dist_args(scope, dist, &chain, rank, &label);
            let mut value = closure(scope, data, &chain, Some(rank), &label);
            let pixels = pixel_record(scope, data);
            if let Some(plate) = &pixels {
                args = args.into_iter().map(|a| masked(a, plate)).collect();
                value = masked(value, plate);
            }
            let observed = flows::ObservedAt {
                data,
                family: &dist.name,
                chain: &chain,
                pixels: pixels.as_ref(),
            };
            let correction = correction
                .as_ref()
                .map(|c| flows::correction_spec(scope, c, &observed, &at, &label))
                .transpose()?
                .map(Arc::new);
            Site::Observe(ObserveSite {
                name: format!("observe {k} ({at})"),
                plate: engine,
                family: family(&dist.name, &at)?,
                args,
                value,
                correction,
                label,
            })
        }
        StmtKind::Factor { value } => Site::Factor(FactorSite {
            name: format!("factor {k} ({at})"),
            plate: engine,
            value: closure(scope, value, &chain, Some(value.ty.shape.len()), &label),
            label,
        }),
    })
}

/// The shoebox plate of an observation of `shoebox.pixels`, whose unused pixels (masked,
/// NaN, negative) are left out of the likelihood.
fn pixel_record(scope: &Scope, data: &ir::Expr) -> Option<records::RecordPlate> {
    let ExprKind::Field(rec, field) = &data.kind else {
        return None;
    };
    let ExprKind::Var(name) = &rec.kind else {
        return None;
    };
    match scope.physics.records.get(name)? {
        p @ records::RecordPlate::Shoeboxes { .. } if field == "pixels" => Some(p.clone()),
        _ => None,
    }
}

/// `e` restricted to the used pixels of the current shoebox (broadcast to one value per
/// pixel first).
fn masked(e: model::Expr, plate: &records::RecordPlate) -> model::Expr {
    let plate = plate.clone();
    model::Expr::Call(Arc::new(move |t: &mut Tape, env: &Env| {
        let node = env.eval(t, &e)?;
        let used = records::used_pixels(env, &plate).map_err(|detail| TapeError::Op {
            op: "observe",
            label: "shoebox.pixels".into(),
            detail,
        })?;
        let Some((n, used)) = used else {
            return Ok(node);
        };
        let full = if t.shape(node) == [n] {
            node
        } else {
            let one = t.reshape(node, &[1])?;
            t.broadcast_to(one, &[n])?
        };
        t.gather(full, 0, &used)
    }))
}

/// Rows (leading axis) of `e` restricted to the used pixels of the current shoebox: a flow's
/// per-pixel context follows the pixels the likelihood keeps.
fn masked_rows(e: model::Expr, plate: &records::RecordPlate) -> model::Expr {
    let plate = plate.clone();
    model::Expr::Call(Arc::new(move |t: &mut Tape, env: &Env| {
        let node = env.eval(t, &e)?;
        let used = records::used_pixels(env, &plate).map_err(|detail| TapeError::Op {
            op: "correction flow",
            label: "context".into(),
            detail,
        })?;
        match used {
            Some((n, used)) if t.shape(node).first() == Some(&n) => t.gather(node, 0, &used),
            _ => Ok(node),
        }
    }))
}

/// Where the guide of a latent starts: the prior's median (or mean) when its arguments are
/// constants, so that `edge_ev ~ Normal(7119.0, 3.0)` starts at 7119 eV, not at 0. None (the
/// origin of the unconstrained space) otherwise.
fn prior_centre(name: &str, args: &[ir::Expr]) -> Option<f64> {
    let c = |k: usize| match args.get(k).map(|a| &a.kind) {
        Some(ExprKind::Const(v)) => v.as_real(),
        _ => None,
    };
    let centre = match name {
        "Normal" | "Laplace" | "Cauchy" => c(0)?,
        "StudentT" => c(1)?,
        "LogNormal" => c(0)?.exp(),
        "HalfNormal" => c(0)? * std::f64::consts::FRAC_1_SQRT_2 * 0.953_872_552_417_654_6,
        "HalfCauchy" => c(0)?,
        "Exponential" => std::f64::consts::LN_2 / c(0)?,
        "Gamma" => c(0)? / c(1)?,
        "Beta" => c(0)? / (c(0)? + c(1)?),
        "Uniform" => 0.5 * (c(0)? + c(1)?),
        _ => return None,
    };
    centre.is_finite().then_some(centre)
}

/// The prior's scale in unconstrained space when its arguments are constants (Normal and
/// Laplace: the scale; LogNormal: σ of the log).
fn prior_spread(name: &str, args: &[ir::Expr]) -> Option<f64> {
    let c = |k: usize| match args.get(k).map(|a| &a.kind) {
        Some(ExprKind::Const(v)) => v.as_real(),
        _ => None,
    };
    let s = match name {
        "Normal" | "Laplace" | "LogNormal" | "Cauchy" => c(1)?,
        "StudentT" => c(2)?,
        _ => return None,
    };
    (s > 0.0 && s.is_finite()).then_some(s)
}

fn param_init(c: &str, init: &ir::Expr, at: &str) -> Result<(Constraint, Option<f64>), PlanError> {
    let constraint = match c {
        "real" => Constraint::Real,
        "positive" => Constraint::Positive,
        "unit_interval" => Constraint::Interval(0.0, 1.0),
        other => {
            return Err(PlanError::Unsupported {
                at: at.into(),
                what: format!("a `{other}` param"),
            });
        }
    };
    match &init.kind {
        ExprKind::Const(v) => Ok((constraint, v.as_real())),
        _ => Err(PlanError::Unsupported {
            at: at.into(),
            what: "a param whose initial value is not a constant".into(),
        }),
    }
}
