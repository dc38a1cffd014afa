//! Rotations: the exponential map of a rotation vector (the small-angle latents of the VI model)
//! with its exact Jacobian, and the fixed-axis rotations of nanoBragg's `-misset`.
//!
//! In: a rotation vector v (radians, axis·angle) or three angles. Out: proper rotation matrices and
//! ∂R/∂v_i. Guarantees: R(v) is orthonormal to rounding for any v; the Jacobian is exact (closed
//! form of Gallego & Yezzi 2015), with a first-order limit below 1e-7 rad where the closed form loses
//! digits to cancellation.

use super::{IDENTITY, Mat3, Vec3, cross, dot, mat_mul, skew, sub};

/// Below this angle (rad) the closed-form Jacobian divides tiny by tiny; use its limit.
const SMALL_ANGLE: f64 = 1e-7;

/// R = exp([v]×) by Rodrigues' formula.
pub fn rotation_from_vector(v: Vec3) -> Mat3 {
    let theta2 = dot(v, v);
    let theta = theta2.sqrt();
    // Series for small angles keeps sinθ/θ and (1−cosθ)/θ² accurate.
    let (a, b) = if theta < 1e-4 {
        (1.0 - theta2 / 6.0, 0.5 - theta2 / 24.0)
    } else {
        (theta.sin() / theta, (1.0 - theta.cos()) / theta2)
    };
    let k = skew(v);
    let k2 = mat_mul(&k, &k);
    let mut r = IDENTITY;
    for i in 0..3 {
        for j in 0..3 {
            r[i][j] += a * k[i][j] + b * k2[i][j];
        }
    }
    r
}

/// R(v) and the three matrices ∂R/∂v_i.
pub fn rotation_jacobian(v: Vec3) -> (Mat3, [Mat3; 3]) {
    let r = rotation_from_vector(v);
    let theta2 = dot(v, v);
    let mut d = [[[0.0; 3]; 3]; 3];
    for (i, di) in d.iter_mut().enumerate() {
        let mut e = [0.0; 3];
        e[i] = 1.0;
        let tangent = if theta2.sqrt() < SMALL_ANGLE {
            skew(e)
        } else {
            // ∂R/∂v_i = (v_i [v]× + [v × (I − R) e_i]×) R / |v|²
            let r_col = [r[0][i], r[1][i], r[2][i]];
            let w = cross(v, sub(e, r_col));
            let kv = skew(v);
            let kw = skew(w);
            let mut t = [[0.0; 3]; 3];
            for a in 0..3 {
                for b in 0..3 {
                    t[a][b] = (v[i] * kv[a][b] + kw[a][b]) / theta2;
                }
            }
            t
        };
        *di = mat_mul(&tangent, &r);
    }
    (r, d)
}

/// Right-handed rotation by `angle` (rad) about lab axis `axis` (0 = x, 1 = y, 2 = z).
pub fn axis_rotation(axis: usize, angle: f64) -> Mat3 {
    let (s, c) = angle.sin_cos();
    match axis {
        0 => [[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]],
        1 => [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]],
        _ => [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]],
    }
}

/// nanoBragg's `-misset m1 m2 m3` (degrees): Rz(m3)·Ry(m2)·Rx(m1), x applied first.
pub fn misset_rotation(misset_deg: Vec3) -> Mat3 {
    let rx = axis_rotation(0, misset_deg[0].to_radians());
    let ry = axis_rotation(1, misset_deg[1].to_radians());
    let rz = axis_rotation(2, misset_deg[2].to_radians());
    mat_mul(&rz, &mat_mul(&ry, &rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd_check(v: Vec3) {
        let (_, d) = rotation_jacobian(v);
        let h = 1e-6;
        for i in 0..3 {
            let mut vp = v;
            let mut vm = v;
            vp[i] += h;
            vm[i] -= h;
            let rp = rotation_from_vector(vp);
            let rm = rotation_from_vector(vm);
            for a in 0..3 {
                for b in 0..3 {
                    let fd = (rp[a][b] - rm[a][b]) / (2.0 * h);
                    assert!(
                        (fd - d[i][a][b]).abs() < 1e-8,
                        "v={v:?} i={i} fd={fd} an={}",
                        d[i][a][b]
                    );
                }
            }
        }
    }

    #[test]
    fn jacobian_matches_central_differences() {
        fd_check([0.3, -0.2, 0.5]);
        fd_check([0.01, 0.002, -0.004]);
        fd_check([0.0, 0.0, 0.0]);
        fd_check([1e-9, 0.0, 2e-9]);
    }

    #[test]
    fn rodrigues_matches_axis_rotation() {
        let r = rotation_from_vector([0.0, 0.7, 0.0]);
        let y = axis_rotation(1, 0.7);
        for a in 0..3 {
            for b in 0..3 {
                assert!((r[a][b] - y[a][b]).abs() < 1e-15);
            }
        }
    }

    #[test]
    fn misset_matches_oracle_matrix() {
        // misset_rotation_matrix of oracle case square_mono (misset 10 20 30).
        let want = [
            [
                0.8137976813493738,
                -0.44096961052988237,
                0.37852230636979245,
            ],
            [
                0.46984631039295416,
                0.8825641192593856,
                0.018028311236297247,
            ],
            [-0.3420201433256687, 0.16317591116653482, 0.9254165783983234],
        ];
        let r = misset_rotation([10.0, 20.0, 30.0]);
        for a in 0..3 {
            for b in 0..3 {
                assert!((r[a][b] - want[a][b]).abs() < 1e-15);
            }
        }
    }
}
