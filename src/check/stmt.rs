//! Checking model statements: plates, latents, params, lets and observes.

use super::scope::{Binding, Entry, ModelKind};
use super::types::{Ad, Base, Dim, Type};
use super::value::Value;
use super::{Checker, Plate, PlateRange, Typed, collection_size, static_dim};
use crate::check::distributions::Support;
use crate::diagnostics::{Code, Diagnostic, Span};
use crate::syntax::ast::{Correction, Expr, GuideSpec, Ident, PlateStmt, Stmt, StmtKind};

type TStmt = Stmt<Typed>;

impl Checker {
    /// Checks one statement in the current plate.
    pub(super) fn stmt(&mut self, s: &Stmt<()>) -> TStmt {
        let kind = match &s.kind {
            StmtKind::Plate(p) => StmtKind::Plate(self.plate(p, s.span)),
            StmtKind::Latent {
                name,
                shape,
                dist,
                guide,
            } => {
                let tshape = self.shape(shape);
                let dims: Vec<Dim> = tshape
                    .iter()
                    .map(|e| static_dim(e, &self.program.sizes).unwrap_or(Dim::Any))
                    .collect();
                let (tdist, sig, _) = self.dist(dist, &dims, name.span);
                if let Some(sig) = sig.filter(|s| !s.support.is_continuous()) {
                    let msg = format!(
                        "latent `{}` has a discrete distribution ({})",
                        name.name, sig.name
                    );
                    self.error(
                        Diagnostic::error(
                            Code::E0314,
                            msg,
                            dist.name.span,
                            "not reparameterizable",
                        )
                        .with_help("observe counts; give latents a continuous prior"),
                    );
                }
                let tguide = guide.as_ref().map(|g| self.guide(g, &dims));
                if let Some(g) = guide.as_ref().filter(|g| g.kind.name == "partial_centring")
                    && dist.name.name != "Normal"
                {
                    let msg = format!(
                        "`guide partial_centring` needs a Normal prior; `{}` has {}",
                        name.name, dist.name.name
                    );
                    self.error(
                        Diagnostic::error(Code::E0604, msg, g.span, "bad guide")
                            .with_note(GUIDE_KINDS),
                    );
                }
                self.declare_model(
                    name,
                    ModelKind::Latent,
                    Type::tensor(Base::Real, dims),
                    Ad::Param,
                    self.plate_set(),
                );
                StmtKind::Latent {
                    name: name.clone(),
                    shape: tshape,
                    dist: tdist,
                    guide: tguide,
                }
            }
            StmtKind::Param {
                name,
                shape,
                constraint,
                init,
            } => self.param(name, shape, constraint.as_ref(), init),
            StmtKind::Let { name, value } => {
                let tv = self.expr(value);
                self.declare_model(
                    name,
                    ModelKind::Let,
                    tv.meta.ty.clone(),
                    tv.meta.ad,
                    tv.meta.plates.clone(),
                );
                StmtKind::Let {
                    name: name.clone(),
                    value: tv,
                }
            }
            StmtKind::Observe {
                data,
                dist,
                correction,
            } => self.observe(data, dist, correction.as_ref()),
            StmtKind::Factor { value } => StmtKind::Factor {
                value: self.factor(value),
            },
        };
        Stmt { kind, span: s.span }
    }

    fn declare_model(
        &mut self,
        name: &Ident,
        kind: ModelKind,
        ty: Type,
        ad: Ad,
        plates: Vec<usize>,
    ) {
        self.declare(
            &name.name,
            Entry {
                binding: Binding::Model(kind, ty, ad, plates),
                span: name.span,
            },
        );
    }

    /// Checks shape expressions: each must be a size known before fitting.
    fn shape(&mut self, shape: &[Expr<()>]) -> Vec<Expr<Typed>> {
        let mut out = Vec::new();
        for e in shape {
            let te = self.expr(e);
            let ok = static_dim(&te, &self.program.sizes).is_some_and(|d| d != Dim::Known(0));
            if !ok && !te.meta.ty.is_error() {
                let d = Diagnostic::error(Code::E0312, "this size is not known before fitting", te.span, format!("{} ({:?})", te.meta.ty, te.meta.ad))
                    .with_help("use a positive int literal, a const, or a data size such as xtal.sites(\"FE\")");
                self.error(d);
            }
            out.push(te);
        }
        out
    }

    fn param(
        &mut self,
        name: &Ident,
        shape: &[Expr<()>],
        constraint: Option<&Ident>,
        init: &Expr<()>,
    ) -> StmtKind<Typed> {
        let tshape = self.shape(shape);
        let dims: Vec<Dim> = tshape
            .iter()
            .map(|e| static_dim(e, &self.program.sizes).unwrap_or(Dim::Any))
            .collect();
        if let Some(c) =
            constraint.filter(|c| !["real", "positive", "unit_interval"].contains(&c.name.as_str()))
        {
            let msg = format!("unknown constraint `{}`", c.name);
            self.error(
                Diagnostic::error(Code::E0313, msg, c.span, "not a constraint")
                    .with_note("constraints: real, positive, unit_interval"),
            );
        }
        let tinit = self.expr(init);
        let t = &tinit.meta.ty;
        if !t.is_error() {
            if tinit.meta.ad != Ad::Data || !matches!(t.base, Base::Int | Base::Real) {
                let msg = format!(
                    "the initial value of `{}` must be real data, found {} ({:?})",
                    name.name, t, tinit.meta.ad
                );
                self.error(Diagnostic::error(
                    Code::E0305,
                    msg,
                    tinit.span,
                    "not a real known before fitting",
                ));
            } else if super::types::broadcast(&t.shape, &dims).as_deref() != Some(&dims[..]) {
                let msg = format!(
                    "the initial value has shape {} but `{}` has shape {}",
                    super::expr::shape_text(&t.shape),
                    name.name,
                    super::expr::shape_text(&dims)
                );
                self.error(Diagnostic::error(
                    Code::E0302,
                    msg,
                    tinit.span,
                    "does not fit",
                ));
            }
        }
        self.declare_model(
            name,
            ModelKind::Param,
            Type::tensor(Base::Real, dims),
            Ad::Param,
            self.plate_set(),
        );
        StmtKind::Param {
            name: name.clone(),
            shape: tshape,
            constraint: constraint.cloned(),
            init: tinit,
        }
    }

    fn guide(&mut self, g: &GuideSpec<()>, dims: &[Dim]) -> GuideSpec<Typed> {
        // Sets of per-record values are encoder inputs (pooled by the encoder's deep set).
        let is_encoder = matches!(self.lookup(&g.kind.name), Some(Binding::Encoder(_)));
        self.set_allowed = is_encoder;
        let targs = self.args(&g.args);
        self.set_allowed = false;
        let kind = g.kind.name.as_str();
        let problem = match kind {
            "mean_field" | "map" | "full_rank" | "partial_centring" if !targs.is_empty() => {
                Some(format!("`guide {kind}` takes no inputs"))
            }
            "mean_field" | "map" | "full_rank" | "partial_centring" => None,
            "low_rank" => low_rank_problem(&targs, dims),
            _ if !matches!(self.lookup(kind), Some(Binding::Encoder(_))) => {
                Some(format!("`{kind}` is not a guide kind or an encoder"))
            }
            _ if targs
                .iter()
                .any(|a| a.value.meta.ad != Ad::Data || a.name.is_some()) =>
            {
                Some("encoder inputs must be unnamed data values".to_string())
            }
            _ => None,
        };
        if let Some(msg) = problem {
            self.error(
                Diagnostic::error(Code::E0604, msg, g.span, "bad guide").with_note(GUIDE_KINDS),
            );
        }
        GuideSpec {
            kind: g.kind.clone(),
            args: targs,
            span: g.span,
        }
    }

    fn observe(
        &mut self,
        data: &Expr<()>,
        dist: &crate::syntax::ast::DistCall<()>,
        correction: Option<&Correction<()>>,
    ) -> StmtKind<Typed> {
        let tdata = self.expr(data);
        let (tdist, sig, _) = self.dist(dist, &tdata.meta.ty.shape.clone(), tdata.span);
        if !tdata.meta.ty.is_error() {
            self.observed_data(&tdata, sig.map(|s| s.support));
        }
        let tcorr = correction.map(|c| self.correction(c));
        StmtKind::Observe {
            data: tdata,
            dist: tdist,
            correction: tcorr,
        }
    }

    /// The enclosing plates a value with `plates` does not vary over, named; None when they agree.
    fn plates_not_varied(&self, plates: &[usize]) -> Option<String> {
        let here = self.plate_set();
        if here == plates {
            return None;
        }
        let extra: Vec<usize> = here.into_iter().filter(|p| !plates.contains(p)).collect();
        Some(self.plate_names(&extra))
    }

    /// A `factor` term: real, in exactly the plates it varies over; a constant one is flagged.
    fn factor(&mut self, value: &Expr<()>) -> Expr<Typed> {
        let tv = self.expr(value);
        if tv.meta.ty.is_error() {
            return tv;
        }
        if !matches!(tv.meta.ty.base, Base::Int | Base::Real) {
            let msg = format!("a factor must be real, not {}", tv.meta.ty);
            self.error(Diagnostic::error(Code::E0407, msg, tv.span, "not real"));
            return tv;
        }
        if let Some(extra) = self.plates_not_varied(&tv.meta.plates) {
            let msg = format!(
                "this factor sits in plate(s) {extra} but its value does not vary over them"
            );
            let d = Diagnostic::error(Code::E0407, msg, tv.span, "would be added once per element")
                .with_help("move the factor out to the plates its value varies over");
            self.error(d);
        } else if tv.meta.ad == Ad::Data {
            let d = Diagnostic::warning(
                Code::E0407,
                "this factor depends on no latent or param: it only adds a constant",
                tv.span,
                "constant",
            );
            self.error(d);
        }
        tv
    }

    /// The observed value must be data of a fitting kind, in exactly its plates.
    fn observed_data(&mut self, data: &Expr<Typed>, support: Option<Support>) {
        if data.meta.ad != Ad::Data {
            let d = Diagnostic::error(
                Code::E0405,
                "the observed value depends on latents or params",
                data.span,
                "not data",
            )
            .with_help("observe a field of a data binding, e.g. shoebox.pixels");
            self.error(d);
            return;
        }
        let base_ok = match support {
            Some(Support::Binary) => matches!(data.meta.ty.base, Base::Bool | Base::Int),
            _ => matches!(data.meta.ty.base, Base::Int | Base::Real),
        };
        if !base_ok && support.is_some() {
            let msg = format!(
                "cannot observe a value of type {} with this distribution",
                data.meta.ty
            );
            self.error(Diagnostic::error(
                Code::E0301,
                msg,
                data.span,
                "wrong kind of data",
            ));
        }
        if let Some(extra) = self.plates_not_varied(&data.meta.plates) {
            let msg = format!(
                "this observe sits in plate(s) {extra} but its data does not vary over them"
            );
            let d = Diagnostic::error(
                Code::E0402,
                msg,
                data.span,
                "would be counted once per element",
            )
            .with_help("move the observe out to the plate of its data");
            self.error(d);
        }
    }

    fn correction(&mut self, c: &Correction<()>) -> Correction<Typed> {
        // Named arguments override settings; unnamed ones are the conditioner's context.
        let (named, unnamed): (Vec<_>, Vec<_>) =
            c.args.iter().cloned().partition(|a| a.name.is_some());
        let mut targs = self.net_args(&named);
        let context = self.args(&unnamed);
        for a in &context {
            let t = &a.value.meta.ty;
            if !t.is_error()
                && (a.value.meta.ad != Ad::Data
                    || !matches!(t.base, Base::Int | Base::Real | Base::Bool))
            {
                self.error(
                    Diagnostic::error(
                        Code::E0605,
                        format!("a flow's context must be real data known before fitting, found {t} ({:?})", a.value.meta.ad),
                        a.value.span,
                        "not a data value",
                    )
                    .with_note("unnamed inputs of a flow are its conditioner's context (metadata such as shoebox.xy); named ones override its settings"),
                );
            }
        }
        targs.extend(context);
        let penalty = self.expr(&c.penalty);
        let guard = c.guard.as_ref().map(|g| self.expr(g));
        match self.lookup(&c.flow.name) {
            Some(Binding::Flow(i)) => {
                let base = self.program.nets[i].settings.clone();
                let settings: Vec<_> = targs.iter().filter(|a| a.name.is_some()).cloned().collect();
                self.net_settings(&base, &settings, true);
            }
            _ => self.error(Diagnostic::error(
                Code::E0605,
                format!("`{}` is not a flow", c.flow.name),
                c.flow.span,
                "not declared with `flow`",
            )),
        }
        let w = penalty.meta.value.as_ref().and_then(|v| v.as_real());
        if !penalty.meta.ty.is_error() && !w.is_some_and(|w| w >= 0.0) {
            self.error(Diagnostic::error(
                Code::E0605,
                "the penalty must be a non-negative real known before fitting",
                penalty.span,
                "bad penalty weight",
            ));
        }
        if let Some(g) = &guard
            && !g.meta.ty.is_error()
            && !matches!(g.meta.value, Some(Value::Bool(_)))
        {
            self.error(Diagnostic::error(
                Code::E0308,
                format!(
                    "the condition is {}, not a bool known before fitting",
                    g.meta.ty
                ),
                g.span,
                "not a constant bool",
            ));
        }
        Correction {
            flow: c.flow.clone(),
            args: targs,
            penalty,
            guard,
            span: c.span,
        }
    }

    fn plate(&mut self, p: &PlateStmt<()>, span: Span) -> PlateStmt<Typed> {
        let (range, trange) = self.plate_range(p);
        let subsample = p.subsample.as_ref().map(|e| self.expr(e));
        let sub = subsample.as_ref().and_then(|e| match e.meta.value {
            Some(Value::Int(n)) if n > 0 => Some(n as u64),
            _ => None,
        });
        if let Some(e) = &subsample
            && sub.is_none()
            && !e.meta.ty.is_error()
        {
            self.error(Diagnostic::error(
                Code::E0406,
                "a subsample size must be a positive int constant",
                e.span,
                "bad subsample size",
            ));
        }
        let id = self.program.plates.len();
        let record = match &range {
            PlateRange::Data { record, .. } => Some(record.clone()),
            _ => None,
        };
        self.program.plates.push(Plate {
            name: p.name.name.clone(),
            parent: self.stack.last().copied(),
            range,
            subsample: sub,
            span: p.name.span,
        });
        let binding = match record {
            Some(r) => Binding::PlateVar(id, Type::scalar(Base::Record(r))),
            None => Binding::Plate(id),
        };
        self.declare(
            &p.name.name,
            Entry {
                binding,
                span: p.name.span,
            },
        );
        self.stack.push(id);
        let saved = self.visible.clone();
        self.visible = self.plate_set();
        let body = p.body.iter().map(|s| self.stmt(s)).collect();
        self.visible = saved;
        self.stack.pop();
        let _ = span;
        PlateStmt {
            name: p.name.clone(),
            range: trange,
            subsample,
            body,
        }
    }

    fn plate_range(
        &mut self,
        p: &PlateStmt<()>,
    ) -> (PlateRange, crate::syntax::ast::PlateRange<Typed>) {
        use crate::syntax::ast::PlateRange as R;
        match &p.range {
            R::Single => (PlateRange::Single, R::Single),
            R::Sized(e) => {
                let te = self.expr(e);
                let dim = match &te.meta.value {
                    Some(Value::Int(n)) if *n > 0 => Some(Dim::Known(*n as u64)),
                    Some(_) => None,
                    None => static_dim(&te, &self.program.sizes),
                };
                let range = match dim {
                    Some(d) => PlateRange::Sized(d),
                    None => {
                        if !te.meta.ty.is_error() {
                            self.error(Diagnostic::error(
                                Code::E0406,
                                format!(
                                    "plate `{}` needs a positive size known before fitting",
                                    p.name.name
                                ),
                                te.span,
                                "bad plate size",
                            ));
                        }
                        PlateRange::Sized(Dim::Any)
                    }
                };
                (range, R::Sized(te))
            }
            R::In(e) => {
                let te = self.expr(e);
                let range = match &te.meta.ty.base {
                    Base::Collection(rec) => {
                        self.no_repeat(p, rec);
                        PlateRange::Data {
                            collection: Box::new(te.clone()),
                            record: rec.clone(),
                            size: super::bind_sizes(
                                Type::tensor(Base::Int, vec![collection_size(rec)]),
                                &self.program.sizes,
                            )
                            .shape
                            .remove(0),
                        }
                    }
                    Base::Error => PlateRange::Sized(Dim::Any),
                    _ => {
                        let msg = format!(
                            "`plate {} in ...` needs a collection of records, found {}",
                            p.name.name, te.meta.ty
                        );
                        self.error(
                            Diagnostic::error(Code::E0309, msg, te.span, "not a collection")
                                .with_note(
                                    "collections: shots.images, image.shoeboxes, TABLE.rows",
                                ),
                        );
                        PlateRange::Sized(Dim::Any)
                    }
                };
                (range, R::In(te))
            }
        }
    }

    /// A plate may not range over the same kind of record as a plate it is nested in.
    fn no_repeat(&mut self, p: &PlateStmt<()>, rec: &super::types::Rec) {
        let outer = self.stack.iter().copied().find(|&id| matches!(&self.program.plates[id].range, PlateRange::Data { record, .. } if record == rec));
        if let Some(id) = outer {
            let d = Diagnostic::error(
                Code::E0404,
                format!(
                    "plate `{}` ranges over the same records as an enclosing plate",
                    p.name.name
                ),
                p.name.span,
                "nested again",
            )
            .with_label(self.program.plates[id].span, "enclosing plate");
            self.error(d);
        }
    }
}

const GUIDE_KINDS: &str = "guides: mean_field (default), partial_centring (Normal priors), low_rank(RANK), full_rank, map, or an encoder declared with `encoder NAME { ... }`";

/// Why a `low_rank(RANK)` guide is malformed, if it is: one constant int from 1 to the
/// latent's element count (a rank equal to it is allowed but `full_rank` is cheaper).
fn low_rank_problem(args: &[crate::syntax::ast::Arg<Typed>], dims: &[Dim]) -> Option<String> {
    let rank = match args {
        [a] if a.name.is_none() => match a.value.meta.value {
            Some(super::value::Value::Int(r)) => r,
            _ => {
                return Some(
                    "the rank of `low_rank(RANK)` must be an int known before fitting".into(),
                );
            }
        },
        _ => return Some("`low_rank` takes one input, its rank: `guide low_rank(2)`".into()),
    };
    let elements: Option<i64> = dims
        .iter()
        .map(|d| match d {
            Dim::Known(n) => Some(*n as i64),
            _ => None,
        })
        .product();
    match elements {
        _ if rank < 1 => Some(format!(
            "the rank of a low-rank guide must be at least 1, found {rank}"
        )),
        Some(n) if rank > n => Some(format!(
            "rank {rank} exceeds the latent's {n} element(s); use `full_rank` or a rank of at most {n}"
        )),
        _ => None,
    }
}
