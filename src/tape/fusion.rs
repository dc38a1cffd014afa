//! Elementwise fusion: large elementwise nodes are recorded without computing them, and a
//! chain of them is evaluated (and differentiated) in one pass over tiles of the output, so
//! the intermediates of an expression such as `sum(normal_log_pdf(y, alpha + b * x, sd))`
//! never reach memory (the role XLA's loop fusion plays for JAX).
//!
//! In: a *tree* of elementwise instructions over *frontier* inputs (any real tensors that
//! broadcast to the tree's shape: full, one number, a column repeated along rows, a row
//! repeated down columns, or anything else, copied once). Out: the root's values tile by
//! tile (to a buffer, or summed), or, given the root's gradient, every frontier input's
//! gradient accumulated into its buffer. Each tile's registers live in L1: TILE values per
//! instruction. Per element the arithmetic is exactly the unfused ops' arithmetic, so fused
//! values equal eager ones bit for bit; only the order of gradient sums differs.

use super::elementwise::{Binary, Unary};
use super::graph::{NodeId, Tape, TapeError};
use super::op::Op;
use super::value::{Shape, broadcast_shape};
use ndarray::{ArrayD, ArrayViewD, IxDyn};

/// Output elements per tile.
pub const TILE: usize = 256;

/// Runs a pass with AVX2 where the CPU has it (the tile loops are compiled twice; without
/// FMA contraction the arithmetic, and so every result, is the same either way).
macro_rules! dispatch {
    ($pass:ident . run()) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked just above.
                unsafe { $pass.run_avx2() }
            } else {
                $pass.run_generic()
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        $pass.run_generic()
    }};
}

const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

/// Real elementwise operators with three inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ternary {
    /// log N(x; loc, scale) of inputs (x, loc, scale).
    NormalLogPdf,
}

impl Ternary {
    /// Operator name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Ternary::NormalLogPdf => "normal_log_prob",
        }
    }
}

/// One elementwise operator of a fused tree.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ElemOp {
    /// A unary op.
    Unary(Unary),
    /// A binary op.
    Binary(Binary),
    /// A ternary op.
    Ternary(Ternary),
}

impl ElemOp {
    /// Inputs taken.
    pub fn arity(self) -> usize {
        match self {
            ElemOp::Unary(_) => 1,
            ElemOp::Binary(_) => 2,
            ElemOp::Ternary(_) => 3,
        }
    }
}

/// Where an instruction's argument comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// The output of an earlier instruction.
    Reg(usize),
    /// A frontier input.
    In(usize),
}

/// One instruction: an operator over up to three arguments; `needs` says whether any
/// argument below it needs a gradient.
#[derive(Debug, Clone, Copy)]
pub struct Instr {
    /// The operator.
    pub op: ElemOp,
    /// Its arguments (the first `op.arity()` are used).
    pub args: [Arg; 3],
    /// True when a gradient must flow through it.
    pub needs: bool,
}

/// A fused tree: instructions in evaluation order (the last is the root) over frontier inputs.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    /// Instructions, root last.
    pub instrs: Vec<Instr>,
    /// Output shape of every instruction (the root's).
    pub shape: Shape,
}

/// How a frontier input is read at output element o.
enum Access<'a> {
    /// data[o].
    Full(&'a [f64]),
    /// One number.
    Scalar(f64),
    /// data[o / block]: each element repeated over `block` consecutive outputs.
    Block(&'a [f64], usize),
    /// data[o % period]: the whole input repeated.
    Periodic(&'a [f64], usize),
}

fn owned_broadcast(a: &ArrayViewD<f64>, shape: &[usize]) -> Option<Vec<f64>> {
    let v = a.broadcast(IxDyn(shape))?;
    Some(v.iter().copied().collect())
}

/// The access pattern of `a` broadcast to `shape` (None: it needs an owned copy).
fn access<'a>(a: &ArrayViewD<'a, f64>, shape: &[usize]) -> Option<Access<'a>> {
    if a.len() == 1 {
        return a.iter().next().map(|&v| Access::Scalar(v));
    }
    let data = a.to_slice()?;
    if a.ndim() > shape.len() {
        return None;
    }
    let pad = shape.len() - a.ndim();
    let dim = |i: usize| if i < pad { 1 } else { a.shape()[i - pad] };
    // Trailing axes where `a` is 1 make a block; the rest must match exactly.
    let kept = (0..shape.len())
        .rposition(|i| dim(i) != 1)
        .map_or(0, |i| i + 1);
    if (0..kept).all(|i| dim(i) == shape[i]) {
        let block: usize = shape[kept..].iter().product();
        return Some(if block == 1 {
            Access::Full(data)
        } else {
            Access::Block(data, block)
        });
    }
    // Leading axes where `a` is 1, then an exact suffix: the input repeats.
    let first = (0..shape.len())
        .position(|i| dim(i) != 1)
        .unwrap_or(shape.len());
    if (first..shape.len()).all(|i| dim(i) == shape[i]) {
        return Some(Access::Periodic(data, a.len()));
    }
    None
}

/// Checks that every instruction's inputs broadcast to the tree's shape.
pub fn check_shapes(op: ElemOp, shapes: &[&[usize]]) -> Result<Shape, String> {
    let mut out = Shape::new();
    for (i, s) in shapes.iter().take(op.arity()).enumerate() {
        out = if i == 0 {
            Shape::from_slice(s)
        } else {
            broadcast_shape(&out, s)
                .ok_or_else(|| format!("cannot broadcast shapes {out:?} and {s:?}"))?
        };
    }
    Ok(out)
}

/// One argument as a tile: a slice of the tile's length or one number.
#[derive(Clone, Copy)]
enum TileArg<'a> {
    Slice(&'a [f64]),
    Scalar(f64),
}

impl TileArg<'_> {
    #[inline]
    fn at(&self, i: usize) -> f64 {
        match self {
            TileArg::Slice(s) => s[i],
            TileArg::Scalar(v) => *v,
        }
    }
}

/// The frontier inputs of one evaluation, with their staging tiles.
struct Frontier<'a> {
    /// How each input is read (inputs no direct pattern fits read their owned copy, in full).
    prepared: Vec<Access<'a>>,
    /// One staging tile per input (used by Block and Periodic inputs).
    staging: &'a mut [f64],
}

thread_local! {
    /// Tile registers, reused across evaluations on a thread (never zeroed: every register is
    /// written before it is read).
    static SCRATCH: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with `len` scratch values of unspecified content.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f64]) -> R) -> R {
    let mut v = SCRATCH.with(|s| s.take());
    if v.len() < len {
        v.resize(len, 0.0);
    }
    let r = f(&mut v[..len]);
    SCRATCH.with(|s| *s.borrow_mut() = v);
    r
}

impl<'a> Frontier<'a> {
    fn new(
        inputs: &[ArrayViewD<'a, f64>],
        shape: &[usize],
        owned: &'a [Option<Vec<f64>>],
        staging: &'a mut [f64],
    ) -> Self {
        let prepared = inputs
            .iter()
            .zip(owned)
            .map(|(a, copy)| match copy {
                Some(c) => Access::Full(c),
                None => access(a, shape).unwrap_or(Access::Scalar(f64::NAN)),
            })
            .collect();
        Frontier { prepared, staging }
    }

    /// Fills the staging tiles of the repeated inputs for output elements start..start+n.
    #[inline(always)]
    fn stage(&mut self, start: usize, n: usize) {
        for (m, p) in self.prepared.iter().enumerate() {
            let tile = &mut self.staging[m * TILE..m * TILE + n];
            match *p {
                Access::Block(d, b) => {
                    for_runs(start, n, b, |q, lo, hi| tile[lo..hi].fill(d[q]));
                }
                Access::Periodic(d, p) => {
                    for_runs(start, n, p, |q, lo, hi| {
                        let at = start + lo - q * p;
                        tile[lo..hi].copy_from_slice(&d[at..at + hi - lo]);
                    });
                }
                Access::Full(_) | Access::Scalar(_) => {}
            }
        }
    }

    #[inline(always)]
    fn arg(&self, m: usize, start: usize, n: usize) -> TileArg<'_> {
        match self.prepared[m] {
            Access::Full(d) => TileArg::Slice(&d[start..start + n]),
            Access::Scalar(v) => TileArg::Scalar(v),
            Access::Block(..) | Access::Periodic(..) => {
                TileArg::Slice(&self.staging[m * TILE..m * TILE + n])
            }
        }
    }
}

/// Σ xs with eight independent partial sums (a fixed order, so results are reproducible; a
/// single running sum is bound by the latency of one addition per element).
#[inline(always)]
pub fn sum8(xs: &[f64]) -> f64 {
    let mut lanes = [0.0; 8];
    let chunks = xs.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += v;
        }
    }
    let mut total = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    for &v in tail {
        total += v;
    }
    total
}

/// Splits output elements start..start+n at multiples of `period`: calls f(q, lo, hi) for
/// each run of tile positions lo..hi whose elements lie in period q (no division per element).
#[inline(always)]
fn for_runs(start: usize, n: usize, period: usize, mut f: impl FnMut(usize, usize, usize)) {
    let mut lo = 0;
    while lo < n {
        let q = (start + lo) / period;
        let hi = ((q + 1) * period - start).min(n);
        f(q, lo, hi);
        lo = hi;
    }
}

/// Owned broadcast copies for inputs no direct access pattern fits.
fn owned_copies(
    inputs: &[ArrayViewD<f64>],
    shape: &[usize],
) -> Result<Vec<Option<Vec<f64>>>, String> {
    inputs
        .iter()
        .map(|a| {
            if access(a, shape).is_some() {
                Ok(None)
            } else {
                owned_broadcast(a, shape)
                    .map(Some)
                    .ok_or_else(|| format!("cannot broadcast shape {:?} to {shape:?}", a.shape()))
            }
        })
        .collect()
}

/// Computes every instruction of one tile into `regs` (instruction k at k*TILE).
#[inline(always)]
fn forward_tile(tree: &Tree, f: &Frontier, regs: &mut [f64], start: usize, n: usize) {
    for (k, ins) in tree.instrs.iter().enumerate() {
        let (done, rest) = regs.split_at_mut(k * TILE);
        let out = &mut rest[..n];
        let arg = |a: Arg| match a {
            Arg::Reg(j) => TileArg::Slice(&done[j * TILE..j * TILE + n]),
            Arg::In(m) => f.arg(m, start, n),
        };
        let args = [arg(ins.args[0]), arg(ins.args[1]), arg(ins.args[2])];
        apply_tile(ins.op, &args, out);
    }
}

#[inline(always)]
fn apply_tile(op: ElemOp, a: &[TileArg; 3], out: &mut [f64]) {
    match op {
        ElemOp::Unary(u) => match a[0] {
            TileArg::Slice(x) => u.forward_slice(x, out),
            TileArg::Scalar(v) => out.fill(u.value(v)),
        },
        ElemOp::Binary(b) => binary_tile(b, a[0], a[1], out),
        ElemOp::Ternary(Ternary::NormalLogPdf) => normal_tile(a[0], a[1], a[2], out),
    }
}

#[inline(always)]
fn binary_tile(b: Binary, x: TileArg, y: TileArg, out: &mut [f64]) {
    // One loop per operator and operand kind, so the arithmetic vectorizes.
    macro_rules! run {
        ($f:expr) => {
            match (x, y) {
                (TileArg::Slice(x), TileArg::Slice(y)) => {
                    for ((o, &x), &y) in out.iter_mut().zip(x).zip(y) {
                        *o = $f(x, y);
                    }
                }
                (TileArg::Slice(x), TileArg::Scalar(y)) => {
                    for (o, &x) in out.iter_mut().zip(x) {
                        *o = $f(x, y);
                    }
                }
                (TileArg::Scalar(x), TileArg::Slice(y)) => {
                    for (o, &y) in out.iter_mut().zip(y) {
                        *o = $f(x, y);
                    }
                }
                (TileArg::Scalar(x), TileArg::Scalar(y)) => out.fill($f(x, y)),
            }
        };
    }
    match b {
        Binary::Add => run!(|x: f64, y: f64| x + y),
        Binary::Sub => run!(|x: f64, y: f64| x - y),
        Binary::Mul => run!(|x: f64, y: f64| x * y),
        Binary::Div => run!(|x: f64, y: f64| x / y),
        Binary::Pow => run!(|x: f64, y: f64| x.powf(y)),
    }
}

#[inline(always)]
fn normal_tile(x: TileArg, m: TileArg, s: TileArg, out: &mut [f64]) {
    if let TileArg::Scalar(sd) = s {
        // One logarithm and one division for a shared scale.
        let (ln_sd, inv) = (sd.ln(), 1.0 / sd);
        if let (TileArg::Slice(xs), TileArg::Slice(ms)) = (x, m) {
            for ((o, &x), &m) in out.iter_mut().zip(xs).zip(ms) {
                let z = (x - m) * inv;
                *o = -0.5 * z * z - ln_sd - LN_SQRT_2PI;
            }
            return;
        }
        for (i, o) in out.iter_mut().enumerate() {
            let z = (x.at(i) - m.at(i)) * inv;
            *o = -0.5 * z * z - ln_sd - LN_SQRT_2PI;
        }
        return;
    }
    for (i, o) in out.iter_mut().enumerate() {
        let (sd, z) = (s.at(i), (x.at(i) - m.at(i)) / s.at(i));
        *o = -0.5 * z * z - sd.ln() - LN_SQRT_2PI;
    }
}

/// Where the root's values go.
pub enum Sink<'a> {
    /// Written to a buffer of the root's length.
    Buffer(&'a mut [f64]),
    /// Summed.
    Sum(&'a mut f64),
}

/// Evaluates the tree over all tiles.
pub fn evaluate(tree: &Tree, inputs: &[ArrayViewD<f64>], sink: Sink) -> Result<(), String> {
    let len: usize = tree.shape.iter().product();
    let owned = owned_copies(inputs, &tree.shape)?;
    let k = tree.instrs.len();
    with_scratch((k + inputs.len()) * TILE, |scratch| {
        let (regs, staging) = scratch.split_at_mut(k * TILE);
        let f = Frontier::new(inputs, &tree.shape, &owned, staging);
        let mut pass = Pass {
            tree,
            f,
            regs,
            len,
            sink,
        };
        dispatch!(pass.run());
    });
    Ok(())
}

/// The state of one forward pass over all tiles.
struct Pass<'t, 'a, 's> {
    tree: &'t Tree,
    f: Frontier<'a>,
    regs: &'a mut [f64],
    len: usize,
    sink: Sink<'s>,
}

impl Pass<'_, '_, '_> {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn run_avx2(&mut self) {
        self.run_body()
    }

    fn run_generic(&mut self) {
        self.run_body()
    }

    #[inline(always)]
    fn run_body(&mut self) {
        let (tree, f, regs, len) = (self.tree, &mut self.f, &mut *self.regs, self.len);
        evaluate_tiles(tree, f, regs, len, &mut self.sink);
    }
}

#[inline(always)]
fn evaluate_tiles(tree: &Tree, f: &mut Frontier, regs: &mut [f64], len: usize, sink: &mut Sink) {
    let root = tree.instrs.len().saturating_sub(1) * TILE;
    match sink {
        Sink::Buffer(out) => {
            for start in (0..len).step_by(TILE) {
                let n = TILE.min(len - start);
                f.stage(start, n);
                forward_tile(tree, f, regs, start, n);
                out[start..start + n].copy_from_slice(&regs[root..root + n]);
            }
        }
        Sink::Sum(total) => {
            let mut acc = -0.0;
            for start in (0..len).step_by(TILE) {
                let n = TILE.min(len - start);
                f.stage(start, n);
                forward_tile(tree, f, regs, start, n);
                acc += sum8(&regs[root..root + n]);
            }
            **total = acc;
        }
    }
}

/// The root's gradient: a buffer of its length, or one number for every element (a sum).
#[derive(Clone, Copy)]
pub enum Seed<'a> {
    /// dL/d root, elementwise.
    Buffer(&'a [f64]),
    /// dL/d root, the same for every element.
    Scalar(f64),
}

/// Accumulates each frontier input's gradient into `grads[m]` (input m's shape; None where
/// not wanted), given the root's gradient.
pub fn backward(
    tree: &Tree,
    inputs: &[ArrayViewD<f64>],
    seed: Seed,
    grads: &mut [Option<&mut [f64]>],
) -> Result<(), String> {
    sweep(tree, inputs, seed, grads, None)
}

/// In one pass over the inputs: the sum of the root's values into `total`, and the gradient of
/// that sum with respect to every wanted input, accumulated into `grads`.
pub fn value_and_gradient(
    tree: &Tree,
    inputs: &[ArrayViewD<f64>],
    grads: &mut [Option<&mut [f64]>],
    total: &mut f64,
) -> Result<(), String> {
    sweep(tree, inputs, Seed::Scalar(1.0), grads, Some(total))
}

fn sweep(
    tree: &Tree,
    inputs: &[ArrayViewD<f64>],
    seed: Seed,
    grads: &mut [Option<&mut [f64]>],
    total: Option<&mut f64>,
) -> Result<(), String> {
    let len: usize = tree.shape.iter().product();
    let owned = owned_copies(inputs, &tree.shape)?;
    let k = tree.instrs.len();
    // Gradients of inputs read through an owned copy are gathered full-size, then summed back.
    let mut wide: Vec<Option<Vec<f64>>> = owned
        .iter()
        .zip(grads.iter())
        .map(|(o, g)| (o.is_some() && g.is_some()).then(|| vec![0.0; len]))
        .collect();
    let mut scalar_sums = vec![-0.0; inputs.len()];
    with_scratch((2 * k + 3 + inputs.len()) * TILE, |scratch| {
        let (regs, rest) = scratch.split_at_mut(k * TILE);
        let (gregs, rest) = rest.split_at_mut(k * TILE);
        let (parts, staging) = rest.split_at_mut(3 * TILE);
        let f = Frontier::new(inputs, &tree.shape, &owned, staging);
        let acc = Accumulators {
            grads,
            wide: &mut wide,
            scalar_sums: &mut scalar_sums,
        };
        let mut sweep = Sweep {
            tree,
            rows: gradient_rows(tree),
            f,
            regs,
            gregs,
            parts,
            seed,
            acc,
            len,
            total: total.is_some().then_some(-0.0),
        };
        dispatch!(sweep.run());
        if let (Some(out), Some(t)) = (total, sweep.total) {
            *out = t;
        }
    });
    finish_sums(inputs, &tree.shape, grads, &wide, &scalar_sums);
    Ok(())
}

/// The state of one reverse pass over all tiles.
struct Sweep<'t, 'a, 'g, 'b> {
    tree: &'t Tree,
    rows: Vec<usize>,
    f: Frontier<'a>,
    regs: &'a mut [f64],
    gregs: &'a mut [f64],
    parts: &'a mut [f64],
    seed: Seed<'a>,
    acc: Accumulators<'g, 'b>,
    len: usize,
    /// The running sum of the root's values, when wanted.
    total: Option<f64>,
}

impl Sweep<'_, '_, '_, '_> {
    #[inline(always)]
    fn run_body(&mut self) {
        for start in (0..self.len).step_by(TILE) {
            let n = TILE.min(self.len - start);
            self.f.stage(start, n);
            forward_tile(self.tree, &self.f, self.regs, start, n);
            if let Some(t) = self.total.as_mut() {
                let root = (self.tree.instrs.len() - 1) * TILE;
                *t += sum8(&self.regs[root..root + n]);
            }
            backward_tile(
                self.tree,
                &self.rows,
                &self.f,
                self.regs,
                self.gregs,
                self.parts,
                self.seed,
                &mut self.acc,
                start,
                n,
            );
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn run_avx2(&mut self) {
        self.run_body()
    }

    fn run_generic(&mut self) {
        self.run_body()
    }
}

/// Where the frontier's gradients go: the callers' buffers, full-size buffers for inputs read
/// through a copy, and the running sums of one-number inputs.
struct Accumulators<'g, 'b> {
    grads: &'g mut [Option<&'b mut [f64]>],
    wide: &'g mut [Option<Vec<f64>>],
    scalar_sums: &'g mut [f64],
}

/// Where an argument's gradient goes in the reverse sweep of one instruction.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dest {
    /// Not needed.
    Skip,
    /// The same values as the instruction's own gradient (an addend): nothing to do.
    Alias,
    /// A tile: copied to the argument's gradient register or deposited into its input.
    Tile,
    /// One number (an input read as one number): only the sum over the tile is needed.
    Sum,
}

/// The gradient register of every instruction: its own, or its consumer's when it is an
/// addend (the gradient of a + b with respect to a is the gradient of the sum).
pub fn gradient_rows(tree: &Tree) -> Vec<usize> {
    let k = tree.instrs.len();
    let mut rows: Vec<usize> = (0..k).collect();
    for j in (0..k).rev() {
        let ins = &tree.instrs[j];
        for (a, arg) in ins.args.iter().take(ins.op.arity()).enumerate() {
            if let Arg::Reg(i) = *arg
                && passes_gradient(ins.op, a)
            {
                rows[i] = rows[j];
            }
        }
    }
    rows
}

/// True when argument `a`'s gradient equals the output's (a + b, and a in a − b).
fn passes_gradient(op: ElemOp, a: usize) -> bool {
    matches!(
        (op, a),
        (ElemOp::Binary(Binary::Add), _) | (ElemOp::Binary(Binary::Sub), 0)
    )
}

/// The reverse sweep of one tile whose forward registers are in `regs`. Every gradient
/// register is assigned (not accumulated) by the single consumer of its instruction, or
/// shared with it (`gradient_rows`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_tile(
    tree: &Tree,
    rows: &[usize],
    f: &Frontier,
    regs: &[f64],
    gregs: &mut [f64],
    parts: &mut [f64],
    seed: Seed,
    acc: &mut Accumulators,
    start: usize,
    n: usize,
) {
    let k = tree.instrs.len();
    let root = &mut gregs[(k - 1) * TILE..(k - 1) * TILE + n];
    match seed {
        Seed::Buffer(g) => root.copy_from_slice(&g[start..start + n]),
        Seed::Scalar(g) => root.fill(g),
    }
    for j in (0..k).rev() {
        let ins = tree.instrs[j];
        if !ins.needs {
            continue;
        }
        let (below, rest) = gregs.split_at_mut(rows[j] * TILE);
        let g = &rest[..n];
        let arg = |a: Arg| match a {
            Arg::Reg(i) => TileArg::Slice(&regs[i * TILE..i * TILE + n]),
            Arg::In(m) => f.arg(m, start, n),
        };
        let args = [arg(ins.args[0]), arg(ins.args[1]), arg(ins.args[2])];
        let y = &regs[j * TILE..j * TILE + n];
        let dests = destinations(tree, rows, j, f, acc);
        let mut sums = [0.0; 3];
        arg_grads(ins.op, &args, y, g, &dests, parts, &mut sums, n);
        for (a, &arg) in ins.args.iter().take(ins.op.arity()).enumerate() {
            let d = &parts[a * TILE..a * TILE + n];
            match (dests[a], arg) {
                (Dest::Tile, Arg::Reg(i)) => below[i * TILE..i * TILE + n].copy_from_slice(d),
                (Dest::Tile, Arg::In(m)) => deposit(f, m, start, d, acc),
                (Dest::Sum, Arg::In(m)) => acc.scalar_sums[m] += sums[a],
                _ => {}
            }
        }
    }
}

/// Where each argument of instruction j sends its gradient.
#[inline(always)]
fn destinations(
    tree: &Tree,
    rows: &[usize],
    j: usize,
    f: &Frontier,
    acc: &Accumulators,
) -> [Dest; 3] {
    let ins = &tree.instrs[j];
    let mut d = [Dest::Skip; 3];
    for (a, arg) in ins.args.iter().take(ins.op.arity()).enumerate() {
        let one_number =
            |m: usize| acc.wide[m].is_none() && matches!(f.prepared[m], Access::Scalar(_));
        d[a] = match *arg {
            Arg::Reg(i) if !tree.instrs[i].needs => Dest::Skip,
            Arg::Reg(i) if rows[i] == rows[j] => Dest::Alias,
            Arg::Reg(_) => Dest::Tile,
            Arg::In(m) if acc.grads[m].is_none() => Dest::Skip,
            Arg::In(m) if one_number(m) => Dest::Sum,
            Arg::In(_) => Dest::Tile,
        };
    }
    d
}

/// Adds one argument's gradient tile into its input's accumulator.
#[inline(always)]
fn deposit(f: &Frontier, m: usize, start: usize, d: &[f64], acc: &mut Accumulators) {
    let Accumulators {
        grads,
        wide,
        scalar_sums,
    } = acc;
    if let Some(w) = wide[m].as_mut() {
        w[start..start + d.len()]
            .iter_mut()
            .zip(d)
            .for_each(|(s, &d)| *s += d);
        return;
    }
    let Some(acc) = grads[m].as_mut() else { return };
    match f.prepared[m] {
        Access::Full(_) => acc[start..start + d.len()]
            .iter_mut()
            .zip(d)
            .for_each(|(s, &d)| *s += d),
        Access::Scalar(_) => scalar_sums[m] += sum8(d),
        Access::Block(_, b) => for_runs(start, d.len(), b, |q, lo, hi| {
            acc[q] += sum8(&d[lo..hi]);
        }),
        Access::Periodic(_, p) => for_runs(start, d.len(), p, |q, lo, hi| {
            let at = start + lo - q * p;
            acc[at..at + hi - lo]
                .iter_mut()
                .zip(&d[lo..hi])
                .for_each(|(s, &d)| *s += d);
        }),
    }
}

/// Adds the sums of one-number inputs and the summed-back gradients of copied inputs.
fn finish_sums(
    inputs: &[ArrayViewD<f64>],
    shape: &[usize],
    grads: &mut [Option<&mut [f64]>],
    wide: &[Option<Vec<f64>>],
    scalar_sums: &[f64],
) {
    for (m, acc) in grads.iter_mut().enumerate() {
        let Some(acc) = acc.as_mut() else { continue };
        if let Some(w) = &wide[m] {
            let full = ArrayD::from_shape_vec(IxDyn(shape), w.clone())
                .unwrap_or_else(|_| ArrayD::zeros(IxDyn(shape)));
            let back = super::value::unbroadcast(full, inputs[m].shape());
            acc.iter_mut().zip(back.iter()).for_each(|(s, &d)| *s += d);
        } else if inputs[m].len() == 1 && acc.len() == 1 {
            acc[0] += scalar_sums[m];
        }
    }
}

/// The gradients of an instruction's arguments: tiles into `parts` (argument a at a*TILE)
/// for `Dest::Tile`, sums over the tile into `sums[a]` for `Dest::Sum`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn arg_grads(
    op: ElemOp,
    a: &[TileArg; 3],
    y: &[f64],
    g: &[f64],
    dests: &[Dest; 3],
    parts: &mut [f64],
    sums: &mut [f64; 3],
    n: usize,
) {
    let (p0, rest) = parts.split_at_mut(TILE);
    let (p1, p2) = rest.split_at_mut(TILE);
    let (p0, p1, p2) = (&mut p0[..n], &mut p1[..n], &mut p2[..n]);
    let wanted = |i: usize| matches!(dests[i], Dest::Tile | Dest::Sum);
    match op {
        ElemOp::Binary(b @ (Binary::Add | Binary::Sub)) => {
            match dests[0] {
                Dest::Tile => p0.copy_from_slice(g),
                Dest::Sum => sums[0] = sum8(g),
                Dest::Skip | Dest::Alias => {}
            }
            let negate = b == Binary::Sub;
            match dests[1] {
                Dest::Tile if !negate => p1.copy_from_slice(g),
                Dest::Tile => p1.iter_mut().zip(g).for_each(|(p, &g)| *p = -g),
                Dest::Sum if !negate => sums[1] = sum8(g),
                Dest::Sum => sums[1] = -sum8(g),
                Dest::Skip | Dest::Alias => {}
            }
            return;
        }
        ElemOp::Binary(Binary::Mul) => {
            for (i, other, p) in [(0, a[1], &mut *p0), (1, a[0], &mut *p1)] {
                match dests[i] {
                    Dest::Tile => times(g, other, p),
                    Dest::Sum => sums[i] = dot8(g, other),
                    Dest::Skip | Dest::Alias => {}
                }
            }
            return;
        }
        ElemOp::Unary(u) => {
            for i in 0..n {
                p0[i] = g[i] * u.slope(a[0].at(i), y[i]);
            }
        }
        ElemOp::Binary(b) => {
            for i in 0..n {
                let (da, db) = b.slopes(a[0].at(i), a[1].at(i), y[i]);
                p0[i] = g[i] * da;
                p1[i] = g[i] * db;
            }
        }
        ElemOp::Ternary(Ternary::NormalLogPdf) => {
            if let (TileArg::Slice(x), TileArg::Slice(m), TileArg::Scalar(s)) = (a[0], a[1], a[2]) {
                let w = [wanted(0), wanted(1), wanted(2)];
                normal_grads_shared_scale(x, m, s, g, [&mut *p0, &mut *p1, &mut *p2], &w);
            } else {
                for i in 0..n {
                    let s = a[2].at(i);
                    let z = (a[0].at(i) - a[1].at(i)) / s;
                    let q = g[i] * z / s;
                    p0[i] = -q;
                    p1[i] = q;
                    p2[i] = g[i] * (z * z - 1.0) / s;
                }
            }
        }
    }
    for (i, p) in [&*p0, &*p1, &*p2].into_iter().enumerate() {
        if dests[i] == Dest::Sum {
            sums[i] = sum8(p);
        }
    }
}

/// Σ g·a over a tile with eight partial sums.
#[inline(always)]
fn dot8(g: &[f64], a: TileArg) -> f64 {
    let a = match a {
        TileArg::Slice(a) => a,
        TileArg::Scalar(v) => return sum8(g) * v,
    };
    let mut lanes = [0.0; 8];
    let (gc, ac) = (g.chunks_exact(8), a.chunks_exact(8));
    let (gt, at) = (gc.remainder(), ac.remainder());
    for (g, a) in gc.zip(ac) {
        for l in 0..8 {
            lanes[l] += g[l] * a[l];
        }
    }
    let mut total = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    for (g, a) in gt.iter().zip(at) {
        total += g * a;
    }
    total
}

/// out = g * a, elementwise.
#[inline(always)]
fn times(g: &[f64], a: TileArg, out: &mut [f64]) {
    match a {
        TileArg::Slice(a) => {
            for ((o, &g), &a) in out.iter_mut().zip(g).zip(a) {
                *o = g * a;
            }
        }
        TileArg::Scalar(a) => {
            for (o, &g) in out.iter_mut().zip(g) {
                *o = g * a;
            }
        }
    }
}

/// The normal log-density's adjoints for one scale shared by the tile (the usual likelihood).
#[inline(always)]
fn normal_grads_shared_scale(
    x: &[f64],
    m: &[f64],
    s: f64,
    g: &[f64],
    [p0, p1, p2]: [&mut [f64]; 3],
    wanted: &[bool; 3],
) {
    let inv = 1.0 / s;
    match (wanted[0], wanted[1]) {
        (true, true) => {
            for i in 0..g.len() {
                let q = g[i] * ((x[i] - m[i]) * inv) * inv;
                p0[i] = -q;
                p1[i] = q;
            }
        }
        (false, true) => {
            for i in 0..g.len() {
                p1[i] = g[i] * ((x[i] - m[i]) * inv) * inv;
            }
        }
        (true, false) => {
            for i in 0..g.len() {
                p0[i] = -(g[i] * ((x[i] - m[i]) * inv) * inv);
            }
        }
        (false, false) => {}
    }
    if wanted[2] {
        for i in 0..g.len() {
            let z = (x[i] - m[i]) * inv;
            p2[i] = g[i] * (z * z - 1.0) * inv;
        }
    }
}

/// The tree of one instruction over its own inputs, and the views of those inputs.
fn single_tree<'a>(
    op: ElemOp,
    inputs: &[&'a ArrayD<f64>],
) -> Result<(Tree, Vec<ArrayViewD<'a, f64>>), String> {
    let shapes: Vec<&[usize]> = inputs.iter().map(|a| a.shape()).collect();
    let shape = check_shapes(op, &shapes)?;
    let mut args = [Arg::In(0); 3];
    for (a, slot) in args.iter_mut().enumerate().take(op.arity()) {
        *slot = Arg::In(a);
    }
    let instrs = vec![Instr {
        op,
        args,
        needs: true,
    }];
    let views = inputs.iter().map(|a| a.view()).collect();
    Ok((Tree { instrs, shape }, views))
}

/// One instruction over its own inputs: a one-node tree (the unfused path of small tensors).
pub fn single(op: ElemOp, inputs: &[&ArrayD<f64>]) -> Result<ArrayD<f64>, String> {
    let (tree, views) = single_tree(op, inputs)?;
    let mut out = vec![0.0; tree.shape.iter().product()];
    evaluate(&tree, &views, Sink::Buffer(&mut out))?;
    ArrayD::from_shape_vec(IxDyn(&tree.shape), out).map_err(|e| e.to_string())
}

/// Gradients of one instruction's inputs (fresh arrays; None where not wanted).
pub fn single_vjp(
    op: ElemOp,
    inputs: &[&ArrayD<f64>],
    g: &ArrayD<f64>,
    wanted: &[bool],
) -> Result<Vec<Option<ArrayD<f64>>>, String> {
    let (tree, views) = single_tree(op, inputs)?;
    let mut bufs: Vec<Option<Vec<f64>>> = inputs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            wanted
                .get(i)
                .copied()
                .unwrap_or(true)
                .then(|| vec![0.0; a.len()])
        })
        .collect();
    let g_std = g.as_standard_layout();
    let gs = g_std.as_slice().ok_or("gradient not contiguous")?;
    {
        let mut refs: Vec<Option<&mut [f64]>> = bufs.iter_mut().map(|b| b.as_deref_mut()).collect();
        backward(&tree, &views, Seed::Buffer(gs), &mut refs)?;
    }
    bufs.into_iter()
        .zip(inputs)
        .map(|(b, a)| {
            b.map(|v| ArrayD::from_shape_vec(a.raw_dim(), v).map_err(|e| e.to_string()))
                .transpose()
        })
        .collect()
}

impl Tape {
    /// log N(x; loc, scale), elementwise with broadcasting (one node; fused with the
    /// elementwise ops of its inputs and with a sum of it when large).
    pub fn normal_log_pdf(
        &mut self,
        x: NodeId,
        loc: NodeId,
        scale: NodeId,
    ) -> Result<NodeId, TapeError> {
        self.apply(Op::Ternary(Ternary::NormalLogPdf), &[x, loc, scale])
    }
}
