//! The response-matrix form of the spot model (DESIGN.md §7).
//!
//! In: a `SpotModel` with fixed geometry (orientation, cell, mosaic, detector, spectrum) and a region.
//! Out: R, a pixel × channel matrix, and a background vector b such that
//! pixels = R·|F(h0, λ_k)|² + b equals `spot::render` with `ChannelFsq` (to rounding). Guarantees:
//! built by the same per-pixel geometry and lattice code as the kernel, in one pass; applying it is a
//! matrix–vector product, so while only f'/f'' and scales move the hot loop costs
//! n_pixels × n_channels multiply-adds.

use super::geometry::{Vec3, mat_vec};
use super::lattice::{GaussShape, RoundShape, Shape, ShapeTransform, SquareShape, TophatShape};
use super::spot::{Prepared, Region, SpotError, SpotModel, has_avx2, lattice_sq_channels};
use ndarray::{Array1, Array2};
use rayon::prelude::*;

/// R and b for one region.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseMatrix {
    /// ∂pixel/∂|F_k|², shape (n_pixels, n_channels).
    pub matrix: Array2<f64>,
    /// The part of each pixel that does not depend on |F|² (the bracket background), shape (n_pixels,).
    pub background: Array1<f64>,
}

impl ResponseMatrix {
    /// Build R for `region` at the model's current geometry.
    pub fn build(model: &SpotModel, region: &Region) -> Result<Self, SpotError> {
        model.validate(region, None)?;
        let n_ch = model.beam.channels.len();
        let mut matrix = Array2::zeros((region.len(), n_ch));
        let mut background = Array1::zeros(region.len());
        // Both arrays were just created in standard layout, so their slices exist.
        if let (Some(r), Some(b)) = (matrix.as_slice_mut(), background.as_slice_mut()) {
            response_rows(model, region, r, b);
        }
        Ok(Self { matrix, background })
    }

    /// pixels = R·fsq + b.
    pub fn apply(&self, fsq: &[f64]) -> Result<Array1<f64>, SpotError> {
        SpotError::check_length("per-channel |F|^2", self.matrix.ncols(), fsq.len())?;
        Ok(self.matrix.dot(&ndarray::ArrayView1::from(fsq)) + &self.background)
    }

    /// Adjoint of `apply` w.r.t. fsq: Rᵀ·upstream.
    pub fn vjp_fsq(&self, upstream: &[f64]) -> Result<Array1<f64>, SpotError> {
        SpotError::check_length("upstream gradient", self.matrix.nrows(), upstream.len())?;
        Ok(self.matrix.t().dot(&ndarray::ArrayView1::from(upstream)))
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
fn response_rows(model: &SpotModel, region: &Region, out: &mut [f64], background: &mut [f64]) {
    match model.shape {
        Shape::Square => response_with::<SquareShape>(model, region, out, background),
        Shape::Round => response_with::<RoundShape>(model, region, out, background),
        Shape::Gauss => response_with::<GaussShape>(model, region, out, background),
        Shape::Tophat => response_with::<TophatShape>(model, region, out, background),
    }
}
