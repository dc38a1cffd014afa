//! Lowering: typed AST to IR. Applies variants and constants, flattens plates into annotations,
//! and collects the guide.

use super::*;
use crate::check::{self, EXTERN_PREFIX, Typed, static_dim};
use crate::syntax::ast::{self, StmtKind as S};

type TExpr = ast::Expr<Typed>;

/// Lowers a checked program.
pub fn lower(p: &check::Program) -> Program {
    let mut l = Lowerer {
        p,
        module: None,
        plate_ids: Vec::new(),
        stmts: Vec::new(),
        guide: Vec::new(),
        nets_used: Vec::new(),
    };
    l.block(&p.body, None);
    let plates: Vec<Plate> = p.plates.iter().map(|pl| l.plate(pl)).collect();
    let all_fns: Vec<Function> = p
        .fns
        .iter()
        .filter(|f| f.sig.used)
        .map(|f| l.function(f))
        .collect();
    let (called, externs_called) = reachable(&l.stmts, &l.guide, &plates, &all_fns);
    let functions = all_fns
        .into_iter()
        .filter(|f| called.contains(&f.name))
        .collect();
    let externs = p
        .externs
        .iter()
        .filter(|e| externs_called.contains(&e.name))
        .map(|e| ExternSig {
            name: e.name.clone(),
            module: e.sig_module(),
            params: e.params.clone(),
            ret: e.ret.clone(),
        })
        .collect();
    let nets = p
        .nets
        .iter()
        .filter(|n| l.nets_used.contains(&n.name))
        .map(|n| Net {
            name: n.name.clone(),
            is_flow: n.is_flow,
            settings: n.settings.clone(),
        })
        .collect();
    let data = p
        .data
        .iter()
        .map(|d| DataSource {
            name: d.name.clone(),
            source: d.source.clone(),
            paths: d.paths.clone(),
            columns: d.columns.clone(),
            sizes: d.sizes.clone(),
        })
        .collect();
    Program {
        name: p.name.clone(),
        consts: p.consts.clone(),
        variants: p.variants.clone(),
        data,
        plates,
        externs,
        functions,
        nets,
        log_joint: l.stmts,
        guide: l.guide,
    }
}

trait SigModule {
    fn sig_module(&self) -> String;
}

impl SigModule for check::Signature {
    fn sig_module(&self) -> String {
        self.module.clone()
    }
}

struct Lowerer<'a> {
    p: &'a check::Program,
    /// The module whose function is being lowered (None for the model body).
    module: Option<String>,
    /// Plate ids in the order plate statements are met (equals checker order).
    plate_ids: Vec<usize>,
    stmts: Vec<Stmt>,
    guide: Vec<GuideSite>,
    nets_used: Vec<String>,
}

impl Lowerer<'_> {
    fn plate_id(&self, name: &str) -> Option<usize> {
        self.p.plates.iter().position(|pl| pl.name == name)
    }

    fn plate(&self, pl: &check::Plate) -> Plate {
        let size = match &pl.range {
            check::PlateRange::Single => PlateSize::Single,
            check::PlateRange::Sized(d) => PlateSize::Fixed(d.clone()),
            check::PlateRange::Data {
                collection,
                record,
                size,
            } => PlateSize::Data {
                collection: self.expr(collection),
                record: record.clone(),
                size: size.clone(),
            },
        };
        Plate {
            name: pl.name.clone(),
            parent: pl.parent,
            size,
            subsample: pl.subsample,
        }
    }

    fn function(&self, f: &check::FnDef) -> Function {
        let l = Lowerer {
            p: self.p,
            module: Some(f.sig.module.clone()),
            plate_ids: Vec::new(),
            stmts: Vec::new(),
            guide: Vec::new(),
            nets_used: Vec::new(),
        };
        l.function_in_module(f)
    }

    fn function_in_module(&self, f: &check::FnDef) -> Function {
        Function {
            name: format!("{}.{}", f.sig.module, f.sig.name),
            params: f.sig.params.clone(),
            ret: f.sig.ret.clone(),
            lets: f
                .lets
                .iter()
                .map(|(n, e)| (n.clone(), self.expr(e)))
                .collect(),
            body: self.expr(&f.body),
        }
    }

    fn block(&mut self, body: &[ast::Stmt<Typed>], plate: Option<usize>) {
        for s in body {
            self.stmt(s, plate);
        }
    }

    fn stmt(&mut self, s: &ast::Stmt<Typed>, plate: Option<usize>) {
        let kind = match &s.kind {
            S::Plate(p) => {
                let id = self.plate_id(&p.name.name);
                self.plate_ids.extend(id);
                self.block(&p.body, id.or(plate));
                return;
            }
            S::Latent {
                name,
                shape,
                dist,
                guide,
            } => {
                let kind = self.guide_kind(guide.as_ref());
                self.guide.push(GuideSite {
                    latent: name.name.clone(),
                    plate,
                    kind,
                });
                let support = crate::check::distributions::lookup(&dist.name.name)
                    .map(|d| d.support)
                    .unwrap_or(Support::Real);
                StmtKind::Latent {
                    name: name.name.clone(),
                    shape: dims(shape, &self.p.sizes),
                    dist: self.dist(dist),
                    support,
                }
            }
            S::Param {
                name,
                shape,
                constraint,
                init,
            } => StmtKind::Param {
                name: name.name.clone(),
                shape: dims(shape, &self.p.sizes),
                constraint: constraint
                    .as_ref()
                    .map(|c| c.name.clone())
                    .unwrap_or_else(|| "real".into()),
                init: self.expr(init),
            },
            S::Let { name, value } => StmtKind::Let {
                name: name.name.clone(),
                value: self.expr(value),
            },
            S::Observe {
                data,
                dist,
                correction,
            } => {
                let correction = correction.as_ref().and_then(|c| self.correction(c));
                StmtKind::Observe {
                    data: self.expr(data),
                    dist: self.dist(dist),
                    correction,
                }
            }
            // A factor that is the constant 0 (a `match` arm that switches a restraint off)
            // adds nothing: it is dropped, as a flow switched off by its guard is.
            S::Factor { value }
                if value.meta.value.as_ref().and_then(Value::as_real) == Some(0.0) =>
            {
                return;
            }
            S::Factor { value } => StmtKind::Factor {
                value: self.expr(value),
            },
        };
        self.stmts.push(Stmt {
            plate,
            span: s.span,
            kind,
        });
    }

    fn guide_kind(&mut self, g: Option<&ast::GuideSpec<Typed>>) -> GuideKind {
        match g.map(|g| g.kind.name.as_str()) {
            None | Some("mean_field") => GuideKind::MeanField,
            Some("map") => GuideKind::Map,
            Some("partial_centring") => GuideKind::PartialCentring,
            Some("full_rank") => GuideKind::FullRank,
            Some("low_rank") => GuideKind::LowRank {
                // The checker let only a constant int of at least 1 through.
                rank: g
                    .and_then(|g| g.args.first())
                    .and_then(|a| match a.value.meta.value {
                        Some(crate::check::value::Value::Int(r)) => usize::try_from(r).ok(),
                        _ => None,
                    })
                    .unwrap_or(1),
            },
            Some(name) => {
                // The encoder's declaration travels with the IR, as a used flow's does.
                self.nets_used.push(name.to_string());
                GuideKind::Encoder {
                    name: name.to_string(),
                    inputs: g
                        .map(|g| g.args.iter().map(|a| self.expr(&a.value)).collect())
                        .unwrap_or_default(),
                }
            }
        }
    }

    fn correction(&mut self, c: &ast::Correction<Typed>) -> Option<Correction> {
        if let Some(g) = &c.guard
            && g.meta.value == Some(Value::Bool(false))
        {
            return None;
        }
        let net = self
            .p
            .nets
            .iter()
            .find(|n| n.name == c.flow.name && n.is_flow)?;
        let mut settings = net.settings.clone();
        for arg in &c.args {
            let (Some(k), Some(v)) = (&arg.name, &arg.value.meta.value) else {
                continue;
            };
            if let Some(slot) = settings.iter_mut().find(|(n, _)| *n == k.name) {
                slot.1 = v.clone();
            }
        }
        self.nets_used.push(net.name.clone());
        let penalty = c
            .penalty
            .meta
            .value
            .as_ref()
            .and_then(Value::as_real)
            .unwrap_or(0.0);
        let context = c
            .args
            .iter()
            .filter(|a| a.name.is_none())
            .map(|a| self.expr(&a.value))
            .collect();
        Some(Correction {
            flow: c.flow.name.clone(),
            settings,
            context,
            penalty,
        })
    }

    fn dist(&self, d: &ast::DistCall<Typed>) -> Dist {
        Dist {
            name: d.name.name.clone(),
            args: d.args.iter().map(|a| self.expr(&a.value)).collect(),
        }
    }

    fn exprs(&self, xs: &[TExpr]) -> Vec<Expr> {
        xs.iter().map(|x| self.expr(x)).collect()
    }

    fn args(&self, xs: &[ast::Arg<Typed>]) -> Vec<Expr> {
        xs.iter().map(|a| self.expr(&a.value)).collect()
    }

    /// Lowers an expression; anything with a known value becomes a constant.
    fn expr(&self, e: &TExpr) -> Expr {
        let node = |kind| Expr {
            ty: e.meta.ty.clone(),
            ad: e.meta.ad,
            plates: e.meta.plates.clone(),
            kind,
        };
        if let Some(v) = &e.meta.value {
            return node(ExprKind::Const(v.clone()));
        }
        let b = |x: &TExpr| Box::new(self.expr(x));
        node(match &e.kind {
            ast::ExprKind::Name(n) => ExprKind::Var(n.clone()),
            ast::ExprKind::Field(x, f) => ExprKind::Field(b(x), f.name.clone()),
            ast::ExprKind::Method(x, m, args) => {
                ExprKind::Method(b(x), m.name.clone(), self.args(args))
            }
            ast::ExprKind::Index(x, idx) => ExprKind::Index(b(x), self.exprs(idx)),
            ast::ExprKind::Call(f, args) => call(&f.name, self.args(args)),
            ast::ExprKind::Unary(op, x) => ExprKind::Unary(*op, b(x)),
            ast::ExprKind::Binary(op, x, y) => ExprKind::Binary(*op, b(x), b(y)),
            ast::ExprKind::Vector(xs) => ExprKind::Vector(self.exprs(xs)),
            ast::ExprKind::Reduce(op, x, p) => ExprKind::Reduce {
                op: *op,
                plate: self.plate_id(&p.name).unwrap_or(0),
                body: b(x),
            },
            ast::ExprKind::Set(x, var, coll) => ExprKind::Set {
                var: var.name.clone(),
                collection: b(coll),
                body: b(x),
            },
            ast::ExprKind::Match(v, arms) => {
                return self
                    .selected_arm(&v.name, arms)
                    .unwrap_or_else(|| node(ExprKind::Const(Value::Int(0))));
            }
            ast::ExprKind::Int(i) => ExprKind::Const(Value::Int(*i)),
            ast::ExprKind::Real(r) => ExprKind::Const(Value::Real(*r)),
            ast::ExprKind::Imag(r) => ExprKind::Const(Value::Complex(0.0, *r)),
            ast::ExprKind::Bool(x) => ExprKind::Const(Value::Bool(*x)),
            ast::ExprKind::Str(s) => ExprKind::Const(Value::Str(s.clone())),
        })
    }

    /// The arm of a match selected by the variant's current choice.
    fn selected_arm(&self, variant: &str, arms: &[ast::MatchArm<Typed>]) -> Option<Expr> {
        let selected = self.selected(variant)?;
        let arm = arms
            .iter()
            .find(|a| a.pattern.as_ref().is_some_and(|p| p.name == selected))
            .or_else(|| arms.iter().find(|a| a.pattern.is_none()))?;
        Some(self.expr(&arm.value))
    }

    /// The selected choice; variants of imported modules are listed as `module.name`.
    fn selected(&self, variant: &str) -> Option<String> {
        let qualified = match &self.module {
            Some(m) if *m != self.p.name => format!("{m}.{variant}"),
            _ => variant.to_string(),
        };
        self.p
            .variants
            .iter()
            .find(|(n, _, _)| *n == qualified)
            .map(|(_, _, s)| s.clone())
    }
}

/// User functions and physics operators reachable from the model (after variants are applied).
fn reachable(
    stmts: &[Stmt],
    guide: &[GuideSite],
    plates: &[Plate],
    fns: &[Function],
) -> (Vec<String>, Vec<String>) {
    let mut roots: Vec<&Expr> = Vec::new();
    for s in stmts {
        roots.extend(s.kind.exprs());
    }
    for g in guide {
        if let GuideKind::Encoder { inputs, .. } = &g.kind {
            roots.extend(inputs);
        }
    }
    for pl in plates {
        if let PlateSize::Data { collection, .. } = &pl.size {
            roots.push(collection);
        }
    }
    let (mut called, mut externs) = (Vec::new(), Vec::new());
    let mut stack = roots;
    while let Some(e) = stack.pop() {
        match &e.kind {
            ExprKind::Call(name, _) if !called.contains(name) => {
                called.push(name.clone());
                if let Some(f) = fns.iter().find(|f| f.name == *name) {
                    stack.push(&f.body);
                    stack.extend(f.lets.iter().map(|(_, x)| x));
                }
            }
            ExprKind::Extern(name, _) if !externs.contains(name) => externs.push(name.clone()),
            _ => {}
        }
        stack.extend(children(e));
    }
    (called, externs)
}

/// The direct sub-expressions of a node.
pub(super) fn children(e: &Expr) -> Vec<&Expr> {
    match &e.kind {
        ExprKind::Const(_) | ExprKind::Var(_) => Vec::new(),
        ExprKind::Field(x, _) | ExprKind::Unary(_, x) => vec![x],
        ExprKind::Reduce { body, .. } => vec![body],
        ExprKind::Method(x, _, xs) | ExprKind::Index(x, xs) => {
            std::iter::once(&**x).chain(xs).collect()
        }
        ExprKind::Binary(_, a, b)
        | ExprKind::Set {
            collection: a,
            body: b,
            ..
        } => vec![a, b],
        ExprKind::Builtin(_, xs)
        | ExprKind::Extern(_, xs)
        | ExprKind::Call(_, xs)
        | ExprKind::Vector(xs) => xs.iter().collect(),
    }
}

fn call(name: &str, args: Vec<Expr>) -> ExprKind {
    if let Some(ext) = name.strip_prefix(EXTERN_PREFIX) {
        ExprKind::Extern(ext.to_string(), args)
    } else if name.contains('.') {
        ExprKind::Call(name.to_string(), args)
    } else {
        ExprKind::Builtin(name.to_string(), args)
    }
}

fn dims(shape: &[TExpr], sizes: &[(String, u64)]) -> Vec<Dim> {
    shape
        .iter()
        .map(|e| static_dim(e, sizes).unwrap_or(Dim::Any))
        .collect()
}
