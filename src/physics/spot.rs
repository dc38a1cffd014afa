//! The fused spot kernel: expected photons in every pixel of a detector region (a shoebox or a whole
//! image) summed over sub-pixels × spectrum channels × mosaic domains in one call, and its adjoint.
//!
//! In: a `SpotModel` (panel, beam, crystal basis, image rotation, mosaic domains, shape, N, oversample,
//! scale) and a source of |F|². Out: pixel values in photons, row-major over the region.
//! pixel = scale · r_e²Φ · P · Ω · (background + Σ_sub Σ_k Σ_d w_k |F(h0, λ_k)|² F_latt(h)² / (n_sub·n_dom)),
//! with h = U_d R(θ) A · (d̂ − î)/λ_k and P, Ω taken once per pixel at sub-pixel (0,0) (nanoBragg).
//! Guarantees: no allocation per pixel (scratch per row), rayon over rows with results independent of
//! the thread count, and an exact analytic adjoint (`spot_vjp`) w.r.t. per-channel |F|², scale, the
//! background, N, and each domain's orientation matrix, chained to the image rotation θ, the mosaic
//! spread and the domain tilts by `SpotGradient` methods.
//!
//! Work per (pixel, channel, domain) evaluation: since d̂ − î does not depend on λ, u_d = M_d·(d̂ − î) is
//! formed once per (sub-pixel, domain) and h = u_d/λ_k costs 3 multiplies per channel; see `flops_per_eval`.

use super::beam::Beam;
use super::geometry::detector::Panel;
use super::geometry::rotation::rotation_jacobian;
use super::geometry::{Mat3, Vec3, frobenius, mat_mul, mat_vec, norm, transpose};
use super::lattice::{
    GaussShape, RoundShape, Shape, ShapeTransform, SquareShape, TophatShape, nearest_index,
};
use super::mosaic::{DomainRotation, MosaicDomains};
use super::polarization::Polarization;
use rayon::prelude::*;

/// |F|² as the kernel sees it: a function of the nearest index h0 and the channel.
pub trait StructureFactorSq: Sync {
    /// |F(h0, λ_k)|² in electrons².
    fn fsq(&self, h0: Vec3, channel: usize) -> f64;

    /// Σ_k w_k |F(h0_k, λ_k)|² l2_k over the channels of one (sub-pixel, domain), h_k = u/λ_k.
    #[inline(always)]
    fn weighted_sum(&self, u: Vec3, inv_lambda: &[f64], weights: &[f64], l2: &[f64]) -> f64 {
        let mut total = 0.0;
        for (k, ((&il, &w), &l)) in inv_lambda.iter().zip(weights).zip(l2).enumerate() {
            total += w * self.fsq(nearest_index([u[0] * il, u[1] * il, u[2] * il]), k) * l;
        }
        total
    }
}

/// Σ a_k b_k c_k with four partial sums (independent chains keep the FPU busy).
#[inline(always)]
fn dot3(a: &[f64], b: &[f64], c: &[f64]) -> f64 {
    let mut acc = [0.0; 4];
    let n = a.len().min(b.len()).min(c.len());
    let mut k = 0;
    while k + 4 <= n {
        for j in 0..4 {
            acc[j] += a[k + j] * b[k + j] * c[k + j];
        }
        k += 4;
    }
    for j in k..n {
        acc[0] += a[j] * b[j] * c[j];
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3])
}

/// The same F for every reflection and channel (nanoBragg's `-default_F`).
#[derive(Debug, Clone, Copy)]
pub struct ConstantF(pub f64);

impl StructureFactorSq for ConstantF {
    #[inline]
    fn fsq(&self, _h0: Vec3, _channel: usize) -> f64 {
        self.0 * self.0
    }

    #[inline(always)]
    fn weighted_sum(&self, _u: Vec3, _inv_lambda: &[f64], weights: &[f64], l2: &[f64]) -> f64 {
        if weights.len() == 1 {
            return self.0 * self.0 * weights[0] * l2[0];
        }
        let mut total = 0.0;
        for (w, l) in weights.iter().zip(l2) {
            total += w * l;
        }
        self.0 * self.0 * total
    }
}

/// Per-channel |F(h0, λ_k)|² of the one reflection a shoebox belongs to (the fit's parametrization).
#[derive(Debug, Clone, Copy)]
pub struct ChannelFsq<'a>(pub &'a [f64]);

impl StructureFactorSq for ChannelFsq<'_> {
    #[inline]
    fn fsq(&self, _h0: Vec3, channel: usize) -> f64 {
        self.0[channel]
    }

    #[inline(always)]
    fn weighted_sum(&self, _u: Vec3, _inv_lambda: &[f64], weights: &[f64], l2: &[f64]) -> f64 {
        dot3(weights, self.0, l2)
    }
}

/// A rectangular block of pixels on a panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// First slow index.
    pub slow0: usize,
    /// First fast index.
    pub fast0: usize,
    /// Rows (slow).
    pub n_slow: usize,
    /// Columns (fast).
    pub n_fast: usize,
}

impl Region {
    /// The whole panel.
    pub fn full(panel: &Panel) -> Self {
        Self {
            slow0: 0,
            fast0: 0,
            n_slow: panel.n_slow,
            n_fast: panel.n_fast,
        }
    }

    /// Number of pixels.
    pub fn len(&self) -> usize {
        self.n_slow * self.n_fast
    }

    /// True for an empty region.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Everything but |F|² that the pixel model needs.
#[derive(Debug, Clone)]
pub struct SpotModel {
    /// The detector panel.
    pub panel: Panel,
    /// Incident beam and spectrum.
    pub beam: Beam,
    /// Polarization frame.
    pub polarization: Polarization,
    /// Real-space basis at the reference orientation: rows a, b, c in metres (lab frame).
    pub real_space_m: Mat3,
    /// Small-angle image rotation θ (rad), applied in the lab frame after the reference orientation.
    pub rotation: Vec3,
    /// Mosaic domains, applied in the lab frame after θ.
    pub domains: MosaicDomains,
    /// Lattice shape transform.
    pub shape: Shape,
    /// Domain size Na, Nb, Nc in unit cells.
    pub n_cells: Vec3,
    /// Sub-pixels per pixel edge.
    pub oversample: usize,
    /// Per-image scale factor.
    pub scale: f64,
    /// Constant added to the bracket of every pixel (electrons², e.g. nanoBragg's water term / steps).
    pub background: f64,
}

/// Per-call constants derived from a `SpotModel`.
struct Prepared {
    /// M_d = U_d R(θ) A, so h = M_d·S.
    domain_matrices: Vec<Mat3>,
    weights: Vec<f64>,
    inv_lambda: Vec<f64>,
    /// r_e²Φ·scale
    prefactor: f64,
    /// 1/(n_sub·n_dom)
    norm: f64,
    rotation: Mat3,
    rotation_jacobian: [Mat3; 3],
    domain_rotations: Vec<DomainRotation>,
}

impl SpotModel {
    fn prepare(&self) -> Prepared {
        let (rotation, rotation_jac) = rotation_jacobian(self.rotation);
        let domain_rotations = self.domains.rotations();
        let base = mat_mul(&self.real_space_m, &transpose(&rotation));
        let domain_matrices = domain_rotations
            .iter()
            .map(|u| mat_mul(&base, &transpose(&u.rotation)))
            .collect();
        let n_sub = (self.oversample * self.oversample) as f64;
        Prepared {
            domain_matrices,
            weights: self.beam.channels.iter().map(|c| c.weight).collect(),
            inv_lambda: self
                .beam
                .channels
                .iter()
                .map(|c| 1.0 / c.wavelength_m)
                .collect(),
            prefactor: self.beam.thomson_prefactor() * self.scale,
            norm: 1.0 / (n_sub * self.domains.len() as f64),
            rotation,
            rotation_jacobian: rotation_jac,
            domain_rotations,
        }
    }

    /// Floating-point operations per (pixel, sub-pixel, channel, domain) evaluation of the forward
    /// kernel, counted as in `ShapeTransform::FLOPS`, including its share of the work amortized over
    /// channels (u_d = M_d·(d̂ − î): 15) and over domains and channels (sub-pixel position, R, d̂: 25).
    pub fn flops_per_eval(&self) -> f64 {
        // h = u/λ 3, h0 = ceil(h − ½) 3×5, L² 1, w·F²·L² accumulated 3
        let per_eval = 22
            + match self.shape {
                Shape::Square => SquareShape::FLOPS,
                Shape::Round => RoundShape::FLOPS,
                Shape::Gauss => GaussShape::FLOPS,
                Shape::Tophat => TophatShape::FLOPS,
            };
        let n_ch = self.beam.channels.len().max(1) as f64;
        let n_dom = self.domains.len().max(1) as f64;
        f64::from(per_eval) + 15.0 / n_ch + 25.0 / (n_ch * n_dom)
    }

    /// P·Ω and the lab direction d̂ − î of every sub-pixel of one pixel, written into `diff`.
    #[inline(always)]
    fn pixel_geometry(&self, slow: usize, fast: usize, diff: &mut [Vec3]) -> f64 {
        let n = self.oversample;
        let incident = self.beam.incident;
        let mut polar_omega = 0.0;
        for js in 0..n {
            for jf in 0..n {
                let p = self.panel.subpixel_position(slow, fast, js, jf, n);
                let r = norm(p);
                let d = [p[0] / r, p[1] / r, p[2] / r];
                if js == 0 && jf == 0 {
                    polar_omega = self.polarization.factor(d) * self.panel.solid_angle(p);
                }
                diff[js * n + jf] = [d[0] - incident[0], d[1] - incident[1], d[2] - incident[2]];
            }
        }
        polar_omega
    }
}

/// F_latt² for every channel at h_k = u/λ_k: a branch-free map with no calls for GAUSS and TOPHAT,
/// so it vectorizes over channels when compiled with AVX2.
#[inline(always)]
fn lattice_sq_channels<S: ShapeTransform>(
    u: Vec3,
    inv_lambda: &[f64],
    n_cells: Vec3,
    l2: &mut [f64],
) {
    for (out, &il) in l2.iter_mut().zip(inv_lambda) {
        let h = [u[0] * il, u[1] * il, u[2] * il];
        let l = S::value(h, nearest_index(h), n_cells);
        *out = l * l;
    }
}

/// Bracket sum Σ_sub Σ_k Σ_d w_k F² L² of one pixel (before normalization); `l2` is channel scratch.
#[inline(always)]
fn pixel_bracket<S: ShapeTransform, F: StructureFactorSq>(
    prep: &Prepared,
    n_cells: Vec3,
    fsq: &F,
    diff: &[Vec3],
    l2: &mut [f64],
) -> f64 {
    let mut total = 0.0;
    for &dv in diff {
        for m in &prep.domain_matrices {
            let u = mat_vec(m, dv);
            lattice_sq_channels::<S>(u, &prep.inv_lambda, n_cells, l2);
            total += fsq.weighted_sum(u, &prep.inv_lambda, &prep.weights, l2);
        }
    }
    total
}

#[inline(always)]
fn render_row<S: ShapeTransform, F: StructureFactorSq>(
    model: &SpotModel,
    prep: &Prepared,
    fsq: &F,
    slow: usize,
    region: &Region,
    row: &mut [f64],
) {
    let mut diff = vec![[0.0; 3]; model.oversample * model.oversample];
    let mut l2 = vec![0.0; prep.inv_lambda.len()];
    for (i, out) in row.iter_mut().enumerate() {
        let polar_omega = model.pixel_geometry(slow, region.fast0 + i, &mut diff);
        let bracket = pixel_bracket::<S, F>(prep, model.n_cells, fsq, &diff, &mut l2);
        *out = prep.prefactor * polar_omega * (model.background + bracket * prep.norm);
    }
}

/// `render_row` compiled for AVX2+FMA (no FMA contraction: results are bit-identical to the baseline).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn render_row_avx2<S: ShapeTransform, F: StructureFactorSq>(
    model: &SpotModel,
    prep: &Prepared,
    fsq: &F,
    slow: usize,
    region: &Region,
    row: &mut [f64],
) {
    render_row::<S, F>(model, prep, fsq, slow, region, row);
}

/// True when the AVX2 variants of the row loops may run.
#[inline]
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn render_row_best<S: ShapeTransform, F: StructureFactorSq>(
    model: &SpotModel,
    prep: &Prepared,
    fsq: &F,
    slow: usize,
    region: &Region,
    row: &mut [f64],
) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA, checked at run time just above.
        unsafe { render_row_avx2::<S, F>(model, prep, fsq, slow, region, row) };
        return;
    }
    render_row::<S, F>(model, prep, fsq, slow, region, row);
}

fn render_with<S: ShapeTransform, F: StructureFactorSq>(
    model: &SpotModel,
    fsq: &F,
    region: &Region,
    out: &mut [f64],
    parallel: bool,
) {
    let prep = model.prepare();
    let body = |(r, row): (usize, &mut [f64])| {
        render_row_best::<S, F>(model, &prep, fsq, region.slow0 + r, region, row)
    };
    if parallel {
        out.par_chunks_mut(region.n_fast).enumerate().for_each(body);
    } else {
        out.chunks_mut(region.n_fast).enumerate().for_each(body);
    }
}

/// Expected photons in every pixel of `region` (row-major), rows in parallel with rayon.
/// `out.len()` must equal `region.len()`.
pub fn render<F: StructureFactorSq>(model: &SpotModel, fsq: &F, region: &Region, out: &mut [f64]) {
    dispatch(model, fsq, region, out, true);
}

/// As `render`, on the calling thread only (for callers that parallelize over shoeboxes).
pub fn render_serial<F: StructureFactorSq>(
    model: &SpotModel,
    fsq: &F,
    region: &Region,
    out: &mut [f64],
) {
    dispatch(model, fsq, region, out, false);
}

fn dispatch<F: StructureFactorSq>(
    model: &SpotModel,
    fsq: &F,
    region: &Region,
    out: &mut [f64],
    parallel: bool,
) {
    debug_assert_eq!(out.len(), region.len());
    if region.is_empty() {
        return;
    }
    match model.shape {
        Shape::Square => render_with::<SquareShape, F>(model, fsq, region, out, parallel),
        Shape::Round => render_with::<RoundShape, F>(model, fsq, region, out, parallel),
        Shape::Gauss => render_with::<GaussShape, F>(model, fsq, region, out, parallel),
        Shape::Tophat => render_with::<TophatShape, F>(model, fsq, region, out, parallel),
    }
}

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
/// (and summing once per row) keeps the channel loop a branch-free map that vectorizes.
struct VjpScratch {
    diff: Vec<Vec3>,
    /// ∂/∂h·(1/λ) contributions of the current (sub-pixel, domain), per channel.
    dh: [Vec<f64>; 3],
    fsq: Vec<f64>,
    scale: Vec<f64>,
    n_cells: [Vec<f64>; 3],
}

impl VjpScratch {
    fn new(n_sub: usize, n_ch: usize) -> Self {
        let z = || vec![0.0; n_ch];
        Self {
            diff: vec![[0.0; 3]; n_sub],
            dh: [z(), z(), z()],
            fsq: z(),
            scale: z(),
            n_cells: [z(), z(), z()],
        }
    }
}

/// Σ of a slice with four partial sums.
#[inline(always)]
fn sum4(a: &[f64]) -> f64 {
    let mut acc = [0.0; 4];
    let mut chunks = a.chunks_exact(4);
    for c in &mut chunks {
        for j in 0..4 {
            acc[j] += c[j];
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + chunks.remainder().iter().sum::<f64>()
}

/// Channel loop of the adjoint for one (sub-pixel, domain): `cn` = g·prefactor·PΩ·norm, `cs` = cn/scale.
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

/// The adjoint of one detector row.
#[inline(always)]
fn vjp_row<S: ShapeTransform>(
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
    let mut sc = VjpScratch::new(model.oversample * model.oversample, fsq.len());
    let mut diff = std::mem::take(&mut sc.diff);
    for (i, &g) in upstream.iter().enumerate() {
        if g == 0.0 {
            continue;
        }
        let polar_omega = model.pixel_geometry(slow, region.fast0 + i, &mut diff);
        let c = g * prep.prefactor * polar_omega;
        let cn = c * prep.norm;
        for &dv in &diff {
            for (d, m) in prep.domain_matrices.iter().enumerate() {
                vjp_channels::<S>(
                    mat_vec(m, dv),
                    prep,
                    model.n_cells,
                    &wf,
                    cn,
                    cn / model.scale,
                    &mut sc,
                );
                let dh_sum = [sum4(&sc.dh[0]), sum4(&sc.dh[1]), sum4(&sc.dh[2])];
                let gm = &mut grad.domain_matrix[d];
                for a in 0..3 {
                    for b in 0..3 {
                        gm[a][b] += dh_sum[a] * dv[b];
                    }
                }
            }
        }
        grad.scale += c * model.background / model.scale;
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

fn vjp_row_best<S: ShapeTransform>(
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
/// `fsq.len()` must equal the number of channels and `upstream.len()` the region's pixel count.
pub fn spot_vjp(model: &SpotModel, fsq: &[f64], region: &Region, upstream: &[f64]) -> SpotGradient {
    vjp_dispatch(model, fsq, region, upstream, true)
}

/// As `spot_vjp`, on the calling thread only (for callers that parallelize over shoeboxes).
pub fn spot_vjp_serial(
    model: &SpotModel,
    fsq: &[f64],
    region: &Region,
    upstream: &[f64],
) -> SpotGradient {
    vjp_dispatch(model, fsq, region, upstream, false)
}

fn vjp_dispatch(
    model: &SpotModel,
    fsq: &[f64],
    region: &Region,
    upstream: &[f64],
    parallel: bool,
) -> SpotGradient {
    debug_assert_eq!(fsq.len(), model.beam.channels.len());
    debug_assert_eq!(upstream.len(), region.len());
    match model.shape {
        Shape::Square => vjp_with::<SquareShape>(model, fsq, region, upstream, parallel),
        Shape::Round => vjp_with::<RoundShape>(model, fsq, region, upstream, parallel),
        Shape::Gauss => vjp_with::<GaussShape>(model, fsq, region, upstream, parallel),
        Shape::Tophat => vjp_with::<TophatShape>(model, fsq, region, upstream, parallel),
    }
}

/// Σ_sub Σ_d w_k L² per channel of one pixel, written into `per_channel` (the response row).
#[inline(always)]
fn pixel_response<S: ShapeTransform>(
    prep: &Prepared,
    n_cells: Vec3,
    diff: &[Vec3],
    l2: &mut [f64],
    per_channel: &mut [f64],
) {
    per_channel.fill(0.0);
    for &dv in diff {
        for m in &prep.domain_matrices {
            lattice_sq_channels::<S>(mat_vec(m, dv), &prep.inv_lambda, n_cells, l2);
            for ((slot, w), l) in per_channel.iter_mut().zip(&prep.weights).zip(l2.iter()) {
                *slot += w * l;
            }
        }
    }
}

/// Response rows of one detector row: `rows` holds n_fast × n_channels, `bg` n_fast.
#[inline(always)]
fn response_row<S: ShapeTransform>(
    model: &SpotModel,
    prep: &Prepared,
    slow: usize,
    region: &Region,
    rows: &mut [f64],
    bg: &mut [f64],
) {
    let n_ch = prep.inv_lambda.len();
    let mut diff = vec![[0.0; 3]; model.oversample * model.oversample];
    let mut l2 = vec![0.0; n_ch];
    for (i, (resp, b)) in rows.chunks_mut(n_ch).zip(bg.iter_mut()).enumerate() {
        let polar_omega = model.pixel_geometry(slow, region.fast0 + i, &mut diff);
        let c = prep.prefactor * polar_omega;
        *b = c * model.background;
        pixel_response::<S>(prep, model.n_cells, &diff, &mut l2, resp);
        for slot in resp.iter_mut() {
            *slot *= c * prep.norm;
        }
    }
}

/// `response_row` compiled for AVX2+FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn response_row_avx2<S: ShapeTransform>(
    model: &SpotModel,
    prep: &Prepared,
    slow: usize,
    region: &Region,
    rows: &mut [f64],
    bg: &mut [f64],
) {
    response_row::<S>(model, prep, slow, region, rows, bg);
}

fn response_with<S: ShapeTransform>(
    model: &SpotModel,
    region: &Region,
    out: &mut [f64],
    background: &mut [f64],
) {
    let n_ch = model.beam.channels.len();
    let prep = model.prepare();
    out.par_chunks_mut(region.n_fast * n_ch)
        .zip(background.par_chunks_mut(region.n_fast))
        .enumerate()
        .for_each(|(r, (rows, bg))| {
            #[cfg(target_arch = "x86_64")]
            if has_avx2() {
                // SAFETY: the CPU supports AVX2 and FMA, checked at run time just above.
                unsafe { response_row_avx2::<S>(model, &prep, region.slow0 + r, region, rows, bg) };
                return;
            }
            response_row::<S>(model, &prep, region.slow0 + r, region, rows, bg);
        });
}

/// Per-pixel response to each channel's |F|² for fixed geometry (used by `response`):
/// `out[p·n_channels + k]` = ∂pixel_p/∂|F_k|², and `background[p]` the |F|²-independent part.
pub(crate) fn response_rows(
    model: &SpotModel,
    region: &Region,
    out: &mut [f64],
    background: &mut [f64],
) {
    match model.shape {
        Shape::Square => response_with::<SquareShape>(model, region, out, background),
        Shape::Round => response_with::<RoundShape>(model, region, out, background),
        Shape::Gauss => response_with::<GaussShape>(model, region, out, background),
        Shape::Tophat => response_with::<TophatShape>(model, region, out, background),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::physics::beam::{dispersion_wavelengths, equal_weight_channels};
    use crate::physics::crystal::{UnitCell, nanobragg_real_space};
    use crate::physics::geometry::detector::MosflmDetector;

    fn model(shape: Shape) -> SpotModel {
        let panel = Panel::mosflm(&MosflmDetector {
            distance_mm: 100.0,
            pixel_mm: 0.1,
            n_fast: 64,
            n_slow: 64,
            xbeam_mm: None,
            ybeam_mm: None,
        })
        .unwrap();
        let cell = UnitCell::new([30.0, 40.0, 50.0], [90.0, 100.0, 90.0]).unwrap();
        let beam = Beam::nanobragg(
            equal_weight_channels(&dispersion_wavelengths(1.0, 1.0, 7).unwrap()).unwrap(),
            0.5,
        );
        SpotModel {
            polarization: Polarization::new(beam.incident, beam.polar_vector, 0.5),
            panel,
            beam,
            real_space_m: nanobragg_real_space(&cell, [3.0, 7.0, 11.0]),
            rotation: [0.001, 0.002, -0.001],
            domains: MosaicDomains::isotropic(0.2, 5, 9, false),
            shape,
            n_cells: [6.0, 7.0, 8.0],
            oversample: 2,
            scale: 1.0,
            background: 0.5,
        }
    }

    #[test]
    fn vector_and_baseline_row_loops_agree_bit_for_bit() {
        let fsq: Vec<f64> = (0..7).map(|k| 100.0 + k as f64).collect();
        for shape in [Shape::Square, Shape::Round, Shape::Gauss, Shape::Tophat] {
            let m = model(shape);
            let prep = m.prepare();
            let region = Region::full(&m.panel);
            let mut base = vec![0.0; 64];
            let mut best = vec![0.0; 64];
            let up: Vec<f64> = (0..64).map(|i| (i as f64).sin()).collect();
            for slow in [0, 20, 63] {
                dispatch_row(
                    &m,
                    &prep,
                    &ChannelFsq(&fsq),
                    slow,
                    &region,
                    &mut base,
                    &mut best,
                );
                assert_eq!(base, best, "{shape:?} forward row {slow}");
                let (g0, g1) = match shape {
                    Shape::Gauss => (
                        vjp_row::<GaussShape>(&m, &prep, &fsq, slow, &region, &up),
                        vjp_row_best::<GaussShape>(&m, &prep, &fsq, slow, &region, &up),
                    ),
                    _ => continue,
                };
                assert_eq!(g0, g1, "adjoint row {slow}");
            }
        }
    }

    fn dispatch_row<F: StructureFactorSq>(
        m: &SpotModel,
        prep: &Prepared,
        fsq: &F,
        slow: usize,
        region: &Region,
        base: &mut [f64],
        best: &mut [f64],
    ) {
        match m.shape {
            Shape::Square => {
                render_row::<SquareShape, F>(m, prep, fsq, slow, region, base);
                render_row_best::<SquareShape, F>(m, prep, fsq, slow, region, best);
            }
            Shape::Round => {
                render_row::<RoundShape, F>(m, prep, fsq, slow, region, base);
                render_row_best::<RoundShape, F>(m, prep, fsq, slow, region, best);
            }
            Shape::Gauss => {
                render_row::<GaussShape, F>(m, prep, fsq, slow, region, base);
                render_row_best::<GaussShape, F>(m, prep, fsq, slow, region, best);
            }
            Shape::Tophat => {
                render_row::<TophatShape, F>(m, prep, fsq, slow, region, base);
                render_row_best::<TophatShape, F>(m, prep, fsq, slow, region, best);
            }
        }
    }

    #[test]
    fn flop_count_amortizes_geometry() {
        let m = model(Shape::Gauss);
        // 22 generic + 50 GAUSS + 15/7 + 25/35
        assert!((m.flops_per_eval() - (72.0 + 15.0 / 7.0 + 25.0 / 35.0)).abs() < 1e-12);
    }
}
