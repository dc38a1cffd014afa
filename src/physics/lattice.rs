//! Lattice shape transforms F_latt(h) of a crystal domain of Na×Nb×Nc unit cells, with gradients.
//!
//! In: the fractional Miller index h = A·S, its nearest integer index h0 = ceil(h − ½) (halves go to the lower
//! integer, as nanoBragg), and the domain
//! size N (per axis). Out: F_latt, and for the adjoint ∂F_latt/∂h and ∂F_latt/∂N. Guarantees: the four
//! nanoBragg shapes exactly as it evaluates them (fudge = 1):
//! SQUARE Π sin(Nπh)/sin(πh) over the full h (axis skipped when N ≤ 1, N when πh == 0);
//! ROUND NaNbNc·0.723601254558268·sinc3(π·hrad); GAUSS NaNbNc·exp(−hrad²/0.63);
//! TOPHAT NaNbNc·[hrad² < 0.3969], with hrad² = Σ N²(h − h0)².
//! Each shape is a zero-sized type so the spot kernel is monomorphized per shape (no branch per pixel).

use super::geometry::Vec3;
use std::f64::consts::PI;

/// Normalisation of the ROUND transform (nanoBragg's constant).
const ROUND_NORM: f64 = 0.723601254558268;
/// Width of the GAUSS transform in hrad² units.
const GAUSS_WIDTH: f64 = 0.63;
/// TOPHAT cut-off on hrad² (0.63²).
const TOPHAT_CUTOFF: f64 = 0.3969;

/// Which lattice shape transform (the model's `variant shape`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Parallelepiped domain: product of Dirichlet kernels.
    Square,
    /// Spherical domain: sinc3 of the radial index distance.
    Round,
    /// Gaussian domain.
    Gauss,
    /// Hard sphere in reciprocal space.
    Tophat,
}

/// F_latt and its partial derivatives at one h.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatticeGradient {
    /// F_latt.
    pub value: f64,
    /// ∂F_latt/∂h (per axis).
    pub d_h: Vec3,
    /// ∂F_latt/∂N (per axis).
    pub d_n: Vec3,
}

/// A lattice shape transform evaluated inside the spot kernel.
pub trait ShapeTransform: Copy + Send + Sync {
    /// F_latt at fractional index `h` with nearest index `h0`, domain size `n`.
    fn value(h: Vec3, h0: Vec3, n: Vec3) -> f64;
    /// F_latt with ∂/∂h and ∂/∂N.
    fn gradient(h: Vec3, h0: Vec3, n: Vec3) -> LatticeGradient;
    /// Floating-point operations of one `value` call, given h0: +, −, ×, ÷, √, min/max and
    /// compare-select count 1 each; libm sin/cos are counted as 20 (a typical polynomial evaluation);
    /// the inlined exp as its 35 operations.
    const FLOPS: u32;
}

/// SQUARE transform.
#[derive(Debug, Clone, Copy)]
pub struct SquareShape;
/// ROUND transform.
#[derive(Debug, Clone, Copy)]
pub struct RoundShape;
/// GAUSS transform.
#[derive(Debug, Clone, Copy)]
pub struct GaussShape;
/// TOPHAT transform.
#[derive(Debug, Clone, Copy)]
pub struct TophatShape;

/// nanoBragg's sincg: sin(N x)/sin(x), N at x == 0.
#[inline]
fn sincg(x: f64, n: f64) -> f64 {
    if x == 0.0 { n } else { (n * x).sin() / x.sin() }
}

/// sincg and its derivatives with respect to x and N.
#[inline]
fn sincg_gradient(x: f64, n: f64) -> (f64, f64, f64) {
    let s = x.sin();
    if s == 0.0 || x == 0.0 {
        // A maximum of the Dirichlet kernel: zero slope in x, value ±N with slope ±1 in N.
        let value = if x == 0.0 {
            n
        } else {
            (n * x).cos() / x.cos() * n
        };
        return (value, 0.0, value / n);
    }
    let (snx, cnx) = (n * x).sin_cos();
    let c = x.cos();
    (snx / s, (n * cnx * s - snx * c) / (s * s), x * cnx / s)
}

/// sinc3(x) = 3(sin x/x − cos x)/x², 1 at 0 (nanoBragg's form).
#[inline]
fn sinc3(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        3.0 * (x.sin() / x - x.cos()) / (x * x)
    }
}

/// sinc3'(x)/x, finite at 0 (−1/5), used for the chain rule through x = π·hrad.
#[inline]
fn sinc3_slope_over_x(x: f64) -> f64 {
    if x.abs() < 1e-3 {
        -0.2 + x * x / 70.0
    } else {
        (3.0 * x.sin() / (x * x) - 3.0 * sinc3(x) / x) / x
    }
}

#[inline(always)]
fn hrad_sq(h: Vec3, h0: Vec3, n: Vec3) -> f64 {
    let d = [h[0] - h0[0], h[1] - h0[1], h[2] - h0[2]];
    n[0] * n[0] * d[0] * d[0] + n[1] * n[1] * d[1] * d[1] + n[2] * n[2] * d[2] * d[2]
}

impl ShapeTransform for SquareShape {
    // per axis: N > 1 test, πh, x == 0 test, N·x, 2 sin, ÷, × into the product
    const FLOPS: u32 = 3 * (6 + 2 * 20);
    #[inline(always)]
    fn value(h: Vec3, _h0: Vec3, n: Vec3) -> f64 {
        let mut f = 1.0;
        for i in 0..3 {
            if n[i] > 1.0 {
                f *= sincg(PI * h[i], n[i]);
            }
        }
        f
    }
    #[inline(always)]
    fn gradient(h: Vec3, _h0: Vec3, n: Vec3) -> LatticeGradient {
        let mut f = [1.0; 3];
        let mut dx = [0.0; 3];
        let mut dn = [0.0; 3];
        for i in 0..3 {
            if n[i] > 1.0 {
                let (v, gx, gn) = sincg_gradient(PI * h[i], n[i]);
                (f[i], dx[i], dn[i]) = (v, gx * PI, gn);
            }
        }
        let others = [f[1] * f[2], f[0] * f[2], f[0] * f[1]];
        LatticeGradient {
            value: f[0] * f[1] * f[2],
            d_h: [dx[0] * others[0], dx[1] * others[1], dx[2] * others[2]],
            d_n: [dn[0] * others[0], dn[1] * others[1], dn[2] * others[2]],
        }
    }
}

/// ∂hrad²/∂h and ∂hrad²/∂N.
#[inline(always)]
fn hrad_sq_gradient(h: Vec3, h0: Vec3, n: Vec3) -> (Vec3, Vec3) {
    let d = [h[0] - h0[0], h[1] - h0[1], h[2] - h0[2]];
    (
        [
            2.0 * n[0] * n[0] * d[0],
            2.0 * n[1] * n[1] * d[1],
            2.0 * n[2] * n[2] * d[2],
        ],
        [
            2.0 * n[0] * d[0] * d[0],
            2.0 * n[1] * d[1] * d[1],
            2.0 * n[2] * d[2] * d[2],
        ],
    )
}

/// Gradient of V·g(hrad²) with V = NaNbNc, given g and dg/dhrad².
#[inline(always)]
fn radial_gradient(h: Vec3, h0: Vec3, n: Vec3, g: f64, dg: f64) -> LatticeGradient {
    let vol = n[0] * n[1] * n[2];
    let (dr_h, dr_n) = hrad_sq_gradient(h, h0, n);
    let dvol = [n[1] * n[2], n[0] * n[2], n[0] * n[1]];
    LatticeGradient {
        value: vol * g,
        d_h: [vol * dg * dr_h[0], vol * dg * dr_h[1], vol * dg * dr_h[2]],
        d_n: [
            dvol[0] * g + vol * dg * dr_n[0],
            dvol[1] * g + vol * dg * dr_n[1],
            dvol[2] * g + vol * dg * dr_n[2],
        ],
    }
}

impl ShapeTransform for GaussShape {
    // hrad² 11, ÷0.63, exp 35, NaNbNc·g 3
    const FLOPS: u32 = 50;
    #[inline(always)]
    fn value(h: Vec3, h0: Vec3, n: Vec3) -> f64 {
        n[0] * n[1] * n[2] * exp_nonpositive(-(hrad_sq(h, h0, n) / GAUSS_WIDTH))
    }
    #[inline(always)]
    fn gradient(h: Vec3, h0: Vec3, n: Vec3) -> LatticeGradient {
        let g = exp_nonpositive(-(hrad_sq(h, h0, n) / GAUSS_WIDTH));
        radial_gradient(h, h0, n, g, -g / GAUSS_WIDTH)
    }
}

impl ShapeTransform for RoundShape {
    // hrad² 11, √, ×π, sinc3 (sin, cos and 6 more), NaNbNc·0.7236·s 4
    const FLOPS: u32 = 11 + 2 + 46 + 4;
    #[inline(always)]
    fn value(h: Vec3, h0: Vec3, n: Vec3) -> f64 {
        n[0] * n[1] * n[2] * ROUND_NORM * sinc3(PI * hrad_sq(h, h0, n).sqrt())
    }
    #[inline(always)]
    fn gradient(h: Vec3, h0: Vec3, n: Vec3) -> LatticeGradient {
        let x = PI * hrad_sq(h, h0, n).sqrt();
        // d sinc3(π r)/d(r²) = sinc3'(x)·π²/(2x)
        let dg = ROUND_NORM * sinc3_slope_over_x(x) * PI * PI / 2.0;
        radial_gradient(h, h0, n, ROUND_NORM * sinc3(x), dg)
    }
}

impl ShapeTransform for TophatShape {
    // hrad² 11, compare-select, NaNbNc 2
    const FLOPS: u32 = 14;
    #[inline(always)]
    fn value(h: Vec3, h0: Vec3, n: Vec3) -> f64 {
        if hrad_sq(h, h0, n) < TOPHAT_CUTOFF {
            n[0] * n[1] * n[2]
        } else {
            0.0
        }
    }
    #[inline(always)]
    fn gradient(h: Vec3, h0: Vec3, n: Vec3) -> LatticeGradient {
        let inside = if hrad_sq(h, h0, n) < TOPHAT_CUTOFF {
            1.0
        } else {
            0.0
        };
        radial_gradient(h, h0, n, inside, 0.0)
    }
}

/// 1.5·2⁵²: adding and subtracting it rounds a double (|x| < 2⁵¹) to the nearest integer.
const ROUND_MAGIC: f64 = 6755399441055744.0;

/// ceil(x) for |x| < 2⁵¹ without a libm call (baseline x86-64 has no rounding instruction):
/// round to nearest with the magic constant, then step up if that fell below x.
#[inline(always)]
fn ceil_small(x: f64) -> f64 {
    let r = (x + ROUND_MAGIC) - ROUND_MAGIC;
    if r < x { r + 1.0 } else { r }
}

/// nanoBragg's nearest integer index: ceil(h − ½) per axis (an exact half goes to the lower integer).
/// Exact for |h| < 2⁵¹, far beyond any Miller index.
#[inline(always)]
pub fn nearest_index(h: Vec3) -> Vec3 {
    [
        ceil_small(h[0] - 0.5),
        ceil_small(h[1] - 0.5),
        ceil_small(h[2] - 0.5),
    ]
}

/// e^x for x ≤ 0 to within 2 ulp (0 below −708, where e^x·N³ squared underflows anyway).
/// Written out because libm's exp is an opaque call in the innermost loop; Cody–Waite reduction
/// x = k·ln2 + r, |r| ≤ ln2/2, and the degree-13 Taylor polynomial (truncation < 5e-18).
#[inline(always)]
pub fn exp_nonpositive(x: f64) -> f64 {
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    let x = x.max(-708.0);
    // k = round(x/ln2) sits in the low mantissa bits of `shifted`, which keeps the whole function
    // free of float→int conversions (AVX2 has none for f64), so loops over channels vectorize.
    let shifted = x * std::f64::consts::LOG2_E + ROUND_MAGIC;
    let k = shifted - ROUND_MAGIC;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let mut p = 1.0 / 6227020800.0;
    for c in [
        1.0 / 479001600.0,
        1.0 / 39916800.0,
        1.0 / 3628800.0,
        1.0 / 362880.0,
        1.0 / 40320.0,
        1.0 / 5040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p * r + c;
    }
    // 2^k assembled from its exponent bits; k + 1023 ∈ [1, 1023] here, and the shift drops the
    // constant's own bits.
    p * f64::from_bits(shifted.to_bits().wrapping_add(1023) << 52)
}

/// F_latt for a runtime-chosen shape (tests and one-off evaluations; the kernel is generic).
pub fn lattice_factor(shape: Shape, h: Vec3, n: Vec3) -> LatticeGradient {
    let h0 = nearest_index(h);
    match shape {
        Shape::Square => SquareShape::gradient(h, h0, n),
        Shape::Round => RoundShape::gradient(h, h0, n),
        Shape::Gauss => GaussShape::gradient(h, h0, n),
        Shape::Tophat => TophatShape::gradient(h, h0, n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd_check(shape: Shape, h: Vec3, n: Vec3) {
        let g = lattice_factor(shape, h, n);
        let eps = 1e-6;
        for i in 0..3 {
            let (mut hp, mut hm, mut np, mut nm) = (h, h, n, n);
            hp[i] += eps;
            hm[i] -= eps;
            np[i] += eps;
            nm[i] -= eps;
            let fdh = (lattice_factor(shape, hp, n).value - lattice_factor(shape, hm, n).value)
                / (2.0 * eps);
            let fdn = (lattice_factor(shape, h, np).value - lattice_factor(shape, h, nm).value)
                / (2.0 * eps);
            let tol = 1e-6 * (1.0 + g.value.abs() * n[0] * n[1] * n[2]);
            assert!(
                (fdh - g.d_h[i]).abs() < tol,
                "{shape:?} d_h[{i}] fd {fdh} an {}",
                g.d_h[i]
            );
            assert!(
                (fdn - g.d_n[i]).abs() < tol,
                "{shape:?} d_n[{i}] fd {fdn} an {}",
                g.d_n[i]
            );
        }
        let value = match shape {
            Shape::Square => SquareShape::value(h, nearest_index(h), n),
            Shape::Round => RoundShape::value(h, nearest_index(h), n),
            Shape::Gauss => GaussShape::value(h, nearest_index(h), n),
            Shape::Tophat => TophatShape::value(h, nearest_index(h), n),
        };
        assert!((value - g.value).abs() <= 1e-14 * value.abs());
    }

    #[test]
    fn gradients_match_central_differences() {
        for shape in [Shape::Square, Shape::Round, Shape::Gauss] {
            fd_check(shape, [2.03, -1.1, 0.97], [5.0, 6.0, 7.0]);
            fd_check(shape, [0.2, 3.45, -4.02], [10.0, 4.0, 8.0]);
        }
        fd_check(Shape::Round, [1.0 + 1e-4, 2.0, -3.0 + 2e-4], [8.0; 3]);
        // Closer to the peak the value's own cancellation defeats differences; use sinc3 ≈ 1 − x²/10:
        // ∂L/∂h_i = −V·norm·π²·N_i²·Δ_i/5.
        let (h, n) = ([1.0 + 1e-5, 2.0, -3.0 + 2e-5], [8.0; 3]);
        let g = lattice_factor(Shape::Round, h, n);
        let want = -512.0 * ROUND_NORM * PI * PI * 64.0 * 2e-5 / 5.0;
        assert!(
            (g.d_h[2] - want).abs() < 1e-6 * want.abs(),
            "{} vs {want}",
            g.d_h[2]
        );
        fd_check(Shape::Tophat, [2.03, -1.1, 0.97], [5.0, 6.0, 7.0]);
    }

    #[test]
    fn closed_forms_at_special_points() {
        // At an integer index every shape peaks at Na·Nb·Nc (ROUND times its normalisation).
        let n = [5.0, 6.0, 7.0];
        assert!((lattice_factor(Shape::Square, [0.0; 3], n).value - 210.0).abs() < 1e-12);
        // Near h = 2 the Dirichlet kernel is sin(Nπδ)/sin(πδ) with δ = h − 2 (N − 1 even: no sign flip).
        let d: f64 = 0.01;
        let want = (5.0 * PI * d).sin() / (PI * d).sin();
        assert!(
            (lattice_factor(Shape::Square, [2.0 + d, 0.0, 0.0], [5.0, 1.0, 1.0]).value - want)
                .abs()
                < 1e-9 * want
        );
        assert_eq!(
            lattice_factor(Shape::Gauss, [1.0, 2.0, 3.0], n).value,
            210.0
        );
        assert!(
            (lattice_factor(Shape::Round, [1.0; 3], n).value - 210.0 * ROUND_NORM).abs() < 1e-12
        );
        // SQUARE vanishes at h = 1/N; TOPHAT cuts at hrad = 0.63.
        assert!(
            lattice_factor(Shape::Square, [0.2, 0.0, 0.0], [5.0, 1.0, 1.0])
                .value
                .abs()
                < 1e-15
        );
        assert_eq!(
            lattice_factor(Shape::Tophat, [0.1259, 0.0, 0.0], [5.0, 1.0, 1.0]).value,
            5.0
        );
        assert_eq!(
            lattice_factor(Shape::Tophat, [0.1261, 0.0, 0.0], [5.0, 1.0, 1.0]).value,
            0.0
        );
    }

    #[test]
    fn fast_exp_is_within_two_ulp() {
        let mut worst = 0.0f64;
        for i in 0..200_000 {
            let x = -(i as f64) * 0.0035 - 1e-9 * i as f64;
            let (a, b) = (exp_nonpositive(x), x.exp());
            if b > 1e-300 {
                worst = worst.max((a - b).abs() / b);
            }
        }
        assert!(worst <= 2.0 * f64::EPSILON, "{worst:e}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-1e4), exp_nonpositive(-708.0));
    }

    #[test]
    fn fast_ceil_matches_std() {
        for x in [
            -2.5,
            -2.0,
            -1.7,
            -0.5,
            -0.0,
            0.0,
            0.3,
            0.5,
            1.0,
            1.0000001,
            2.5,
            1e12 + 0.5,
        ] {
            assert_eq!(ceil_small(x), x.ceil(), "{x}");
        }
    }

    #[test]
    fn halves_round_down() {
        assert_eq!(nearest_index([0.5, -0.5, 1.49]), [0.0, -1.0, 1.0]);
    }
}
