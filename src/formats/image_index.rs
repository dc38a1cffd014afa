//! The shoeboxes of one image: validating them (once, at load) and reading them again from
//! their `.refl` on demand, so a fit need not hold every image's pixels.
//!
//! In: at load, the decoded shoebox column of a reflection table (via `dataset_dir`); later, an
//! [`ImageLocation`]: the image's used rows as runs of consecutive rows with the byte range of
//! their shoebox records, the file offset of the `miller_index` values, the file length, and a
//! checksum of what was validated. Out: [`ImageShoeboxes`] (shoeboxes with hkl, panel, bbox;
//! counts with unusable pixels zeroed; use flags), the same values the load produced.
//! Guarantees: [`read_shoeboxes`] gives back bit for bit what was validated at load or a
//! [`DataError::Changed`] naming the file (its length, a row's pixels or the checksum over every
//! used shoebox's panel, bbox, Miller index, counts and mask differ), never different data or a
//! panic; the pixel tally is not counted again; one buffer per run, no allocation per pixel.

use super::dataset_dir::{Counts, DataError, ShoeboxObs};
use super::refl::{ShoeboxColumn, ShoeboxRef, mask_bits};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Consecutive used rows of one image whose shoebox records are contiguous in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct RowRun {
    /// The first row.
    pub first_row: usize,
    /// How many rows.
    pub rows: usize,
    /// File offset of the first row's shoebox record.
    pub shoebox_at: u64,
    /// Bytes of the records of all rows of the run.
    pub shoebox_len: u64,
}

/// Where an image's used shoeboxes sit in its reflection table.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImageLocation {
    /// The `.refl` file (shared by the images of one file).
    pub reflections: Arc<PathBuf>,
    /// Its length at load.
    pub file_len: u64,
    /// File offset of the `miller_index` column's values (12 bytes per row).
    pub hkl_at: u64,
    /// The used rows, in row order.
    pub runs: Vec<RowRun>,
    /// Used shoeboxes.
    pub shoeboxes: usize,
    /// Pixels of the used shoeboxes (used or not).
    pub pixels: usize,
    /// [`ImageShoeboxes::checksum`] at load.
    pub checksum: u64,
    /// Trusted range (lowest, highest valid count, inclusive as in dxtbx) of each panel of the
    /// image's detector: counts outside it (overloads) are not used.
    pub trusted_ranges: Vec<[f64; 2]>,
}

impl ImageLocation {
    /// Adds used row `row`, whose record is `len` bytes at file offset `at`.
    pub(super) fn push_row(&mut self, row: usize, at: u64, len: u64) {
        match self.runs.last_mut() {
            Some(run)
                if run.first_row + run.rows == row && run.shoebox_at + run.shoebox_len == at =>
            {
                run.rows += 1;
                run.shoebox_len += len;
            }
            _ => self.runs.push(RowRun {
                first_row: row,
                rows: 1,
                shoebox_at: at,
                shoebox_len: len,
            }),
        }
    }
}

/// The used shoeboxes of one image and their pixels (dense over each bbox, with a use flag).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageShoeboxes {
    /// Shoeboxes with their Miller indices and pixel offsets.
    pub shoeboxes: Vec<ShoeboxObs>,
    /// Counts of all shoeboxes, concatenated (C order z, y, x inside each); 0 where unused.
    pub counts: Vec<f32>,
    /// True for pixels to use: mask VALID bit set and a finite, non-negative count inside the
    /// panel's trusted range.
    pub use_pixel: Vec<bool>,
    /// FNV-1a over every used shoebox's panel, bbox, hkl, raw counts and mask.
    pub checksum: u64,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

impl ImageShoeboxes {
    /// Empty arenas with room for `shoeboxes` boxes of `pixels` pixels in all.
    pub fn with_capacity(shoeboxes: usize, pixels: usize) -> Self {
        ImageShoeboxes {
            shoeboxes: Vec::with_capacity(shoeboxes),
            counts: Vec::with_capacity(pixels),
            use_pixel: Vec::with_capacity(pixels),
            checksum: FNV_OFFSET,
        }
    }

    fn mix(&mut self, word: u32) {
        self.checksum = (self.checksum ^ u64::from(word)).wrapping_mul(FNV_PRIME);
    }

    fn mix_shoebox(&mut self, sb: &ShoeboxRef<'_>, hkl: [i32; 3]) {
        self.mix(sb.header.panel);
        for v in sb.header.bbox.iter().chain(&hkl) {
            self.mix(u32::from_le_bytes(v.to_le_bytes()));
        }
        for (&count, &mask) in sb.data.iter().zip(sb.mask) {
            self.mix(count.to_bits());
            self.mix(u32::from(mask));
        }
    }
}

/// Why pixels of one shoebox were left out.
#[derive(Default)]
struct PixelTally {
    masked: u64,
    nan: u64,
    negative: u64,
    untrusted: u64,
}

impl PixelTally {
    /// True when the pixel is used; otherwise counts it under its reason.
    fn keep(&mut self, count: f32, mask: u8, [low, high]: [f64; 2]) -> bool {
        let value = f64::from(count);
        let reason = if mask & mask_bits::VALID == 0 {
            &mut self.masked
        } else if !count.is_finite() {
            &mut self.nan
        } else if count < 0.0 {
            &mut self.negative
        } else if !(low..=high).contains(&value) {
            &mut self.untrusted
        } else {
            return true;
        };
        *reason += 1;
        false
    }

    fn skipped(&self) -> u64 {
        self.masked + self.nan + self.negative + self.untrusted
    }
}

/// Copies shoebox `sb` of row `row` into `out` (its background into `background`, if given)
/// and counts its pixels; returns the reason when the shoebox is skipped. `trusted_ranges`
/// holds the trusted range of each panel of the detector.
pub(super) fn add_shoebox(
    out: &mut ImageShoeboxes,
    background: Option<&mut Vec<f32>>,
    sb: Option<ShoeboxRef<'_>>,
    (row, hkl): (usize, [i32; 3]),
    trusted_ranges: &[[f64; 2]],
    pixels: &mut Counts,
) -> Option<&'static str> {
    let Some(sb) = sb.filter(|sb| sb.header.version != 0 && !sb.data.is_empty()) else {
        return Some("no pixels");
    };
    let Some(&trusted) = trusted_ranges.get(sb.header.panel as usize) else {
        return Some("panel not in detector");
    };
    let mut tally = PixelTally::default();
    let start = out.counts.len();
    for (&count, &mask) in sb.data.iter().zip(sb.mask) {
        let usable = tally.keep(count, mask, trusted);
        out.counts.push(if usable { count } else { 0.0 });
        out.use_pixel.push(usable);
    }
    let total = sb.data.len() as u64;
    if tally.skipped() == total {
        out.counts.truncate(start);
        out.use_pixel.truncate(start);
        pixels.skip("in a shoebox with no usable pixel", total);
        return Some("every pixel masked, NaN, negative or untrusted");
    }
    if let Some(b) = background {
        b.extend_from_slice(sb.background);
    }
    pixels.used += total - tally.skipped();
    pixels.skip("masked (mask lacks VALID)", tally.masked);
    pixels.skip("NaN or infinite count", tally.nan);
    pixels.skip("negative count", tally.negative);
    pixels.skip(
        "outside the panel's trusted_range (an overload)",
        tally.untrusted,
    );
    out.mix_shoebox(&sb, hkl);
    out.shoeboxes.push(ShoeboxObs {
        row,
        panel: sb.header.panel,
        bbox: sb.header.bbox,
        miller_index: hkl,
        offset: start,
    });
    None
}

fn changed(path: &Path, detail: String) -> DataError {
    DataError::Changed {
        path: path.to_path_buf(),
        detail,
    }
}

/// Reads `len` bytes at `at` of `file` into `buf`.
fn read_at(
    file: &mut std::fs::File,
    path: &Path,
    at: u64,
    len: u64,
    buf: &mut Vec<u8>,
) -> Result<(), DataError> {
    let io = |source| DataError::Read {
        path: path.to_path_buf(),
        source,
    };
    let len = usize::try_from(len).map_err(|_| changed(path, format!("{len} bytes at {at}")))?;
    buf.clear();
    buf.resize(len, 0);
    file.seek(SeekFrom::Start(at)).map_err(io)?;
    file.read_exact(buf).map_err(io)
}

/// The Miller index of row `k` of 12-byte little-endian (h, k, l) values.
fn hkl_of(bytes: &[u8], k: usize) -> [i32; 3] {
    let mut hkl = [0i32; 3];
    for (i, v) in hkl.iter_mut().enumerate() {
        let at = 12 * k + 4 * i;
        let mut w = [0u8; 4];
        w.copy_from_slice(&bytes[at..at + 4]);
        *v = i32::from_le_bytes(w);
    }
    hkl
}

/// Reads one run's shoeboxes into `out`.
fn read_run(
    file: &mut std::fs::File,
    loc: &ImageLocation,
    run: &RowRun,
    out: &mut ImageShoeboxes,
    buf: &mut Vec<u8>,
) -> Result<(), DataError> {
    let path = loc.reflections.as_path();
    read_at(file, path, run.shoebox_at, run.shoebox_len, buf)?;
    let column = ShoeboxColumn::decode(buf, run.rows, path)
        .map_err(|e| changed(path, format!("rows {}..: {e}", run.first_row)))?;
    let hkl_at = loc.hkl_at + 12 * run.first_row as u64;
    read_at(file, path, hkl_at, 12 * run.rows as u64, buf)?;
    // The pixels were counted at load; this tally is thrown away.
    let mut tally = Counts::default();
    for k in 0..run.rows {
        let row = (run.first_row + k, hkl_of(buf, k));
        if let Some(why) = add_shoebox(
            out,
            None,
            column.get(k),
            row,
            &loc.trusted_ranges,
            &mut tally,
        ) {
            return Err(changed(path, format!("row {}: {why}", row.0)));
        }
    }
    Ok(())
}

/// Reads an image's used shoeboxes again from its `.refl`: exactly what the load validated.
pub fn read_shoeboxes(loc: &ImageLocation) -> Result<ImageShoeboxes, DataError> {
    let path = loc.reflections.as_path();
    let io = |source| DataError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len != loc.file_len {
        return Err(changed(
            path,
            format!("{len} bytes, {} when it was loaded", loc.file_len),
        ));
    }
    let mut out = ImageShoeboxes::with_capacity(loc.shoeboxes, loc.pixels);
    let mut buf = Vec::new();
    for run in &loc.runs {
        read_run(&mut file, loc, run, &mut out, &mut buf)?;
    }
    if out.checksum != loc.checksum || out.counts.len() != loc.pixels {
        return Err(changed(
            path,
            "the pixels of an image differ from those read at load".into(),
        ));
    }
    Ok(out)
}
