//! Summaries of data files for `spreadc inspect` (like `dials.show`).
//!
//! In: a path to an `.expt`, `.refl` or `.lam` file (kind from the extension, else sniffed from
//! the first byte). Out: a serializable [`FileSummary`]; for a reflection table it holds at
//! least `{"version", "rows", "columns": [{"name", "type"}], "shoeboxes": {"total",
//! "with_pixels", "pixel_count", "data_sum"}}` (data_sum: every shoebox data value summed as
//! f64). Guarantees: the summary is computed from the parsed file, never from its size.

use super::dataset_dir::{DataError, DataReport, Dataset};
use super::expt::{Beam, Crystal, Detector, read_expt};
use super::refl::{ReflectionTable, mask_bits, read_refl};
use super::spectrum::read_spectrum;
use serde::Serialize;
use std::path::Path;

/// The summary of one file.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FileSummary {
    /// An experiment list.
    Experiments(ExptSummary),
    /// A reflection table.
    Reflections(ReflSummary),
    /// A spectrum.
    Spectrum(SpectrumSummary),
    /// A `--data DIR` directory, streamed through the dataset reader.
    Dataset(DatasetSummary),
}

/// Summary of a data directory: its files and what a run would use or skip.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetSummary {
    /// The directory.
    pub dir: String,
    /// Experiment list / reflection table pairs.
    pub files: Vec<[String; 2]>,
    /// The atomic model found or named.
    pub atomic_model: Option<String>,
    /// Used/skipped counts by reason.
    pub report: DataReport,
}

/// Summary of an `.expt` file.
#[derive(Debug, Clone, Serialize)]
pub struct ExptSummary {
    /// The file.
    pub file: String,
    /// Number of experiments.
    pub experiments: usize,
    /// Identifiers in order.
    pub identifiers: Vec<String>,
    /// Beams.
    pub beams: Vec<BeamSummary>,
    /// Detectors.
    pub detectors: Vec<DetectorSummary>,
    /// Crystals.
    pub crystals: Vec<CrystalSummary>,
    /// Number of image sets.
    pub imagesets: usize,
}

/// Summary of a beam.
#[derive(Debug, Clone, Serialize)]
pub struct BeamSummary {
    /// Wavelength, Å.
    pub wavelength_a: f64,
    /// Energy, eV.
    pub energy_ev: f64,
    /// Direction towards the source.
    pub direction: [f64; 3],
}

/// Summary of a detector.
#[derive(Debug, Clone, Serialize)]
pub struct DetectorSummary {
    /// Number of panels.
    pub panels: usize,
    /// Group levels above the panels.
    pub hierarchy_depth: usize,
    /// Total pixels over all panels.
    pub pixels: usize,
    /// Smallest and largest panel distance along the beam axis (|z| of the origin), mm.
    pub distance_mm: [f64; 2],
}

/// Summary of a crystal.
#[derive(Debug, Clone, Serialize)]
pub struct CrystalSummary {
    /// a, b, c (Å), alpha, beta, gamma (degrees).
    pub unit_cell: [f64; 6],
    /// Hall symbol as written.
    pub space_group_hall_symbol: String,
    /// ML half mosaic angle, degrees.
    pub ml_half_mosaicity_deg: Option<f64>,
    /// ML domain size, Å.
    pub ml_domain_size_ang: Option<f64>,
}

/// Summary of a `.refl` file.
#[derive(Debug, Clone, Serialize)]
pub struct ReflSummary {
    /// The file.
    pub file: String,
    /// Table version.
    pub version: u64,
    /// Number of rows.
    pub rows: usize,
    /// Number of experiment identifiers.
    pub identifiers: usize,
    /// Every column read, with its DIALS type.
    pub columns: Vec<ColumnSummary>,
    /// Columns of unknown type that were skipped.
    pub skipped_columns: Vec<ColumnSummary>,
    /// Shoebox statistics (all zero without a shoebox column).
    pub shoeboxes: ShoeboxSummary,
}

/// A column name and type.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnSummary {
    /// Column name.
    pub name: String,
    /// DIALS type name.
    #[serde(rename = "type")]
    pub type_name: String,
}

/// Shoebox statistics of a reflection table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShoeboxSummary {
    /// Rows with a shoebox.
    pub total: usize,
    /// Shoeboxes carrying pixels.
    pub with_pixels: usize,
    /// Pixels over all shoeboxes.
    pub pixel_count: usize,
    /// Sum of every shoebox data value, as f64.
    pub data_sum: f64,
    /// Shoeboxes per serialization version (`"1"`, `"2"`).
    pub versions: std::collections::BTreeMap<String, usize>,
    /// Pixel counts by mask bit.
    pub mask: MaskSummary,
}

/// How many pixels carry each mask bit.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MaskSummary {
    /// VALID set.
    pub valid: usize,
    /// VALID not set (masked out).
    pub invalid: usize,
    /// FOREGROUND set.
    pub foreground: usize,
    /// BACKGROUND set.
    pub background: usize,
    /// STRONG set.
    pub strong: usize,
    /// OVERLAPPED set.
    pub overlapped: usize,
}

/// Summary of a `.lam` spectrum.
#[derive(Debug, Clone, Serialize)]
pub struct SpectrumSummary {
    /// The file.
    pub file: String,
    /// Number of channels.
    pub channels: usize,
    /// Lowest and highest channel energy, eV.
    pub energy_ev: [f64; 2],
    /// Weighted mean wavelength, Å.
    pub mean_wavelength_a: f64,
    /// Sum of weights.
    pub total_weight: f64,
}

/// Reads and summarizes one file.
pub fn inspect_file(path: &Path) -> Result<FileSummary, DataError> {
    let file = path.display().to_string();
    if path.is_dir() {
        return summarize_dataset(path).map(FileSummary::Dataset);
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let kind = match ext {
        "expt" | "json" => 'e',
        "refl" => 'r',
        "lam" => 's',
        _ => sniff(path),
    };
    Ok(match kind {
        'e' => FileSummary::Experiments(summarize_expt(path, file)?),
        'r' => FileSummary::Reflections(summarize_refl(&read_refl(path)?, file)),
        's' => FileSummary::Spectrum(summarize_spectrum(path, file)?),
        _ => {
            return Err(DataError::UnknownKind {
                path: path.to_path_buf(),
            });
        }
    })
}

/// Guesses the kind from the first byte: `{` is JSON, a msgpack array (or a pickle) a table,
/// a digit or `#` a spectrum; an unreadable file goes to the table reader to report the error.
fn sniff(path: &Path) -> char {
    use std::io::Read;
    let mut first = [0u8; 1];
    let read = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut first));
    match (read, first[0]) {
        (Ok(()), b'{') => 'e',
        (Ok(()), 0x90..=0x9f | 0xdc | 0xdd | 0x80) => 'r',
        (Ok(()), b'0'..=b'9' | b'#' | b'.') => 's',
        (Err(_), _) => 'r',
        _ => '?',
    }
}

fn summarize_expt(path: &Path, file: String) -> Result<ExptSummary, DataError> {
    let list = read_expt(path)?;
    Ok(ExptSummary {
        file,
        experiments: list.experiments.len(),
        identifiers: list
            .experiments
            .iter()
            .map(|e| e.identifier.clone())
            .collect(),
        beams: list.beams.iter().map(beam_summary).collect(),
        detectors: list.detectors.iter().map(detector_summary).collect(),
        crystals: list.crystals.iter().map(crystal_summary).collect(),
        imagesets: list.imagesets.len(),
    })
}

fn beam_summary(b: &Beam) -> BeamSummary {
    BeamSummary {
        wavelength_a: b.wavelength,
        energy_ev: b.energy_ev(),
        direction: b.direction,
    }
}

fn detector_summary(d: &Detector) -> DetectorSummary {
    let z = d.panels.iter().map(|p| p.origin[2].abs());
    DetectorSummary {
        panels: d.panels.len(),
        hierarchy_depth: d.hierarchy_depth,
        pixels: d
            .panels
            .iter()
            .map(|p| p.image_size[0] * p.image_size[1])
            .sum(),
        distance_mm: [
            z.clone().fold(f64::INFINITY, f64::min),
            z.fold(0.0, f64::max),
        ],
    }
}

fn crystal_summary(c: &Crystal) -> CrystalSummary {
    CrystalSummary {
        unit_cell: c.unit_cell(),
        space_group_hall_symbol: c.space_group_hall_symbol.clone(),
        ml_half_mosaicity_deg: c.ml_half_mosaicity_deg,
        ml_domain_size_ang: c.ml_domain_size_ang,
    }
}

/// Summarizes a parsed reflection table.
pub fn summarize_refl(table: &ReflectionTable, file: String) -> ReflSummary {
    let column = |name: &str, type_name: &str| ColumnSummary {
        name: name.to_string(),
        type_name: type_name.to_string(),
    };
    ReflSummary {
        file,
        version: table.version,
        rows: table.nrows,
        identifiers: table.identifiers.len(),
        columns: table
            .columns
            .iter()
            .map(|(n, c)| column(n, c.type_name()))
            .collect(),
        skipped_columns: table
            .skipped_columns
            .iter()
            .map(|s| column(&s.name, &s.type_name))
            .collect(),
        shoeboxes: summarize_shoeboxes(table),
    }
}

fn summarize_shoeboxes(table: &ReflectionTable) -> ShoeboxSummary {
    let Some(boxes) = table.shoeboxes() else {
        return ShoeboxSummary::default();
    };
    let mut s = ShoeboxSummary {
        total: boxes.len(),
        ..ShoeboxSummary::default()
    };
    for h in boxes.headers().iter().filter(|h| h.version != 0) {
        s.with_pixels += 1;
        *s.versions.entry(h.version.to_string()).or_default() += 1;
    }
    s.pixel_count = boxes.all_data().len();
    s.data_sum = boxes.all_data().iter().map(|&d| f64::from(d)).sum();
    let bit = |b: u8| boxes.all_mask().iter().filter(|&&m| m & b != 0).count();
    s.mask = MaskSummary {
        valid: bit(mask_bits::VALID),
        invalid: s.pixel_count - bit(mask_bits::VALID),
        foreground: bit(mask_bits::FOREGROUND),
        background: bit(mask_bits::BACKGROUND),
        strong: bit(mask_bits::STRONG),
        overlapped: bit(mask_bits::OVERLAPPED),
    };
    s
}

fn summarize_spectrum(path: &Path, file: String) -> Result<SpectrumSummary, DataError> {
    let spectrum = read_spectrum(path)?;
    let energies = spectrum.energy_ev();
    Ok(SpectrumSummary {
        file,
        channels: energies.len(),
        energy_ev: [
            energies.iter().copied().fold(f64::INFINITY, f64::min),
            energies.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        ],
        mean_wavelength_a: spectrum.mean_wavelength_a(),
        total_weight: spectrum.weight.iter().sum(),
    })
}

fn summarize_dataset(dir: &Path) -> Result<DatasetSummary, DataError> {
    let dataset = Dataset::open(dir)?;
    let mut stream = dataset.images();
    for image in stream.by_ref() {
        image?;
    }
    let show = |p: &Path| p.display().to_string();
    Ok(DatasetSummary {
        dir: show(dir),
        files: dataset
            .files
            .iter()
            .map(|p| [show(&p.experiments), show(&p.reflections)])
            .collect(),
        atomic_model: dataset.atomic_model.as_deref().map(show),
        report: stream.report().clone(),
    })
}
