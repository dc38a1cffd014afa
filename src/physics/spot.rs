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

use super::beam::{Beam, Channel};
use super::geometry::detector::Panel;
use super::geometry::rotation::rotation_jacobian;
use super::geometry::{Mat3, Vec3, frobenius, mat_mul, mat_vec, norm, transpose};
use super::lattice::{GaussShape, RoundShape, Shape, ShapeTransform, SquareShape, TophatShape, nearest_index};
use super::mosaic::{DomainRotation, MosaicDomains};
use super::polarization::Polarization;
use rayon::prelude::*;

/// |F|² as the kernel sees it: a function of the nearest index h0 and the channel.
pub trait StructureFactorSq: Sync {
    /// |F(h0, λ_k)|² in electrons².
    fn fsq(&self, h0: Vec3, channel: usize) -> f64;
}

/// The same F for every reflection and channel (nanoBragg's `-default_F`).
#[derive(Debug, Clone, Copy)]
pub struct ConstantF(pub f64);

impl StructureFactorSq for ConstantF {
    #[inline]
    fn fsq(&self, _h0: Vec3, _channel: usize) -> f64 {
        self.0 * self.0
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
        Self { slow0: 0, fast0: 0, n_slow: panel.n_slow, n_fast: panel.n_fast }
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
    channels: Vec<Channel>,
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
            channels: self.beam.channels.clone(),
            inv_lambda: self.beam.channels.iter().map(|c| 1.0 / c.wavelength_m).collect(),
            prefactor: self.beam.thomson_prefactor() * self.scale,
            norm: 1.0 / (n_sub * self.domains.len() as f64),
            rotation,
            rotation_jacobian: rotation_jac,
            domain_rotations,
        }
    }

    /// Floating-point operations per (pixel, channel, domain) evaluation for this model's shape
    /// (transcendentals counted as one), excluding the per-(sub-pixel, domain) work it amortizes.
    pub fn flops_per_eval(&self) -> u32 {
        // 3 (h = u/λ) + 3 (h0) + shape + 4 (F²·L²·accumulate)
        10 + match self.shape {
            Shape::Square => SquareShape::FLOPS,
            Shape::Round => RoundShape::FLOPS,
            Shape::Gauss => GaussShape::FLOPS,
            Shape::Tophat => TophatShape::FLOPS,
        }
    }

    /// P·Ω and the lab direction d̂ − î of every sub-pixel of one pixel, written into `diff`.
    #[inline]
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

/// Bracket sum Σ_sub Σ_k Σ_d w_k F² L² of one pixel (before normalization).
#[inline]
fn pixel_bracket<S: ShapeTransform, F: StructureFactorSq>(
    prep: &Prepared,
    n_cells: Vec3,
    fsq: &F,
    diff: &[Vec3],
) -> f64 {
    let mut total = 0.0;
    for &dv in diff {
        for m in &prep.domain_matrices {
            let u = mat_vec(m, dv);
            for (k, (ch, &il)) in prep.channels.iter().zip(&prep.inv_lambda).enumerate() {
                let h = [u[0] * il, u[1] * il, u[2] * il];
                let h0 = nearest_index(h);
                let l = S::value(h, h0, n_cells);
                total += ch.weight * fsq.fsq(h0, k) * l * l;
            }
        }
    }
    total
}

fn render_row<S: ShapeTransform, F: StructureFactorSq>(
    model: &SpotModel,
    prep: &Prepared,
    fsq: &F,
    slow: usize,
    region: &Region,
    row: &mut [f64],
) {
    let mut diff = vec![[0.0; 3]; model.oversample * model.oversample];
    for (i, out) in row.iter_mut().enumerate() {
        let polar_omega = model.pixel_geometry(slow, region.fast0 + i, &mut diff);
        let bracket = pixel_bracket::<S, F>(prep, model.n_cells, fsq, &diff);
        *out = prep.prefactor * polar_omega * (model.background + bracket * prep.norm);
    }
}

fn render_with<S: ShapeTransform, F: StructureFactorSq>(
    model: &SpotModel,
    fsq: &F,
    region: &Region,
    out: &mut [f64],
    parallel: bool,
) {
    let prep = model.prepare();
    let body = |(r, row): (usize, &mut [f64])| render_row::<S, F>(model, &prep, fsq, region.slow0 + r, region, row);
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
pub fn render_serial<F: StructureFactorSq>(model: &SpotModel, fsq: &F, region: &Region, out: &mut [f64]) {
    dispatch(model, fsq, region, out, false);
}

fn dispatch<F: StructureFactorSq>(model: &SpotModel, fsq: &F, region: &Region, out: &mut [f64], parallel: bool) {
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
        for (d, (g, u)) in self.domain_matrix.iter().zip(&prep.domain_rotations).enumerate() {
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

/// Scratch of one row of the adjoint: per-domain running ∂/∂h·(1/λ) sums.
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
    let mut diff = vec![[0.0; 3]; model.oversample * model.oversample];
    for (i, &g) in upstream.iter().enumerate() {
        if g == 0.0 {
            continue;
        }
        let polar_omega = model.pixel_geometry(slow, region.fast0 + i, &mut diff);
        let c = g * prep.prefactor * polar_omega;
        let cn = c * prep.norm;
        let mut bracket = 0.0;
        for &dv in &diff {
            for (d, m) in prep.domain_matrices.iter().enumerate() {
                let u = mat_vec(m, dv);
                let mut dh_sum = [0.0; 3];
                for (k, (ch, &il)) in prep.channels.iter().zip(&prep.inv_lambda).enumerate() {
                    let h = [u[0] * il, u[1] * il, u[2] * il];
                    let lg = S::gradient(h, nearest_index(h), model.n_cells);
                    let wl2 = ch.weight * lg.value * lg.value;
                    bracket += wl2 * fsq[k];
                    grad.fsq[k] += cn * wl2;
                    // ∂(w F² L²)/∂h = 2 w F² L ∂L/∂h; ∂h/∂M = (d̂ − î)/λ
                    let t = 2.0 * ch.weight * fsq[k] * lg.value * cn;
                    for a in 0..3 {
                        dh_sum[a] += t * lg.d_h[a] * il;
                        grad.n_cells[a] += t * lg.d_n[a];
                    }
                }
                let gm = &mut grad.domain_matrix[d];
                for a in 0..3 {
                    for b in 0..3 {
                        gm[a][b] += dh_sum[a] * dv[b];
                    }
                }
            }
        }
        let value_over_scale = prep.prefactor / model.scale * polar_omega * (model.background + bracket * prep.norm);
        grad.scale += g * value_over_scale;
        grad.background += c;
    }
    grad
}

fn vjp_with<S: ShapeTransform>(
    model: &SpotModel,
    fsq: &[f64],
    region: &Region,
    upstream: &[f64],
    parallel: bool,
) -> SpotGradient {
    let prep = model.prepare();
    let row = |(r, g): (usize, &[f64])| vjp_row::<S>(model, &prep, fsq, region.slow0 + r, region, g);
    let rows: Vec<SpotGradient> = if parallel {
        upstream.par_chunks(region.n_fast.max(1)).enumerate().map(row).collect()
    } else {
        upstream.chunks(region.n_fast.max(1)).enumerate().map(row).collect()
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
pub fn spot_vjp_serial(model: &SpotModel, fsq: &[f64], region: &Region, upstream: &[f64]) -> SpotGradient {
    vjp_dispatch(model, fsq, region, upstream, false)
}

fn vjp_dispatch(model: &SpotModel, fsq: &[f64], region: &Region, upstream: &[f64], parallel: bool) -> SpotGradient {
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
#[inline]
fn pixel_response<S: ShapeTransform>(prep: &Prepared, n_cells: Vec3, diff: &[Vec3], per_channel: &mut [f64]) {
    per_channel.fill(0.0);
    for &dv in diff {
        for m in &prep.domain_matrices {
            let u = mat_vec(m, dv);
            for ((slot, ch), &il) in per_channel.iter_mut().zip(&prep.channels).zip(&prep.inv_lambda) {
                let h = [u[0] * il, u[1] * il, u[2] * il];
                let l = S::value(h, nearest_index(h), n_cells);
                *slot += ch.weight * l * l;
            }
        }
    }
}

fn response_with<S: ShapeTransform>(model: &SpotModel, region: &Region, out: &mut [f64], background: &mut [f64]) {
    let n_ch = model.beam.channels.len();
    let prep = model.prepare();
    out.par_chunks_mut(region.n_fast * n_ch)
        .zip(background.par_chunks_mut(region.n_fast))
        .enumerate()
        .for_each(|(r, (rows, bg))| {
            let slow = region.slow0 + r;
            let mut diff = vec![[0.0; 3]; model.oversample * model.oversample];
            for (i, (resp, b)) in rows.chunks_mut(n_ch).zip(bg.iter_mut()).enumerate() {
                let polar_omega = model.pixel_geometry(slow, region.fast0 + i, &mut diff);
                let c = prep.prefactor * polar_omega;
                *b = c * model.background;
                pixel_response::<S>(&prep, model.n_cells, &diff, resp);
                for slot in resp.iter_mut() {
                    *slot *= c * prep.norm;
                }
            }
        });
}

/// Per-pixel response to each channel's |F|² for fixed geometry (used by `response`):
/// `out[p·n_channels + k]` = ∂pixel_p/∂|F_k|², and `background[p]` the |F|²-independent part.
pub(crate) fn response_rows(model: &SpotModel, region: &Region, out: &mut [f64], background: &mut [f64]) {
    match model.shape {
        Shape::Square => response_with::<SquareShape>(model, region, out, background),
        Shape::Round => response_with::<RoundShape>(model, region, out, background),
        Shape::Gauss => response_with::<GaussShape>(model, region, out, background),
        Shape::Tophat => response_with::<TophatShape>(model, region, out, background),
    }
}
