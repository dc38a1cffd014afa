//! nanoBragg's `-hkl` structure-factor table: text `h k l F`, looked up at the nearest integer index.
//!
//! In: the file's text (and its name, for errors). Out: an `HklTable` implementing `StructureFactorSq`.
//! Guarantees: a dense grid over the per-axis [min, max] box of the file, filled with default_F where the
//! file has no entry; indices outside the box give default_F; no symmetry (not even Friedel), as
//! nanoBragg. Malformed lines are errors naming file and line; blank lines and `#` comments are skipped.

use crate::physics::geometry::Vec3;
use crate::physics::spot::StructureFactorSq;
use thiserror::Error;

/// Why an HKL file was refused.
#[derive(Debug, Error, PartialEq)]
pub enum HklError {
    /// A line that is not `h k l F`.
    #[error("{file}:{line}: expected `h k l F` (integers h k l, number F), got `{text}`")]
    BadLine {
        /// File name.
        file: String,
        /// 1-based line.
        line: usize,
        /// The line.
        text: String,
    },
    /// No reflections at all.
    #[error("{0}: no reflections")]
    Empty(String),
    /// The index box is too large to hold densely.
    #[error("{file}: index box {size:?} is too large")]
    TooLarge {
        /// File name.
        file: String,
        /// Box size.
        size: [usize; 3],
    },
}

/// A dense |F|² grid over the file's index box.
#[derive(Debug, Clone, PartialEq)]
pub struct HklTable {
    min: [i64; 3],
    size: [usize; 3],
    fsq: Vec<f64>,
    default_fsq: f64,
    /// Number of data lines read.
    pub n_lines: usize,
}

fn parse_line(s: &str) -> Option<([i64; 3], f64)> {
    let mut it = s.split_whitespace();
    let mut hkl = [0i64; 3];
    for slot in &mut hkl {
        let v: f64 = it.next()?.parse().ok()?;
        if v.fract() != 0.0 || !v.is_finite() {
            return None;
        }
        *slot = v as i64;
    }
    let f: f64 = it.next()?.parse().ok()?;
    if it.next().is_some() || !f.is_finite() {
        return None;
    }
    Some((hkl, f))
}

impl HklTable {
    /// Parse `text` (from `file`), with `default_f` outside and between the listed indices.
    pub fn parse(file: &str, text: &str, default_f: f64) -> Result<Self, HklError> {
        let mut rows = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let row = parse_line(t).ok_or_else(|| HklError::BadLine {
                file: file.into(),
                line: n + 1,
                text: t.into(),
            })?;
            rows.push(row);
        }
        if rows.is_empty() {
            return Err(HklError::Empty(file.into()));
        }
        let mut min = [i64::MAX; 3];
        let mut max = [i64::MIN; 3];
        for (hkl, _) in &rows {
            for a in 0..3 {
                min[a] = min[a].min(hkl[a]);
                max[a] = max[a].max(hkl[a]);
            }
        }
        let size = [0, 1, 2].map(|a| (max[a] - min[a] + 1) as usize);
        if size.iter().product::<usize>() > 1 << 28 {
            return Err(HklError::TooLarge {
                file: file.into(),
                size,
            });
        }
        let default_fsq = default_f * default_f;
        let mut fsq = vec![default_fsq; size.iter().product()];
        for (hkl, f) in &rows {
            let i = Self::offset(min, size, *hkl);
            fsq[i] = f * f;
        }
        Ok(Self {
            min,
            size,
            fsq,
            default_fsq,
            n_lines: rows.len(),
        })
    }

    fn offset(min: [i64; 3], size: [usize; 3], hkl: [i64; 3]) -> usize {
        let [h, k, l] = [0, 1, 2].map(|a| (hkl[a] - min[a]) as usize);
        (h * size[1] + k) * size[2] + l
    }

    /// F at integer index `hkl` (default_F outside the box).
    pub fn f(&self, hkl: [i64; 3]) -> f64 {
        self.fsq(hkl.map(|v| v as f64), 0).sqrt()
    }
}

impl StructureFactorSq for HklTable {
    #[inline]
    fn fsq(&self, h0: Vec3, _channel: usize) -> f64 {
        let mut idx = [0usize; 3];
        for a in 0..3 {
            let rel = h0[a] - self.min[a] as f64;
            if rel < 0.0 || rel >= self.size[a] as f64 {
                return self.default_fsq;
            }
            idx[a] = rel as usize;
        }
        self.fsq[(idx[0] * self.size[1] + idx[1]) * self.size[2] + idx[2]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_inside_outside_and_missing() {
        let t = HklTable::parse("t.hkl", "0 0 0 5\n1 2 3 7\n\n# c\n-1 0 1 2\n", 3.0).unwrap();
        assert_eq!(t.f([1, 2, 3]), 7.0);
        assert_eq!(t.f([-1, 0, 1]), 2.0);
        assert_eq!(t.f([0, 1, 1]), 3.0); // inside the box, not listed
        assert_eq!(t.f([5, 0, 0]), 3.0); // outside
        assert_eq!(t.f([1, -2, -3]), 3.0); // no Friedel symmetry
        assert_eq!(t.n_lines, 3);
    }

    #[test]
    fn bad_line_names_file_and_line() {
        let e = HklTable::parse("x.hkl", "0 0 0 1\n1 2 three 4\n", 0.0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.hkl:2: expected `h k l F` (integers h k l, number F), got `1 2 three 4`"
        );
    }
}
