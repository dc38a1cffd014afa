//! The `--data DIR` layout and a streaming reader of its images.
//!
//! Layout (every name can be overridden by an optional `DIR/dataset.toml`):
//!
//! ```text
//! DIR/
//!   dataset.toml        optional: atomic_model, spectrum, [[files]] experiments/reflections, [spectra]
//!   NAME.expt           experiment lists; each is paired with NAME.refl
//!   NAME.refl           reflection tables with a `shoebox` column (pixels) and `miller_index`
//!   spectra/ID.lam      per-shot spectrum of the experiment whose identifier is ID (optional)
//!   *.pdb | *.cif       the atomic model
//! ```
//!
//! In: a directory. Out: a [`Dataset`] (validated file list) whose [`Dataset::images`] iterator
//! reads one experiment-list/reflection-table pair at a time and yields one [`ImageData`] per
//! experiment, so memory is set by the largest file pair and the caller's batch, not by the
//! number of images; each image carries an [`ImageLocation`] from which its shoeboxes can be
//! read again later without re-reading the pair (`super::image_index`). Guarantees: nothing is dropped silently. Every image, shoebox and pixel
//! that is not used is counted by reason in the [`DataReport`] (no crystal, no pixels, panel out
//! of range, masked, NaN, negative); structural problems (missing files or columns, ids that name
//! no experiment, unreadable files) are a [`DataError`] naming the file and the field.

use super::expt::{Beam, Crystal, ExperimentList, ExptError, Panel, read_expt, write_expt};
use super::image_index::{ImageLocation, ImageShoeboxes, add_shoebox};
use super::refl::{Column, ColumnBlobs, ReflError, ReflectionTable, read_refl_located, write_refl};
use super::spectrum::{Spectrum, SpectrumError, read_spectrum, write_spectrum};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Everything that stops a dataset from being read.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file the layout names does not exist.
    #[error("{path}: missing {role} file")]
    MissingFile {
        /// The expected path.
        path: PathBuf,
        /// What it was for (`experiments`, `reflections`, `spectrum`, `atomic_model`).
        role: &'static str,
    },
    /// The directory holds no experiment list.
    #[error("{dir}: no experiment lists (*.expt) found and dataset.toml names none")]
    NoExperiments {
        /// The data directory.
        dir: PathBuf,
    },
    /// `dataset.toml` could not be parsed.
    #[error("{path}: {message}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// toml's description, naming line and field.
        message: String,
    },
    /// A reflection's `id` names no experiment of the paired list.
    #[error("{path}: column `id` row {row}: id {id} names no experiment in {experiments}")]
    UnknownId {
        /// The reflection file.
        path: PathBuf,
        /// The row.
        row: usize,
        /// The id found.
        id: i64,
        /// The experiment list it was looked up in.
        experiments: PathBuf,
    },
    /// An experiment list could not be read.
    #[error(transparent)]
    Expt(#[from] ExptError),
    /// A reflection table could not be read or lacks a required column.
    #[error(transparent)]
    Refl(#[from] ReflError),
    /// A spectrum could not be read.
    #[error(transparent)]
    Spectrum(#[from] SpectrumError),
    /// A file whose kind (experiments, reflections, spectrum) cannot be told.
    #[error(
        "{path}: unknown kind of file: expected .expt (JSON), .refl (msgpack) or .lam (spectrum)"
    )]
    UnknownKind {
        /// The file.
        path: PathBuf,
    },
    /// The directory could not be listed.
    #[error("{path}: cannot list data directory: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A reflection table could not be read again for an image's shoeboxes.
    #[error("{path}: cannot read shoeboxes again: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A reflection table differs from what was validated when the dataset was loaded.
    #[error(
        "{path}: changed since it was loaded ({detail}); shoebox pixels are read from it on demand, so it must not change during a run"
    )]
    Changed {
        /// The file.
        path: PathBuf,
        /// What differs.
        detail: String,
    },
}

/// The optional `dataset.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DatasetToml {
    atomic_model: Option<PathBuf>,
    spectrum: Option<PathBuf>,
    #[serde(default)]
    files: Vec<FilePair>,
    #[serde(default)]
    spectra: BTreeMap<String, PathBuf>,
    /// Photons per m² per shot (the beam model of DIALS has no fluence).
    fluence: Option<f64>,
}

/// Photons per m² per shot when dataset.toml gives none: 1e-4 × nanoBragg's default
/// (1/r_e²), the fluence `spreadc simulate` uses. Real data put their fluence in
/// dataset.toml, or leave it and let the per-image scale absorb it.
pub const DEFAULT_FLUENCE_PER_M2: f64 = crate::physics::beam::DEFAULT_FLUENCE * 1e-4;

/// One experiment list and the reflection table that goes with it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePair {
    /// The `.expt` file.
    pub experiments: PathBuf,
    /// The `.refl` file.
    pub reflections: PathBuf,
}

/// A validated data directory: which files to read, in which order.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The directory.
    pub dir: PathBuf,
    /// Experiment list / reflection table pairs, in name order.
    pub files: Vec<FilePair>,
    /// The atomic model, if any.
    pub atomic_model: Option<PathBuf>,
    /// Spectrum file by experiment identifier.
    pub spectra: BTreeMap<String, PathBuf>,
    /// Spectrum for experiments without their own (else the beam's wavelength is used).
    pub default_spectrum: Option<PathBuf>,
    /// Photons per m² per shot (dataset.toml `fluence`, else [`DEFAULT_FLUENCE_PER_M2`]).
    pub fluence_per_m2: f64,
}

/// Used and skipped counts of one kind of item, skips by reason.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counts {
    /// Items used.
    pub used: u64,
    /// Items skipped, by reason.
    pub skipped: BTreeMap<String, u64>,
}

impl Counts {
    /// Counts `n` items skipped for `reason`.
    pub(super) fn skip(&mut self, reason: &str, n: u64) {
        if n > 0 {
            *self.skipped.entry(reason.to_string()).or_default() += n;
        }
    }

    /// Total skipped over all reasons.
    pub fn total_skipped(&self) -> u64 {
        self.skipped.values().sum()
    }
}

/// What was read and what was left out, by reason (printed by every run, kept in summary.json).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DataReport {
    /// Images (experiments).
    pub images: Counts,
    /// Shoeboxes (reflection rows).
    pub shoeboxes: Counts,
    /// Pixels inside used shoeboxes.
    pub pixels: Counts,
    /// Images whose spectrum fell back to the beam's single wavelength.
    pub monochromatic_fallback: u64,
    /// Columns of unknown type that were skipped, as `file: column (type)`.
    pub skipped_columns: Vec<String>,
    /// Identifiers named in dataset.toml `[spectra]` that match no experiment (set at the end).
    pub unused_spectra: Vec<String>,
    /// Used pixels that read exactly 65535, the ceiling of a 16-bit detector, inside their
    /// panel's trusted range: clipped overloads if the detector saturates there.
    pub at_16bit_ceiling: u64,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} used, {} skipped", self.used, self.total_skipped())?;
        let reasons: Vec<String> = self
            .skipped
            .iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        if !reasons.is_empty() {
            write!(f, " ({})", reasons.join(", "))?;
        }
        Ok(())
    }
}

/// The largest count of an unsigned 16-bit pixel.
const CEILING_16BIT: f32 = 65535.0;

impl std::fmt::Display for DataReport {
    /// The lines every run prints: used and skipped images, shoeboxes and pixels by reason.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "images:    {}", self.images)?;
        writeln!(f, "shoeboxes: {}", self.shoeboxes)?;
        writeln!(f, "pixels:    {}", self.pixels)?;
        if self.monochromatic_fallback > 0 {
            writeln!(
                f,
                "spectra:   {} images without a spectrum file use the beam wavelength",
                self.monochromatic_fallback
            )?;
        }
        for column in &self.skipped_columns {
            writeln!(f, "warning: unknown column type skipped: {column}")?;
        }
        if self.at_16bit_ceiling > 0 {
            writeln!(
                f,
                "warning: {} used pixels read exactly {CEILING_16BIT} (a 16-bit detector's \
                 ceiling) inside the panel's trusted_range: if the detector clips there they \
                 are overloads, fitted as counts; set the trusted_range maximum below it",
                self.at_16bit_ceiling
            )?;
        }
        for id in &self.unused_spectra {
            writeln!(
                f,
                "warning: dataset.toml [spectra] names `{id}`, which no used image has"
            )?;
        }
        Ok(())
    }
}

/// One shoebox of an image: where it is and where its pixels sit in the image's arenas.
#[derive(Debug, Clone, PartialEq)]
pub struct ShoeboxObs {
    /// Row in the reflection table.
    pub row: usize,
    /// Panel index.
    pub panel: u32,
    /// x0, x1, y0, y1, z0, z1.
    pub bbox: [i32; 6],
    /// Miller index.
    pub miller_index: [i32; 3],
    /// Offset of the first pixel in [`ImageData::counts`].
    pub offset: usize,
}

impl ShoeboxObs {
    /// Pixels in the bbox (z · y · x).
    pub fn pixel_count(&self) -> usize {
        let len = |lo: i32, hi: i32| usize::try_from(hi - lo).unwrap_or(0);
        let b = self.bbox;
        len(b[0], b[1]) * len(b[2], b[3]) * len(b[4], b[5])
    }
}

/// One still: its models, spectrum and shoebox pixels (dense over each bbox, with a use flag).
#[derive(Debug, Clone)]
pub struct ImageData {
    /// Index of the experiment in its list.
    pub experiment: usize,
    /// Experiment identifier.
    pub identifier: String,
    /// The `.expt` it came from.
    pub source: PathBuf,
    /// Beam model.
    pub beam: Beam,
    /// Crystal model.
    pub crystal: Crystal,
    /// Index of the detector in the list (shared across images).
    pub detector: usize,
    /// That detector's panels, composed to the lab frame (shared by the images of one list).
    pub panels: std::sync::Arc<Vec<crate::formats::expt::Panel>>,
    /// Photons per m² per shot: `fluence` of dataset.toml, else [`DEFAULT_FLUENCE_PER_M2`].
    pub fluence_per_m2: f64,
    /// Spectrum (the beam's wavelength alone when no spectrum file exists).
    pub spectrum: Spectrum,
    /// Shoeboxes with pixels.
    pub shoeboxes: Vec<ShoeboxObs>,
    /// Counts of all shoeboxes, concatenated (C order z, y, x inside each).
    pub counts: Vec<f32>,
    /// DIALS' background model for each pixel.
    pub background: Vec<f32>,
    /// True for pixels to use: mask VALID bit set and a finite, non-negative count.
    pub use_pixel: Vec<bool>,
    /// Where its used shoeboxes sit in the `.refl`, to read them again
    /// ([`super::image_index::read_shoeboxes`]).
    pub location: ImageLocation,
}

impl Dataset {
    /// The per-shot spectrum file of the experiment `identifier`: dataset.toml's `[spectra]`
    /// entry, else spectra/ID.lam if it exists (None: the default spectrum, if any, applies).
    pub fn spectrum_file(&self, identifier: &str) -> Option<PathBuf> {
        self.spectra.get(identifier).cloned().or_else(|| {
            let conventional = self.dir.join("spectra").join(format!("{identifier}.lam"));
            conventional.is_file().then_some(conventional)
        })
    }

    /// Reads and validates the layout of `dir` (files exist; nothing large is read yet).
    pub fn open(dir: &Path) -> Result<Dataset, DataError> {
        let toml_path = dir.join("dataset.toml");
        let config = if toml_path.exists() {
            read_toml(&toml_path)?
        } else {
            DatasetToml::default()
        };
        let files = if config.files.is_empty() {
            discover_pairs(dir)?
        } else {
            config.files.iter().map(|p| resolve_pair(dir, p)).collect()
        };
        if files.is_empty() {
            return Err(DataError::NoExperiments {
                dir: dir.to_path_buf(),
            });
        }
        let dataset = Dataset {
            dir: dir.to_path_buf(),
            files,
            atomic_model: config
                .atomic_model
                .map(|p| dir.join(p))
                .or_else(|| find_model(dir)),
            spectra: config
                .spectra
                .into_iter()
                .map(|(k, v)| (k, dir.join(v)))
                .collect(),
            default_spectrum: config.spectrum.map(|p| dir.join(p)),
            fluence_per_m2: config.fluence.unwrap_or(DEFAULT_FLUENCE_PER_M2),
        };
        if !(dataset.fluence_per_m2 > 0.0 && dataset.fluence_per_m2.is_finite()) {
            return Err(DataError::Toml {
                path: toml_path,
                message: format!(
                    "`fluence` must be a positive number of photons per m², got {}",
                    dataset.fluence_per_m2
                ),
            });
        }
        dataset.check_files_exist()?;
        Ok(dataset)
    }

    fn check_files_exist(&self) -> Result<(), DataError> {
        let missing = |path: &Path, role| DataError::MissingFile {
            path: path.to_path_buf(),
            role,
        };
        for pair in &self.files {
            if !pair.experiments.is_file() {
                return Err(missing(&pair.experiments, "experiments"));
            }
            if !pair.reflections.is_file() {
                return Err(missing(&pair.reflections, "reflections"));
            }
        }
        let spectra = self.spectra.values().chain(&self.default_spectrum);
        if let Some(p) = spectra.into_iter().find(|p| !p.is_file()) {
            return Err(missing(p, "spectrum"));
        }
        match &self.atomic_model {
            Some(p) if !p.is_file() => Err(missing(p, "atomic_model")),
            _ => Ok(()),
        }
    }

    /// A streaming iterator over the images of every file pair, in order.
    pub fn images(&self) -> ImageStream<'_> {
        ImageStream {
            dataset: self,
            next_pair: 0,
            current: None,
            report: DataReport::default(),
            spectrum_cache: HashMap::new(),
            seen: std::collections::HashSet::new(),
        }
    }
}

fn read_toml(path: &Path) -> Result<DatasetToml, DataError> {
    let text = std::fs::read_to_string(path).map_err(|_| DataError::MissingFile {
        path: path.to_path_buf(),
        role: "dataset.toml",
    })?;
    toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map_or(0, |span| text[..span.start].matches('\n').count() + 1);
        DataError::Toml {
            path: path.to_path_buf(),
            message: format!("line {line}: {}", e.message().trim_end()),
        }
    })
}

fn resolve_pair(dir: &Path, pair: &FilePair) -> FilePair {
    FilePair {
        experiments: dir.join(&pair.experiments),
        reflections: dir.join(&pair.reflections),
    }
}

/// Pairs every `NAME.expt` in `dir` with `NAME.refl` (which must exist), sorted by name.
fn discover_pairs(dir: &Path) -> Result<Vec<FilePair>, DataError> {
    let entries = std::fs::read_dir(dir).map_err(|source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut expts: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "expt"))
        .collect();
    expts.sort();
    Ok(expts
        .into_iter()
        .map(|experiments| FilePair {
            reflections: experiments.with_extension("refl"),
            experiments,
        })
        .collect())
}

fn find_model(dir: &Path) -> Option<PathBuf> {
    let mut models: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pdb" || x == "cif"))
        .collect();
    models.sort();
    models.into_iter().next()
}

/// One loaded file pair, with the reflection rows of each experiment.
struct LoadedPair {
    experiments_path: PathBuf,
    list: ExperimentList,
    table: ReflectionTable,
    rows_by_experiment: Vec<Vec<usize>>,
    next_experiment: usize,
    fluence_per_m2: f64,
    /// Each detector's panels, shared by its images.
    panels: Vec<std::sync::Arc<Vec<Panel>>>,
    /// Where the rows sit in the `.refl`.
    layout: RowLayout,
}

/// Byte positions of a reflection table's rows in its file.
struct RowLayout {
    reflections: std::sync::Arc<PathBuf>,
    file_len: u64,
    /// File offset of the `miller_index` values.
    hkl_at: u64,
    /// File offset of every row's shoebox record, and one past the last.
    shoebox_at: Vec<u64>,
}

impl RowLayout {
    fn new(path: &Path, table: &ReflectionTable, blobs: &ColumnBlobs) -> RowLayout {
        let (sb_at, sb_len) = blobs.get("shoebox").unwrap_or_default();
        let mut shoebox_at: Vec<u64> = table
            .shoeboxes()
            .map(|c| c.row_offsets().into_iter().map(|o| sb_at + o).collect())
            .unwrap_or_default();
        shoebox_at.push(sb_at + sb_len);
        RowLayout {
            reflections: std::sync::Arc::new(path.to_path_buf()),
            file_len: blobs.file_len,
            hkl_at: blobs.get("miller_index").map_or(0, |(at, _)| at),
            shoebox_at,
        }
    }

    /// An empty location in this file.
    fn location(&self) -> ImageLocation {
        ImageLocation {
            reflections: self.reflections.clone(),
            file_len: self.file_len,
            hkl_at: self.hkl_at,
            ..ImageLocation::default()
        }
    }

    /// Records used row `row` in `loc`.
    fn add_row(&self, loc: &mut ImageLocation, row: usize) {
        let at = self.shoebox_at[row];
        loc.push_row(row, at, self.shoebox_at[row + 1] - at);
    }
}

impl LoadedPair {
    /// Experiment `e` with its models and no pixels yet (its location holding the trusted
    /// range of each panel); `None` when it has no crystal or no beam.
    fn empty_image(&self, e: usize) -> Option<ImageData> {
        let experiment = &self.list.experiments[e];
        let crystal = self.list.crystals[experiment.crystal?].clone();
        let beam = self.list.beams[experiment.beam?].clone();
        let detector = experiment.detector.unwrap_or(0);
        let panels = self.panels.get(detector).cloned().unwrap_or_default();
        let trusted_ranges = panels.iter().map(|p| p.trusted_range).collect();
        let image = ImageData {
            experiment: e,
            identifier: experiment.identifier.clone(),
            source: self.experiments_path.clone(),
            spectrum: Spectrum::monochromatic(beam.wavelength),
            beam,
            crystal,
            detector,
            panels,
            fluence_per_m2: self.fluence_per_m2,
            shoeboxes: Vec::new(),
            counts: Vec::new(),
            background: Vec::new(),
            use_pixel: Vec::new(),
            location: ImageLocation {
                trusted_ranges,
                ..self.layout.location()
            },
        };
        Some(image)
    }
}

/// Streams [`ImageData`] one experiment at a time, loading one file pair at a time.
pub struct ImageStream<'a> {
    dataset: &'a Dataset,
    next_pair: usize,
    current: Option<LoadedPair>,
    report: DataReport,
    spectrum_cache: HashMap<PathBuf, Spectrum>,
    seen: std::collections::HashSet<String>,
}

impl ImageStream<'_> {
    /// Counts so far (complete once the iterator is exhausted).
    pub fn report(&self) -> &DataReport {
        &self.report
    }

    /// Records the `[spectra]` entries no experiment used.
    fn finish(&mut self) {
        let unused = self
            .dataset
            .spectra
            .keys()
            .filter(|id| !self.seen.contains(*id));
        self.report.unused_spectra = unused.cloned().collect();
    }

    fn load_pair(&mut self, pair: &FilePair) -> Result<LoadedPair, DataError> {
        let list = read_expt(&pair.experiments)?;
        let (table, blobs) = read_refl_located(&pair.reflections)?;
        for s in &table.skipped_columns {
            let file = pair.reflections.display();
            self.report
                .skipped_columns
                .push(format!("{file}: {} ({})", s.name, s.type_name));
        }
        for column in ["shoebox", "id", "miller_index"] {
            if table.column(column).is_none() {
                return Err(ReflError::MissingColumn {
                    path: pair.reflections.clone(),
                    column: column.to_string(),
                }
                .into());
            }
        }
        let rows_by_experiment = group_rows(&list, &table, pair)?;
        let panels = list
            .detectors
            .iter()
            .map(|d| std::sync::Arc::new(d.panels.clone()))
            .collect();
        Ok(LoadedPair {
            experiments_path: pair.experiments.clone(),
            layout: RowLayout::new(&pair.reflections, &table, &blobs),
            list,
            table,
            rows_by_experiment,
            next_experiment: 0,
            fluence_per_m2: self.dataset.fluence_per_m2,
            panels,
        })
    }

    fn spectrum_for(&mut self, identifier: &str, beam: &Beam) -> Result<Spectrum, DataError> {
        self.seen.insert(identifier.to_string());
        let per_shot = self.dataset.spectrum_file(identifier);
        let Some(path) = per_shot.or_else(|| self.dataset.default_spectrum.clone()) else {
            self.report.monochromatic_fallback += 1;
            return Ok(Spectrum::monochromatic(beam.wavelength));
        };
        if let Some(s) = self.spectrum_cache.get(&path) {
            return Ok(s.clone());
        }
        let spectrum = read_spectrum(&path)?;
        // Only the shared default is worth caching; per-shot files are read once each.
        if self.dataset.default_spectrum.as_ref() == Some(&path) {
            self.spectrum_cache.insert(path, spectrum.clone());
        }
        Ok(spectrum)
    }

    /// Builds the next image of the current pair, or `None` when the pair is exhausted.
    fn next_in_pair(&mut self) -> Option<Result<ImageData, DataError>> {
        loop {
            let pair = self.current.as_mut()?;
            let e = pair.next_experiment;
            if e >= pair.list.experiments.len() {
                self.current = None;
                return None;
            }
            pair.next_experiment += 1;
            match self.build_image(e) {
                Ok(Some(image)) => return Some(Ok(image)),
                Ok(None) => continue,
                Err(err) => return Some(Err(err)),
            }
        }
    }

    /// The image of experiment `e` of the current pair; `None` (counted) when it is skipped.
    fn build_image(&mut self, e: usize) -> Result<Option<ImageData>, DataError> {
        let Some(pair) = self.current.as_ref() else {
            return Ok(None);
        };
        let rows = pair.rows_by_experiment[e].clone();
        let Some(mut image) = pair.empty_image(e) else {
            self.report.images.skip("no crystal or beam model", 1);
            let reason = "image has no crystal or beam model";
            self.report.shoeboxes.skip(reason, rows.len() as u64);
            return Ok(None);
        };
        if rows.is_empty() {
            self.report.images.skip("no reflections", 1);
            return Ok(None);
        }
        self.collect_shoeboxes(&mut image, &rows);
        if image.shoeboxes.is_empty() {
            self.report.images.skip("no shoebox with usable pixels", 1);
            return Ok(None);
        }
        image.spectrum = self.spectrum_for(&image.identifier, &image.beam)?;
        self.report.images.used += 1;
        Ok(Some(image))
    }

    fn collect_shoeboxes(&mut self, image: &mut ImageData, rows: &[usize]) {
        let Some(pair) = self.current.as_ref() else {
            return;
        };
        let (Some(Column::Shoebox(boxes)), Some(Column::MillerIndex(hkl))) = (
            pair.table.column("shoebox"),
            pair.table.column("miller_index"),
        ) else {
            return;
        };
        let report = &mut self.report;
        let mut out = ImageShoeboxes::with_capacity(rows.len(), 0);
        let trusted_ranges = image.location.trusted_ranges.clone();
        for &row in rows {
            let (sb, at) = (boxes.get(row), (row, hkl[row]));
            let background = Some(&mut image.background);
            if let Some(reason) = add_shoebox(
                &mut out,
                background,
                sb,
                at,
                &trusted_ranges,
                &mut report.pixels,
            ) {
                report.shoeboxes.skip(reason, 1);
            } else {
                report.shoeboxes.used += 1;
                pair.layout.add_row(&mut image.location, row);
            }
        }
        report.at_16bit_ceiling += out
            .counts
            .iter()
            .zip(&out.use_pixel)
            .filter(|&(&c, &used)| used && c == CEILING_16BIT)
            .count() as u64;
        image.location.shoeboxes = out.shoeboxes.len();
        image.location.pixels = out.counts.len();
        image.location.checksum = out.checksum;
        image.shoeboxes = out.shoeboxes;
        image.counts = out.counts;
        image.use_pixel = out.use_pixel;
    }
}

/// Maps each reflection row to its experiment via `id` → `identifiers` → experiment identifier.
fn group_rows(
    list: &ExperimentList,
    table: &ReflectionTable,
    pair: &FilePair,
) -> Result<Vec<Vec<usize>>, DataError> {
    let by_identifier: HashMap<&str, usize> = list
        .experiments
        .iter()
        .enumerate()
        .map(|(i, e)| (e.identifier.as_str(), i))
        .collect();
    let ids = table.column("id").and_then(Column::as_int).unwrap_or(&[]);
    let mut rows = vec![Vec::new(); list.experiments.len()];
    for (row, &id) in ids.iter().enumerate() {
        let id = i64::from(id);
        // Without an identifiers map (older files) the id is the experiment's index.
        let experiment = if table.identifiers.is_empty() {
            usize::try_from(id).ok().filter(|&i| i < rows.len())
        } else {
            table
                .identifiers
                .get(&id)
                .and_then(|name| by_identifier.get(name.as_str()).copied())
        };
        let Some(e) = experiment else {
            return Err(DataError::UnknownId {
                path: pair.reflections.clone(),
                row,
                id,
                experiments: pair.experiments.clone(),
            });
        };
        rows[e].push(row);
    }
    Ok(rows)
}

impl Iterator for ImageStream<'_> {
    type Item = Result<ImageData, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.current.is_some() {
                if let Some(image) = self.next_in_pair() {
                    return Some(image);
                }
                continue;
            }
            let Some(pair) = self.dataset.files.get(self.next_pair).cloned() else {
                self.finish();
                return None;
            };
            self.next_pair += 1;
            match self.load_pair(&pair) {
                Ok(loaded) => self.current = Some(loaded),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// Writes `NAME.expt`, `NAME.refl` and `spectra/ID.lam` (one per (identifier, spectrum)) into
/// `dir`: the layout [`Dataset::open`] reads, so simulated and real data take the same path.
pub fn write_dataset(
    dir: &Path,
    name: &str,
    list: &ExperimentList,
    table: &ReflectionTable,
    spectra: &[(String, Spectrum)],
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    write_expt(list, &dir.join(format!("{name}.expt")))?;
    write_refl(table, &dir.join(format!("{name}.refl")))?;
    if !spectra.is_empty() {
        std::fs::create_dir_all(dir.join("spectra"))?;
    }
    for (identifier, spectrum) in spectra {
        write_spectrum(
            spectrum,
            &dir.join("spectra").join(format!("{identifier}.lam")),
        )?;
    }
    Ok(())
}
