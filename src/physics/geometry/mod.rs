//! Lab-frame geometry: 3-vectors and 3×3 matrices as plain arrays, detector panels and rotations.
//!
//! In: nothing but numbers. Out: small value types (`Vec3`, `Mat3`, row-major) and the handful of
//! operations the pixel model needs. Guarantees: no allocation, all functions are `#[inline]` and pure,
//! so the spot kernel can use them in its innermost loop.

pub mod detector;
pub mod rotation;

/// A lab-frame 3-vector (metres, m⁻¹ or unitless, as documented at each use).
pub type Vec3 = [f64; 3];
/// A row-major 3×3 matrix: `m[row][col]`.
pub type Mat3 = [[f64; 3]; 3];

/// The 3×3 identity.
pub const IDENTITY: Mat3 = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];

/// Dot product.
#[inline]
pub fn dot(a: Vec3, b: Vec3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// Cross product a × b.
#[inline]
pub fn cross(a: Vec3, b: Vec3) -> Vec3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

/// Euclidean length.
#[inline]
pub fn norm(a: Vec3) -> f64 {
    dot(a, a).sqrt()
}

/// a scaled by s.
#[inline]
pub fn scale(a: Vec3, s: f64) -> Vec3 {
    [a[0] * s, a[1] * s, a[2] * s]
}

/// a + b.
#[inline]
pub fn add(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

/// a − b.
#[inline]
pub fn sub(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

/// a / |a|; the zero vector stays zero (callers treat it as "undefined direction").
#[inline]
pub fn unit(a: Vec3) -> Vec3 {
    let n = norm(a);
    if n > 0.0 { scale(a, 1.0 / n) } else { a }
}

/// Matrix–vector product m·v.
#[inline]
pub fn mat_vec(m: &Mat3, v: Vec3) -> Vec3 {
    [dot(m[0], v), dot(m[1], v), dot(m[2], v)]
}

/// Matrix product a·b.
pub fn mat_mul(a: &Mat3, b: &Mat3) -> Mat3 {
    let mut out = [[0.0; 3]; 3];
    for (i, row) in out.iter_mut().enumerate() {
        for (j, cell) in row.iter_mut().enumerate() {
            *cell = a[i][0] * b[0][j] + a[i][1] * b[1][j] + a[i][2] * b[2][j];
        }
    }
    out
}

/// Transpose.
pub fn transpose(m: &Mat3) -> Mat3 {
    [
        [m[0][0], m[1][0], m[2][0]],
        [m[0][1], m[1][1], m[2][1]],
        [m[0][2], m[1][2], m[2][2]],
    ]
}

/// Frobenius inner product Σ a_ij b_ij (how a matrix-valued gradient meets a matrix tangent).
pub fn frobenius(a: &Mat3, b: &Mat3) -> f64 {
    (0..3).map(|i| dot(a[i], b[i])).sum()
}

/// The cross-product matrix [v]× with [v]× w = v × w.
pub fn skew(v: Vec3) -> Mat3 {
    [[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]]
}
