//! Detector panels: where each pixel (and sub-pixel) sits in the lab, and the solid angle it subtends.
//!
//! In: a panel as DIALS gives it (origin of the first pixel's outer corner, fast and slow unit axes,
//! pixel size, pixel counts; mm) or nanoBragg's MOSFLM convention with the BEAM pivot (distance, pixel
//! size, beam centre). Out: a `Panel` in metres. Guarantees: pixel (slow s, fast f) at sub-pixel
//! (js, jf) of an n×n grid sits at origin + ((f·n+jf+½)/n)·p_f·f̂ + ((s·n+js+½)/n)·p_s·ŝ, exactly
//! nanoBragg's Fdet/Sdet; the solid angle includes the obliquity factor close_distance/R.

use super::{Vec3, add, cross, dot, norm, scale, unit};
use thiserror::Error;

/// Why a panel description was refused.
#[derive(Debug, Error, PartialEq)]
pub enum DetectorError {
    /// A pixel size, distance or pixel count that must be positive was not.
    #[error("detector field `{field}` must be positive, got {value}")]
    NotPositive {
        /// The field's name as the user wrote it.
        field: &'static str,
        /// The value given.
        value: f64,
    },
    /// The fast and slow axes are not orthonormal.
    #[error("detector fast/slow axes must be orthogonal unit vectors (fast·slow = {dot})")]
    BadAxes {
        /// fast·slow of the given axes.
        dot: f64,
    },
}

/// One flat detector panel, all lengths in metres.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// Outer corner of pixel (0,0) (nanoBragg's pix0, DIALS' origin), m.
    pub origin_m: Vec3,
    /// Unit vector along increasing fast index.
    pub fast: Vec3,
    /// Unit vector along increasing slow index.
    pub slow: Vec3,
    /// Pixel size along fast and slow, m.
    pub pixel_size_m: [f64; 2],
    /// Number of pixels along fast.
    pub n_fast: usize,
    /// Number of pixels along slow.
    pub n_slow: usize,
}

/// nanoBragg's MOSFLM-convention detector with the BEAM pivot and no detector rotation.
#[derive(Debug, Clone, PartialEq)]
pub struct MosflmDetector {
    /// Sample-to-detector distance along the beam, mm.
    pub distance_mm: f64,
    /// Square pixel size, mm.
    pub pixel_mm: f64,
    /// Pixels along fast.
    pub n_fast: usize,
    /// Pixels along slow.
    pub n_slow: usize,
    /// MOSFLM Xbeam (along slow), mm; `None` = nanoBragg's default (detsize_s + pixel)/2.
    pub xbeam_mm: Option<f64>,
    /// MOSFLM Ybeam (along fast), mm; `None` = nanoBragg's default (detsize_f + pixel)/2.
    pub ybeam_mm: Option<f64>,
}

fn positive(field: &'static str, value: f64) -> Result<f64, DetectorError> {
    if value > 0.0 && value.is_finite() {
        Ok(value)
    } else {
        Err(DetectorError::NotPositive { field, value })
    }
}

impl Panel {
    /// A panel from DIALS fields: origin (mm), fast/slow axes, pixel size (mm), image size (fast, slow).
    pub fn from_dials(
        origin_mm: Vec3,
        fast_axis: Vec3,
        slow_axis: Vec3,
        pixel_size_mm: [f64; 2],
        image_size: [usize; 2],
    ) -> Result<Self, DetectorError> {
        let fast = unit(fast_axis);
        let slow = unit(slow_axis);
        let d = dot(fast, slow);
        if d.abs() > 1e-6 || norm(fast) == 0.0 || norm(slow) == 0.0 {
            return Err(DetectorError::BadAxes { dot: d });
        }
        positive("pixel_size[0]", pixel_size_mm[0])?;
        positive("pixel_size[1]", pixel_size_mm[1])?;
        positive("image_size[0]", image_size[0] as f64)?;
        positive("image_size[1]", image_size[1] as f64)?;
        Ok(Self {
            origin_m: scale(origin_mm, 1e-3),
            fast,
            slow,
            pixel_size_m: [pixel_size_mm[0] * 1e-3, pixel_size_mm[1] * 1e-3],
            n_fast: image_size[0],
            n_slow: image_size[1],
        })
    }

    /// nanoBragg's MOSFLM/BEAM-pivot panel: f̂ = (0,0,1), ŝ = (0,−1,0), beam along +x.
    pub fn mosflm(spec: &MosflmDetector) -> Result<Self, DetectorError> {
        let p = positive("pixel", spec.pixel_mm)? * 1e-3;
        let distance = positive("distance", spec.distance_mm)? * 1e-3;
        positive("detpixels_f", spec.n_fast as f64)?;
        positive("detpixels_s", spec.n_slow as f64)?;
        let detsize_f = spec.n_fast as f64 * p;
        let detsize_s = spec.n_slow as f64 * p;
        let xbeam = spec.xbeam_mm.map_or((detsize_s + p) / 2.0, |x| x * 1e-3);
        let ybeam = spec.ybeam_mm.map_or((detsize_f + p) / 2.0, |y| y * 1e-3);
        let (fbeam, sbeam) = (ybeam + p / 2.0, xbeam + p / 2.0);
        let fast = [0.0, 0.0, 1.0];
        let slow = [0.0, -1.0, 0.0];
        let beam = [1.0, 0.0, 0.0];
        let origin = add(
            add(scale(fast, -fbeam), scale(slow, -sbeam)),
            scale(beam, distance),
        );
        Ok(Self {
            origin_m: origin,
            fast,
            slow,
            pixel_size_m: [p, p],
            n_fast: spec.n_fast,
            n_slow: spec.n_slow,
        })
    }

    /// Unit normal f̂ × ŝ (points away from the sample for DIALS and MOSFLM panels).
    pub fn normal(&self) -> Vec3 {
        cross(self.fast, self.slow)
    }

    /// Perpendicular sample-to-plane distance origin·n̂, m (nanoBragg's close_distance).
    pub fn close_distance_m(&self) -> f64 {
        dot(self.origin_m, self.normal())
    }

    /// Lab position (m) of sub-pixel (js, jf) of an n×n grid in pixel (slow, fast).
    #[inline]
    pub fn subpixel_position(
        &self,
        slow: usize,
        fast: usize,
        js: usize,
        jf: usize,
        n: usize,
    ) -> Vec3 {
        let nf = n as f64;
        let fdet = ((fast * n + jf) as f64 + 0.5) * self.pixel_size_m[0] / nf;
        let sdet = ((slow * n + js) as f64 + 0.5) * self.pixel_size_m[1] / nf;
        [
            self.origin_m[0] + fdet * self.fast[0] + sdet * self.slow[0],
            self.origin_m[1] + fdet * self.fast[1] + sdet * self.slow[1],
            self.origin_m[2] + fdet * self.fast[2] + sdet * self.slow[2],
        ]
    }

    /// Solid angle (sr) of one pixel seen from the sample at lab position `p` (m), with obliquity.
    #[inline]
    pub fn solid_angle(&self, p: Vec3) -> f64 {
        let r = norm(p);
        self.pixel_size_m[0] * self.pixel_size_m[1] / (r * r) * self.close_distance_m() / r
    }

    /// DIALS origin (mm) in nanoBragg's printout frame: 1000·(pix0_z, pix0_y, −pix0_x).
    pub fn dials_origin_mm(&self) -> Vec3 {
        [
            1e3 * self.origin_m[2],
            1e3 * self.origin_m[1],
            -1e3 * self.origin_m[0],
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case1() -> Panel {
        let spec = MosflmDetector {
            distance_mm: 100.0,
            pixel_mm: 0.1,
            n_fast: 128,
            n_slow: 128,
            xbeam_mm: None,
            ybeam_mm: None,
        };
        Panel::mosflm(&spec).unwrap()
    }

    #[test]
    fn mosflm_pix0_matches_oracle() {
        // pix0 (m) and "dials origin" (mm) printed for oracle case square_mono.
        let p = case1();
        let want = [0.1, 0.0065, -0.0065];
        for (got, want) in p.origin_m.iter().zip(want) {
            assert!((got - want).abs() < 1e-15);
        }
        let d = p.dials_origin_mm();
        let want = [-6.5, 6.5, -100.0];
        for i in 0..3 {
            assert!((d[i] - want[i]).abs() < 1e-12);
        }
        assert!((p.close_distance_m() - 0.1).abs() < 1e-15);
    }

    #[test]
    fn direct_beam_falls_between_pixels_64_and_65() {
        let p = case1();
        let a = p.subpixel_position(64, 64, 1, 1, 2);
        let b = p.subpixel_position(65, 65, 0, 0, 2);
        // the two sub-pixels straddle the beam axis symmetrically
        assert!(
            (a[1] + b[1]).abs() < 1e-15 && (a[2] + b[2]).abs() < 1e-15,
            "{a:?} {b:?}"
        );
    }

    #[test]
    fn bad_panels_are_refused() {
        let e = Panel::from_dials(
            [0.0; 3],
            [1.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [0.1, 0.1],
            [10, 10],
        );
        assert!(matches!(e, Err(DetectorError::BadAxes { .. })));
        let e = Panel::from_dials(
            [0.0; 3],
            [1.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, 0.1],
            [10, 10],
        );
        assert!(matches!(e, Err(DetectorError::NotPositive { .. })));
    }
}
