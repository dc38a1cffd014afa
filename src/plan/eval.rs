//! Evaluation of IR expressions on the tape, vectorized over plates.
//!
//! In: an IR expression, the `Scope` (plate sizes, loaded tables, site plates, user functions,
//! externs) and the engine's `Env` (nodes of the sites evaluated so far). Out: a `Val`, a tape
//! node whose leading axes are the plates it varies over (ascending plate order), followed by
//! the value's own shape. Guarantees: a value that varies over a plate holds every instance in
//! one tensor, so vector work is one node per operation, never one per scalar; operands are
//! aligned (plate axes, then own axes right-aligned) before every element-wise operation.

use super::externs::{ExternArg, Registry};
use super::table::Table;
use crate::check::value::Value as Const;
use crate::infer::model::Env;
use crate::ir::{self, ExprKind, Function};
use crate::syntax::ast::{BinOp, ReduceOp, UnOp};
use crate::tape::{DataRef, NodeId, Tape, TapeError};
use ndarray::{ArrayD, IxDyn, Zip};
use num_complex::Complex64;
use std::collections::HashMap;
use std::sync::Arc;

/// A value on the tape and the plates its leading axes range over.
#[derive(Debug, Clone, PartialEq)]
pub struct Val {
    /// The node.
    pub node: NodeId,
    /// Plates of the leading axes, ascending.
    pub plates: Vec<usize>,
}

/// A plate as the evaluator sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlateInfo {
    /// Name.
    pub name: String,
    /// Instances.
    pub size: usize,
    /// False for scope-only plates (`plate dataset { ... }`) and plates the engine
    /// iterates, which get no axis.
    pub axis: bool,
    /// The engine plate iterating this one (plates over physics records), if any.
    pub engine: Option<usize>,
}

/// Everything the expressions of one program can refer to.
#[derive(Debug, Default)]
pub struct Scope {
    /// Plates, by IR index.
    pub plates: Vec<PlateInfo>,
    /// Tables by binding name.
    pub tables: HashMap<String, Table>,
    /// Plate record name → (plate, table binding) for plates over table rows.
    pub rows: HashMap<String, (usize, String)>,
    /// Site name → plates of its leading axes.
    pub sites: HashMap<String, Vec<usize>>,
    /// User functions by `module.name`.
    pub functions: HashMap<String, Function>,
    /// Physics operators.
    pub externs: Registry,
    /// Physics sources and the plates over their records.
    pub physics: super::records::PhysicsScope,
    /// Validated integer indices of shared data blocks (a table column used as an index is the
    /// same every step): block key and axis length → (the block, its indices).
    pub index_cache: std::sync::Mutex<IndexCache>,
}

/// Cached index vectors, keyed by (data block, axis length); the entry keeps the block alive.
pub type IndexCache = HashMap<((usize, usize, usize), usize), (DataRef, Arc<Vec<usize>>)>;

impl Scope {
    /// Shape of the leading axes of these plates.
    pub fn plate_shape(&self, plates: &[usize]) -> Vec<usize> {
        plates.iter().map(|&p| self.plates[p].size).collect()
    }

    /// "school 3, image 2" for a flat element index of a tensor over `plates` then `own` axes.
    pub fn describe(&self, plates: &[usize], shape: &[usize], flat: usize) -> String {
        let mut rest = flat;
        let mut idx = vec![0; shape.len()];
        for (k, &n) in shape.iter().enumerate().rev() {
            idx[k] = rest % n.max(1);
            rest /= n.max(1);
        }
        let parts: Vec<String> = plates
            .iter()
            .zip(&idx)
            .map(|(&p, i)| format!("{} {i}", self.plates[p].name))
            .collect();
        let own = &idx[plates.len().min(idx.len())..];
        match (parts.is_empty(), own.is_empty()) {
            (true, true) => "no plate".into(),
            (true, false) => format!("element {own:?}"),
            (false, true) => parts.join(", "),
            (false, false) => format!("{}, element {own:?}", parts.join(", ")),
        }
    }
}

/// One evaluation: the scope, the engine's environment, function locals and the label of the
/// statement being evaluated (for errors).
pub struct Eval<'a, 'm> {
    scope: &'a Scope,
    env: &'a Env<'m>,
    locals: Vec<(String, Val)>,
    /// Records bound by the sets being evaluated (`[f(s) for s in image.shoeboxes]`).
    elements: Vec<(String, super::records::Element)>,
    label: &'a str,
}

fn union(a: &[usize], b: &[usize]) -> Vec<usize> {
    let mut u: Vec<usize> = a.iter().chain(b).copied().collect();
    u.sort_unstable();
    u.dedup();
    u
}

fn is_complex(t: &Tape, n: NodeId) -> bool {
    !t.is_real(n)
}

impl<'a, 'm> Eval<'a, 'm> {
    /// An evaluator for one statement.
    pub fn new(scope: &'a Scope, env: &'a Env<'m>, label: &'a str) -> Self {
        Eval {
            scope,
            env,
            locals: Vec::new(),
            elements: Vec::new(),
            label,
        }
    }

    fn fail(&self, op: &'static str, detail: impl Into<String>) -> TapeError {
        TapeError::Op {
            op,
            label: self.label.to_string(),
            detail: detail.into(),
        }
    }

    fn own_rank(&self, t: &Tape, v: &Val) -> usize {
        t.shape(v.node).len().saturating_sub(v.plates.len())
    }

    /// Reshapes `v` to axes `plates` (size 1 where `v` does not vary) then `rank` own axes.
    pub fn lift(
        &self,
        t: &mut Tape,
        v: &Val,
        plates: &[usize],
        rank: usize,
    ) -> Result<NodeId, TapeError> {
        let shape = t.shape(v.node).to_vec();
        let own = &shape[v.plates.len().min(shape.len())..];
        if own.len() > rank || v.plates.iter().any(|p| !plates.contains(p)) {
            return Err(self.fail(
                "broadcast",
                format!("cannot align a value of shape {shape:?} to {rank} axes"),
            ));
        }
        let mut target: Vec<usize> = plates
            .iter()
            .map(|p| {
                if v.plates.contains(p) {
                    self.scope.plates[*p].size
                } else {
                    1
                }
            })
            .collect();
        target.extend(std::iter::repeat_n(1, rank - own.len()));
        target.extend_from_slice(own);
        if target == shape {
            Ok(v.node)
        } else {
            t.reshape(v.node, &target)
        }
    }

    /// `lift` and then broadcast to the full sizes of `plates`.
    pub fn expand(
        &self,
        t: &mut Tape,
        v: &Val,
        plates: &[usize],
        rank: usize,
    ) -> Result<NodeId, TapeError> {
        let n = self.lift(t, v, plates, rank)?;
        let shape = t.shape(n).to_vec();
        let mut full = self.scope.plate_shape(plates);
        full.extend_from_slice(&shape[plates.len()..]);
        if full == shape {
            Ok(n)
        } else {
            t.broadcast_to(n, &full)
        }
    }

    /// Evaluates an expression.
    pub fn expr(&mut self, t: &mut Tape, e: &ir::Expr) -> Result<Val, TapeError> {
        match &e.kind {
            ExprKind::Const(c) => Ok(Val {
                node: self.constant(t, c)?,
                plates: vec![],
            }),
            ExprKind::Var(name) => self.var(name),
            ExprKind::Field(rec, field) => self.field(t, rec, field),
            ExprKind::Method(_, m, _) => Err(self.fail(
                "method",
                format!("record method `{m}` needs a physics data source"),
            )),
            ExprKind::Index(x, idx) => self.index(t, x, idx),
            ExprKind::Unary(op, x) => self.unary(t, *op, x),
            ExprKind::Binary(op, a, b) => self.binary(t, *op, a, b),
            ExprKind::Builtin(name, args) => self.builtin(t, name, args),
            ExprKind::Extern(name, args) => self.external(t, name, args),
            ExprKind::Call(name, args) => self.call(t, name, args),
            ExprKind::Vector(items) => self.vector(t, items),
            ExprKind::Reduce { op, plate, body } => self.reduce(t, *op, *plate, body),
            ExprKind::Set {
                var,
                collection,
                body,
            } => self.set(t, var, collection, body),
        }
    }

    fn constant(&self, t: &mut Tape, c: &Const) -> Result<NodeId, TapeError> {
        match c {
            Const::Complex(re, im) => Ok(t.complex_scalar(Complex64::new(*re, *im))),
            Const::List(_) => {
                let (shape, flat) = flatten(c)
                    .ok_or_else(|| self.fail("constant", "a ragged or non-numeric list"))?;
                let a = ArrayD::from_shape_vec(IxDyn(&shape), flat)
                    .map_err(|e| self.fail("constant", e.to_string()))?;
                Ok(t.constant_real(a))
            }
            other => real_of(other)
                .map(|v| t.scalar(v))
                .ok_or_else(|| self.fail("constant", format!("{other:?} is not a number"))),
        }
    }

    fn var(&self, name: &str) -> Result<Val, TapeError> {
        if let Some((_, v)) = self.locals.iter().rev().find(|(n, _)| n == name) {
            return Ok(v.clone());
        }
        match (self.env.site(name), self.scope.sites.get(name)) {
            (Some(node), Some(plates)) => Ok(Val {
                node,
                plates: plates.clone(),
            }),
            _ => Err(self.fail("lookup", format!("`{name}` has no value here"))),
        }
    }

    fn field(&mut self, t: &mut Tape, rec: &ir::Expr, field: &str) -> Result<Val, TapeError> {
        let ExprKind::Var(name) = &rec.kind else {
            return Err(self.fail("field", format!("field `{field}` of a computed record")));
        };
        if let Some((_, el)) = self.elements.iter().rev().find(|(n, _)| n == name) {
            return super::records::element_field(t, el, name, field)
                .map(|node| Val {
                    node,
                    plates: vec![],
                })
                .map_err(|e| self.fail("field", e));
        }
        if let Some(r) = self.scope.physics.field(t, self.env, name, field) {
            return r
                .map(|node| Val {
                    node,
                    plates: vec![],
                })
                .map_err(|e| self.fail("field", e));
        }
        if let Some((plate, table)) = self.scope.rows.get(name) {
            let col = self
                .scope
                .tables
                .get(table)
                .and_then(|tb| tb.columns.get(field));
            let col = col.ok_or_else(|| {
                self.fail("field", format!("table `{table}` has no column `{field}`"))
            })?;
            // Read in place (a column is contiguous), not copied at every evaluation.
            let node = match crate::tape::DataRef::of_view(col, &col.view()) {
                Some(d) => t.data(d),
                None => t.constant_real((**col).clone()),
            };
            return Ok(Val {
                node,
                plates: vec![*plate],
            });
        }
        match (self.scope.tables.get(name), field) {
            (Some(tb), "n_rows") => Ok(Val {
                node: t.scalar(tb.n_rows as f64),
                plates: vec![],
            }),
            _ => Err(self.fail(
                "field",
                format!("`{name}.{field}` is not a value the planner can load"),
            )),
        }
    }

    /// Integer index values of a data expression, checked against the axis length.
    /// Data blocks (table columns) are validated once and cached; anything else every time.
    fn indices(&self, t: &Tape, v: &Val, len: usize) -> Result<Arc<Vec<usize>>, TapeError> {
        let Some(d) = t.data_ref(v.node) else {
            return self
                .check_indices(t.real(v.node)?.view(), len)
                .map(Arc::new);
        };
        let key = (d.key(), len);
        if let Ok(cache) = self.scope.index_cache.lock()
            && let Some((_, ks)) = cache.get(&key)
        {
            return Ok(ks.clone());
        }
        let ks = Arc::new(self.check_indices(d.view(), len)?);
        if let Ok(mut cache) = self.scope.index_cache.lock() {
            cache.insert(key, (d.clone(), ks.clone()));
        }
        Ok(ks)
    }

    fn check_indices(
        &self,
        a: ndarray::ArrayViewD<f64>,
        len: usize,
    ) -> Result<Vec<usize>, TapeError> {
        a.iter()
            .map(|&k| {
                if k.fract() == 0.0 && k >= 0.0 && (k as usize) < len {
                    Ok(k as usize)
                } else {
                    Err(self.fail("index", format!("index {k} is outside 0..{len}")))
                }
            })
            .collect()
    }

    fn index(&mut self, t: &mut Tape, x: &ir::Expr, idx: &[ir::Expr]) -> Result<Val, TapeError> {
        let mut cur = self.expr(t, x)?;
        for i in idx {
            if i.ad == crate::check::types::Ad::Param {
                return Err(self.fail("index", "an index that depends on latents"));
            }
            let iv = self.expr(t, i)?;
            let axis = cur.plates.len();
            let shape = t.shape(cur.node).to_vec();
            let len = *shape
                .get(axis)
                .ok_or_else(|| self.fail("index", "indexing a scalar"))?;
            let ks = self.indices(t, &iv, len)?;
            let ishape = t.shape(iv.node).to_vec();
            let rest = &shape[axis + 1..];
            if ishape.is_empty() {
                let g = t.gather(cur.node, axis, &ks)?;
                let mut s = shape[..axis].to_vec();
                s.extend_from_slice(rest);
                cur = Val {
                    node: t.reshape(g, &s)?,
                    plates: cur.plates,
                };
            } else if cur.plates.is_empty() && idx.len() == 1 {
                let g = t.gather(cur.node, 0, &ks)?;
                let mut s = ishape.clone();
                s.extend_from_slice(rest);
                cur = Val {
                    node: t.reshape(g, &s)?,
                    plates: iv.plates,
                };
            } else {
                return Err(self.fail(
                    "index",
                    "indexing a plate-varying value with a plate-varying index",
                ));
            }
        }
        Ok(cur)
    }

    fn unary(&mut self, t: &mut Tape, op: UnOp, x: &ir::Expr) -> Result<Val, TapeError> {
        let v = self.expr(t, x)?;
        let node = match op {
            UnOp::Neg if is_complex(t, v.node) => {
                let m = t.scalar(-1.0);
                t.cscale(m, v.node)?
            }
            UnOp::Neg => t.neg(v.node)?,
            UnOp::Not => {
                let a = t.real(v.node)?.mapv(|b| if b != 0.0 { 0.0 } else { 1.0 });
                t.constant_real(a)
            }
        };
        Ok(Val {
            node,
            plates: v.plates,
        })
    }

    /// Both operands aligned to common plates and own rank.
    fn align(
        &self,
        t: &mut Tape,
        a: &Val,
        b: &Val,
    ) -> Result<(NodeId, NodeId, Vec<usize>), TapeError> {
        let plates = union(&a.plates, &b.plates);
        let rank = self.own_rank(t, a).max(self.own_rank(t, b));
        Ok((
            self.lift(t, a, &plates, rank)?,
            self.lift(t, b, &plates, rank)?,
            plates,
        ))
    }

    fn binary(
        &mut self,
        t: &mut Tape,
        op: BinOp,
        a: &ir::Expr,
        b: &ir::Expr,
    ) -> Result<Val, TapeError> {
        let (a, b) = (self.expr(t, a)?, self.expr(t, b)?);
        let (x, y, plates) = self.align(t, &a, &b)?;
        let node = if is_complex(t, x) || is_complex(t, y) {
            self.complex_binary(t, op, x, y)?
        } else {
            match op {
                BinOp::Add => t.add(x, y)?,
                BinOp::Sub => t.sub(x, y)?,
                BinOp::Mul => t.mul(x, y)?,
                BinOp::Div => t.div(x, y)?,
                BinOp::Pow => t.pow(x, y)?,
                _ => self.compare(t, op, x, y)?,
            }
        };
        Ok(Val { node, plates })
    }

    fn to_complex(&self, t: &mut Tape, x: NodeId) -> Result<NodeId, TapeError> {
        if is_complex(t, x) {
            return Ok(x);
        }
        let zeros = ArrayD::zeros(t.shape(x));
        let im = t.constant_real(zeros);
        t.complex(x, im)
    }

    fn complex_binary(
        &self,
        t: &mut Tape,
        op: BinOp,
        x: NodeId,
        y: NodeId,
    ) -> Result<NodeId, TapeError> {
        match op {
            BinOp::Mul if !is_complex(t, x) => t.cscale(x, y),
            BinOp::Mul if !is_complex(t, y) => t.cscale(y, x),
            BinOp::Mul => t.cmul(x, y),
            BinOp::Add | BinOp::Sub => {
                let (x, mut y) = (self.to_complex(t, x)?, self.to_complex(t, y)?);
                if op == BinOp::Sub {
                    let m = t.scalar(-1.0);
                    y = t.cscale(m, y)?;
                }
                t.cadd(x, y)
            }
            other => Err(self.fail("complex", format!("`{}` on complex values", other.symbol()))),
        }
    }

    /// Comparisons and logic: data only, off the tape, as 0/1.
    fn compare(&self, t: &mut Tape, op: BinOp, x: NodeId, y: NodeId) -> Result<NodeId, TapeError> {
        let (a, b) = (t.real(x)?.clone(), t.real(y)?.clone());
        let shape = crate::tape::value::broadcast_shape(a.shape(), b.shape())
            .ok_or_else(|| self.fail("compare", "shapes do not broadcast"))?;
        let (Some(a), Some(b)) = (a.broadcast(IxDyn(&shape)), b.broadcast(IxDyn(&shape))) else {
            return Err(self.fail("compare", "shapes do not broadcast"));
        };
        let f = |p: f64, q: f64| -> bool {
            match op {
                BinOp::Eq => p == q,
                BinOp::Ne => p != q,
                BinOp::Lt => p < q,
                BinOp::Le => p <= q,
                BinOp::Gt => p > q,
                BinOp::Ge => p >= q,
                BinOp::And => p != 0.0 && q != 0.0,
                _ => p != 0.0 || q != 0.0,
            }
        };
        let out = Zip::from(&a)
            .and(&b)
            .map_collect(|&p, &q| if f(p, q) { 1.0 } else { 0.0 });
        Ok(t.constant_real(out))
    }

    fn call(&mut self, t: &mut Tape, name: &str, args: &[ir::Expr]) -> Result<Val, TapeError> {
        let scope = self.scope;
        let f = scope
            .functions
            .get(name)
            .ok_or_else(|| self.fail("call", format!("unknown function `{name}`")))?;
        let vals = args
            .iter()
            .map(|a| self.expr(t, a))
            .collect::<Result<Vec<_>, _>>()?;
        let outer = std::mem::take(&mut self.locals);
        self.locals = f.params.iter().map(|(n, _)| n.clone()).zip(vals).collect();
        let result = (|| {
            for (n, e) in &f.lets {
                let v = self.expr(t, e)?;
                self.locals.push((n.clone(), v));
            }
            self.expr(t, &f.body)
        })();
        self.locals = outer;
        result
    }

    /// `[body for var in collection]`: body at every record, stacked along a new leading axis
    /// (rows × the body's shape; an empty collection gives zero rows of the declared shape).
    fn set(
        &mut self,
        t: &mut Tape,
        var: &str,
        collection: &ir::Expr,
        body: &ir::Expr,
    ) -> Result<Val, TapeError> {
        let ExprKind::Field(rec, field) = &collection.kind else {
            return Err(self.fail("set", "a set over a computed collection"));
        };
        let ExprKind::Var(name) = &rec.kind else {
            return Err(self.fail("set", "a set over a computed collection"));
        };
        let records = self
            .scope
            .physics
            .collection(self.env, &self.elements, name, field)
            .map_err(|e| self.fail("set", e))?;
        let mut rows = Vec::with_capacity(records.len());
        for el in records {
            self.elements.push((var.to_string(), el));
            let v = self.expr(t, body);
            self.elements.pop();
            let v = v?;
            if !v.plates.is_empty() {
                return Err(self.fail("set", "a set value that varies over a plate"));
            }
            let mut shape = vec![1];
            shape.extend_from_slice(t.shape(v.node));
            rows.push(t.reshape(v.node, &shape)?);
        }
        let node = if rows.is_empty() {
            let mut shape = vec![0];
            for d in &body.ty.shape {
                match d {
                    crate::check::types::Dim::Known(n) => shape.push(*n as usize),
                    _ => {
                        return Err(
                            self.fail("set", "an empty set of a size not known before the fit")
                        );
                    }
                }
            }
            t.constant_real(ArrayD::zeros(IxDyn(&shape)))
        } else {
            t.concat(&rows, 0)?
        };
        Ok(Val {
            node,
            plates: vec![],
        })
    }

    fn vector(&mut self, t: &mut Tape, items: &[ir::Expr]) -> Result<Val, TapeError> {
        let vals = items
            .iter()
            .map(|e| self.expr(t, e))
            .collect::<Result<Vec<_>, _>>()?;
        let plates = vals
            .iter()
            .fold(Vec::new(), |acc, v| union(&acc, &v.plates));
        let rank = vals.iter().map(|v| self.own_rank(t, v)).max().unwrap_or(0);
        let mut nodes = Vec::with_capacity(vals.len());
        let mut own: Option<Vec<usize>> = None;
        for v in &vals {
            let n = self.expand(t, v, &plates, rank)?;
            let s = t.shape(n)[plates.len()..].to_vec();
            own = Some(match own {
                Some(o) => crate::tape::value::broadcast_shape(&o, &s)
                    .ok_or_else(|| self.fail("vector", "items of different shapes"))?
                    .to_vec(),
                None => s,
            });
            nodes.push(n);
        }
        let mut full = self.scope.plate_shape(&plates);
        full.push(1);
        full.extend(own.unwrap_or_default());
        let mut parts = Vec::with_capacity(nodes.len());
        for n in nodes {
            let mut s = t.shape(n).to_vec();
            s.insert(plates.len(), 1);
            let r = t.reshape(n, &s)?;
            parts.push(if s == full {
                r
            } else {
                t.broadcast_to(r, &full)?
            });
        }
        Ok(Val {
            node: t.concat(&parts, plates.len())?,
            plates,
        })
    }

    fn reduce(
        &mut self,
        t: &mut Tape,
        op: ReduceOp,
        plate: usize,
        body: &ir::Expr,
    ) -> Result<Val, TapeError> {
        let v = self.expr(t, body)?;
        if !self.scope.plates[plate].axis {
            return self.reduce_single(t, op, v);
        }
        let plates = union(&v.plates, &[plate]);
        let rank = self.own_rank(t, &v);
        let node = self.expand(t, &v, &plates, rank)?;
        let pos = plates.iter().position(|&p| p == plate).unwrap_or(0);
        let rest: Vec<usize> = plates.iter().copied().filter(|&p| p != plate).collect();
        let node = match op {
            ReduceOp::Sum => t.sum_axis(node, pos)?,
            ReduceOp::Mean => t.mean_axis(node, pos)?,
            ReduceOp::LogSumExp => t.logsumexp_axis(node, pos)?,
            ReduceOp::Stack if pos + 1 == plates.len() => node,
            ReduceOp::Stack => return Err(self.fail("stack", "stacking over an outer plate")),
            ReduceOp::Prod => {
                let l = t.log(node)?;
                let s = t.sum_axis(l, pos)?;
                t.exp(s)?
            }
        };
        Ok(Val { node, plates: rest })
    }

    /// A reduction over a scope-only plate (one instance).
    fn reduce_single(&mut self, t: &mut Tape, op: ReduceOp, v: Val) -> Result<Val, TapeError> {
        if op != ReduceOp::Stack {
            return Ok(v);
        }
        let mut s = t.shape(v.node).to_vec();
        s.insert(v.plates.len(), 1);
        Ok(Val {
            node: t.reshape(v.node, &s)?,
            plates: v.plates,
        })
    }

    fn external(&mut self, t: &mut Tape, name: &str, args: &[ir::Expr]) -> Result<Val, TapeError> {
        let scope = self.scope;
        let op = scope
            .externs
            .get(name)
            .ok_or_else(|| self.fail("extern", format!("no implementation of `{name}`")))?;
        let mut vals = Vec::with_capacity(args.len());
        for a in args {
            vals.push(match &a.kind {
                ExprKind::Const(Const::Str(s) | Const::Choice(s)) => ExternArg::Text(s.clone()),
                ExprKind::Var(v)
                    if matches!(
                        a.ty.base,
                        crate::check::types::Base::Record(_)
                            | crate::check::types::Base::Collection(_)
                    ) =>
                {
                    match scope.physics.extern_arg(self.env, v) {
                        Some(r) => r.map_err(|e| self.fail("extern", e))?,
                        None => ExternArg::Record(v.clone()),
                    }
                }
                _ if a.ad == crate::check::types::Ad::Data => ExternArg::Data(self.expr(t, a)?),
                _ => ExternArg::Tensor(self.expr(t, a)?),
            });
        }
        op.call(t, &vals)
    }

    fn builtin(&mut self, t: &mut Tape, name: &str, args: &[ir::Expr]) -> Result<Val, TapeError> {
        let vals = args
            .iter()
            .map(|a| self.expr(t, a))
            .collect::<Result<Vec<_>, _>>()?;
        let Some(x) = vals.first().cloned() else {
            return Err(self.fail("builtin", format!("`{name}` without arguments")));
        };
        if let Some(n) = self.elementwise(t, name, x.node)? {
            return Ok(Val {
                node: n,
                plates: x.plates,
            });
        }
        match (name, vals.get(1)) {
            ("complex" | "min" | "max", Some(y)) => {
                let (a, b, plates) = self.align(t, &x, y)?;
                Ok(Val {
                    node: self.pair(t, name, a, b)?,
                    plates,
                })
            }
            ("dot", Some(y)) => {
                let (a, b, plates) = self.align(t, &x, y)?;
                let p = t.mul(a, b)?;
                let last = t.shape(p).len() - 1;
                Ok(Val {
                    node: t.sum_axis(p, last)?,
                    plates,
                })
            }
            ("sum" | "mean", Some(axis)) => {
                let k = t.scalar_value(axis.node)? as usize + x.plates.len();
                let node = if name == "sum" {
                    t.sum_axis(x.node, k)?
                } else {
                    t.mean_axis(x.node, k)?
                };
                Ok(Val {
                    node,
                    plates: x.plates,
                })
            }
            ("sum" | "mean" | "norm", None) => self.own_reduce(t, name, x),
            ("linspace", Some(_)) => self.linspace(t, &vals),
            ("sum_to_zero", None) => self.sum_to_zero(t, x),
            _ => Err(self.fail(
                "builtin",
                format!("`{name}` is not implemented by the planner"),
            )),
        }
    }

    /// Element-wise one-argument built-ins; None if `name` is not one.
    fn elementwise(
        &self,
        t: &mut Tape,
        name: &str,
        x: NodeId,
    ) -> Result<Option<NodeId>, TapeError> {
        let complex = is_complex(t, x);
        let n = match (name, complex) {
            ("exp", false) => t.exp(x)?,
            ("log", false) => t.log(x)?,
            ("sqrt", false) => t.sqrt(x)?,
            ("sin", false) => t.sin(x)?,
            ("cos", false) => t.cos(x)?,
            ("log1p", _) => t.log1p(x)?,
            ("expm1", _) => {
                let e = t.exp(x)?;
                t.shift(e, -1.0)?
            }
            ("sigmoid", _) => t.sigmoid(x)?,
            ("softplus", _) => t.softplus(x)?,
            ("tanh", _) => t.tanh(x)?,
            ("lgamma", _) => t.lgamma(x)?,
            ("abs", false) => t.abs(x)?,
            ("abs2", false) => t.square(x)?,
            ("abs2", true) => t.abs2(x)?,
            ("abs", true) => {
                let a = t.abs2(x)?;
                t.sqrt(a)?
            }
            ("real", false) | ("conj", false) => x,
            ("real", true) => t.re(x)?,
            ("imag", true) => t.im(x)?,
            ("imag", false) => t.scale(x, 0.0)?,
            ("conj", true) => t.conj(x)?,
            _ => return Ok(None),
        };
        Ok(Some(n))
    }

    fn pair(&self, t: &mut Tape, name: &str, a: NodeId, b: NodeId) -> Result<NodeId, TapeError> {
        if name == "complex" {
            let shape = crate::tape::value::broadcast_shape(t.shape(a), t.shape(b))
                .ok_or_else(|| self.fail("complex", "shapes do not broadcast"))?;
            let (a, b) = (t.broadcast_to(a, &shape)?, t.broadcast_to(b, &shape)?);
            return t.complex(a, b);
        }
        // min/max = (a + b ∓ |a - b|) / 2: differentiable wherever a ≠ b.
        let s = t.add(a, b)?;
        let d = t.sub(a, b)?;
        let d = t.abs(d)?;
        let r = if name == "max" {
            t.add(s, d)?
        } else {
            t.sub(s, d)?
        };
        t.scale(r, 0.5)
    }

    /// `sum(x)`, `mean(x)` over every own axis; `norm(x)` over the last.
    fn own_reduce(&self, t: &mut Tape, name: &str, x: Val) -> Result<Val, TapeError> {
        let mut node = x.node;
        if name == "norm" {
            let sq = t.square(node)?;
            let last = t.shape(sq).len() - 1;
            let s = t.sum_axis(sq, last)?;
            return Ok(Val {
                node: t.sqrt(s)?,
                plates: x.plates,
            });
        }
        for _ in 0..self.own_rank(t, &x) {
            let last = t.shape(node).len() - 1;
            node = if name == "sum" {
                t.sum_axis(node, last)?
            } else {
                t.mean_axis(node, last)?
            };
        }
        Ok(Val {
            node,
            plates: x.plates,
        })
    }

    /// `sum_to_zero(c)`: y = H c along the first own axis, H the (m+1)×m Helmert basis of the
    /// vectors summing to zero (orthonormal columns), by one broadcast product and a sum.
    fn sum_to_zero(&self, t: &mut Tape, x: Val) -> Result<Val, TapeError> {
        let k = x.plates.len();
        let shape = t.shape(x.node).to_vec();
        let Some(&m) = shape.get(k).filter(|&&m| m >= 1) else {
            return Err(self.fail("sum_to_zero", "needs at least one row"));
        };
        // c: (..plates, 1, m, rest); H: (1.., m+1, m, 1..); the product summed over m.
        let mut c_shape = shape.clone();
        c_shape.insert(k, 1);
        let c = t.reshape(x.node, &c_shape)?;
        let mut h_shape = vec![1; c_shape.len()];
        h_shape[k] = m + 1;
        h_shape[k + 1] = m;
        let h = helmert_basis(m);
        let h = t.constant_real(
            h.into_shape_with_order(IxDyn(&h_shape))
                .map_err(|e| self.fail("sum_to_zero", e.to_string()))?,
        );
        let p = t.mul(h, c)?;
        Ok(Val {
            node: t.sum_axis(p, k + 1)?,
            plates: x.plates,
        })
    }

    fn linspace(&self, t: &mut Tape, vals: &[Val]) -> Result<Val, TapeError> {
        let get = |t: &Tape, k: usize| vals.get(k).map(|v| t.scalar_value(v.node)).transpose();
        let (Some(a), Some(b), Some(n)) = (get(t, 0)?, get(t, 1)?, get(t, 2)?) else {
            return Err(self.fail("linspace", "needs start, stop and n"));
        };
        let n = n as usize;
        let step = if n > 1 { (b - a) / (n - 1) as f64 } else { 0.0 };
        let v = ArrayD::from_shape_fn(IxDyn(&[n]), |i| a + step * i[0] as f64);
        Ok(Val {
            node: t.constant_real(v),
            plates: vec![],
        })
    }
}

/// The (m+1)×m Helmert basis: column j is (1, .., 1, -(j+1), 0, ..) / sqrt((j+1)(j+2)), with
/// j + 1 ones; the columns are orthonormal and orthogonal to (1, .., 1).
pub fn helmert_basis(m: usize) -> ndarray::Array2<f64> {
    ndarray::Array2::from_shape_fn((m + 1, m), |(i, j)| {
        let n = (j + 1) as f64;
        let norm = (n * (n + 1.0)).sqrt();
        match i.cmp(&(j + 1)) {
            std::cmp::Ordering::Less => 1.0 / norm,
            std::cmp::Ordering::Equal => -n / norm,
            std::cmp::Ordering::Greater => 0.0,
        }
    })
}

fn real_of(c: &Const) -> Option<f64> {
    match c {
        Const::Bool(b) => Some(f64::from(u8::from(*b))),
        other => other.as_real(),
    }
}

/// Shape and row-major values of a nested numeric list.
fn flatten(c: &Const) -> Option<(Vec<usize>, Vec<f64>)> {
    match c {
        Const::List(items) => {
            let parts = items.iter().map(flatten).collect::<Option<Vec<_>>>()?;
            let inner = parts.first().map(|p| p.0.clone()).unwrap_or_default();
            if parts.iter().any(|p| p.0 != inner) {
                return None;
            }
            let mut shape = vec![items.len()];
            shape.extend(inner);
            Some((shape, parts.into_iter().flat_map(|p| p.1).collect()))
        }
        other => real_of(other).map(|v| (vec![], vec![v])),
    }
}
