//! Adjoint (vector–Jacobian product) of the fused spot kernel.
//!
//! In: the same `SpotModel`, per-channel |F|² and region as `render`, plus an upstream gradient
//! g_p per pixel. Out: ∂(Σ_p g_p·pixel_p) with respect to per-channel |F|², scale, the bracket
//! background, N (per axis), each domain matrix M_d, and through them the image rotation θ, the
//! mosaic spread σ, each domain's draw and the real-space basis A. Guarantees: exact (analytic, no
//! finite differences), the same sub-pixel/channel/domain sums as the forward kernel, per-row partial
//! sums added in row order so the result is identical for any thread count, no allocation per pixel.

use super::{CHANNEL_INNER_MIN, Prepared, Region, SpotError, SpotModel, has_avx2, sum4};
use crate::physics::geometry::{Mat3, Vec3, frobenius, mat_mul, mat_vec, transpose};
use crate::physics::lattice::{
    GaussShape, RoundShape, Shape, ShapeTransform, SquareShape, TophatShape, nearest_index,
};
use rayon::prelude::*;

/// Gradient of Σ_p g_p·pixel_p with respect to the spot model's inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct SpotGradient {
    /// ∂/∂|F_k|² per channel.
    pub fsq: Vec<f64>,
    /// ∂/∂scale.
    pub scale: f64,
    /// ∂/∂background (the bracket constant).
    pub background: f64,
    /// ∂/∂(Na, Nb, Nc).
    pub n_cells: Vec3,
    /// ∂/∂M_d for each domain matrix M_d = U_d R(θ) A (h = M_d·S).
    pub domain_matrix: Vec<Mat3>,
    /// ∂/∂θ, the image rotation vector.
    pub rotation: Vec3,
    /// ∂/∂σ, the per-axis mosaic spread.
    pub mosaic_spread: Vec3,
    /// ∂/∂ε_d, each domain's draw (its tilt vector when built by `MosaicDomains::from_tilts`).
    pub domain_draws: Vec<Vec3>,
    /// ∂/∂A, the reference real-space basis (rows a, b, c in metres): the route to cell refinement.
    pub real_space: Mat3,
}

impl SpotGradient {
    fn zeros(n_channels: usize, n_domains: usize) -> Self {
        Self {
            fsq: vec![0.0; n_channels],
            scale: 0.0,
            background: 0.0,
            n_cells: [0.0; 3],
            domain_matrix: vec![[[0.0; 3]; 3]; n_domains],
            rotation: [0.0; 3],
            mosaic_spread: [0.0; 3],
            domain_draws: vec![[0.0; 3]; n_domains],
            real_space: [[0.0; 3]; 3],
        }
    }

    fn accumulate(&mut self, other: &Self) {
        for (a, b) in self.fsq.iter_mut().zip(&other.fsq) {
            *a += b;
        }
        self.scale += other.scale;
        self.background += other.background;
        for i in 0..3 {
            self.n_cells[i] += other.n_cells[i];
        }
        for (a, b) in self.domain_matrix.iter_mut().zip(&other.domain_matrix) {
            for i in 0..3 {
                for j in 0..3 {
                    a[i][j] += b[i][j];
                }
            }
        }
    }

    /// Chain ∂/∂M_d to θ, σ and ε_d through M_d = A R(θ)ᵀ U_dᵀ.
    fn chain_orientation(&mut self, model: &SpotModel, prep: &Prepared) {
        let a = &model.real_space_m;
        let a_rt = mat_mul(a, &transpose(&prep.rotation));
        for (d, (g, u)) in self
            .domain_matrix
            .iter()
            .zip(&prep.domain_rotations)
            .enumerate()
        {
            let ut = transpose(&u.rotation);
            // M_d = A·(U_d R)ᵀ, so ∂/∂A = Σ_d G_d·U_d·R
            let ga = mat_mul(g, &mat_mul(&u.rotation, &prep.rotation));
            for (row, grow) in self.real_space.iter_mut().zip(ga) {
                for (cell, v) in row.iter_mut().zip(grow) {
                    *cell += v;
                }
            }
            for i in 0..3 {
                let dm = mat_mul(&mat_mul(a, &transpose(&prep.rotation_jacobian[i])), &ut);
                self.rotation[i] += frobenius(g, &dm);
                self.mosaic_spread[i] += frobenius(g, &mat_mul(&a_rt, &transpose(&u.d_spread[i])));
                self.domain_draws[d][i] = frobenius(g, &mat_mul(&a_rt, &transpose(&u.d_draw[i])));
            }
        }
    }
}

/// Per-channel scratch and accumulators of the adjoint for one detector row. Accumulating per channel
/// (and summing once per row) keeps the inner loops branch-free maps that vectorize.
struct VjpScratch {
    diff: Vec<Vec3>,
    /// ∂/∂h·(1/λ) contributions of the current (sub-pixel, domain), per channel.
    dh: [Vec<f64>; 3],
    fsq: Vec<f64>,
    scale: Vec<f64>,
    n_cells: [Vec<f64>; 3],
    /// Pair-inner order (few channels): u per (sub-pixel, domain) pair, F_latt², ∂/∂h·(1/λ), ∂/∂N.
    pair_u: [Vec<f64>; 3],
    pair_lsq: Vec<f64>,
    pair_dh: [Vec<f64>; 3],
    pair_dn: [Vec<f64>; 3],
}

impl VjpScratch {
    fn new(n_sub: usize, n_dom: usize, n_ch: usize) -> Self {
        let z = || vec![0.0; n_ch];
        let zp = || vec![0.0; n_sub * n_dom];
        Self {
            diff: vec![[0.0; 3]; n_sub],
            dh: [z(), z(), z()],
            fsq: z(),
            scale: z(),
            n_cells: [z(), z(), z()],
            pair_u: [zp(), zp(), zp()],
            pair_lsq: zp(),
            pair_dh: [zp(), zp(), zp()],
            pair_dn: [zp(), zp(), zp()],
        }
    }
}

/// Upstream weights of one pixel: `cn` = g·prefactor·PΩ·norm, and `cs` the same without the scale
/// (so ∂/∂scale needs no division by it).
#[derive(Clone, Copy)]
struct PixelWeights {
    cn: f64,
    cs: f64,
}

/// Channel loop of the adjoint for one (sub-pixel, domain), see `PixelWeights` for `cn` and `cs`.
#[inline(always)]
fn vjp_channels<S: ShapeTransform>(
    u: Vec3,
    prep: &Prepared,
    n_cells: Vec3,
    wf: &[f64],
    cn: f64,
    cs: f64,
    sc: &mut VjpScratch,
) {
    let n = wf.len();
    let (il, w, wf) = (&prep.inv_lambda[..n], &prep.weights[..n], &wf[..n]);
    let (acc_f, acc_s) = (&mut sc.fsq[..n], &mut sc.scale[..n]);
    let [dh0, dh1, dh2] = &mut sc.dh;
    let (dh0, dh1, dh2) = (&mut dh0[..n], &mut dh1[..n], &mut dh2[..n]);
    let [n0, n1, n2] = &mut sc.n_cells;
    let (n0, n1, n2) = (&mut n0[..n], &mut n1[..n], &mut n2[..n]);
    for k in 0..n {
        let h = [u[0] * il[k], u[1] * il[k], u[2] * il[k]];
        let lg = S::gradient(h, nearest_index(h), n_cells);
        let l2 = lg.value * lg.value;
        acc_f[k] += cn * w[k] * l2;
        acc_s[k] += cs * wf[k] * l2;
        // ∂(w F² L²)/∂h = 2 w F² L ∂L/∂h, and ∂h/∂M = (d̂ − î)/λ
        let t = 2.0 * wf[k] * lg.value * cn;
        dh0[k] = t * lg.d_h[0] * il[k];
        dh1[k] = t * lg.d_h[1] * il[k];
        dh2[k] = t * lg.d_h[2] * il[k];
        n0[k] += t * lg.d_n[0];
        n1[k] += t * lg.d_n[1];
        n2[k] += t * lg.d_n[2];
    }
}

/// F_latt², ∂/∂h·(1/λ)·t and ∂/∂N·t for every (sub-pixel, domain) pair at one channel, t = 2·w·F²·L·cn.
#[inline(always)]
fn vjp_pairs<S: ShapeTransform>(il: f64, n_cells: Vec3, t_scale: f64, sc: &mut VjpScratch) {
    let n = sc.pair_lsq.len();
    let [ux, uy, uz] = &sc.pair_u;
    let (ux, uy, uz) = (&ux[..n], &uy[..n], &uz[..n]);
    let lsq = &mut sc.pair_lsq[..n];
    let [g0, g1, g2] = &mut sc.pair_dh;
    let (g0, g1, g2) = (&mut g0[..n], &mut g1[..n], &mut g2[..n]);
    let [n0, n1, n2] = &mut sc.pair_dn;
    let (n0, n1, n2) = (&mut n0[..n], &mut n1[..n], &mut n2[..n]);
    for p in 0..n {
        let h = [ux[p] * il, uy[p] * il, uz[p] * il];
        let lg = S::gradient(h, nearest_index(h), n_cells);
        lsq[p] = lg.value * lg.value;
        let t = t_scale * lg.value;
        g0[p] = t * lg.d_h[0] * il;
        g1[p] = t * lg.d_h[1] * il;
        g2[p] = t * lg.d_h[2] * il;
        n0[p] = t * lg.d_n[0];
        n1[p] = t * lg.d_n[1];
        n2[p] = t * lg.d_n[2];
    }
}

/// Adjoint of one pixel, vectorized over channels.
#[inline(always)]
fn vjp_pixel_channels<S: ShapeTransform>(
    model: &SpotModel,
    prep: &Prepared,
    wf: &[f64],
    pw: PixelWeights,
    diff: &[Vec3],
    sc: &mut VjpScratch,
    grad: &mut SpotGradient,
) {
    for &dv in diff {
        for (d, m) in prep.domain_matrices.iter().enumerate() {
            vjp_channels::<S>(mat_vec(m, dv), prep, model.n_cells, wf, pw.cn, pw.cs, sc);
            let dh_sum = [sum4(&sc.dh[0]), sum4(&sc.dh[1]), sum4(&sc.dh[2])];
            add_outer(&mut grad.domain_matrix[d], dh_sum, dv);
        }
    }
}

/// Adjoint of one pixel, vectorized over (sub-pixel, domain) pairs (few channels).
#[inline(always)]
fn vjp_pixel_pairs<S: ShapeTransform>(
    model: &SpotModel,
    prep: &Prepared,
    wf: &[f64],
    pw: PixelWeights,
    diff: &[Vec3],
    sc: &mut VjpScratch,
    grad: &mut SpotGradient,
) {
    let n_dom = prep.domain_matrices.len();
    for (s, &dv) in diff.iter().enumerate() {
        for (d, m) in prep.domain_matrices.iter().enumerate() {
            let u = mat_vec(m, dv);
            for (column, value) in sc.pair_u.iter_mut().zip(u) {
                column[s * n_dom + d] = value;
            }
        }
    }
    for (k, (&il, &w)) in prep.inv_lambda.iter().zip(&prep.weights).enumerate() {
        vjp_pairs::<S>(il, model.n_cells, 2.0 * wf[k] * pw.cn, sc);
        let lsq = sum4(&sc.pair_lsq);
        sc.fsq[k] += pw.cn * w * lsq;
        sc.scale[k] += pw.cs * wf[k] * lsq;
        for a in 0..3 {
            sc.n_cells[a][k] += sum4(&sc.pair_dn[a]);
        }
        for (p, &dv) in diff
            .iter()
            .flat_map(|dv| std::iter::repeat_n(dv, n_dom))
            .enumerate()
        {
            let g = [sc.pair_dh[0][p], sc.pair_dh[1][p], sc.pair_dh[2][p]];
            add_outer(&mut grad.domain_matrix[p % n_dom], g, dv);
        }
    }
}

/// m += a ⊗ b.
#[inline(always)]
fn add_outer(m: &mut Mat3, a: Vec3, b: Vec3) {
    for (row, ai) in m.iter_mut().zip(a) {
        for (cell, bj) in row.iter_mut().zip(b) {
            *cell += ai * bj;
        }
    }
}

/// The adjoint of one detector row.
#[inline(always)]
pub(super) fn vjp_row<S: ShapeTransform>(
    model: &SpotModel,
    prep: &Prepared,
    fsq: &[f64],
    slow: usize,
    region: &Region,
    upstream: &[f64],
) -> SpotGradient {
    let n_dom = prep.domain_matrices.len();
    let mut grad = SpotGradient::zeros(fsq.len(), n_dom);
    let wf: Vec<f64> = prep.weights.iter().zip(fsq).map(|(w, f)| w * f).collect();
    let mut sc = VjpScratch::new(model.oversample * model.oversample, n_dom, fsq.len());
    let mut diff = std::mem::take(&mut sc.diff);
    for (i, &g) in upstream.iter().enumerate() {
        if g == 0.0 {
            continue;
        }
        let polar_omega = model.pixel_geometry(slow, region.fast0 + i, &mut diff);
        let c = g * prep.prefactor * polar_omega;
        let c_unscaled = g * prep.thomson * polar_omega;
        let pw = PixelWeights {
            cn: c * prep.norm,
            cs: c_unscaled * prep.norm,
        };
        if fsq.len() >= CHANNEL_INNER_MIN {
            vjp_pixel_channels::<S>(model, prep, &wf, pw, &diff, &mut sc, &mut grad);
        } else {
            vjp_pixel_pairs::<S>(model, prep, &wf, pw, &diff, &mut sc, &mut grad);
        }
        grad.scale += c_unscaled * model.background;
        grad.background += c;
    }
    grad.fsq.copy_from_slice(&sc.fsq);
    grad.scale += sum4(&sc.scale);
    grad.n_cells = [
        sum4(&sc.n_cells[0]),
        sum4(&sc.n_cells[1]),
        sum4(&sc.n_cells[2]),
    ];
    grad
}

/// `vjp_row` compiled for AVX2+FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn vjp_row_avx2<S: ShapeTransform>(
    model: &SpotModel,
    prep: &Prepared,
    fsq: &[f64],
    slow: usize,
    region: &Region,
    upstream: &[f64],
) -> SpotGradient {
    vjp_row::<S>(model, prep, fsq, slow, region, upstream)
}

pub(super) fn vjp_row_best<S: ShapeTransform>(
    model: &SpotModel,
    prep: &Prepared,
    fsq: &[f64],
    slow: usize,
    region: &Region,
    upstream: &[f64],
) -> SpotGradient {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA, checked at run time just above.
        return unsafe { vjp_row_avx2::<S>(model, prep, fsq, slow, region, upstream) };
    }
    vjp_row::<S>(model, prep, fsq, slow, region, upstream)
}

fn vjp_with<S: ShapeTransform>(
    model: &SpotModel,
    fsq: &[f64],
    region: &Region,
    upstream: &[f64],
    parallel: bool,
) -> SpotGradient {
    let prep = model.prepare();
    let row =
        |(r, g): (usize, &[f64])| vjp_row_best::<S>(model, &prep, fsq, region.slow0 + r, region, g);
    let rows: Vec<SpotGradient> = if parallel {
        upstream
            .par_chunks(region.n_fast.max(1))
            .enumerate()
            .map(row)
            .collect()
    } else {
        upstream
            .chunks(region.n_fast.max(1))
            .enumerate()
            .map(row)
            .collect()
    };
    // Rows are summed in a fixed order so the result does not depend on the thread count.
    let mut total = SpotGradient::zeros(fsq.len(), prep.domain_matrices.len());
    for row in &rows {
        total.accumulate(row);
    }
    total.chain_orientation(model, &prep);
    total
}

/// Adjoint of `render` with `ChannelFsq(fsq)`: the gradient of Σ_p upstream_p·pixel_p.
pub fn spot_vjp(
    model: &SpotModel,
    fsq: &[f64],
    region: &Region,
    upstream: &[f64],
) -> Result<SpotGradient, SpotError> {
    vjp_dispatch(model, fsq, region, upstream, true)
}

/// As `spot_vjp`, on the calling thread only (for callers that parallelize over shoeboxes).
pub fn spot_vjp_serial(
    model: &SpotModel,
    fsq: &[f64],
    region: &Region,
    upstream: &[f64],
) -> Result<SpotGradient, SpotError> {
    vjp_dispatch(model, fsq, region, upstream, false)
}

fn vjp_dispatch(
    model: &SpotModel,
    fsq: &[f64],
    region: &Region,
    upstream: &[f64],
    parallel: bool,
) -> Result<SpotGradient, SpotError> {
    model.validate(region, Some(fsq.len()))?;
    SpotError::check_length("upstream gradient", region.len(), upstream.len())?;
    Ok(match model.shape {
        Shape::Square => vjp_with::<SquareShape>(model, fsq, region, upstream, parallel),
        Shape::Round => vjp_with::<RoundShape>(model, fsq, region, upstream, parallel),
        Shape::Gauss => vjp_with::<GaussShape>(model, fsq, region, upstream, parallel),
        Shape::Tophat => vjp_with::<TophatShape>(model, fsq, region, upstream, parallel),
    })
}
