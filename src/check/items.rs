//! Checking top-level items: constants (with `--set`), variants, data bindings, functions,
//! physics operator signatures, flows and encoders; model statements go to `stmt`.

use super::scope::{Binding, Entry};
use super::types::{Ad, Base, Dim, Rec, Type};
use super::value::Value;
use super::{Checker, DataBinding, FnDef, Net, Signature, Typed, schema};
use crate::diagnostics::{Code, Diagnostic};
use crate::syntax::ast::{self, Arg, DataArg, DimExpr, Item, TypeExpr};
use std::collections::HashMap;

/// Flow settings and their defaults.
const FLOW_DEFAULTS: &[(&str, &str)] = &[
    ("kind", "affine_coupling"),
    ("layers", "1"),
    ("bins", "8"),
    ("hidden", "[32, 32]"),
    ("activation", "tanh"),
    ("readout", "1.0"),
    ("given_expected", "true"),
];
/// Encoder settings and their defaults.
/// `embed`: the widths of the element network φ of a deep set (used when an input is a set).
const ENCODER_DEFAULTS: &[(&str, &str)] = &[
    ("hidden", "[64, 64]"),
    ("activation", "relu"),
    ("embed", "[32]"),
    ("refine", "false"),
];

impl Checker {
    /// Checks every item of a module in order.
    pub(super) fn items(&mut self, module: &ast::Module<()>) {
        self.later_fns = module
            .items
            .iter()
            .filter_map(|i| {
                if let Item::Fn(f) = i {
                    Some(f.name.name.clone())
                } else {
                    None
                }
            })
            .collect();
        for item in &module.items {
            match item {
                Item::Use(_) => {}
                Item::Const(c) => self.const_decl(c),
                Item::Variant(v) => self.variant_decl(v),
                Item::Data(d) => self.data_decl(d),
                Item::Fn(f) => self.fn_decl(f),
                Item::Extern(e) => self.extern_decl(e),
                Item::Flow(n) => self.net_decl(n, true),
                Item::Encoder(n) => self.net_decl(n, false),
                Item::Stmt(s) => {
                    let ts = self.stmt(s);
                    self.program.body.push(ts);
                }
            }
        }
    }

    /// The `--set` text for a root-module name, marking it used.
    fn take_set(&mut self, name: &str) -> Option<String> {
        if !self.is_root {
            return None;
        }
        let entry = self.sets.iter_mut().find(|(n, _, _)| n == name)?;
        entry.2 = true;
        Some(entry.1.clone())
    }

    fn const_decl(&mut self, c: &ast::ConstDecl<()>) {
        let te = self.expr(&c.value);
        let declared =
            c.ty.as_ref()
                .and_then(|t| self.type_expr(t, &mut Vec::new()));
        let mut ty = declared.clone().unwrap_or_else(|| te.meta.ty.clone());
        let mut value = te.meta.value.clone();
        if value.is_none() && !te.meta.ty.is_error() {
            self.error(Diagnostic::error(
                Code::E0606,
                format!("const `{}` is not computable before fitting", c.name.name),
                te.span,
                "not a constant expression",
            ));
        }
        if let (Some(d), Some(v)) = (&declared, &value) {
            match coerce(v, d) {
                Some(v2) => value = Some(v2),
                None => self.error(Diagnostic::error(
                    Code::E0305,
                    format!(
                        "const `{}` is declared {d} but its value is {}",
                        c.name.name, te.meta.ty
                    ),
                    te.span,
                    "wrong type",
                )),
            }
        }
        if let Some(text) = self.take_set(&c.name.name) {
            match parse_setting(&text, &ty) {
                Some(v) => value = Some(v),
                None => self.error(
                    Diagnostic::global(
                        Code::E0602,
                        format!(
                            "--set {}={text}: expected a value of type {ty}",
                            c.name.name
                        ),
                    )
                    .with_note(format!(
                        "`{}` (module {}) has the default {}",
                        c.name.name,
                        self.module_name,
                        te.meta
                            .value
                            .clone()
                            .map(|v| v.to_string())
                            .unwrap_or_default()
                    )),
                ),
            }
        }
        let value = value.unwrap_or(Value::Int(0));
        if ty.is_error() {
            ty = Type::error();
        }
        if self.is_root {
            self.program
                .consts
                .push((c.name.name.clone(), value.clone()));
        }
        self.declare(
            &c.name.name,
            Entry {
                binding: Binding::Const(value, ty),
                span: c.name.span,
            },
        );
    }

    fn variant_decl(&mut self, v: &ast::VariantDecl) {
        let mut choices: Vec<String> = Vec::new();
        for c in &v.choices {
            if choices.contains(&c.name) {
                self.error(Diagnostic::error(
                    Code::E0202,
                    format!("choice `{}` is listed twice", c.name),
                    c.span,
                    "repeated choice",
                ));
            } else {
                choices.push(c.name.clone());
            }
        }
        let mut selected = choices.first().cloned().unwrap_or_default();
        if let Some(text) = self.take_set(&v.name.name) {
            if choices.contains(&text) {
                selected = text;
            } else {
                let d = Diagnostic::global(
                    Code::E0602,
                    format!(
                        "--set {}={text}: not a choice of variant `{}`",
                        v.name.name, v.name.name
                    ),
                )
                .with_note(format!("choices: {}", choices.join(" | ")));
                self.error(d);
            }
        }
        let listed = if self.is_root {
            v.name.name.clone()
        } else {
            format!("{}.{}", self.module_name, v.name.name)
        };
        self.program
            .variants
            .push((listed, choices.clone(), selected.clone()));
        self.declare(
            &v.name.name,
            Entry {
                binding: Binding::Variant(choices, selected),
                span: v.name.span,
            },
        );
    }

    fn data_decl(&mut self, d: &ast::DataDecl) {
        let mut columns = Vec::new();
        let mut paths = Vec::new();
        let mut sizes = Vec::new();
        for arg in &d.args {
            match arg {
                DataArg::Path(p, _) => paths.push(p.clone()),
                DataArg::Size(key, e) => {
                    if let Some(n) = self.data_size(d, key, e) {
                        sizes.push((key.name.clone(), n));
                    }
                }
                DataArg::Column(name, t) => {
                    let ty = self
                        .type_expr(t, &mut Vec::new())
                        .unwrap_or_else(Type::error);
                    columns.push((name.name.clone(), ty));
                }
            }
        }
        let col_types: Vec<Type> = columns.iter().map(|(_, t)| t.clone()).collect();
        let ty = match schema::source_type(&d.source.name, &d.name.name, &d.args, &col_types) {
            Ok(ty) => ty,
            Err((code, msg)) => {
                let forms: Vec<&str> = schema::SOURCES.iter().map(|(_, f)| *f).collect();
                self.error(
                    Diagnostic::error(code, msg, d.source.span, "bad data source")
                        .with_note(format!("sources: {}", forms.join("; "))),
                );
                Type::error()
            }
        };
        if let Base::Record(Rec::Table(t)) = &ty.base {
            self.program.tables.push((t.clone(), columns.clone()));
        }
        for (key, n) in &sizes {
            self.program
                .sizes
                .push((schema::size_symbol(&d.source.name, &d.name.name, key), *n));
        }
        self.program.data.push(DataBinding {
            name: d.name.name.clone(),
            source: d.source.name.clone(),
            paths,
            columns,
            ty: ty.clone(),
            sizes,
        });
        self.declare(
            &d.name.name,
            Entry {
                binding: Binding::Data(ty),
                span: d.name.span,
            },
        );
    }

    /// A size fixed in a data binding: a known key and a positive int constant.
    fn data_size(&mut self, d: &ast::DataDecl, key: &ast::Ident, e: &ast::Expr<()>) -> Option<u64> {
        let te = self.expr(e);
        let keys = schema::size_keys(&d.source.name);
        if !keys.contains(&key.name.as_str()) {
            let note = if keys.is_empty() {
                "this source has no sizes to fix".to_string()
            } else {
                format!("sizes of `{}`: {}", d.source.name, keys.join(", "))
            };
            self.error(
                Diagnostic::error(
                    Code::E0502,
                    format!(
                        "`{}` is not a size of a `{}` source",
                        key.name, d.source.name
                    ),
                    key.span,
                    "unknown size",
                )
                .with_note(note),
            );
            return None;
        }
        match te.meta.value {
            Some(Value::Int(n)) if n > 0 => Some(n as u64),
            _ => {
                if !te.meta.ty.is_error() {
                    self.error(Diagnostic::error(
                        Code::E0502,
                        format!("size `{}` must be a positive int constant", key.name),
                        te.span,
                        "not a positive int",
                    ));
                }
                None
            }
        }
    }

    fn signature(
        &mut self,
        name: &ast::Ident,
        params: &[ast::ParamDecl],
        ret: &TypeExpr,
    ) -> Signature {
        let mut vars = Vec::new();
        let params = params
            .iter()
            .map(|p| {
                (
                    p.name.name.clone(),
                    self.type_expr(&p.ty, &mut vars).unwrap_or_else(Type::error),
                )
            })
            .collect();
        let ret = self.type_expr(ret, &mut vars).unwrap_or_else(Type::error);
        Signature {
            name: name.name.clone(),
            module: self.module_name.clone(),
            params,
            ret,
            used: false,
        }
    }

    fn fn_decl(&mut self, f: &ast::FnDecl<()>) {
        let sig = self.signature(&f.name, &f.params, &f.ret);
        self.later_fns.retain(|n| *n != f.name.name);
        // Parameters count as Param: one body serves every call site, and a call with latents
        // must stay on the tape.
        let frame: HashMap<String, (Type, Ad)> = sig
            .params
            .iter()
            .map(|(n, t)| (n.clone(), (t.clone(), Ad::Param)))
            .collect();
        self.locals.push(frame);
        self.in_fn = true;
        let mut lets = Vec::new();
        for (name, value) in &f.lets {
            let tv = self.expr(value);
            if let Some(frame) = self.locals.last_mut() {
                frame.insert(name.name.clone(), (tv.meta.ty.clone(), tv.meta.ad));
            }
            lets.push((name.name.clone(), tv));
        }
        let body = self.expr(&f.body);
        self.in_fn = false;
        self.locals.pop();
        let mut bound = HashMap::new();
        if !body.meta.ty.is_error()
            && !sig.ret.is_error()
            && !returns(&sig.ret, &body.meta.ty, &mut bound)
        {
            let msg = format!(
                "`{}` is declared to return {} but its body has type {}",
                f.name.name, sig.ret, body.meta.ty
            );
            self.error(
                Diagnostic::error(Code::E0311, msg, body.span, "wrong result type")
                    .with_label(f.ret.span, "declared here"),
            );
        }
        self.program.fns.push(FnDef { sig, lets, body });
        let index = self.program.fns.len() - 1;
        self.declare(
            &f.name.name,
            Entry {
                binding: Binding::Fn(index),
                span: f.name.span,
            },
        );
    }

    fn extern_decl(&mut self, e: &ast::ExternDecl) {
        let sig = self.signature(&e.name, &e.params, &e.ret);
        self.program.externs.push(sig);
        let index = self.program.externs.len() - 1;
        self.declare(
            &e.name.name,
            Entry {
                binding: Binding::Extern(index),
                span: e.name.span,
            },
        );
    }

    fn net_decl(&mut self, n: &ast::NetDecl<()>, is_flow: bool) {
        let defaults = if is_flow {
            FLOW_DEFAULTS
        } else {
            ENCODER_DEFAULTS
        };
        let base: Vec<(String, Value)> = defaults
            .iter()
            .map(|(k, v)| ((*k).to_string(), default_value(v)))
            .collect();
        let targs = self.net_args(&n.settings);
        let settings = self.net_settings(&base, &targs, is_flow);
        self.program.nets.push(Net {
            name: n.name.name.clone(),
            is_flow,
            settings,
        });
        let index = self.program.nets.len() - 1;
        let binding = if is_flow {
            Binding::Flow(index)
        } else {
            Binding::Encoder(index)
        };
        self.declare(
            &n.name.name,
            Entry {
                binding,
                span: n.name.span,
            },
        );
    }

    /// Checks setting values; a bare name (`relu`) is a word, not a variable, unless it names a
    /// const or a variant (`kind = flow_kind`: the setting follows `--set`).
    pub(super) fn net_args(&mut self, args: &[Arg<()>]) -> Vec<Arg<Typed>> {
        let word = |e: &ast::Expr<()>, n: &str| ast::Expr {
            kind: ast::ExprKind::Name(n.to_string()),
            span: e.span,
            meta: Typed::known(Type::scalar(Base::Str), Value::Str(n.to_string())),
        };
        args.iter()
            .map(|a| {
                let value = match &a.value.kind {
                    ast::ExprKind::Name(n)
                        if !matches!(
                            self.lookup(n),
                            Some(Binding::Const(..) | Binding::Variant(..))
                        ) =>
                    {
                        word(&a.value, n)
                    }
                    _ => self.expr(&a.value),
                };
                Arg {
                    name: a.name.clone(),
                    value,
                }
            })
            .collect()
    }

    /// Validates flow or encoder settings over `base` and returns the merged list.
    pub(super) fn net_settings(
        &mut self,
        base: &[(String, Value)],
        args: &[Arg<Typed>],
        is_flow: bool,
    ) -> Vec<(String, Value)> {
        let mut out = base.to_vec();
        for arg in args {
            let key = arg
                .name
                .as_ref()
                .map(|k| k.name.clone())
                .unwrap_or_default();
            let value = setting_value(&key, &arg.value, is_flow);
            match (out.iter_mut().find(|(k, _)| *k == key), value) {
                (Some(slot), Some(v)) => slot.1 = v,
                _ => {
                    let span = arg
                        .name
                        .as_ref()
                        .map(|k| k.span)
                        .unwrap_or(arg.value.span)
                        .to(arg.value.span);
                    let msg = if key.is_empty() {
                        "settings are written `key = value`".to_string()
                    } else {
                        format!("bad setting `{key}`")
                    };
                    self.error(
                        Diagnostic::error(Code::E0603, msg, span, "not accepted here")
                            .with_note(Code::E0603.explanation().replace('\n', " ")),
                    );
                }
            }
        }
        if is_flow {
            self.flow_settings_used(&out, args);
        }
        out
    }

    /// Refuses a setting written for a flow whose kind (`settings`' merged `kind`) ignores it:
    /// `bins` outside a spline flow, `readout` on a gain flow (whose likelihood is Poisson).
    fn flow_settings_used(&mut self, settings: &[(String, Value)], args: &[Arg<Typed>]) {
        let kind = settings.iter().find_map(|(k, v)| match (k.as_str(), v) {
            ("kind", Value::Str(w) | Value::Choice(w)) => Some(w.as_str()),
            _ => None,
        });
        let Some(kind) = kind else { return };
        for arg in args {
            let Some(name) = &arg.name else { continue };
            let why = match (name.name.as_str(), kind) {
                ("bins", k) if k != "spline" => {
                    format!("`bins` is the knot count of a spline flow; kind {k} has none")
                }
                ("readout", "gain") => "a gain flow's likelihood is Poisson at the corrected \
                    count (no Gaussian approximation, so no readout noise)"
                    .to_string(),
                _ => continue,
            };
            let msg = format!(
                "setting `{}` has no effect on a flow of kind {kind}",
                name.name
            );
            let span = name.span.to(arg.value.span);
            self.error(
                Diagnostic::error(Code::E0603, msg, span, "ignored by this kind").with_note(why),
            );
        }
    }

    /// Converts a written type; bare dimension names that are not consts become size variables.
    pub(super) fn type_expr(&mut self, t: &TypeExpr, vars: &mut Vec<String>) -> Option<Type> {
        let base = match t.base.name.as_str() {
            "real" => Base::Real,
            "int" => Base::Int,
            "complex" => Base::Complex,
            "bool" => Base::Bool,
            "str" => Base::Str,
            "choice" => Base::Choice,
            "crystal" => Base::Record(Rec::Crystal),
            "shots" => Base::Record(Rec::Shots),
            "image" => Base::Record(Rec::Image),
            "shoebox" => Base::Record(Rec::Shoebox),
            "table" => Base::Record(Rec::Table(String::new())),
            "row" => Base::Record(Rec::Row(String::new())),
            other => {
                let msg = format!("unknown type `{other}`");
                self.error(Diagnostic::error(Code::E0313, msg, t.base.span, "not a type").with_note("types: real, int, complex, bool, str, choice, crystal, shots, image, shoebox, table, row"));
                return None;
            }
        };
        let mut shape = Vec::new();
        for d in &t.dims {
            shape.push(match d {
                DimExpr::Int(n, _) => Dim::Known(*n),
                DimExpr::Wild(_) => Dim::Any,
                DimExpr::Name(name, span) => self.dim_name(name, *span, vars)?,
            });
        }
        Some(Type::tensor(base, shape))
    }

    fn dim_name(
        &mut self,
        name: &str,
        span: crate::diagnostics::Span,
        vars: &mut Vec<String>,
    ) -> Option<Dim> {
        if name.contains('.') {
            return Some(Dim::Sym(name.to_string()));
        }
        match self.lookup(name) {
            Some(Binding::Const(Value::Int(n), _)) if n > 0 => Some(Dim::Known(n as u64)),
            Some(_) => {
                self.error(Diagnostic::error(
                    Code::E0312,
                    format!("`{name}` is not a positive int constant"),
                    span,
                    "not a size",
                ));
                None
            }
            None => {
                if !vars.iter().any(|v| v == name) {
                    vars.push(name.to_string());
                }
                Some(Dim::Sym(name.to_string()))
            }
        }
    }
}

/// Whether a body type fits the declared result type.
fn returns(declared: &Type, body: &Type, bound: &mut HashMap<String, Dim>) -> bool {
    let base_ok = match (&declared.base, &body.base) {
        (Base::Real, Base::Int | Base::Real)
        | (Base::Complex, Base::Int | Base::Real | Base::Complex) => true,
        (a, b) => a == b,
    };
    base_ok
        && declared.shape.len() == body.shape.len()
        && declared
            .shape
            .iter()
            .zip(&body.shape)
            .all(|(d, b)| match d {
                Dim::Any => true,
                Dim::Sym(n) if !n.contains('.') => {
                    bound.entry(n.clone()).or_insert_with(|| b.clone()) == b
                }
                _ => d == b,
            })
}

/// A const value converted to a declared scalar type, if it fits.
fn coerce(v: &Value, ty: &Type) -> Option<Value> {
    if !ty.shape.is_empty() {
        return matches!(v, Value::List(_)).then(|| v.clone());
    }
    match (&ty.base, v) {
        (Base::Real, Value::Int(i)) => Some(Value::Real(*i as f64)),
        (Base::Real, Value::Real(_))
        | (Base::Int, Value::Int(_))
        | (Base::Bool, Value::Bool(_))
        | (Base::Str, Value::Str(_)) => Some(v.clone()),
        (Base::Complex, _) => v.as_complex().map(|(re, im)| Value::Complex(re, im)),
        _ => None,
    }
}

/// Parses `--set` text as a value of a const's type.
fn parse_setting(text: &str, ty: &Type) -> Option<Value> {
    if !ty.shape.is_empty() {
        return None;
    }
    match ty.base {
        Base::Int => text.parse().ok().map(Value::Int),
        Base::Real => text
            .parse::<f64>()
            .ok()
            .filter(|r| r.is_finite())
            .map(Value::Real),
        Base::Bool => text.parse().ok().map(Value::Bool),
        Base::Str => Some(Value::Str(text.to_string())),
        _ => None,
    }
}

fn default_value(text: &str) -> Value {
    if let Ok(n) = text.parse::<i64>() {
        return Value::Int(n);
    }
    if let Ok(x) = text.parse::<f64>() {
        return Value::Real(x);
    }
    if let Ok(b) = text.parse::<bool>() {
        return Value::Bool(b);
    }
    if let Some(list) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        return Value::List(
            list.split(',')
                .filter_map(|x| x.trim().parse().ok())
                .map(Value::Int)
                .collect(),
        );
    }
    Value::Str(text.to_string())
}

/// A setting's value if it is valid for that key.
fn setting_value(key: &str, e: &ast::Expr<Typed>, is_flow: bool) -> Option<Value> {
    let v = e.meta.value.as_ref()?;
    let positive = |v: &Value| matches!(v, Value::Int(n) if *n > 0);
    let word = |options: &[&str]| match v {
        Value::Str(w) | Value::Choice(w) if options.contains(&w.as_str()) => Some(v.clone()),
        _ => None,
    };
    match key {
        "layers" if is_flow => positive(v).then(|| v.clone()),
        // Bins of a spline flow (the planner also bounds it).
        "bins" if is_flow => positive(v).then(|| v.clone()),
        "hidden" | "embed" if key == "hidden" || !is_flow => match v {
            Value::List(items) if !items.is_empty() && items.iter().all(positive) => {
                Some(v.clone())
            }
            _ => None,
        },
        "activation" => word(&["relu", "tanh", "sigmoid", "softplus"]),
        // A semi-amortized encoder: per-instance offsets refine the network's guide.
        "refine" if !is_flow => matches!(v, Value::Bool(_)).then(|| v.clone()),
        "kind" if is_flow => word(&["affine_coupling", "planar", "spline", "gain"]),
        // Whether the conditioner sees ln(1 + μ), the physics' expected count.
        "given_expected" if is_flow => matches!(v, Value::Bool(_)).then(|| v.clone()),
        // Readout noise (counts) of the Gaussian approximation a flow corrects.
        "readout" if is_flow => match v {
            Value::Real(x) if *x >= 0.0 => Some(v.clone()),
            Value::Int(x) if *x >= 0 => Some(Value::Real(*x as f64)),
            _ => None,
        },
        _ => None,
    }
}
