//! The low-rank multivariate normal log-density as one fused tape operator.
//!
//! In: x (d), loc (d), factor W (d×r), diagonal scale D (d); covariance Σ = W Wᵀ + diag(D²).
//! Out: log N(x; loc, Σ) as a 0-d tensor, in O(d r² + r³) through the Woodbury identity and
//! the matrix determinant lemma (C = I + Wᵀ D⁻² W). Hand adjoint, with a = Σ⁻¹ (x - loc):
//! dx = -a, dloc = a, dW = a (aᵀ W) - Σ⁻¹ W, dD_i = D_i (a_i² - Σ⁻¹_ii).
//! The r×r Cholesky is written here because r is tiny and the dependency set has no LAPACK.

use crate::tape::{FusedOp, Value};
use ndarray::{Array1, Array2, ArrayD, IxDyn};

const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// Fused log N(x; loc, W Wᵀ + diag(D²)).
#[derive(Debug, Clone, Copy)]
pub struct LowRankLogPdf;

/// The pieces shared by the forward value and the adjoint.
struct Woodbury {
    /// Σ⁻¹ (x - loc)
    a: Array1<f64>,
    /// D⁻² W C⁻¹ = Σ⁻¹ W
    sigma_inv_w: Array2<f64>,
    /// diag(Σ⁻¹)
    sigma_inv_diag: Array1<f64>,
    /// ln det Σ
    log_det: f64,
    /// (x - loc)ᵀ Σ⁻¹ (x - loc)
    mahalanobis: f64,
}

/// (x, loc, factor, diagonal) as fixed-dimension arrays.
type LowRankInputs = (Array1<f64>, Array1<f64>, Array2<f64>, Array1<f64>);

fn inputs(v: &[&Value]) -> Result<LowRankInputs, String> {
    let real = |i: usize| match v.get(i) {
        Some(Value::Real(a)) => Ok(a),
        _ => Err(format!("input {i} must be a real tensor")),
    };
    let vec1 = |i: usize| {
        real(i)?
            .clone()
            .into_dimensionality::<ndarray::Ix1>()
            .map_err(|e| format!("input {i}: {e}"))
    };
    let (x, loc, d) = (vec1(0)?, vec1(1)?, vec1(3)?);
    let w = real(2)?
        .clone()
        .into_dimensionality::<ndarray::Ix2>()
        .map_err(|e| format!("factor: {e}"))?;
    if x.len() != loc.len() || w.nrows() != x.len() || d.len() != x.len() {
        return Err(format!(
            "sizes differ: x {}, loc {}, factor {:?}, diag {}",
            x.len(),
            loc.len(),
            w.shape(),
            d.len()
        ));
    }
    Ok((x, loc, w, d))
}

/// Lower Cholesky factor of a symmetric positive-definite matrix.
pub(crate) fn cholesky(c: &Array2<f64>) -> Result<Array2<f64>, String> {
    let n = c.nrows();
    let mut l = Array2::zeros((n, n));
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[[i, k]] * l[[j, k]]).sum();
            if i == j {
                let v = c[[i, i]] - s;
                if v <= 0.0 || !v.is_finite() {
                    return Err("capacitance matrix is not positive definite".into());
                }
                l[[i, i]] = v.sqrt();
            } else {
                l[[i, j]] = (c[[i, j]] - s) / l[[j, j]];
            }
        }
    }
    Ok(l)
}

/// Solves (L Lᵀ) X = B for X.
fn cho_solve(l: &Array2<f64>, b: &Array2<f64>) -> Array2<f64> {
    let n = l.nrows();
    let mut x = b.clone();
    for mut col in x.columns_mut() {
        for i in 0..n {
            let s: f64 = (0..i).map(|k| l[[i, k]] * col[k]).sum();
            col[i] = (col[i] - s) / l[[i, i]];
        }
        for i in (0..n).rev() {
            let s: f64 = (i + 1..n).map(|k| l[[k, i]] * col[k]).sum();
            col[i] = (col[i] - s) / l[[i, i]];
        }
    }
    x
}

fn woodbury(
    x: &Array1<f64>,
    loc: &Array1<f64>,
    w: &Array2<f64>,
    d: &Array1<f64>,
) -> Result<Woodbury, String> {
    let r = w.ncols();
    let dinv2 = d.mapv(|v| 1.0 / (v * v));
    let dw = w * &dinv2.view().insert_axis(ndarray::Axis(1));
    let cap = Array2::eye(r) + w.t().dot(&dw);
    let l = cholesky(&cap)?;
    let cinv = cho_solve(&l, &Array2::eye(r));
    let sigma_inv_w = dw.dot(&cinv);
    let res = x - loc;
    let dres = &res * &dinv2;
    let a = &dres - &sigma_inv_w.dot(&w.t().dot(&dres));
    let wcw = (&dw.dot(&cinv) * &dw).sum_axis(ndarray::Axis(1));
    let sigma_inv_diag = &dinv2 - &wcw;
    let log_det = d.mapv(|v| 2.0 * v.abs().ln()).sum() + 2.0 * l.diag().mapv(f64::ln).sum();
    let mahalanobis = res.dot(&a);
    Ok(Woodbury {
        a,
        sigma_inv_w,
        sigma_inv_diag,
        log_det,
        mahalanobis,
    })
}

impl FusedOp for LowRankLogPdf {
    fn name(&self) -> &'static str {
        "mvn_low_rank_log_prob"
    }

    fn forward(&self, v: &[&Value]) -> Result<Value, String> {
        let (x, loc, w, d) = inputs(v)?;
        let k = woodbury(&x, &loc, &w, &d)?;
        let lp = -0.5 * (k.mahalanobis + k.log_det + x.len() as f64 * LN_2PI);
        Ok(Value::Real(ArrayD::from_elem(IxDyn(&[]), lp)))
    }

    fn vjp(&self, v: &[&Value], _y: &Value, g: &Value) -> Result<Vec<Option<Value>>, String> {
        let (x, loc, w, d) = inputs(v)?;
        let g = match g {
            Value::Real(g) => g.iter().copied().sum::<f64>(),
            Value::Complex(_) => return Err("gradient must be real".into()),
        };
        let k = woodbury(&x, &loc, &w, &d)?;
        let atw = w.t().dot(&k.a);
        let outer =
            k.a.view()
                .insert_axis(ndarray::Axis(1))
                .dot(&atw.view().insert_axis(ndarray::Axis(0)));
        let gw = (outer - &k.sigma_inv_w) * g;
        let gd = ndarray::Zip::from(&d)
            .and(&k.a)
            .and(&k.sigma_inv_diag)
            .map_collect(|&d, &a, &s| g * d * (a * a - s));
        let real = |a: ArrayD<f64>| Some(Value::Real(a));
        Ok(vec![
            real((&k.a * -g).into_dyn()),
            real((&k.a * g).into_dyn()),
            real(gw.into_dyn()),
            real(gd.into_dyn()),
        ])
    }
}
