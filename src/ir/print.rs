//! The stable printed form of the IR (`spreadc check --emit ir`), used by snapshot tests.
//!
//! Layout: a header of constants, variants, data, plates, operators, functions and nets; then
//! `log_joint { ... }` with one statement per line, prefixed by its plate path and followed by
//! `: type @ad`; then `guide { ... }`. Expressions print with full parentheses around binary
//! operations, so the text never depends on precedence rules.

use super::*;
use std::fmt::Write;

/// Prints a program.
pub fn print(p: &Program) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "program {}", p.name);
    for (name, value) in &p.consts {
        let _ = writeln!(out, "const {name} = {value}");
    }
    for (name, choices, selected) in &p.variants {
        let _ = writeln!(
            out,
            "variant {name} = {selected}   (of {})",
            choices.join(" | ")
        );
    }
    for d in &p.data {
        let mut args: Vec<String> = d.paths.iter().map(|x| format!("\"{x}\"")).collect();
        args.extend(d.columns.iter().map(|(n, t)| format!("{n}: {t}")));
        args.extend(d.sizes.iter().map(|(n, v)| format!("{n} = {v}")));
        let _ = writeln!(out, "data {} = {}({})", d.name, d.source, args.join(", "));
    }
    for (i, pl) in p.plates.iter().enumerate() {
        let _ = writeln!(out, "{}", plate_line(p, i, pl));
    }
    for e in &p.externs {
        let params: Vec<String> = e.params.iter().map(|(n, t)| format!("{n}: {t}")).collect();
        let _ = writeln!(
            out,
            "extern {}.{}({}) -> {}",
            e.module,
            e.name,
            params.join(", "),
            e.ret
        );
    }
    for f in &p.functions {
        print_function(&mut out, p, f);
    }
    for n in &p.nets {
        let settings: Vec<String> = n
            .settings
            .iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect();
        let _ = writeln!(
            out,
            "{} {} {{ {} }}",
            if n.is_flow { "flow" } else { "encoder" },
            n.name,
            settings.join(", ")
        );
    }
    out.push_str("\nlog_joint {\n");
    for s in &p.log_joint {
        let _ = writeln!(out, "  {}{}", plate_prefix(p, s.plate), stmt(p, &s.kind));
    }
    out.push_str("}\n\nguide {\n");
    for g in &p.guide {
        let _ = writeln!(
            out,
            "  {}{} ~ {}",
            plate_prefix(p, g.plate),
            g.latent,
            guide_kind(p, &g.kind)
        );
    }
    out.push_str("}\n");
    out
}

fn plate_line(p: &Program, i: usize, pl: &Plate) -> String {
    let range = match &pl.size {
        PlateSize::Single => "single".to_string(),
        PlateSize::Fixed(d) => format!("[{d}]"),
        PlateSize::Data {
            collection, size, ..
        } => format!("in {} (size {size})", expr(p, collection)),
    };
    let parent = pl
        .parent
        .map(|q| format!(" inside {}", p.plates[q].name))
        .unwrap_or_default();
    let sub = pl
        .subsample
        .map(|n| format!(" subsample {n}"))
        .unwrap_or_default();
    format!("plate #{i} {} {range}{sub}{parent}", pl.name)
}

fn print_function(out: &mut String, p: &Program, f: &Function) {
    let params: Vec<String> = f.params.iter().map(|(n, t)| format!("{n}: {t}")).collect();
    let _ = writeln!(out, "fn {}({}) -> {} {{", f.name, params.join(", "), f.ret);
    for (n, e) in &f.lets {
        let _ = writeln!(out, "  let {n} = {}  : {}", expr(p, e), e.ty);
    }
    let _ = writeln!(out, "  {}", expr(p, &f.body));
    out.push_str("}\n");
}

/// `[image/shoebox] ` for statements inside plates.
fn plate_prefix(p: &Program, plate: Option<usize>) -> String {
    let mut path = Vec::new();
    let mut cur = plate;
    while let Some(id) = cur {
        path.push(p.plates[id].name.as_str());
        cur = p.plates[id].parent;
    }
    if path.is_empty() {
        return String::new();
    }
    path.reverse();
    format!("[{}] ", path.join("/"))
}

fn ad(e: &Expr) -> &'static str {
    match e.ad {
        Ad::Data => "@data",
        Ad::Param => "@param",
    }
}

fn shape_text(shape: &[Dim]) -> String {
    if shape.is_empty() {
        return String::new();
    }
    let dims: Vec<String> = shape.iter().map(Dim::to_string).collect();
    format!("[{}]", dims.join(", "))
}

fn stmt(p: &Program, s: &StmtKind) -> String {
    match s {
        StmtKind::Latent {
            name,
            shape,
            dist: d,
            support,
        } => {
            format!(
                "latent {name}{} ~ {}  support {}",
                shape_text(shape),
                dist(p, d),
                support.name()
            )
        }
        StmtKind::Param {
            name,
            shape,
            constraint,
            init,
        } => {
            format!(
                "param {name}{}: {constraint} = {}",
                shape_text(shape),
                expr(p, init)
            )
        }
        StmtKind::Let { name, value } => format!(
            "let {name} = {}  : {} {}",
            expr(p, value),
            value.ty,
            ad(value)
        ),
        StmtKind::Factor { value } => {
            format!("factor {}  : {} {}", expr(p, value), value.ty, ad(value))
        }
        StmtKind::Observe {
            data,
            dist: d,
            correction,
        } => {
            let corr = correction.as_ref().map(|c| {
                let settings: Vec<String> = c
                    .context
                    .iter()
                    .map(|e| expr(p, e))
                    .chain(c.settings.iter().map(|(k, v)| format!("{k} = {v}")))
                    .collect();
                format!(
                    " corrected by {}({}) penalty {:?}",
                    c.flow,
                    settings.join(", "),
                    c.penalty
                )
            });
            format!(
                "observe {} ~ {}{}  : {} {}",
                expr(p, data),
                dist(p, d),
                corr.unwrap_or_default(),
                data.ty,
                ad(data)
            )
        }
    }
}

fn dist(p: &Program, d: &Dist) -> String {
    let args: Vec<String> = d.args.iter().map(|a| expr(p, a)).collect();
    format!("{}({})", d.name, args.join(", "))
}

fn guide_kind(p: &Program, g: &GuideKind) -> String {
    match g {
        GuideKind::MeanField => "mean_field".to_string(),
        GuideKind::PartialCentring => "partial_centring".to_string(),
        GuideKind::Map => "map".to_string(),
        GuideKind::LowRank { rank } => format!("low_rank({rank})"),
        GuideKind::FullRank => "full_rank".to_string(),
        GuideKind::Encoder { name, inputs } => {
            let args: Vec<String> = inputs.iter().map(|a| expr(p, a)).collect();
            format!("encoder {name}({})", args.join(", "))
        }
    }
}

fn list(p: &Program, xs: &[Expr]) -> String {
    xs.iter().map(|x| expr(p, x)).collect::<Vec<_>>().join(", ")
}

/// Prints an expression; extern calls are marked `@`, user functions by their module path.
pub(super) fn expr(p: &Program, e: &Expr) -> String {
    match &e.kind {
        ExprKind::Const(v) => v.to_string(),
        ExprKind::Var(n) => n.clone(),
        ExprKind::Field(x, f) => format!("{}.{f}", expr(p, x)),
        ExprKind::Method(x, m, args) => format!("{}.{m}({})", expr(p, x), list(p, args)),
        ExprKind::Index(x, idx) => format!("{}[{}]", expr(p, x), list(p, idx)),
        ExprKind::Unary(op, x) => {
            format!("{}{}", if *op == UnOp::Neg { "-" } else { "!" }, expr(p, x))
        }
        ExprKind::Binary(op, a, b) => format!("({} {} {})", expr(p, a), op.symbol(), expr(p, b)),
        ExprKind::Builtin(f, args) | ExprKind::Call(f, args) => format!("{f}({})", list(p, args)),
        ExprKind::Extern(f, args) => format!("@{f}({})", list(p, args)),
        ExprKind::Vector(xs) => format!("[{}]", list(p, xs)),
        ExprKind::Reduce { op, plate, body } => {
            let name = p
                .plates
                .get(*plate)
                .map(|pl| pl.name.as_str())
                .unwrap_or("?");
            format!("{}({} over {name})", op.name(), expr(p, body))
        }
        ExprKind::Set {
            var,
            collection,
            body,
        } => format!("[{} for {var} in {}]", expr(p, body), expr(p, collection)),
    }
}
