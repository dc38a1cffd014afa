//! The response-matrix form of the spot model (DESIGN.md §7).
//!
//! In: a `SpotModel` with fixed geometry (orientation, cell, mosaic, detector, spectrum) and a region.
//! Out: R, a pixel × channel matrix, and a background vector b such that
//! pixels = R·|F(h0, λ_k)|² + b exactly equals `spot::render` with `ChannelFsq`. Guarantees: built by
//! the same per-pixel geometry as the kernel, in one pass; applying it is a matrix–vector product, so
//! while only f'/f'' and scales move the hot loop costs n_pixels × n_channels multiply-adds.

use super::spot::{Region, SpotModel, response_rows};
use ndarray::{Array1, Array2};

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
    pub fn build(model: &SpotModel, region: &Region) -> Self {
        let n_ch = model.beam.channels.len();
        let mut r = vec![0.0; region.len() * n_ch];
        let mut b = vec![0.0; region.len()];
        response_rows(model, region, &mut r, &mut b);
        Self {
            matrix: Array2::from_shape_vec((region.len(), n_ch), r)
                .unwrap_or_else(|_| Array2::zeros((0, n_ch))),
            background: Array1::from(b),
        }
    }

    /// pixels = R·fsq + b.
    pub fn apply(&self, fsq: &[f64]) -> Array1<f64> {
        self.matrix.dot(&ndarray::ArrayView1::from(fsq)) + &self.background
    }

    /// Adjoint of `apply` w.r.t. fsq: Rᵀ·upstream.
    pub fn vjp_fsq(&self, upstream: &[f64]) -> Array1<f64> {
        self.matrix.t().dot(&ndarray::ArrayView1::from(upstream))
    }
}
