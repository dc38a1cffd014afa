//! The typed columns of a reflection table and their DIALS binary layout.
//!
//! In: a DIALS column type name and the raw little-endian bytes DIALS writes for it (one
//! contiguous blob of fixed-size elements). Out: a typed [`Column`]. Guarantees: the blob length
//! is checked against rows × element size before anything is allocated; encoding a decoded
//! column gives back the same bytes.

use super::shoebox::ShoeboxColumn;

/// One column: a typed vector with one element per row.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// `bool` (one byte each).
    Bool(Vec<bool>),
    /// `int` (i32).
    Int(Vec<i32>),
    /// `std::size_t` (u64).
    SizeT(Vec<u64>),
    /// `double`.
    Double(Vec<f64>),
    /// `vec2<double>`.
    Vec2(Vec<[f64; 2]>),
    /// `vec3<double>`.
    Vec3(Vec<[f64; 3]>),
    /// `mat3<double>` (row-major).
    Mat3(Vec<[f64; 9]>),
    /// `int6` (e.g. `bbox`: x0, x1, y0, y1, z0, z1).
    Int6(Vec<[i32; 6]>),
    /// `cctbx::miller::index<>` (h, k, l).
    MillerIndex(Vec<[i32; 3]>),
    /// `Shoebox<>`: per-row bounding boxes and pixels.
    Shoebox(ShoeboxColumn),
}

/// Reads `N` little-endian scalars from each fixed-size chunk.
fn chunks<const N: usize, const W: usize, T>(
    bytes: &[u8],
    read: impl Fn([u8; W]) -> T,
) -> Vec<[T; N]>
where
    T: Copy + Default,
{
    bytes
        .chunks_exact(N * W)
        .map(|chunk| {
            let mut out = [T::default(); N];
            for (o, w) in out.iter_mut().zip(chunk.chunks_exact(W)) {
                let mut b = [0u8; W];
                b.copy_from_slice(w);
                *o = read(b);
            }
            out
        })
        .collect()
}

fn scalars<const W: usize, T: Copy + Default>(bytes: &[u8], read: impl Fn([u8; W]) -> T) -> Vec<T> {
    chunks::<1, W, T>(bytes, read)
        .into_iter()
        .map(|[x]| x)
        .collect()
}

impl Column {
    /// Bytes per element of a fixed-size DIALS column type; `None` for shoeboxes and unknown types.
    pub fn element_size(type_name: &str) -> Option<usize> {
        Some(match type_name {
            "bool" => 1,
            "int" => 4,
            "std::size_t" | "double" => 8,
            "vec2<double>" => 16,
            "vec3<double>" => 24,
            "mat3<double>" => 72,
            "int6" => 24,
            "cctbx::miller::index<>" => 12,
            _ => return None,
        })
    }

    /// Decodes a fixed-size column whose blob length has already been checked.
    pub(super) fn decode_fixed(type_name: &str, bytes: &[u8]) -> Option<Column> {
        Some(match type_name {
            "bool" => Column::Bool(bytes.iter().map(|&b| b != 0).collect()),
            "int" => Column::Int(scalars(bytes, i32::from_le_bytes)),
            "std::size_t" => Column::SizeT(scalars(bytes, u64::from_le_bytes)),
            "double" => Column::Double(scalars(bytes, f64::from_le_bytes)),
            "vec2<double>" => Column::Vec2(chunks(bytes, f64::from_le_bytes)),
            "vec3<double>" => Column::Vec3(chunks(bytes, f64::from_le_bytes)),
            "mat3<double>" => Column::Mat3(chunks(bytes, f64::from_le_bytes)),
            "int6" => Column::Int6(chunks(bytes, i32::from_le_bytes)),
            "cctbx::miller::index<>" => Column::MillerIndex(chunks(bytes, i32::from_le_bytes)),
            _ => return None,
        })
    }

    /// The DIALS type name written in the file.
    pub fn type_name(&self) -> &'static str {
        match self {
            Column::Bool(_) => "bool",
            Column::Int(_) => "int",
            Column::SizeT(_) => "std::size_t",
            Column::Double(_) => "double",
            Column::Vec2(_) => "vec2<double>",
            Column::Vec3(_) => "vec3<double>",
            Column::Mat3(_) => "mat3<double>",
            Column::Int6(_) => "int6",
            Column::MillerIndex(_) => "cctbx::miller::index<>",
            Column::Shoebox(_) => "Shoebox<>",
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            Column::Bool(v) => v.len(),
            Column::Int(v) => v.len(),
            Column::SizeT(v) => v.len(),
            Column::Double(v) => v.len(),
            Column::Vec2(v) => v.len(),
            Column::Vec3(v) => v.len(),
            Column::Mat3(v) => v.len(),
            Column::Int6(v) => v.len(),
            Column::MillerIndex(v) => v.len(),
            Column::Shoebox(s) => s.len(),
        }
    }

    /// True when the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the DIALS binary blob of a fixed-size column (shoeboxes encode themselves).
    pub(super) fn encode_fixed(&self, out: &mut Vec<u8>) {
        fn put<T: Copy, const W: usize>(out: &mut Vec<u8>, v: &[T], f: impl Fn(T) -> [u8; W]) {
            out.reserve(v.len() * W);
            v.iter().for_each(|&x| out.extend_from_slice(&f(x)));
        }
        match self {
            Column::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
            Column::Int(v) => put(out, v, i32::to_le_bytes),
            Column::SizeT(v) => put(out, v, u64::to_le_bytes),
            Column::Double(v) => put(out, v, f64::to_le_bytes),
            Column::Vec2(v) => put(out, v.as_flattened(), f64::to_le_bytes),
            Column::Vec3(v) => put(out, v.as_flattened(), f64::to_le_bytes),
            Column::Mat3(v) => put(out, v.as_flattened(), f64::to_le_bytes),
            Column::Int6(v) => put(out, v.as_flattened(), i32::to_le_bytes),
            Column::MillerIndex(v) => put(out, v.as_flattened(), i32::to_le_bytes),
            Column::Shoebox(s) => s.encode(out),
        }
    }

    /// The values as f64 when the column is `double`.
    pub fn as_double(&self) -> Option<&[f64]> {
        match self {
            Column::Double(v) => Some(v),
            _ => None,
        }
    }

    /// The values when the column is `int`.
    pub fn as_int(&self) -> Option<&[i32]> {
        match self {
            Column::Int(v) => Some(v),
            _ => None,
        }
    }

    /// The values when the column is `vec3<double>`.
    pub fn as_vec3(&self) -> Option<&[[f64; 3]]> {
        match self {
            Column::Vec3(v) => Some(v),
            _ => None,
        }
    }

    /// The values when the column is a Miller index.
    pub fn as_miller_index(&self) -> Option<&[[i32; 3]]> {
        match self {
            Column::MillerIndex(v) => Some(v),
            _ => None,
        }
    }
}
