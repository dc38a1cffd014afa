//! The pest parser and the walk from pest's pairs to the AST.
//!
//! Binary operators come out of pest as a flat list and are grouped here by precedence climbing,
//! which bounds recursion by the number of precedence levels, not by the length of the chain.

use super::ast::*;
use super::expected;
use super::limits::{MAX_EXPR_DEPTH, MAX_IDENT, MAX_OPERATORS};
use crate::diagnostics::{Code, Diagnostic, FileId, Span};
use pest::Parser;
use pest::iterators::Pair;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/spread.pest"]
pub(super) struct SpreadParser;

type Result<T> = std::result::Result<T, Diagnostic>;
type E = Expr<()>;

/// Parses one file.
pub fn parse_module(
    file: FileId,
    source: &str,
) -> std::result::Result<Module<()>, Vec<Diagnostic>> {
    let mut pairs = SpreadParser::parse(Rule::program, source)
        .map_err(|e| vec![expected::translate(file, source, &e)])?;
    let builder = Builder { file };
    let mut items = Vec::new();
    let mut errors = Vec::new();
    let Some(program) = pairs.next() else {
        return Ok(Module { items });
    };
    for pair in program.into_inner() {
        if pair.as_rule() == Rule::EOI {
            continue;
        }
        match builder.item(pair) {
            Ok(item) => items.push(item),
            Err(d) => errors.push(d),
        }
    }
    if errors.is_empty() {
        Ok(Module { items })
    } else {
        Err(errors)
    }
}

struct Builder {
    file: FileId,
}

impl Builder {
    fn span(&self, pair: &Pair<Rule>) -> Span {
        let s = pair.as_span();
        Span::new(self.file, s.start(), s.end())
    }

    fn ident(&self, pair: Pair<Rule>) -> Result<Ident> {
        let span = self.span(&pair);
        let name = pair.as_str();
        if name.len() > MAX_IDENT {
            let msg = format!(
                "a name of {} characters; the limit is {MAX_IDENT}",
                name.len()
            );
            return Err(Diagnostic::error(
                Code::E0103,
                msg,
                Span::new(span.file, span.start, span.start),
                "this name is too long",
            ));
        }
        Ok(Ident {
            name: name.to_string(),
            span,
        })
    }

    fn item(&self, pair: Pair<Rule>) -> Result<Item<()>> {
        let span = self.span(&pair);
        Ok(match pair.as_rule() {
            Rule::use_decl => Item::Use(self.use_decl(pair, span)?),
            Rule::const_decl => Item::Const(self.const_decl(pair, span)?),
            Rule::variant_decl => Item::Variant(self.variant_decl(pair, span)?),
            Rule::data_decl => Item::Data(self.data_decl(pair, span)?),
            Rule::fn_decl => Item::Fn(self.fn_decl(pair, span)?),
            Rule::extern_decl => Item::Extern(self.extern_decl(pair, span)?),
            Rule::flow_decl => Item::Flow(self.net_decl(pair, span)?),
            Rule::encoder_decl => Item::Encoder(self.net_decl(pair, span)?),
            _ => Item::Stmt(self.stmt(pair)?),
        })
    }

    fn use_decl(&self, pair: Pair<Rule>, span: Span) -> Result<UseDecl> {
        let mut inner = pair.into_inner().filter(|p| p.as_rule() != Rule::use_dot);
        let module = self.ident(next(&mut inner, span)?)?;
        let rest = next(&mut inner, span)?;
        let items = if rest.as_rule() == Rule::use_list {
            rest.into_inner()
                .map(|p| self.ident(p))
                .collect::<Result<_>>()?
        } else {
            vec![self.ident(rest)?]
        };
        Ok(UseDecl {
            module,
            items,
            span,
        })
    }

    fn const_decl(&self, pair: Pair<Rule>, span: Span) -> Result<ConstDecl<()>> {
        let mut inner = pair.into_inner().filter(|p| p.as_rule() != Rule::assign);
        let name = self.ident(next(&mut inner, span)?)?;
        let mut ty = None;
        let mut value = next(&mut inner, span)?;
        if value.as_rule() == Rule::type_expr {
            ty = Some(self.type_expr(value)?);
            value = next(&mut inner, span)?;
        }
        Ok(ConstDecl {
            name,
            ty,
            value: self.expr(value)?,
            span,
        })
    }

    fn variant_decl(&self, pair: Pair<Rule>, span: Span) -> Result<VariantDecl> {
        let mut idents = pair
            .into_inner()
            .map(|p| self.ident(p))
            .collect::<Result<Vec<_>>>()?;
        let name = idents.remove(0);
        Ok(VariantDecl {
            name,
            choices: idents,
            span,
        })
    }

    fn data_decl(&self, pair: Pair<Rule>, span: Span) -> Result<DataDecl> {
        let mut inner = pair.into_inner();
        let name = self.ident(next(&mut inner, span)?)?;
        let source = self.ident(next(&mut inner, span)?)?;
        let mut args = Vec::new();
        for arg in inner {
            let arg_span = self.span(&arg);
            if arg.as_rule() == Rule::string {
                args.push(DataArg::Path(unquote(arg.as_str()), arg_span));
            } else if arg.as_rule() == Rule::size_arg {
                let mut kv = arg.into_inner();
                let key = self.ident(next(&mut kv, arg_span)?)?;
                args.push(DataArg::Size(key, self.expr(next(&mut kv, arg_span)?)?));
            } else {
                let mut col = arg.into_inner();
                let col_name = self.ident(next(&mut col, arg_span)?)?;
                let ty = self.type_expr(next(&mut col, arg_span)?)?;
                args.push(DataArg::Column(col_name, ty));
            }
        }
        Ok(DataDecl {
            name,
            source,
            args,
            span,
        })
    }

    fn fn_decl(&self, pair: Pair<Rule>, span: Span) -> Result<FnDecl<()>> {
        let mut inner = pair.into_inner();
        let name = self.ident(next(&mut inner, span)?)?;
        let mut params = Vec::new();
        let mut lets = Vec::new();
        let mut ret = None;
        let mut body = None;
        for p in inner {
            match p.as_rule() {
                Rule::param_decl => params.push(self.param_decl(p)?),
                Rule::type_expr => ret = Some(self.type_expr(p)?),
                _ => {
                    for part in p.into_inner() {
                        if part.as_rule() == Rule::let_stmt {
                            let mut l = part.into_inner().filter(|p| p.as_rule() != Rule::assign);
                            let let_name = self.ident(next(&mut l, span)?)?;
                            lets.push((let_name, self.expr(next(&mut l, span)?)?));
                        } else {
                            body = Some(self.expr(part)?);
                        }
                    }
                }
            }
        }
        let (Some(ret), Some(body)) = (ret, body) else {
            return Err(internal(span));
        };
        Ok(FnDecl {
            name,
            params,
            ret,
            lets,
            body,
            span,
        })
    }

    fn extern_decl(&self, pair: Pair<Rule>, span: Span) -> Result<ExternDecl> {
        let mut inner = pair.into_inner();
        let name = self.ident(next(&mut inner, span)?)?;
        let mut params = Vec::new();
        let mut ret = None;
        for p in inner {
            if p.as_rule() == Rule::param_decl {
                params.push(self.param_decl(p)?);
            } else {
                ret = Some(self.type_expr(p)?);
            }
        }
        let Some(ret) = ret else {
            return Err(internal(span));
        };
        Ok(ExternDecl {
            name,
            params,
            ret,
            span,
        })
    }

    fn param_decl(&self, pair: Pair<Rule>) -> Result<ParamDecl> {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let name = self.ident(next(&mut inner, span)?)?;
        let ty = self.type_expr(next(&mut inner, span)?)?;
        Ok(ParamDecl { name, ty })
    }

    fn type_expr(&self, pair: Pair<Rule>) -> Result<TypeExpr> {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let base = self.ident(next(&mut inner, span)?)?;
        let mut dims = Vec::new();
        for dim in inner {
            let d = dim.into_inner().next().ok_or_else(|| internal(span))?;
            let dspan = self.span(&d);
            dims.push(match d.as_rule() {
                Rule::int => DimExpr::Int(parse_int(d.as_str(), dspan)? as u64, dspan),
                Rule::wild => DimExpr::Wild(dspan),
                _ => DimExpr::Name(d.as_str().to_string(), dspan),
            });
        }
        Ok(TypeExpr { base, dims, span })
    }

    fn net_decl(&self, pair: Pair<Rule>, span: Span) -> Result<NetDecl<()>> {
        let mut inner = pair.into_inner();
        let name = self.ident(next(&mut inner, span)?)?;
        let mut settings = Vec::new();
        for s in inner {
            let mut kv = s.into_inner();
            let key = self.ident(next(&mut kv, span)?)?;
            settings.push(Arg {
                name: Some(key),
                value: self.expr(next(&mut kv, span)?)?,
            });
        }
        Ok(NetDecl {
            name,
            settings,
            span,
        })
    }

    fn stmt(&self, pair: Pair<Rule>) -> Result<Stmt<()>> {
        let span = self.span(&pair);
        let kind = match pair.as_rule() {
            Rule::plate_stmt => StmtKind::Plate(self.plate(pair, span)?),
            Rule::latent_stmt => self.latent(pair, span)?,
            Rule::param_stmt => self.param(pair, span)?,
            Rule::let_stmt => {
                let mut inner = pair.into_inner().filter(|p| p.as_rule() != Rule::assign);
                let name = self.ident(next(&mut inner, span)?)?;
                StmtKind::Let {
                    name,
                    value: self.expr(next(&mut inner, span)?)?,
                }
            }
            Rule::observe_stmt => self.observe(pair, span)?,
            Rule::factor_stmt => {
                let mut inner = pair.into_inner();
                StmtKind::Factor {
                    value: self.expr(next(&mut inner, span)?)?,
                }
            }
            _ => return Err(internal(span)),
        };
        Ok(Stmt { kind, span })
    }

    fn plate(&self, pair: Pair<Rule>, span: Span) -> Result<PlateStmt<()>> {
        let mut inner = pair.into_inner();
        let name = self.ident(next(&mut inner, span)?)?;
        let mut range = PlateRange::Single;
        let mut subsample = None;
        let mut body = Vec::new();
        for p in inner {
            match p.as_rule() {
                Rule::plate_in => range = PlateRange::In(self.first_expr(p, span)?),
                Rule::plate_sized => range = PlateRange::Sized(self.first_expr(p, span)?),
                Rule::subsample => subsample = Some(self.first_expr(p, span)?),
                _ => body.push(self.stmt(p)?),
            }
        }
        Ok(PlateStmt {
            name,
            range,
            subsample,
            body,
        })
    }

    fn first_expr(&self, pair: Pair<Rule>, span: Span) -> Result<E> {
        self.expr(next(&mut pair.into_inner(), span)?)
    }

    fn latent(&self, pair: Pair<Rule>, span: Span) -> Result<StmtKind<()>> {
        let mut inner = pair.into_inner().filter(|p| p.as_rule() != Rule::tilde);
        let name = self.ident(next(&mut inner, span)?)?;
        let mut shape = Vec::new();
        let mut dist = None;
        let mut guide = None;
        for p in inner {
            match p.as_rule() {
                Rule::shape => shape = self.exprs(p)?,
                Rule::dist_call => dist = Some(self.dist_call(p)?),
                _ => guide = Some(self.guide(p)?),
            }
        }
        let dist = dist.ok_or_else(|| internal(span))?;
        Ok(StmtKind::Latent {
            name,
            shape,
            dist,
            guide,
        })
    }

    fn param(&self, pair: Pair<Rule>, span: Span) -> Result<StmtKind<()>> {
        let mut inner = pair.into_inner();
        let name = self.ident(next(&mut inner, span)?)?;
        let mut shape = Vec::new();
        let mut constraint = None;
        let mut init = None;
        for p in inner {
            match p.as_rule() {
                Rule::shape => shape = self.exprs(p)?,
                Rule::ident => constraint = Some(self.ident(p)?),
                _ => init = Some(self.expr(p)?),
            }
        }
        let init = init.ok_or_else(|| internal(span))?;
        Ok(StmtKind::Param {
            name,
            shape,
            constraint,
            init,
        })
    }

    fn observe(&self, pair: Pair<Rule>, span: Span) -> Result<StmtKind<()>> {
        let mut inner = pair.into_inner().filter(|p| p.as_rule() != Rule::tilde);
        let data = self.expr(next(&mut inner, span)?)?;
        let dist = self.dist_call(next(&mut inner, span)?)?;
        let correction = match inner.next() {
            Some(p) => Some(self.correction(p)?),
            None => None,
        };
        Ok(StmtKind::Observe {
            data,
            dist,
            correction,
        })
    }

    fn correction(&self, pair: Pair<Rule>) -> Result<Correction<()>> {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let flow = self.ident(next(&mut inner, span)?)?;
        let mut args = Vec::new();
        let mut exprs = Vec::new();
        for p in inner {
            if p.as_rule() == Rule::args {
                args = self.args(p)?;
            } else {
                exprs.push(self.expr(p)?);
            }
        }
        let mut exprs = exprs.into_iter();
        let penalty = exprs.next().ok_or_else(|| internal(span))?;
        Ok(Correction {
            flow,
            args,
            penalty,
            guard: exprs.next(),
            span,
        })
    }

    fn dist_call(&self, pair: Pair<Rule>) -> Result<DistCall<()>> {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let name = self.ident(next(&mut inner, span)?)?;
        let args = match inner.next() {
            Some(p) => self.args(p)?,
            None => Vec::new(),
        };
        Ok(DistCall { name, args, span })
    }

    fn guide(&self, pair: Pair<Rule>) -> Result<GuideSpec<()>> {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let kind = self.ident(next(&mut inner, span)?)?;
        let args = match inner.next() {
            Some(p) => self.args(p)?,
            None => Vec::new(),
        };
        Ok(GuideSpec { kind, args, span })
    }

    fn args(&self, pair: Pair<Rule>) -> Result<Vec<Arg<()>>> {
        let mut out = Vec::new();
        for arg in pair.into_inner() {
            let span = self.span(&arg);
            let mut inner = arg.into_inner().peekable();
            let mut name = None;
            if inner.peek().is_some_and(|p| p.as_rule() == Rule::ident) {
                name = Some(self.ident(next(&mut inner, span)?)?);
            }
            out.push(Arg {
                name,
                value: self.expr(next(&mut inner, span)?)?,
            });
        }
        Ok(out)
    }

    fn exprs(&self, pair: Pair<Rule>) -> Result<Vec<E>> {
        pair.into_inner().map(|p| self.expr(p)).collect()
    }

    /// Groups the flat `unary (op unary)*` list by precedence climbing.
    fn expr(&self, pair: Pair<Rule>) -> Result<E> {
        let span = self.span(&pair);
        let mut operands = Vec::new();
        let mut ops = Vec::new();
        for p in pair.into_inner() {
            if p.as_rule() == Rule::bin_op {
                ops.push(bin_op(p.as_str()));
            } else {
                operands.push(self.unary(p)?);
            }
        }
        if ops.len() > MAX_OPERATORS {
            let msg = format!(
                "an expression with {} operators; the limit is {MAX_OPERATORS}",
                ops.len()
            );
            return Err(Diagnostic::error(
                Code::E0104,
                msg,
                Span::new(span.file, span.start, span.start),
                "this expression is too long",
            ));
        }
        let mut operands = operands.into_iter();
        let first = operands.next().ok_or_else(|| internal(span))?;
        let mut rest = ops.into_iter().zip(operands).peekable();
        let e = climb(first, &mut rest, 0);
        if exceeds_depth(&e, MAX_EXPR_DEPTH) {
            let msg = format!("an expression nested deeper than {MAX_EXPR_DEPTH} operations");
            return Err(Diagnostic::error(
                Code::E0104,
                msg,
                Span::new(span.file, span.start, span.start),
                "this expression is too deep",
            ));
        }
        Ok(e)
    }

    fn unary(&self, pair: Pair<Rule>) -> Result<E> {
        let span = self.span(&pair);
        let mut prefixes = Vec::new();
        let mut operand = None;
        for p in pair.into_inner() {
            if p.as_rule() == Rule::prefix_op {
                prefixes.push((p.as_str() == "-", self.span(&p)));
            } else {
                operand = Some(self.postfix(p)?);
            }
        }
        if prefixes.len() > MAX_EXPR_DEPTH {
            let msg = format!("{} signs in a row before one value", prefixes.len());
            return Err(Diagnostic::error(
                Code::E0104,
                msg,
                Span::new(span.file, span.start, span.start),
                "this expression is too deep",
            ));
        }
        let mut e = operand.ok_or_else(|| internal(span))?;
        for (neg, op_span) in prefixes.into_iter().rev() {
            let op = if neg { UnOp::Neg } else { UnOp::Not };
            let s = op_span.to(e.span);
            e = Expr {
                kind: ExprKind::Unary(op, Box::new(e)),
                span: s,
                meta: (),
            };
        }
        Ok(e)
    }

    fn postfix(&self, pair: Pair<Rule>) -> Result<E> {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let mut e = self.primary(next(&mut inner, span)?)?;
        for p in inner {
            let s = e.span.to(self.span(&p));
            let kind = match p.as_rule() {
                Rule::field => {
                    ExprKind::Field(Box::new(e), self.ident(next(&mut p.into_inner(), s)?)?)
                }
                Rule::method => {
                    let mut m = p.into_inner();
                    let name = self.ident(next(&mut m, s)?)?;
                    let args = match m.next() {
                        Some(a) => self.args(a)?,
                        None => Vec::new(),
                    };
                    ExprKind::Method(Box::new(e), name, args)
                }
                _ => ExprKind::Index(Box::new(e), self.exprs(p)?),
            };
            e = Expr {
                kind,
                span: s,
                meta: (),
            };
        }
        Ok(e)
    }

    fn primary(&self, pair: Pair<Rule>) -> Result<E> {
        let span = self.span(&pair);
        let text = pair.as_str();
        let kind = match pair.as_rule() {
            Rule::int => ExprKind::Int(parse_int(text, span)?),
            Rule::float => ExprKind::Real(parse_real(text, span)?),
            Rule::imag => ExprKind::Imag(parse_real(&text[..text.len() - 1], span)?),
            Rule::boolean => ExprKind::Bool(text == "true"),
            Rule::string => ExprKind::Str(unquote(text)),
            Rule::ident => ExprKind::Name(self.ident(pair)?.name),
            Rule::paren => return self.first_expr(pair, span),
            Rule::vector => ExprKind::Vector(self.exprs(pair)?),
            Rule::call => {
                let mut inner = pair.into_inner();
                let name = self.ident(next(&mut inner, span)?)?;
                let args = match inner.next() {
                    Some(a) => self.args(a)?,
                    None => Vec::new(),
                };
                ExprKind::Call(name, args)
            }
            Rule::reduction => self.reduction(pair, span)?,
            Rule::set_comp => {
                let mut inner = pair.into_inner();
                let body = self.expr(next(&mut inner, span)?)?;
                let var = self.ident(next(&mut inner, span)?)?;
                let collection = self.expr(next(&mut inner, span)?)?;
                ExprKind::Set(Box::new(body), var, Box::new(collection))
            }
            Rule::match_expr => self.match_expr(pair, span)?,
            _ => return Err(internal(span)),
        };
        Ok(Expr {
            kind,
            span,
            meta: (),
        })
    }

    fn reduction(&self, pair: Pair<Rule>, span: Span) -> Result<ExprKind<()>> {
        let mut inner = pair.into_inner();
        let op = match next(&mut inner, span)?.as_str() {
            "sum" => ReduceOp::Sum,
            "mean" => ReduceOp::Mean,
            "prod" => ReduceOp::Prod,
            "logsumexp" => ReduceOp::LogSumExp,
            _ => ReduceOp::Stack,
        };
        let body = self.expr(next(&mut inner, span)?)?;
        let plate = self.ident(next(&mut inner, span)?)?;
        Ok(ExprKind::Reduce(op, Box::new(body), plate))
    }

    fn match_expr(&self, pair: Pair<Rule>, span: Span) -> Result<ExprKind<()>> {
        let mut inner = pair.into_inner();
        let scrutinee = self.ident(next(&mut inner, span)?)?;
        let mut arms = Vec::new();
        for arm in inner {
            let mut parts = arm.into_inner();
            let pat = next(&mut parts, span)?;
            let pattern = if pat.as_rule() == Rule::wild {
                None
            } else {
                Some(self.ident(pat)?)
            };
            arms.push(MatchArm {
                pattern,
                value: self.expr(next(&mut parts, span)?)?,
            });
        }
        Ok(ExprKind::Match(scrutinee, arms))
    }
}

/// True when the tree is deeper than `limit`; recursion stops at the limit, so it is bounded too.
fn exceeds_depth(e: &E, limit: usize) -> bool {
    if limit == 0 {
        return true;
    }
    let deeper = |x: &E| exceeds_depth(x, limit - 1);
    let any_arg = |args: &[Arg<()>]| args.iter().any(|a| deeper(&a.value));
    match &e.kind {
        ExprKind::Field(x, _) | ExprKind::Unary(_, x) | ExprKind::Reduce(_, x, _) => deeper(x),
        ExprKind::Method(x, _, args) => deeper(x) || any_arg(args),
        ExprKind::Index(x, idx) => deeper(x) || idx.iter().any(deeper),
        ExprKind::Call(_, args) => any_arg(args),
        ExprKind::Binary(_, a, b) | ExprKind::Set(a, _, b) => deeper(a) || deeper(b),
        ExprKind::Vector(xs) => xs.iter().any(deeper),
        ExprKind::Match(_, arms) => arms.iter().any(|a| deeper(&a.value)),
        _ => false,
    }
}

/// Precedence climbing over (operator, operand) pairs; `^` is right-associative.
fn climb<I>(mut lhs: E, rest: &mut std::iter::Peekable<I>, min_prec: u8) -> E
where
    I: Iterator<Item = (BinOp, E)>,
{
    while let Some((op, _)) = rest.peek() {
        let prec = op.precedence();
        if prec < min_prec {
            break;
        }
        let Some((op, mut rhs)) = rest.next() else {
            break;
        };
        while let Some((next_op, _)) = rest.peek() {
            let np = next_op.precedence();
            let tighter = np > prec || (np == prec && *next_op == BinOp::Pow);
            if !tighter {
                break;
            }
            let climb_to = if np > prec { prec + 1 } else { prec };
            rhs = climb(rhs, rest, climb_to);
        }
        let span = lhs.span.to(rhs.span);
        lhs = Expr {
            kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)),
            span,
            meta: (),
        };
    }
    lhs
}

fn bin_op(text: &str) -> BinOp {
    match text {
        "||" => BinOp::Or,
        "&&" => BinOp::And,
        "==" => BinOp::Eq,
        "!=" => BinOp::Ne,
        "<=" => BinOp::Le,
        ">=" => BinOp::Ge,
        "<" => BinOp::Lt,
        ">" => BinOp::Gt,
        "+" => BinOp::Add,
        "-" => BinOp::Sub,
        "*" => BinOp::Mul,
        "/" => BinOp::Div,
        _ => BinOp::Pow,
    }
}

fn next<'i>(
    inner: &mut impl Iterator<Item = Pair<'i, Rule>>,
    span: Span,
) -> Result<Pair<'i, Rule>> {
    inner.next().ok_or_else(|| internal(span))
}

/// The one path for "the grammar and this walk disagree": a compiler bug, reported, not panicked.
fn internal(span: Span) -> Diagnostic {
    Diagnostic::error(
        Code::E0100,
        "internal compiler error: unexpected parse tree",
        span,
        "while reading this",
    )
    .with_note("this is a bug in spreadc; please report it with the file")
}

fn parse_int(text: &str, span: Span) -> Result<i64> {
    text.replace('_', "").parse::<i64>().map_err(|_| {
        Diagnostic::error(
            Code::E0105,
            "integer literal out of range",
            span,
            "does not fit in 64 bits",
        )
        .with_help("write a real with a decimal point, e.g. 1.0e30")
    })
}

fn parse_real(text: &str, span: Span) -> Result<f64> {
    match text.replace('_', "").parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(Diagnostic::error(
            Code::E0105,
            "real literal out of range",
            span,
            "not a finite number",
        )),
    }
}

fn unquote(text: &str) -> String {
    text.trim_start_matches('"')
        .trim_end_matches('"')
        .to_string()
}
