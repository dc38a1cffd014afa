//! Checking expressions: types, shapes, plates, ad levels and constant folding.

use super::scope::Binding;
use super::types::{Ad, Base, Dim, Type, broadcast, promote};
use super::value::Value;
use super::{Checker, Typed, schema};
use crate::diagnostics::{Code, Diagnostic, Span};
use crate::syntax::ast::{BinOp, Expr, ExprKind, Ident, MatchArm, ReduceOp, UnOp};

type TExpr = Expr<Typed>;

/// The union of sorted plate lists.
pub(super) fn union(a: &[usize], b: &[usize]) -> Vec<usize> {
    let mut v: Vec<usize> = a.iter().chain(b).copied().collect();
    v.sort_unstable();
    v.dedup();
    v
}

impl Checker {
    /// Checks one expression.
    pub(super) fn expr(&mut self, e: &Expr<()>) -> TExpr {
        let (kind, meta) = match &e.kind {
            ExprKind::Int(i) => (
                ExprKind::Int(*i),
                Typed::known(Type::scalar(Base::Int), Value::Int(*i)),
            ),
            ExprKind::Real(r) => (
                ExprKind::Real(*r),
                Typed::known(Type::scalar(Base::Real), Value::Real(*r)),
            ),
            ExprKind::Imag(r) => (
                ExprKind::Imag(*r),
                Typed::known(Type::scalar(Base::Complex), Value::Complex(0.0, *r)),
            ),
            ExprKind::Bool(b) => (
                ExprKind::Bool(*b),
                Typed::known(Type::scalar(Base::Bool), Value::Bool(*b)),
            ),
            ExprKind::Str(s) => (
                ExprKind::Str(s.clone()),
                Typed::known(Type::scalar(Base::Str), Value::Str(s.clone())),
            ),
            ExprKind::Name(n) => (ExprKind::Name(n.clone()), self.name(n, e.span)),
            ExprKind::Field(x, f) => self.field(x, f),
            ExprKind::Method(x, m, args) => self.method(x, m, args, e.span),
            ExprKind::Index(x, idx) => self.index(x, idx),
            ExprKind::Call(f, args) => self.call(f, args, e.span),
            ExprKind::Unary(op, x) => self.unary(*op, x),
            ExprKind::Binary(op, a, b) => self.binary(*op, a, b),
            ExprKind::Vector(xs) => self.vector(xs, e.span),
            ExprKind::Reduce(op, x, p) => self.reduce(*op, x, p),
            ExprKind::Set(body, var, coll) => self.set(body, var, coll, e.span),
            ExprKind::Match(v, arms) => self.match_expr(v, arms),
        };
        Expr {
            kind,
            span: e.span,
            meta,
        }
    }

    /// The type of a name, checking that its plates are visible here.
    fn name(&mut self, name: &str, span: Span) -> Typed {
        let Some(binding) = self.lookup(name) else {
            let mut d = Diagnostic::error(
                Code::E0201,
                format!("unknown name `{name}`"),
                span,
                "not declared",
            );
            if let Some(help) = self.suggest(name) {
                d = d.with_help(help);
            }
            self.error(d);
            return Typed::error();
        };
        match binding {
            Binding::Const(v, ty) => Typed::known(ty, v),
            Binding::Variant(_, selected) => {
                Typed::known(Type::scalar(Base::Choice), Value::Choice(selected))
            }
            Binding::Data(ty) => Typed::data(ty),
            Binding::Local(ty, ad) => Typed {
                ty,
                ad,
                plates: Vec::new(),
                value: None,
            },
            Binding::Model(_, ty, ad, plates) => self.plated(
                name,
                span,
                Typed {
                    ty,
                    ad,
                    plates,
                    value: None,
                },
            ),
            Binding::PlateVar(p, ty) => {
                let plates = self.ancestors(p);
                self.plated(
                    name,
                    span,
                    Typed {
                        ty,
                        ad: Ad::Data,
                        plates,
                        value: None,
                    },
                )
            }
            other => {
                let what = match other {
                    Binding::Plate(_) => "a plate",
                    Binding::Fn(_) | Binding::Extern(_) => "a function",
                    Binding::Flow(_) => "a flow",
                    _ => "an encoder",
                };
                self.error(Diagnostic::error(
                    Code::E0301,
                    format!("`{name}` is {what}, not a value"),
                    span,
                    "used as a value",
                ));
                Typed::error()
            }
        }
    }

    /// The non-singleton plates from `p` up to the root.
    pub(super) fn ancestors(&self, p: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut cur = Some(p);
        while let Some(id) = cur {
            let plate = &self.program.plates[id];
            if plate.range != super::PlateRange::Single {
                out.push(id);
            }
            cur = plate.parent;
        }
        out.sort_unstable();
        out
    }

    /// Reports a value used outside a plate it varies over.
    fn plated(&mut self, name: &str, span: Span, t: Typed) -> Typed {
        if self.in_fn {
            let msg = format!("`{name}` is a model value and is not visible inside a function");
            self.error(
                Diagnostic::error(Code::E0201, msg, span, "not visible here")
                    .with_help("pass it to the function as a parameter"),
            );
            return Typed::error();
        }
        let outside: Vec<usize> = t
            .plates
            .iter()
            .copied()
            .filter(|p| !self.visible.contains(p))
            .collect();
        if let Some(&p) = outside.first() {
            let plate = self.program.plates[p].name.clone();
            let msg = format!("`{name}` varies over plate `{plate}` but is used outside it");
            let help = if name == plate {
                format!(
                    "`{name}` is the current record of plate `{plate}`; use it inside that plate"
                )
            } else {
                format!(
                    "reduce it first, e.g. sum({name} over {plate}) or stack({name} over {plate})"
                )
            };
            let d = Diagnostic::error(
                Code::E0401,
                msg,
                span,
                format!("one value per `{plate}` element"),
            )
            .with_label(
                self.program.plates[p].span,
                format!("plate `{plate}` is declared here"),
            )
            .with_help(help);
            self.error(d);
            return Typed::error();
        }
        t
    }

    fn field(&mut self, x: &Expr<()>, f: &Ident) -> (ExprKind<Typed>, Typed) {
        let tx = self.expr(x);
        let meta = match &tx.meta.ty.base {
            Base::Error => Typed::error(),
            Base::Record(rec) if tx.meta.ty.shape.is_empty() => {
                match schema::field(rec, &f.name, &self.program.tables) {
                    Some(ty) => Typed {
                        ty: super::bind_sizes(ty, &self.program.sizes),
                        ad: tx.meta.ad,
                        plates: tx.meta.plates.clone(),
                        value: None,
                    },
                    None => {
                        let fields = schema::fields(rec, &self.program.tables);
                        let names: Vec<String> =
                            fields.iter().map(|(n, t)| format!("{n}: {t}")).collect();
                        let msg = format!("`{rec}` records have no field `{}`", f.name);
                        let mut d = Diagnostic::error(Code::E0209, msg, f.span, "unknown field")
                            .with_note(format!("fields: {}", names.join(", ")));
                        if let Some((n, _)) = fields
                            .iter()
                            .find(|(n, _)| super::edit_distance(n, &f.name) <= 2)
                        {
                            d = d.with_help(format!("did you mean `{n}`?"));
                        }
                        self.error(d);
                        Typed::error()
                    }
                }
            }
            _ => {
                let msg = format!("a value of type {} has no fields", tx.meta.ty);
                self.error(Diagnostic::error(Code::E0209, msg, f.span, "no field here"));
                Typed::error()
            }
        };
        (ExprKind::Field(Box::new(tx), f.clone()), meta)
    }

    fn method(
        &mut self,
        x: &Expr<()>,
        m: &Ident,
        args: &[crate::syntax::ast::Arg<()>],
        span: Span,
    ) -> (ExprKind<Typed>, Typed) {
        let tx = self.expr(x);
        let targs = self.args(args);
        let kind_of = |r: &Base| {
            if let Base::Record(r) = r {
                schema::method(r, &m.name)
            } else {
                None
            }
        };
        let meta = match (&tx.meta.ty.base, kind_of(&tx.meta.ty.base)) {
            (Base::Error, _) => Typed::error(),
            (_, Some(form)) => {
                let ok = targs.len() == 1
                    && targs[0].value.meta.ty == Type::scalar(Base::Str)
                    && targs[0].value.meta.value.is_some();
                if ok {
                    Typed {
                        ty: Type::scalar(Base::Int),
                        ad: Ad::Data,
                        plates: tx.meta.plates.clone(),
                        value: None,
                    }
                } else {
                    self.error(
                        Diagnostic::error(
                            Code::E0305,
                            format!("`{}` takes one quoted element symbol", m.name),
                            span,
                            "bad arguments",
                        )
                        .with_note(form),
                    );
                    Typed::error()
                }
            }
            _ => {
                let msg = format!("a value of type {} has no method `{}`", tx.meta.ty, m.name);
                self.error(
                    Diagnostic::error(Code::E0209, msg, m.span, "unknown method")
                        .with_note("crystal records have sites(\"EL\")"),
                );
                Typed::error()
            }
        };
        (ExprKind::Method(Box::new(tx), m.clone(), targs), meta)
    }

    fn index(&mut self, x: &Expr<()>, idx: &[Expr<()>]) -> (ExprKind<Typed>, Typed) {
        let tx = self.expr(x);
        let tidx: Vec<TExpr> = idx.iter().map(|i| self.expr(i)).collect();
        let mut meta = Typed {
            value: None,
            ..tx.meta.clone()
        };
        for i in &tidx {
            if !i.meta.ty.is_error() && i.meta.ty != Type::scalar(Base::Int) {
                let msg = format!("an index must be an int, not {}", i.meta.ty);
                self.error(Diagnostic::error(Code::E0307, msg, i.span, "not an int"));
                meta = Typed::error();
            }
            meta.ad = meta.ad.max(i.meta.ad);
            meta.plates = union(&meta.plates, &i.meta.plates);
        }
        if !tx.meta.ty.is_error() && !meta.ty.is_error() {
            if tidx.len() > tx.meta.ty.shape.len() {
                let msg = format!("{} indices into a value of type {}", tidx.len(), tx.meta.ty);
                self.error(Diagnostic::error(
                    Code::E0306,
                    msg,
                    tx.span,
                    format!("has {} dimension(s)", tx.meta.ty.shape.len()),
                ));
                meta = Typed::error();
            } else {
                meta.ty.shape = tx.meta.ty.shape[tidx.len()..].to_vec();
            }
        }
        (ExprKind::Index(Box::new(tx), tidx), meta)
    }

    fn unary(&mut self, op: UnOp, x: &Expr<()>) -> (ExprKind<Typed>, Typed) {
        let tx = self.expr(x);
        let mut meta = Typed {
            value: None,
            ..tx.meta.clone()
        };
        let ok = match op {
            UnOp::Neg => tx.meta.ty.is_numeric(),
            UnOp::Not => tx.meta.ty.base == Base::Bool,
        };
        if !ok && !tx.meta.ty.is_error() {
            let want = if op == UnOp::Neg {
                "a number"
            } else {
                "a bool"
            };
            self.error(Diagnostic::error(
                Code::E0301,
                format!("expected {want}, found {}", tx.meta.ty),
                tx.span,
                "wrong type",
            ));
            meta = Typed::error();
        }
        meta.value = match (op, &tx.meta.value) {
            (UnOp::Neg, Some(Value::Int(i))) => i.checked_neg().map(Value::Int),
            (UnOp::Neg, Some(Value::Real(r))) => Some(Value::Real(-r)),
            (UnOp::Neg, Some(Value::Complex(re, im))) => Some(Value::Complex(-re, -im)),
            (UnOp::Not, Some(Value::Bool(b))) => Some(Value::Bool(!b)),
            _ => None,
        };
        (ExprKind::Unary(op, Box::new(tx)), meta)
    }

    fn binary(&mut self, op: BinOp, a: &Expr<()>, b: &Expr<()>) -> (ExprKind<Typed>, Typed) {
        let ta = self.expr(a);
        let tb = self.expr(b);
        let meta = self.binary_type(op, &ta, &tb);
        (ExprKind::Binary(op, Box::new(ta), Box::new(tb)), meta)
    }

    fn binary_type(&mut self, op: BinOp, a: &TExpr, b: &TExpr) -> Typed {
        let (ta, tb) = (&a.meta.ty, &b.meta.ty);
        if ta.is_error() || tb.is_error() {
            return Typed::error();
        }
        let base = match op {
            BinOp::Or | BinOp::And => {
                (ta.base == Base::Bool && tb.base == Base::Bool).then_some(Base::Bool)
            }
            BinOp::Eq | BinOp::Ne => self.equality(a, b).then_some(Base::Bool),
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => promote(&ta.base, &tb.base)
                .filter(|b| *b != Base::Complex)
                .map(|_| Base::Bool),
            BinOp::Pow | BinOp::Div => {
                promote(&ta.base, &tb.base).map(|b| if b == Base::Int { Base::Real } else { b })
            }
            _ => promote(&ta.base, &tb.base),
        };
        let Some(base) = base else {
            let msg = format!("`{}` cannot combine {} and {}", op.symbol(), ta, tb);
            self.error(
                Diagnostic::error(
                    Code::E0301,
                    msg,
                    a.span.to(b.span),
                    "operands of the wrong type",
                )
                .with_label(a.span, format!("{ta}"))
                .with_label(b.span, format!("{tb}")),
            );
            return Typed::error();
        };
        let Some(shape) = broadcast(&ta.shape, &tb.shape) else {
            self.shape_error(a, b);
            return Typed::error();
        };
        let value = fold(op, a.meta.value.as_ref(), b.meta.value.as_ref());
        Typed {
            ty: Type::tensor(base, shape),
            ad: a.meta.ad.max(b.meta.ad),
            plates: union(&a.meta.plates, &b.meta.plates),
            value,
        }
    }

    /// Whether `==`/`!=` may compare these; a choice compares with a quoted choice name.
    fn equality(&mut self, a: &TExpr, b: &TExpr) -> bool {
        let (ba, bb) = (&a.meta.ty.base, &b.meta.ty.base);
        if promote(ba, bb).is_some()
            || (ba == bb && matches!(ba, Base::Bool | Base::Str | Base::Choice))
        {
            return true;
        }
        if let ((Base::Choice, _), Some(Value::Str(s))) | ((_, Base::Choice), Some(Value::Str(s))) =
            ((ba, bb), b.meta.value.as_ref().or(a.meta.value.as_ref()))
        {
            let choices = self
                .choices_of(a)
                .or_else(|| self.choices_of(b))
                .unwrap_or_default();
            if !choices.contains(s) {
                let lit = if *ba == Base::Str { a.span } else { b.span };
                let d = Diagnostic::error(
                    Code::E0310,
                    format!("`{s}` is not a choice of this variant"),
                    lit,
                    "unknown choice",
                )
                .with_note(format!("choices: {}", choices.join(" | ")));
                self.error(d);
            }
            return true;
        }
        false
    }

    fn choices_of(&mut self, e: &TExpr) -> Option<Vec<String>> {
        let ExprKind::Name(n) = &e.kind else {
            return None;
        };
        match self.scope.get(n).map(|x| &x.binding) {
            Some(Binding::Variant(choices, _)) => Some(choices.clone()),
            _ => None,
        }
    }

    pub(super) fn shape_error(&mut self, a: &TExpr, b: &TExpr) {
        let msg = format!(
            "shapes {} and {} do not broadcast",
            shape_text(&a.meta.ty.shape),
            shape_text(&b.meta.ty.shape)
        );
        let d = Diagnostic::error(Code::E0302, msg, a.span.to(b.span), "incompatible shapes")
            .with_label(a.span, format!("{}", a.meta.ty))
            .with_label(b.span, format!("{}", b.meta.ty))
            .with_note(
                "shapes align from the right; each pair of sizes must be equal or one of them 1",
            );
        self.error(d);
    }

    /// `[body for var in collection]`: numeric data of a fixed size per record, stacked along a
    /// new leading axis of the collection's size (e.g. `image.n_shoeboxes`); an encoder input only.
    fn set(
        &mut self,
        body: &Expr<()>,
        var: &Ident,
        coll: &Expr<()>,
        span: Span,
    ) -> (ExprKind<Typed>, Typed) {
        let tcoll = self.expr(coll);
        let rec = match &tcoll.meta.ty.base {
            Base::Collection(rec) => Some(rec.clone()),
            Base::Error => None,
            _ => {
                let msg = format!(
                    "a set ranges over a collection of records, found {}",
                    tcoll.meta.ty
                );
                self.error(
                    Diagnostic::error(Code::E0408, msg, tcoll.span, "not a collection")
                        .with_note("collections: shots.images, image.shoeboxes"),
                );
                None
            }
        };
        let record = rec
            .clone()
            .map_or_else(Type::error, |r| Type::scalar(Base::Record(r)));
        self.locals
            .push(std::iter::once((var.name.clone(), (record, Ad::Data))).collect());
        let tbody = self.expr(body);
        self.locals.pop();
        let kind = ExprKind::Set(
            Box::new(tbody.clone()),
            var.clone(),
            Box::new(tcoll.clone()),
        );
        let Some(rec) = rec else {
            return (kind, Typed::error());
        };
        if tbody.meta.ty.is_error() {
            return (kind, Typed::error());
        }
        let problem = if tbody.meta.ad != Ad::Data {
            Some("the values of a set must be data (they depend on latents or params here)".into())
        } else if !matches!(tbody.meta.ty.base, Base::Int | Base::Real | Base::Bool) {
            Some(format!(
                "the values of a set must be numbers, not {}",
                tbody.meta.ty
            ))
        } else {
            let own = format!("{rec}.");
            tbody
                .meta
                .ty
                .shape
                .iter()
                .find(|d| match d {
                    Dim::Any => true,
                    Dim::Sym(s) => s.starts_with(&own),
                    Dim::Known(_) => false,
                })
                .map(|d| {
                    format!(
                        "each value of a set must have the same size for every record, but this \
                         one has a dimension `{}` that varies from {rec} to {rec}",
                        super::expr::shape_text(std::slice::from_ref(d))
                    )
                })
        };
        if let Some(msg) = problem {
            self.error(
                Diagnostic::error(Code::E0408, msg, tbody.span, "bad set value")
                    .with_help("reduce it per record first, e.g. log1p(sum(s.pixels))"),
            );
            return (kind, Typed::error());
        }
        if !self.set_allowed {
            self.error(
                Diagnostic::error(
                    Code::E0408,
                    "a set of per-record values can only be an encoder input",
                    span,
                    "not an encoder input",
                )
                .with_help(
                    "pass it to an encoder guide: guide NET(..., [f(s) for s in image.shoeboxes])",
                ),
            );
            return (kind, Typed::error());
        }
        let mut ty = tbody.meta.ty.clone();
        if ty.base == Base::Bool {
            ty.base = Base::Real;
        }
        ty.shape.insert(
            0,
            super::bind_sizes(
                Type::tensor(Base::Int, vec![super::collection_size(&rec)]),
                &self.program.sizes,
            )
            .shape
            .remove(0),
        );
        let meta = Typed {
            ty,
            ad: Ad::Data,
            plates: tcoll.meta.plates.clone(),
            value: None,
        };
        (kind, meta)
    }

    fn vector(&mut self, xs: &[Expr<()>], span: Span) -> (ExprKind<Typed>, Typed) {
        let txs: Vec<TExpr> = xs.iter().map(|x| self.expr(x)).collect();
        let mut meta = Typed::known(Type::scalar(Base::Int), Value::Int(0));
        meta.ty.shape.clear();
        let mut first = true;
        let mut values = Some(Vec::new());
        for x in &txs {
            if x.meta.ty.is_error() {
                meta = Typed::error();
                break;
            }
            let base = if first {
                Some(x.meta.ty.base.clone())
            } else {
                promote(&meta.ty.base, &x.meta.ty.base)
            };
            let shape = if first {
                Some(x.meta.ty.shape.clone())
            } else {
                broadcast(&meta.ty.shape, &x.meta.ty.shape)
            };
            let (Some(base), Some(shape)) = (
                base.filter(|b| matches!(b, Base::Int | Base::Real | Base::Complex)),
                shape,
            ) else {
                let d = Diagnostic::error(
                    Code::E0301,
                    format!("a list mixes or holds values of type {}", x.meta.ty),
                    x.span,
                    "does not fit the list",
                )
                .with_label(span, "in this list");
                self.error(d);
                meta = Typed::error();
                break;
            };
            first = false;
            meta.ty = Type::tensor(base, shape);
            meta.ad = meta.ad.max(x.meta.ad);
            meta.plates = union(&meta.plates, &x.meta.plates);
            values = values.and_then(|mut v: Vec<Value>| {
                x.meta.value.clone().map(|x| {
                    v.push(x);
                    v
                })
            });
        }
        if !meta.ty.is_error() {
            meta.ty.shape.insert(0, Dim::Known(txs.len() as u64));
            meta.value = values.map(Value::List);
        }
        (ExprKind::Vector(txs), meta)
    }

    fn reduce(&mut self, op: ReduceOp, x: &Expr<()>, plate: &Ident) -> (ExprKind<Typed>, Typed) {
        let id = match self.lookup(&plate.name) {
            Some(Binding::Plate(p) | Binding::PlateVar(p, _)) => Some(p),
            _ => None,
        };
        let Some(id) = id.filter(|&p| self.program.plates[p].range != super::PlateRange::Single)
        else {
            let d = Diagnostic::error(
                Code::E0403,
                format!("`{}` is not a plate with several elements", plate.name),
                plate.span,
                "cannot reduce over this",
            );
            self.error(d);
            let tx = self.expr(x);
            return (
                ExprKind::Reduce(op, Box::new(tx), plate.clone()),
                Typed::error(),
            );
        };
        let saved = self.visible.clone();
        self.visible = union(&self.visible, &self.ancestors(id));
        let tx = self.expr(x);
        self.visible = saved;
        let mut meta = Typed {
            value: None,
            ..tx.meta.clone()
        };
        if !tx.meta.ty.is_error() && !tx.meta.plates.contains(&id) {
            let msg = format!("this value does not vary over plate `{}`", plate.name);
            self.error(
                Diagnostic::error(Code::E0403, msg, tx.span, "the same for every element")
                    .with_help("reduce a value declared or computed inside the plate"),
            );
            meta = Typed::error();
        } else if !tx.meta.ty.is_numeric() && !tx.meta.ty.is_error() {
            self.error(Diagnostic::error(
                Code::E0301,
                format!("cannot {} values of type {}", op.name(), tx.meta.ty),
                tx.span,
                "not a number",
            ));
            meta = Typed::error();
        } else if !meta.ty.is_error() {
            meta.plates.retain(|&p| p != id);
            match op {
                ReduceOp::Stack => meta.ty.shape.insert(0, self.stacked_size(id)),
                ReduceOp::Mean | ReduceOp::LogSumExp if meta.ty.base == Base::Int => {
                    meta.ty.base = Base::Real
                }
                _ => {}
            }
        }
        (ExprKind::Reduce(op, Box::new(tx), plate.clone()), meta)
    }

    /// Rows of `stack(x over p)`: the mini-batch size when `p` is subsampled.
    fn stacked_size(&self, plate: usize) -> Dim {
        let p = &self.program.plates[plate];
        p.subsample.map(Dim::Known).unwrap_or_else(|| p.size())
    }

    fn match_expr(&mut self, v: &Ident, arms: &[MatchArm<()>]) -> (ExprKind<Typed>, Typed) {
        let variant = match self.lookup(&v.name) {
            Some(Binding::Variant(choices, selected)) => Some((choices, selected)),
            _ => None,
        };
        let tarms: Vec<MatchArm<Typed>> = arms
            .iter()
            .map(|a| MatchArm {
                pattern: a.pattern.clone(),
                value: self.expr(&a.value),
            })
            .collect();
        let Some((choices, selected)) = variant else {
            self.error(Diagnostic::error(
                Code::E0310,
                format!("`{}` is not a variant", v.name),
                v.span,
                "match needs a variant",
            ));
            return (ExprKind::Match(v.clone(), tarms), Typed::error());
        };
        let ok = self.check_arms(v, &tarms, &choices);
        let mut meta = self.join_arms(&tarms);
        if !ok {
            meta = Typed::error();
        }
        let chosen = tarms
            .iter()
            .find(|a| a.pattern.as_ref().is_none_or(|p| p.name == selected));
        meta.value = chosen.and_then(|a| a.value.meta.value.clone());
        (ExprKind::Match(v.clone(), tarms), meta)
    }

    fn check_arms(&mut self, v: &Ident, arms: &[MatchArm<Typed>], choices: &[String]) -> bool {
        let mut seen: Vec<String> = Vec::new();
        let mut wildcard = false;
        for arm in arms {
            let Some(p) = &arm.pattern else {
                wildcard = true;
                continue;
            };
            if !choices.contains(&p.name) || seen.contains(&p.name) {
                let what = if seen.contains(&p.name) {
                    "is matched twice"
                } else {
                    "is not a choice of this variant"
                };
                let d = Diagnostic::error(
                    Code::E0310,
                    format!("`{}` {what}", p.name),
                    p.span,
                    "bad pattern",
                )
                .with_note(format!(
                    "choices of `{}`: {}",
                    v.name,
                    choices.join(" | ")
                ));
                self.error(d);
                return false;
            }
            seen.push(p.name.clone());
        }
        let missing: Vec<&String> = choices.iter().filter(|c| !seen.contains(c)).collect();
        if !wildcard && !missing.is_empty() {
            let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
            let d = Diagnostic::error(
                Code::E0310,
                format!("match on `{}` does not cover {}", v.name, names.join(", ")),
                v.span,
                "not every choice is covered",
            )
            .with_help("add an arm for each missing choice, or `_ => ...`");
            self.error(d);
            return false;
        }
        true
    }

    fn join_arms(&mut self, arms: &[MatchArm<Typed>]) -> Typed {
        let mut acc: Option<Typed> = None;
        for arm in arms {
            let t = &arm.value;
            let Some(prev) = acc.take() else {
                acc = Some(t.meta.clone());
                continue;
            };
            if prev.ty.is_error() || t.meta.ty.is_error() {
                return Typed::error();
            }
            let base = if prev.ty.base == t.meta.ty.base {
                Some(prev.ty.base.clone())
            } else {
                promote(&prev.ty.base, &t.meta.ty.base)
            };
            let (Some(base), Some(shape)) = (base, broadcast(&prev.ty.shape, &t.meta.ty.shape))
            else {
                let msg = format!("match arms differ: {} and {}", prev.ty, t.meta.ty);
                self.error(Diagnostic::error(
                    Code::E0301,
                    msg,
                    t.span,
                    "this arm does not fit the others",
                ));
                return Typed::error();
            };
            acc = Some(Typed {
                ty: Type::tensor(base, shape),
                ad: prev.ad.max(t.meta.ad),
                plates: union(&prev.plates, &t.meta.plates),
                value: None,
            });
        }
        acc.unwrap_or_else(Typed::error)
    }

    /// Checks arguments, keeping their names.
    pub(super) fn args(
        &mut self,
        args: &[crate::syntax::ast::Arg<()>],
    ) -> Vec<crate::syntax::ast::Arg<Typed>> {
        args.iter()
            .map(|a| crate::syntax::ast::Arg {
                name: a.name.clone(),
                value: self.expr(&a.value),
            })
            .collect()
    }
}

/// `[3, shots.n_channels]` or `scalar`.
pub(super) fn shape_text(shape: &[Dim]) -> String {
    if shape.is_empty() {
        return "scalar".to_string();
    }
    let dims: Vec<String> = shape.iter().map(Dim::to_string).collect();
    format!("[{}]", dims.join(", "))
}

/// Folds a binary operation on values known before fitting.
fn fold(op: BinOp, a: Option<&Value>, b: Option<&Value>) -> Option<Value> {
    let (a, b) = (a?, b?);
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => fold_int(op, *x, *y),
        (Value::Bool(x), Value::Bool(y)) => match op {
            BinOp::And => Some(Value::Bool(*x && *y)),
            BinOp::Or => Some(Value::Bool(*x || *y)),
            BinOp::Eq => Some(Value::Bool(x == y)),
            BinOp::Ne => Some(Value::Bool(x != y)),
            _ => None,
        },
        (Value::Choice(x) | Value::Str(x), Value::Choice(y) | Value::Str(y)) => match op {
            BinOp::Eq => Some(Value::Bool(x == y)),
            BinOp::Ne => Some(Value::Bool(x != y)),
            _ => None,
        },
        _ => fold_real(op, a.as_real()?, b.as_real()?),
    }
}

fn fold_int(op: BinOp, x: i64, y: i64) -> Option<Value> {
    Some(match op {
        BinOp::Add => Value::Int(x.checked_add(y)?),
        BinOp::Sub => Value::Int(x.checked_sub(y)?),
        BinOp::Mul => Value::Int(x.checked_mul(y)?),
        BinOp::Div => Value::Real(x as f64 / y as f64),
        BinOp::Pow => Value::Real((x as f64).powf(y as f64)),
        _ => return fold_real(op, x as f64, y as f64),
    })
}

fn fold_real(op: BinOp, x: f64, y: f64) -> Option<Value> {
    Some(match op {
        BinOp::Add => Value::Real(x + y),
        BinOp::Sub => Value::Real(x - y),
        BinOp::Mul => Value::Real(x * y),
        BinOp::Div => Value::Real(x / y),
        BinOp::Pow => Value::Real(x.powf(y)),
        BinOp::Lt => Value::Bool(x < y),
        BinOp::Le => Value::Bool(x <= y),
        BinOp::Gt => Value::Bool(x > y),
        BinOp::Ge => Value::Bool(x >= y),
        BinOp::Eq => Value::Bool(x == y),
        BinOp::Ne => Value::Bool(x != y),
        BinOp::And | BinOp::Or => return None,
    })
}
