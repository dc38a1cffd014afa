//! The unit cell: lengths (Angstrom) and angles (degrees) in, the PDB/CCTBX orthogonalization
//! (a along x, b in the xy plane), fractionalization, and reciprocal-space metric out.
//! Guarantees: `fractionalize(orthogonalize(x)) == x` to rounding; `stol_sq(h) = 1/(4 d(h)^2)`.

/// A unit cell with its derived matrices.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnitCell {
    /// a, b, c in Angstrom.
    pub lengths: [f64; 3],
    /// alpha, beta, gamma in degrees.
    pub angles_deg: [f64; 3],
    /// Orthogonalization matrix O: cartesian = O . fractional.
    pub orthogonalization: [[f64; 3]; 3],
    /// Fractionalization matrix F = O^-1.
    pub fractionalization: [[f64; 3]; 3],
}

/// A cell that does not span space.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("degenerate unit cell {lengths:?} {angles_deg:?}")]
pub struct CellError {
    /// a, b, c.
    pub lengths: [f64; 3],
    /// alpha, beta, gamma.
    pub angles_deg: [f64; 3],
}

impl UnitCell {
    /// Build a cell from a, b, c (Angstrom) and alpha, beta, gamma (degrees).
    pub fn new(lengths: [f64; 3], angles_deg: [f64; 3]) -> Result<Self, CellError> {
        let [a, b, c] = lengths;
        let [ca, cb, cg] = angles_deg.map(|x| x.to_radians().cos());
        let sg = angles_deg[2].to_radians().sin();
        let volume_factor = 1.0 - ca * ca - cb * cb - cg * cg + 2.0 * ca * cb * cg;
        if volume_factor <= 0.0
            || lengths.iter().any(|&l| l.is_nan() || l <= 0.0)
            || sg.abs() < 1e-12
        {
            return Err(CellError {
                lengths,
                angles_deg,
            });
        }
        let volume = a * b * c * volume_factor.sqrt();
        let o = [
            [a, b * cg, c * cb],
            [0.0, b * sg, c * (ca - cb * cg) / sg],
            [0.0, 0.0, volume / (a * b * sg)],
        ];
        Ok(Self {
            lengths,
            angles_deg,
            orthogonalization: o,
            fractionalization: invert_upper(o),
        })
    }

    /// Cell volume in Angstrom^3.
    pub fn volume(&self) -> f64 {
        let o = self.orthogonalization;
        o[0][0] * o[1][1] * o[2][2]
    }

    /// Fractional coordinates of a cartesian position (Angstrom).
    pub fn fractionalize(&self, cart: [f64; 3]) -> [f64; 3] {
        mat_vec(&self.fractionalization, cart)
    }

    /// Cartesian position (Angstrom) of fractional coordinates.
    pub fn orthogonalize(&self, frac: [f64; 3]) -> [f64; 3] {
        mat_vec(&self.orthogonalization, frac)
    }

    /// The reciprocal vector of Miller index `h` in cartesian 1/Angstrom: F^T h.
    pub fn reciprocal_cartesian(&self, h: [f64; 3]) -> [f64; 3] {
        let f = &self.fractionalization;
        std::array::from_fn(|i| (0..3).map(|k| f[k][i] * h[k]).sum())
    }

    /// (sin(theta)/lambda)^2 = |h*|^2 / 4 in 1/Angstrom^2.
    pub fn stol_sq(&self, h: [i32; 3]) -> f64 {
        let s = self.reciprocal_cartesian(h.map(f64::from));
        (s[0] * s[0] + s[1] * s[1] + s[2] * s[2]) / 4.0
    }

    /// Resolution d(h) = 1/|h*| in Angstrom.
    pub fn d_spacing(&self, h: [i32; 3]) -> f64 {
        0.5 / self.stol_sq(h).sqrt()
    }
}

/// Matrix times vector.
pub(crate) fn mat_vec(m: &[[f64; 3]; 3], v: [f64; 3]) -> [f64; 3] {
    std::array::from_fn(|i| m[i][0] * v[0] + m[i][1] * v[1] + m[i][2] * v[2])
}

/// Inverse of an upper-triangular matrix with non-zero diagonal.
fn invert_upper(o: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let (a, b, c) = (o[0][0], o[1][1], o[2][2]);
    [
        [
            1.0 / a,
            -o[0][1] / (a * b),
            (o[0][1] * o[1][2] - o[0][2] * b) / (a * b * c),
        ],
        [0.0, 1.0 / b, -o[1][2] / (b * c)],
        [0.0, 0.0, 1.0 / c],
    ]
}
