//! The fused spot kernel: expected photons in every pixel of a detector region (a shoebox or a whole
//! image) summed over sub-pixels × spectrum channels × mosaic domains in one call, and its adjoint.
//!
//! In: a `SpotModel` (panel, beam, crystal basis, image rotation, mosaic domains, shape, N, oversample,
//! scale) and a source of |F|². Out: pixel values in photons, row-major over the region.
//! pixel = scale · r_e²Φ · P · Ω · (background + Σ_sub Σ_k Σ_d w_k |F(h0, λ_k)|² F_latt(h)² / (n_sub·n_dom)),
//! with h = U_d R(θ) A · (d̂ − î)/λ_k and P, Ω taken once per pixel at sub-pixel (0,0) (nanoBragg).
//! Guarantees: no allocation per pixel (scratch per row), rayon over rows with results independent of
//! the thread count, bad shapes reported as `SpotError`, and an exact analytic adjoint (`adjoint`).
//!
//! Work per (pixel, channel, domain) evaluation: since d̂ − î does not depend on λ, u_d = M_d·(d̂ − î) is
//! formed once per (sub-pixel, domain) and h = u_d/λ_k costs 3 multiplies per channel; see
//! `flops_per_eval`. The innermost loop is a branch-free map over channels (many channels) or over
//! (sub-pixel, domain) pairs (few channels), compiled for AVX2+FMA when the CPU has them, with results
//! bit-identical to the baseline build.

use super::beam::Beam;
use super::geometry::detector::Panel;
use super::geometry::rotation::rotation_jacobian;
use super::geometry::{Mat3, Vec3, mat_mul, mat_vec, norm, transpose};
use super::lattice::{
    GaussShape, RoundShape, Shape, ShapeTransform, SquareShape, TophatShape, nearest_index,
};
use super::mosaic::{DomainRotation, MosaicDomains};
use super::polarization::Polarization;
use rayon::prelude::*;
use thiserror::Error;

pub mod adjoint;
pub use adjoint::{SpotGradient, spot_vjp, spot_vjp_serial};

/// Why a kernel call was refused (a caller's shape or configuration error, never a panic).
#[derive(Debug, Error, PartialEq)]
pub enum SpotError {
    /// The region does not lie on the panel.
    #[error("region {region:?} extends beyond the {n_fast}x{n_slow} panel")]
    RegionOutsidePanel {
        /// The region asked for.
        region: Region,
        /// Panel width.
        n_fast: usize,
        /// Panel height.
        n_slow: usize,
    },
    /// A buffer or parameter vector of the wrong length.
    #[error("{what}: expected {expected} values, got {got}")]
    Length {
        /// Which input.
        what: &'static str,
        /// Required length.
        expected: usize,
        /// Given length.
        got: usize,
    },
    /// A model the kernel cannot evaluate.
    #[error("spot model: {0}")]
    Model(&'static str),
}

impl SpotError {
    pub(crate) fn check_length(
        what: &'static str,
        expected: usize,
        got: usize,
    ) -> Result<(), SpotError> {
        if expected == got {
            Ok(())
        } else {
            Err(SpotError::Length {
                what,
                expected,
                got,
            })
        }
    }
}

/// |F|² as the kernel sees it: a function of the nearest index h0 and the channel.
pub trait StructureFactorSq: Sync {
    /// |F(h0, λ_k)|² in electrons².
    fn fsq(&self, h0: Vec3, channel: usize) -> f64;

    /// Σ_p |F(h0_p, λ_k)|² lp_p over (sub-pixel, domain) pairs p of one channel, h_p = u_p/λ_k.
    #[inline(always)]
    fn pair_sum(&self, channel: usize, u: &[Vec<f64>; 3], il: f64, lp: &[f64]) -> f64 {
        let mut total = 0.0;
        for (p, &l) in lp.iter().enumerate() {
            total += self.fsq(
                nearest_index([u[0][p] * il, u[1][p] * il, u[2][p] * il]),
                channel,
            ) * l;
        }
        total
    }

    /// How many channels this source holds values for (`None`: any channel).
    fn n_channels(&self) -> Option<usize> {
        None
    }

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

/// Σ of a slice with four partial sums.
#[inline(always)]
pub(crate) fn sum4(a: &[f64]) -> f64 {
    let mut acc = [0.0; 4];
    let mut chunks = a.chunks_exact(4);
    for c in &mut chunks {
        for j in 0..4 {
            acc[j] += c[j];
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + chunks.remainder().iter().sum::<f64>()
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

    #[inline(always)]
    fn pair_sum(&self, _channel: usize, _u: &[Vec<f64>; 3], _il: f64, lp: &[f64]) -> f64 {
        self.0 * self.0 * sum4(lp)
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

    #[inline(always)]
    fn pair_sum(&self, channel: usize, _u: &[Vec<f64>; 3], _il: f64, lp: &[f64]) -> f64 {
        self.0[channel] * sum4(lp)
    }

    fn n_channels(&self) -> Option<usize> {
        Some(self.0.len())
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
pub(crate) struct Prepared {
    /// M_d = U_d R(θ) A, so h = M_d·S.
    pub(crate) domain_matrices: Vec<Mat3>,
    pub(crate) weights: Vec<f64>,
    pub(crate) inv_lambda: Vec<f64>,
    /// r_e²Φ
    pub(crate) thomson: f64,
    /// r_e²Φ·scale
    pub(crate) prefactor: f64,
    /// 1/(n_sub·n_dom)
    pub(crate) norm: f64,
    pub(crate) rotation: Mat3,
    pub(crate) rotation_jacobian: [Mat3; 3],
    pub(crate) domain_rotations: Vec<DomainRotation>,
}

impl SpotModel {
    pub(crate) fn prepare(&self) -> Prepared {
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
            thomson: self.beam.thomson_prefactor(),
            prefactor: self.beam.thomson_prefactor() * self.scale,
            norm: 1.0 / (n_sub * self.domains.len() as f64),
            rotation,
            rotation_jacobian: rotation_jac,
            domain_rotations,
        }
    }

    /// Checks that `region` lies on the panel, the model has channels, domains and sub-pixels, and
    /// (when given) that a per-channel |F|² vector has one value per channel.
    pub fn validate(&self, region: &Region, n_fsq: Option<usize>) -> Result<(), SpotError> {
        let p = &self.panel;
        if region.slow0 + region.n_slow > p.n_slow || region.fast0 + region.n_fast > p.n_fast {
            return Err(SpotError::RegionOutsidePanel {
                region: *region,
                n_fast: p.n_fast,
                n_slow: p.n_slow,
            });
        }
        if self.beam.channels.is_empty() {
            return Err(SpotError::Model("no spectrum channels"));
        }
        if self.domains.is_empty() {
            return Err(SpotError::Model("no mosaic domains"));
        }
        if self.oversample == 0 {
            return Err(SpotError::Model("oversample must be at least 1"));
        }
        match n_fsq {
            Some(n) => SpotError::check_length("per-channel |F|^2", self.beam.channels.len(), n),
            None => Ok(()),
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
    pub(crate) fn pixel_geometry(&self, slow: usize, fast: usize, diff: &mut [Vec3]) -> f64 {
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
pub(crate) fn lattice_sq_channels<S: ShapeTransform>(
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

/// With fewer channels than this the kernel vectorizes over (sub-pixel, domain) pairs instead.
pub(crate) const CHANNEL_INNER_MIN: usize = 4;

/// Per-row scratch of the forward kernel (allocated once per row, never per pixel).
struct RowScratch {
    diff: Vec<Vec3>,
    /// F_latt² per channel (channel-inner order).
    l2: Vec<f64>,
    /// u = M_d·(d̂ − î) per (sub-pixel, domain) pair, struct-of-arrays (pair-inner order).
    u: [Vec<f64>; 3],
    /// F_latt² per pair.
    lp: Vec<f64>,
}

impl RowScratch {
    fn new(prep: &Prepared, n_sub: usize) -> Self {
        let pairs = n_sub * prep.domain_matrices.len();
        let z = || vec![0.0; pairs];
        Self {
            diff: vec![[0.0; 3]; n_sub],
            l2: vec![0.0; prep.inv_lambda.len()],
            u: [z(), z(), z()],
            lp: z(),
        }
    }
}

/// F_latt² for every (sub-pixel, domain) pair at h = u_p/λ: the pair-inner twin of `lattice_sq_channels`.
#[inline(always)]
fn lattice_sq_pairs<S: ShapeTransform>(u: &[Vec<f64>; 3], il: f64, n_cells: Vec3, lp: &mut [f64]) {
    let n = lp.len();
    let (ux, uy, uz) = (&u[0][..n], &u[1][..n], &u[2][..n]);
    for p in 0..n {
        let h = [ux[p] * il, uy[p] * il, uz[p] * il];
        let l = S::value(h, nearest_index(h), n_cells);
        lp[p] = l * l;
    }
}

/// Bracket sum Σ_sub Σ_k Σ_d w_k F² L² of one pixel (before normalization), vectorized over channels
/// when there are many (a fit's spectrum) and over (sub-pixel, domain) pairs when there are few.
#[inline(always)]
fn pixel_bracket<S: ShapeTransform, F: StructureFactorSq>(
    prep: &Prepared,
    n_cells: Vec3,
    fsq: &F,
    sc: &mut RowScratch,
) -> f64 {
    let mut total = 0.0;
    if prep.inv_lambda.len() >= CHANNEL_INNER_MIN {
        for &dv in &sc.diff {
            for m in &prep.domain_matrices {
                let u = mat_vec(m, dv);
                lattice_sq_channels::<S>(u, &prep.inv_lambda, n_cells, &mut sc.l2);
                total += fsq.weighted_sum(u, &prep.inv_lambda, &prep.weights, &sc.l2);
            }
        }
        return total;
    }
    let mut p = 0;
    for &dv in &sc.diff {
        for m in &prep.domain_matrices {
            let u = mat_vec(m, dv);
            for (column, value) in sc.u.iter_mut().zip(u) {
                column[p] = value;
            }
            p += 1;
        }
    }
    for (k, (&il, &w)) in prep.inv_lambda.iter().zip(&prep.weights).enumerate() {
        lattice_sq_pairs::<S>(&sc.u, il, n_cells, &mut sc.lp);
        total += w * fsq.pair_sum(k, &sc.u, il, &sc.lp);
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
    let mut sc = RowScratch::new(prep, model.oversample * model.oversample);
    for (i, out) in row.iter_mut().enumerate() {
        let polar_omega = model.pixel_geometry(slow, region.fast0 + i, &mut sc.diff);
        let bracket = pixel_bracket::<S, F>(prep, model.n_cells, fsq, &mut sc);
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
pub(crate) fn has_avx2() -> bool {
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

/// Expected photons in every pixel of `region` (row-major) into `out`, rows in parallel with rayon.
pub fn render<F: StructureFactorSq>(
    model: &SpotModel,
    fsq: &F,
    region: &Region,
    out: &mut [f64],
) -> Result<(), SpotError> {
    dispatch(model, fsq, region, out, true)
}

/// As `render`, on the calling thread only (for callers that parallelize over shoeboxes).
pub fn render_serial<F: StructureFactorSq>(
    model: &SpotModel,
    fsq: &F,
    region: &Region,
    out: &mut [f64],
) -> Result<(), SpotError> {
    dispatch(model, fsq, region, out, false)
}

fn dispatch<F: StructureFactorSq>(
    model: &SpotModel,
    fsq: &F,
    region: &Region,
    out: &mut [f64],
    parallel: bool,
) -> Result<(), SpotError> {
    model.validate(region, fsq.n_channels())?;
    SpotError::check_length("output pixels", region.len(), out.len())?;
    if region.is_empty() {
        return Ok(());
    }
    match model.shape {
        Shape::Square => render_with::<SquareShape, F>(model, fsq, region, out, parallel),
        Shape::Round => render_with::<RoundShape, F>(model, fsq, region, out, parallel),
        Shape::Gauss => render_with::<GaussShape, F>(model, fsq, region, out, parallel),
        Shape::Tophat => render_with::<TophatShape, F>(model, fsq, region, out, parallel),
    }
    Ok(())
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
                        adjoint::vjp_row::<GaussShape>(&m, &prep, &fsq, slow, &region, &up),
                        adjoint::vjp_row_best::<GaussShape>(&m, &prep, &fsq, slow, &region, &up),
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
    fn bad_calls_are_errors_not_panics() {
        let m = model(Shape::Gauss);
        let fsq = vec![1.0; 7];
        let off = Region {
            slow0: 60,
            fast0: 0,
            n_slow: 5,
            n_fast: 5,
        };
        let mut out = vec![0.0; 25];
        assert!(matches!(
            render(&m, &ChannelFsq(&fsq), &off, &mut out),
            Err(SpotError::RegionOutsidePanel { .. })
        ));
        let ok = Region {
            slow0: 10,
            fast0: 10,
            n_slow: 5,
            n_fast: 5,
        };
        let short = vec![1.0; 6];
        let e = render(&m, &ChannelFsq(&short), &ok, &mut out);
        assert_eq!(
            e,
            Err(SpotError::Length {
                what: "per-channel |F|^2",
                expected: 7,
                got: 6
            })
        );
        assert!(matches!(
            render(&m, &ChannelFsq(&fsq), &ok, &mut out[..24]),
            Err(SpotError::Length { .. })
        ));
        assert!(matches!(
            spot_vjp(&m, &fsq, &ok, &[1.0; 3]),
            Err(SpotError::Length { .. })
        ));
        let empty = SpotModel {
            domains: MosaicDomains::from_tilts(vec![]),
            ..m
        };
        assert!(matches!(
            render(&empty, &ChannelFsq(&fsq), &ok, &mut out),
            Err(SpotError::Model(_))
        ));
    }

    #[test]
    fn flop_count_amortizes_geometry() {
        let m = model(Shape::Gauss);
        // 22 generic + 50 GAUSS + 15/7 + 25/35
        assert!((m.flops_per_eval() - (72.0 + 15.0 / 7.0 + 25.0 / 35.0)).abs() < 1e-12);
    }
}
