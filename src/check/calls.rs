//! Checking calls: user functions, physics operators (extern), built-ins, and distributions.
//!
//! Signatures match exactly in rank; a dimension written as a bare name that is not a const is a
//! size variable, bound by the first argument that uses it and required equal by the others.

use super::builtins;
use super::distributions::{self, DistSig};
use super::expr::{shape_text, union};
use super::scope::Binding;
use super::types::{Ad, Base, Dim, Rec, Type, broadcast};
use super::{Checker, Signature, Typed};
use crate::diagnostics::{Code, Diagnostic, Span};
use crate::syntax::ast::{Arg, DistCall, ExprKind, Ident};
use std::collections::HashMap;

/// In the typed AST a call's name says what it resolved to: `module.name` for a user function,
/// `@name` for a physics operator, the bare name for a built-in.
pub const EXTERN_PREFIX: &str = "@";

impl Checker {
    /// Checks a call of a function by name.
    pub(super) fn call(&mut self, f: &Ident, args: &[Arg<()>], span: Span) -> (ExprKind<Typed>, Typed) {
        let targs = self.args(args);
        let mut callee = f.clone();
        let meta = match self.lookup(&f.name) {
            Some(Binding::Fn(i)) => {
                self.program.fns[i].sig.used = true;
                let sig = self.program.fns[i].sig.clone();
                callee.name = format!("{}.{}", sig.module, sig.name);
                self.apply(&sig, &targs, f, span)
            }
            Some(Binding::Extern(i)) => {
                self.program.externs[i].used = true;
                let sig = self.program.externs[i].clone();
                callee.name = format!("{EXTERN_PREFIX}{}", sig.name);
                self.apply(&sig, &targs, f, span)
            }
            Some(_) => {
                self.error(Diagnostic::error(Code::E0301, format!("`{}` is not a function", f.name), f.span, "called here"));
                Typed::error()
            }
            None => self.builtin(f, &targs, span),
        };
        (ExprKind::Call(callee, targs), meta)
    }

    fn builtin(&mut self, f: &Ident, targs: &[Arg<Typed>], span: Span) -> Typed {
        if !builtins::is_builtin(&f.name) {
            let d = if self.later_fns.contains(&f.name) {
                Diagnostic::error(Code::E0208, format!("`{}` is called before it is declared", f.name), f.span, "declared further down")
                    .with_note("functions may call only functions declared above them; recursion is not supported")
            } else {
                let mut d = Diagnostic::error(Code::E0201, format!("unknown function `{}`", f.name), f.span, "not declared or imported");
                if let Some(help) = self.suggest(&f.name) {
                    d = d.with_help(help);
                }
                d.with_note(format!("built-in functions: {}", builtins::FORMS.join("; ")))
            };
            self.error(d);
            return Typed::error();
        }
        if targs.iter().any(|a| a.value.meta.ty.is_error()) {
            return Typed::error();
        }
        match builtins::builtin_type(&f.name, targs, &self.program.sizes) {
            Ok(ty) => joined(ty, targs),
            Err((code, msg)) => {
                self.error(Diagnostic::error(code, msg, span, "in this call"));
                Typed::error()
            }
        }
    }

    /// Matches arguments to a signature and gives the result type.
    fn apply(&mut self, sig: &Signature, targs: &[Arg<Typed>], f: &Ident, span: Span) -> Typed {
        let Some(ordered) = self.order_args(&sig.params, targs, &f.name, span) else { return Typed::error() };
        if ordered.iter().any(|a| a.meta.ty.is_error()) {
            return Typed::error();
        }
        let mut bound: HashMap<String, Dim> = HashMap::new();
        for ((pname, pty), arg) in sig.params.iter().zip(&ordered) {
            if let Err(why) = fits(pty, &arg.meta.ty, &mut bound) {
                let msg = format!("argument `{pname}` of `{}` expects {pty}, found {}", f.name, arg.meta.ty);
                self.error(Diagnostic::error(Code::E0305, msg, arg.span, why).with_note(signature_text(sig)));
                return Typed::error();
            }
        }
        let shape = sig.ret.shape.iter().map(|d| substitute(d, &bound)).collect();
        joined(Type::tensor(sig.ret.base.clone(), shape), targs)
    }

    /// Puts positional and named arguments in parameter order; reports arity and unknown names.
    fn order_args<'a>(&mut self, params: &[(String, Type)], args: &'a [Arg<Typed>], what: &str, span: Span) -> Option<Vec<&'a crate::syntax::ast::Expr<Typed>>> {
        let mut slots: Vec<Option<&crate::syntax::ast::Expr<Typed>>> = vec![None; params.len()];
        for (i, arg) in args.iter().enumerate() {
            let slot = match &arg.name {
                None => Some(i),
                Some(n) => params.iter().position(|(p, _)| *p == n.name),
            };
            match slot.filter(|&s| s < params.len() && slots[s].is_none()) {
                Some(s) => slots[s] = Some(&arg.value),
                None if arg.name.is_some() => {
                    let names: Vec<&str> = params.iter().map(|(p, _)| p.as_str()).collect();
                    let d = Diagnostic::error(Code::E0305, format!("`{what}` has no parameter of this name (or it is given twice)"), arg.value.span, "unexpected argument")
                        .with_note(format!("parameters: {}", names.join(", ")));
                    self.error(d);
                    return None;
                }
                None => break,
            }
        }
        if args.len() != params.len() || slots.iter().any(Option::is_none) {
            let names: Vec<&str> = params.iter().map(|(p, _)| p.as_str()).collect();
            let msg = format!("`{what}` takes {} argument(s), got {}", params.len(), args.len());
            self.error(Diagnostic::error(Code::E0303, msg, span, "wrong number of arguments").with_note(format!("parameters: {}", names.join(", "))));
            return None;
        }
        Some(slots.into_iter().flatten().collect())
    }

    /// Checks a distribution call; its batch shape must fit `target` (the latent or data shape).
    pub(super) fn dist(&mut self, d: &DistCall<()>, target: &[Dim], target_span: Span) -> (DistCall<Typed>, Option<&'static DistSig>, Typed) {
        let targs = self.args(&d.args);
        let Some(sig) = distributions::lookup(&d.name.name) else {
            let d2 = Diagnostic::error(Code::E0304, format!("unknown distribution `{}`", d.name.name), d.name.span, "not a distribution")
                .with_note(format!("distributions: {}", distributions::names().join(", ")));
            self.error(d2);
            return (DistCall { name: d.name.clone(), args: targs, span: d.span }, None, Typed::error());
        };
        let params: Vec<(String, Type)> = sig.params.iter().map(|p| ((*p).to_string(), Type::scalar(Base::Real))).collect();
        let ordered: Vec<Arg<Typed>> = match self.order_args(&params, &targs, sig.name, d.span) {
            Some(o) => o.into_iter().map(|e| Arg { name: None, value: e.clone() }).collect(),
            None => return (DistCall { name: d.name.clone(), args: targs, span: d.span }, Some(sig), Typed::error()),
        };
        let meta = self.dist_batch(sig, &ordered, target, target_span);
        (DistCall { name: d.name.clone(), args: ordered, span: d.span }, Some(sig), meta)
    }

    fn dist_batch(&mut self, sig: &DistSig, args: &[Arg<Typed>], target: &[Dim], target_span: Span) -> Typed {
        let mut meta = Typed::data(Type::tensor(Base::Real, Vec::new()));
        for (arg, pname) in args.iter().zip(sig.params) {
            let t = &arg.value.meta.ty;
            if t.is_error() {
                return Typed::error();
            }
            if !matches!(t.base, Base::Int | Base::Real) || t.shape.len() < sig.event_rank {
                let want = if sig.event_rank == 1 { "a vector of reals" } else { "real" };
                let msg = format!("`{pname}` of {} must be {want}, found {t}", sig.name);
                self.error(Diagnostic::error(Code::E0305, msg, arg.value.span, "wrong type"));
                return Typed::error();
            }
            let Some(shape) = broadcast(&meta.ty.shape, &t.shape) else {
                let msg = format!("the arguments of {} have shapes that do not broadcast", sig.name);
                self.error(Diagnostic::error(Code::E0302, msg, arg.value.span, format!("{t} does not fit {}", shape_text(&meta.ty.shape))));
                return Typed::error();
            };
            meta = Typed { ty: Type::tensor(Base::Real, shape), ad: meta.ad.max(arg.value.meta.ad), plates: union(&meta.plates, &arg.value.meta.plates), value: None };
        }
        if broadcast(&meta.ty.shape, target).as_deref() != Some(target) {
            let msg = format!("{} has shape {}, which does not fit {}", sig.name, shape_text(&meta.ty.shape), shape_text(target));
            let d = Diagnostic::error(Code::E0302, msg, target_span, format!("shape {}", shape_text(target)))
                .with_note("the distribution's arguments must broadcast to the shape of the sampled or observed value");
            self.error(d);
            return Typed::error();
        }
        meta
    }
}

/// The result meta of a call: ad level and plates joined over the arguments.
fn joined(ty: Type, args: &[Arg<Typed>]) -> Typed {
    let ad = args.iter().map(|a| a.value.meta.ad).max().unwrap_or(Ad::Data);
    let plates = args.iter().fold(Vec::new(), |acc, a| union(&acc, &a.value.meta.plates));
    Typed { ty, ad, plates, value: None }
}

/// Whether an argument type fits a parameter type, binding size variables.
fn fits(param: &Type, arg: &Type, bound: &mut HashMap<String, Dim>) -> Result<(), &'static str> {
    let base_ok = match (&param.base, &arg.base) {
        (Base::Real, Base::Int | Base::Real) | (Base::Complex, Base::Int | Base::Real | Base::Complex) => true,
        (Base::Record(a), Base::Record(b)) | (Base::Collection(a), Base::Collection(b)) => same_kind(a, b),
        (a, b) => a == b,
    };
    if !base_ok {
        return Err("wrong type");
    }
    if param.shape.len() != arg.shape.len() {
        return Err("wrong number of dimensions");
    }
    for (p, a) in param.shape.iter().zip(&arg.shape) {
        match p {
            Dim::Any => {}
            Dim::Sym(name) if !name.contains('.') => match bound.get(name) {
                Some(b) if b != a && *a != Dim::Any && *b != Dim::Any => return Err("size differs from an earlier argument"),
                Some(_) => {}
                None => {
                    bound.insert(name.clone(), a.clone());
                }
            },
            _ if p == a || *a == Dim::Any => {}
            _ => return Err("wrong size"),
        }
    }
    Ok(())
}

fn same_kind(a: &Rec, b: &Rec) -> bool {
    matches!((a, b), (Rec::Table(_), Rec::Table(_)) | (Rec::Row(_), Rec::Row(_))) || a == b
}

fn substitute(d: &Dim, bound: &HashMap<String, Dim>) -> Dim {
    match d {
        Dim::Sym(n) if !n.contains('.') => bound.get(n).cloned().unwrap_or(Dim::Any),
        other => other.clone(),
    }
}

fn signature_text(sig: &Signature) -> String {
    let params: Vec<String> = sig.params.iter().map(|(n, t)| format!("{n}: {t}")).collect();
    format!("{}.{}({}) -> {}", sig.module, sig.name, params.join(", "), sig.ret)
}
