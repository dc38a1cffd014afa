//! SMV ("Super Marty View") images as nanoBragg writes them: a 512-byte ASCII header, then unsigned
//! 16-bit little-endian pixels, row-major slow·n_fast + fast.
//!
//! In: pixel values and the geometry to describe in the header. Out: the file's bytes, and the
//! autoscaled integer image nanoBragg writes to `-intfile`. Guarantees: header keys and units as
//! nanoBragg's (mm, Å), padded with spaces to exactly 512 bytes; integer values are clamped to 0..65535.

use crate::physics::geometry::detector::Panel;

/// Header fields beyond the pixel counts.
#[derive(Debug, Clone, PartialEq)]
pub struct SmvHeader {
    /// Pixel size, mm.
    pub pixel_mm: f64,
    /// Distance, mm.
    pub distance_mm: f64,
    /// Wavelength, Å.
    pub wavelength_a: f64,
    /// MOSFLM beam centre (Xbeam, Ybeam), mm.
    pub beam_center_mm: [f64; 2],
}

/// Encode `pixels` (n_fast × n_slow) with a 512-byte header.
pub fn encode(panel: &Panel, header: &SmvHeader, pixels: &[u16]) -> Vec<u8> {
    let o = panel.dials_origin_mm();
    let text = format!(
        "{{\nHEADER_BYTES=512;\nDIM=2;\nBYTE_ORDER=little_endian;\nTYPE=unsigned_short;\nSIZE1={};\nSIZE2={};\n\
         PIXEL_SIZE={};\nDISTANCE={};\nWAVELENGTH={};\nBEAM_CENTER_X={};\nBEAM_CENTER_Y={};\n\
         MOSFLM_CENTER_X={};\nMOSFLM_CENTER_Y={};\nDIALS_ORIGIN={},{},{}\nCLOSE_DISTANCE={};\n\
         PHI=0;\nOSC_START=0;\nOSC_RANGE=0;\nTWOTHETA=0;\nDETECTOR_SN=000;\nBEAMLINE=fake;\n}}",
        panel.n_fast,
        panel.n_slow,
        header.pixel_mm,
        header.distance_mm,
        header.wavelength_a,
        header.beam_center_mm[0],
        header.beam_center_mm[1],
        header.beam_center_mm[0],
        header.beam_center_mm[1],
        o[0],
        o[1],
        o[2],
        panel.close_distance_m() * 1e3,
    );
    let mut bytes = text.into_bytes();
    bytes.resize(512, b' ');
    bytes.extend(pixels.iter().flat_map(|v| v.to_le_bytes()));
    bytes
}

/// nanoBragg's noiseless integer image: value·scale + adc, rounded, clamped; scale 0 = 55000/max.
pub fn integer_image(image: &[f64], scale: f64, adc_offset: f64) -> Vec<u16> {
    let max = image.iter().copied().fold(0.0, f64::max);
    let s = if scale > 0.0 {
        scale
    } else if max > 0.0 {
        55000.0 / max
    } else {
        1.0
    };
    image
        .iter()
        .map(|&v| (v * s + adc_offset).round().clamp(0.0, 65535.0) as u16)
        .collect()
}
