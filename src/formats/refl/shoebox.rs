//! Shoeboxes: the pixel windows DIALS draws around each spot, and their binary layout.
//!
//! In: the `Shoebox<>` column blob. Per row: panel (u32), bbox (6 × i32: x0, x1, y0, y1, z0, z1),
//! a u8 flag (0: no pixels; 1: data f32, mask i32, background f32; 2: data f32, mask u8,
//! background f32), each array in C order (z, y, x) over the bbox. Out: a [`ShoeboxColumn`]
//! holding every box's pixels in three contiguous arenas (no allocation per box or per pixel).
//! Guarantees: bboxes are ordered, pixel counts fit the remaining bytes before anything is
//! copied, version-1 masks fit in 8 bits; encoding reproduces the bytes read.

use super::ReflError;
use std::path::Path;

/// DIALS `MaskCode` bits of a shoebox mask.
pub mod mask_bits {
    /// The pixel is on the detector and trusted.
    pub const VALID: u8 = 1;
    /// The pixel is in the background region.
    pub const BACKGROUND: u8 = 2;
    /// The pixel is in the foreground (spot) region.
    pub const FOREGROUND: u8 = 4;
    /// The pixel was flagged strong by spot finding.
    pub const STRONG: u8 = 8;
    /// The pixel was used in background modelling.
    pub const BACKGROUND_USED: u8 = 16;
    /// The pixel is shared with a neighbouring reflection.
    pub const OVERLAPPED: u8 = 32;
}

/// Where one shoebox sits: panel, bounding box, pixel-layout version and offset in the arenas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShoeboxHeader {
    /// Detector panel index.
    pub panel: u32,
    /// x0, x1, y0, y1, z0, z1 (half-open ranges, pixels and frames).
    pub bbox: [i32; 6],
    /// 0 when the box carries no pixels, else the serialization version (1: i32 mask, 2: u8 mask).
    pub version: u8,
    /// Offset of the first pixel in the column's arenas.
    pub offset: usize,
}

impl ShoeboxHeader {
    /// The box shape (z, y, x); zero-sized axes give zero pixels.
    pub fn shape(&self) -> [usize; 3] {
        let len = |lo: i32, hi: i32| usize::try_from(i64::from(hi) - i64::from(lo)).unwrap_or(0);
        let b = self.bbox;
        [len(b[4], b[5]), len(b[2], b[3]), len(b[0], b[1])]
    }

    /// Pixels the box holds in the file (0 when it carries none).
    pub fn pixel_count(&self) -> usize {
        if self.version == 0 {
            return 0;
        }
        self.shape().iter().product()
    }

    /// Bytes of this row in the column blob: panel, bbox, flag, then data, mask, background.
    pub fn encoded_len(&self) -> usize {
        let mask_width = if self.version == 1 { 4 } else { 1 };
        ROW_HEADER_BYTES + self.pixel_count() * (8 + mask_width)
    }
}

/// Bytes before a row's pixels: panel (u32), bbox (6 x i32), pixel flag (u8).
const ROW_HEADER_BYTES: usize = 4 + 24 + 1;

/// A borrowed view of one shoebox and its pixels.
#[derive(Debug, Clone, Copy)]
pub struct ShoeboxRef<'a> {
    /// Panel, bbox, version.
    pub header: ShoeboxHeader,
    /// Counts, C order (z, y, x); empty when the box carries no pixels.
    pub data: &'a [f32],
    /// Mask codes (see [`mask_bits`]).
    pub mask: &'a [u8],
    /// Modelled background.
    pub background: &'a [f32],
}

/// The `shoebox` column: headers plus pixel arenas shared by all rows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ShoeboxColumn {
    headers: Vec<ShoeboxHeader>,
    data: Vec<f32>,
    mask: Vec<u8>,
    background: Vec<f32>,
}

/// A byte reader over the column blob that reports truncation as a shoebox error.
struct Bytes<'a> {
    rest: &'a [u8],
    row: usize,
    path: &'a Path,
}

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ReflError> {
        if self.rest.len() < n {
            return Err(self.error(format!(
                "{what} needs {n} bytes but only {} remain in the column",
                self.rest.len()
            )));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn word(&mut self, what: &str) -> Result<[u8; 4], ReflError> {
        let mut w = [0u8; 4];
        w.copy_from_slice(self.take(4, what)?);
        Ok(w)
    }

    fn error(&self, what: String) -> ReflError {
        ReflError::Shoebox {
            path: self.path.to_path_buf(),
            row: self.row,
            what,
        }
    }
}

impl ShoeboxColumn {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.headers.len()
    }

    /// True when the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }

    /// The header of every row.
    pub fn headers(&self) -> &[ShoeboxHeader] {
        &self.headers
    }

    /// The shoebox in row `i`.
    pub fn get(&self, i: usize) -> Option<ShoeboxRef<'_>> {
        let header = *self.headers.get(i)?;
        let range = header.offset..header.offset + header.pixel_count();
        Some(ShoeboxRef {
            header,
            data: &self.data[range.clone()],
            mask: &self.mask[range.clone()],
            background: &self.background[range],
        })
    }

    /// Every shoebox in row order.
    pub fn iter(&self) -> impl Iterator<Item = ShoeboxRef<'_>> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    /// All pixel counts of all boxes, concatenated in row order.
    pub fn all_data(&self) -> &[f32] {
        &self.data
    }

    /// All mask codes of all boxes, concatenated in row order.
    pub fn all_mask(&self) -> &[u8] {
        &self.mask
    }

    /// Appends a box; `pixels` = (data, mask, background), each of the bbox's size.
    pub fn push(
        &mut self,
        panel: u32,
        bbox: [i32; 6],
        pixels: Option<(&[f32], &[u8], &[f32])>,
    ) -> Result<(), String> {
        let mut header = ShoeboxHeader {
            panel,
            bbox,
            version: 0,
            offset: self.data.len(),
        };
        check_bbox(bbox)?;
        if let Some((data, mask, background)) = pixels {
            header.version = 2;
            let n = header.pixel_count();
            if data.len() != n || mask.len() != n || background.len() != n {
                return Err(format!(
                    "bbox holds {n} pixels but data/mask/background have {}/{}/{}",
                    data.len(),
                    mask.len(),
                    background.len()
                ));
            }
            self.data.extend_from_slice(data);
            self.mask.extend_from_slice(mask);
            self.background.extend_from_slice(background);
        }
        self.headers.push(header);
        Ok(())
    }

    /// Sets the serialization version (1: i32 mask, 2: u8 mask) of every box that has pixels.
    pub fn set_version(&mut self, version: u8) {
        let version = version.clamp(1, 2);
        for h in self.headers.iter_mut().filter(|h| h.version != 0) {
            h.version = version;
        }
    }

    /// Offset of every row's record in the column blob (what [`ShoeboxColumn::decode`] of a
    /// slice starting there reads back).
    pub fn row_offsets(&self) -> Vec<u64> {
        let mut at = 0u64;
        self.headers
            .iter()
            .map(|h| {
                let start = at;
                at += h.encoded_len() as u64;
                start
            })
            .collect()
    }

    /// Decodes `nrows` shoeboxes from the column blob (or from consecutive rows of it);
    /// trailing bytes are an error.
    pub fn decode(blob: &[u8], nrows: usize, path: &Path) -> Result<Self, ReflError> {
        let mut bytes = Bytes {
            rest: blob,
            row: 0,
            path,
        };
        let mut column = ShoeboxColumn::default();
        for row in 0..nrows {
            bytes.row = row;
            column.decode_one(&mut bytes)?;
        }
        if !bytes.rest.is_empty() {
            return Err(bytes.error(format!(
                "{} bytes left after the last shoebox",
                bytes.rest.len()
            )));
        }
        Ok(column)
    }

    fn decode_one(&mut self, bytes: &mut Bytes<'_>) -> Result<(), ReflError> {
        let panel = u32::from_le_bytes(bytes.word("panel")?);
        let mut bbox = [0i32; 6];
        for b in bbox.iter_mut() {
            *b = i32::from_le_bytes(bytes.word("bbox")?);
        }
        check_bbox(bbox).map_err(|w| bytes.error(w))?;
        let version = bytes.take(1, "pixel flag")?[0];
        let header = ShoeboxHeader {
            panel,
            bbox,
            version,
            offset: self.data.len(),
        };
        match version {
            0 => {}
            1 | 2 => self.decode_pixels(&header, bytes)?,
            v => return Err(bytes.error(format!("unknown pixel flag {v} (expected 0, 1 or 2)"))),
        }
        self.headers.push(header);
        Ok(())
    }

    fn decode_pixels(
        &mut self,
        header: &ShoeboxHeader,
        bytes: &mut Bytes<'_>,
    ) -> Result<(), ReflError> {
        let mask_width = if header.version == 1 { 4 } else { 1 };
        let n = header.pixel_count();
        let needed = n.checked_mul(8 + mask_width);
        if needed.is_none_or(|b| b > bytes.rest.len()) {
            let need = needed.map_or_else(|| "too many".to_string(), |b| b.to_string());
            return Err(bytes.error(format!(
                "bbox {:?} holds {n} pixels ({need} bytes of data, mask and background), but only {} bytes remain",
                header.bbox,
                bytes.rest.len()
            )));
        }
        self.data.extend(f32s(bytes.take(4 * n, "data")?));
        let mask = bytes.take(mask_width * n, "mask")?;
        if mask_width == 1 {
            self.mask.extend_from_slice(mask);
        } else {
            for (k, w) in mask.chunks_exact(4).enumerate() {
                let code = i32::from_le_bytes([w[0], w[1], w[2], w[3]]);
                let code = u8::try_from(code).map_err(|_| {
                    bytes.error(format!(
                        "mask value {code} at pixel {k} does not fit 8 mask bits"
                    ))
                })?;
                self.mask.push(code);
            }
        }
        self.background
            .extend(f32s(bytes.take(4 * n, "background")?));
        Ok(())
    }

    /// Appends the DIALS blob of this column.
    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        for sb in self.iter() {
            out.extend_from_slice(&sb.header.panel.to_le_bytes());
            sb.header
                .bbox
                .iter()
                .for_each(|b| out.extend_from_slice(&b.to_le_bytes()));
            out.push(sb.header.version);
            if sb.header.version == 0 {
                continue;
            }
            sb.data
                .iter()
                .for_each(|d| out.extend_from_slice(&d.to_le_bytes()));
            if sb.header.version == 1 {
                sb.mask
                    .iter()
                    .for_each(|&m| out.extend_from_slice(&i32::from(m).to_le_bytes()));
            } else {
                out.extend_from_slice(sb.mask);
            }
            sb.background
                .iter()
                .for_each(|b| out.extend_from_slice(&b.to_le_bytes()));
        }
    }
}

fn f32s(b: &[u8]) -> impl Iterator<Item = f32> + '_ {
    b.chunks_exact(4)
        .map(|w| f32::from_le_bytes([w[0], w[1], w[2], w[3]]))
}

fn check_bbox(b: [i32; 6]) -> Result<(), String> {
    if b[1] < b[0] || b[3] < b[2] || b[5] < b[4] {
        return Err(format!(
            "bbox {b:?} has an upper bound below its lower bound"
        ));
    }
    Ok(())
}
