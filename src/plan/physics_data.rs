//! The physics data sources of a model: `pdb("file")` (an atomic model) and
//! `dials("*.expt", "*.refl", n_channels = K)` (stills with shoeboxes and per-shot spectra).
//!
//! In: the `--data` directory (and the model's folder, which may ship the PDB), the file name or
//! the channel count the model declares. Out: a `physics::atoms::Crystal`, or a [`DialsData`]:
//! the shared channel grid (`shots.energies`), one [`DialsImage`] per used experiment (spectrum
//! weights on that grid, beam, crystal, shoebox count and where its shoeboxes sit in the
//! `.refl`), the [`DataReport`] of what `formats::dataset_dir` skipped and why, and
//! [`DialsData::shoeboxes`], which hands out an image's shoeboxes (hkl, panel, bbox, pixels, use
//! flags) from a bounded cache, reading them from disk on a miss. Guarantees: every image is
//! read and validated once, here, and only its metadata is kept (memory does not grow with the
//! pixels of the dataset); a missing or malformed file is a `PlanError::Data` naming it; a shot
//! whose spectrum is not on the model's K-channel grid is an error naming the image and the
//! channel (never resampled silently); shoeboxes read again are those validated here, bit for
//! bit, or an error naming the file.

use super::error::PlanError;
use super::image_cache::ShoeboxCache;
use crate::formats::dataset_dir::{DataReport, Dataset};
use crate::formats::expt::{Beam, Crystal as ExptCrystal};
use crate::formats::image_index::{ImageLocation, ImageShoeboxes, read_shoeboxes};
use crate::physics::atoms::{self, Crystal};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One still as the planner uses it.
#[derive(Debug, Clone)]
pub struct DialsImage {
    /// Experiment identifier.
    pub identifier: String,
    /// Spectrum weights on [`DialsData::energy_ev`], summing to one.
    pub spectrum: Vec<f64>,
    /// Beam model.
    pub beam: Beam,
    /// Crystal model (orientation and cell: `image.rot0`, `image.cell0`).
    pub crystal: ExptCrystal,
    /// Detector panels in the lab frame.
    pub panels: std::sync::Arc<Vec<crate::formats::expt::Panel>>,
    /// Photons per m² of this shot.
    pub fluence_per_m2: f64,
    /// Used shoeboxes (their pixels: [`DialsData::shoeboxes`]).
    pub n_shoeboxes: usize,
    /// Where the shoeboxes sit in the `.refl`.
    pub location: ImageLocation,
}

/// A loaded `dials(...)` source.
#[derive(Debug, Clone)]
pub struct DialsData {
    /// The data directory.
    pub dir: PathBuf,
    /// Channel energies shared by every shot (eV, increasing).
    pub energy_ev: Vec<f64>,
    /// Used images in file order.
    pub images: Vec<DialsImage>,
    /// What was skipped and why.
    pub report: DataReport,
    /// The experiment lists, reflection tables and spectrum files of the dataset.
    pub files: Vec<PathBuf>,
    /// The pixel count of every shoebox when all have the same, else None.
    pub common_pixel_count: Option<usize>,
    /// Shoeboxes of recently used images.
    pub cache: ShoeboxCache,
}

impl DialsData {
    /// Shoebox numbering over all images: image i owns `offsets[i]..offsets[i + 1]`.
    pub fn shoebox_offsets(&self) -> Vec<usize> {
        let mut offsets = vec![0];
        for image in &self.images {
            offsets.push(offsets[offsets.len() - 1] + image.n_shoeboxes);
        }
        offsets
    }

    /// Image `i`'s shoeboxes and pixels: from the cache, or read again from its `.refl`.
    pub fn shoeboxes(&self, i: usize) -> Result<Arc<ImageShoeboxes>, PlanError> {
        let image = self.images.get(i).ok_or_else(|| {
            data_error(
                &self.dir,
                format!("image {i} of {} does not exist", self.images.len()),
            )
        })?;
        self.cache.get(i, || {
            read_shoeboxes(&image.location).map_err(|e| {
                // The error text starts with the file, which PlanError::Data prints itself.
                let path = image.location.reflections.as_path();
                let text = e.to_string();
                let prefix = format!("{}: ", path.display());
                let detail = text.strip_prefix(&prefix).unwrap_or(&text).to_string();
                data_error(path, format!("image `{}`: {detail}", image.identifier))
            })
        })
    }

    /// The Miller index of every used shoebox, image by image (reads each image once).
    pub fn miller_indices(&self) -> Result<Vec<[i32; 3]>, PlanError> {
        let mut out = Vec::new();
        for i in 0..self.images.len() {
            out.extend(
                self.shoeboxes(i)?
                    .shoeboxes
                    .iter()
                    .map(|sb| sb.miller_index),
            );
        }
        Ok(out)
    }
}

/// The common pixel count of all shoeboxes seen so far (`Some(None)`: they differ).
fn same_size(
    seen: Option<Option<usize>>,
    sizes: impl Iterator<Item = usize>,
) -> Option<Option<usize>> {
    sizes.fold(seen, |acc, n| match acc {
        None => Some(Some(n)),
        Some(Some(m)) if m == n => acc,
        _ => Some(None),
    })
}

/// Channels closer than this (eV) are the same channel.
const SAME_CHANNEL_EV: f64 = 1e-6;

fn data_error(path: &Path, detail: String) -> PlanError {
    PlanError::Data {
        path: path.display().to_string(),
        line: None,
        detail,
    }
}

/// Where `pdb(file)` is read from: the data directory, else the model's folder.
pub fn pdb_path(data_dir: &Path, model_dir: &Path, file: &str) -> PathBuf {
    let in_data = data_dir.join(file);
    if in_data.is_file() {
        in_data
    } else {
        model_dir.join(file)
    }
}

/// Reads `pdb(file)`: from the data directory, else from the model's folder.
pub fn load_pdb(data_dir: &Path, model_dir: &Path, file: &str) -> Result<Crystal, PlanError> {
    let in_data = data_dir.join(file);
    let path = pdb_path(data_dir, model_dir, file);
    if !path.is_file() {
        return Err(data_error(
            &in_data,
            format!("atomic model not found (nor in {})", model_dir.display()),
        ));
    }
    atoms::read(&path).map_err(|e| data_error(&path, e.to_string()))
}

/// Energies (increasing) and normalized weights of a spectrum.
fn channels(image: &crate::formats::dataset_dir::ImageData) -> (Vec<f64>, Vec<f64>) {
    let mut pairs: Vec<(f64, f64)> = image
        .spectrum
        .energy_ev()
        .into_iter()
        .zip(image.spectrum.normalized_weights())
        .collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    pairs.into_iter().unzip()
}

/// Reads every image of the `dials(...)` source in `data_dir`, checking `n_channels`.
pub fn load_dials(data_dir: &Path, n_channels: usize) -> Result<DialsData, PlanError> {
    let dataset = Dataset::open(data_dir).map_err(|e| data_error(data_dir, e.to_string()))?;
    let mut files: Vec<PathBuf> = dataset
        .files
        .iter()
        .flat_map(|p| [p.experiments.clone(), p.reflections.clone()])
        .collect();
    files.extend(dataset.spectra.values().cloned());
    files.extend(dataset.default_spectrum.iter().cloned());
    let mut stream = dataset.images();
    let mut images = Vec::new();
    let mut grid: Option<Vec<f64>> = None;
    let mut sizes = None;
    for image in stream.by_ref() {
        let image = image.map_err(|e| data_error(data_dir, e.to_string()))?;
        let (energy, weight) = channels(&image);
        let at = |detail: String| {
            data_error(
                &image.source,
                format!("image `{}`: {detail}", image.identifier),
            )
        };
        if energy.len() != n_channels {
            return Err(at(format!(
                "spectrum has {} channels, the model declares n_channels = {n_channels}",
                energy.len()
            )));
        }
        match &grid {
            None => grid = Some(energy),
            Some(g) => {
                if let Some(k) =
                    (0..n_channels).find(|&k| (g[k] - energy[k]).abs() > SAME_CHANNEL_EV)
                {
                    return Err(at(format!(
                        "channel {k} is at {} eV, the first image's at {} eV (all shots must share one grid)",
                        energy[k], g[k]
                    )));
                }
            }
        }
        sizes = same_size(sizes, image.shoeboxes.iter().map(|sb| sb.pixel_count()));
        // The pixels are dropped here: `DialsData::shoeboxes` reads them again when needed.
        images.push(DialsImage {
            identifier: image.identifier,
            spectrum: weight,
            beam: image.beam,
            crystal: image.crystal,
            panels: image.panels,
            fluence_per_m2: image.fluence_per_m2,
            n_shoeboxes: image.shoeboxes.len(),
            location: image.location,
        });
    }
    let report = stream.report().clone();
    // The per-shot spectra found by their conventional name (spectra/ID.lam) rather than
    // dataset.toml are data files too.
    files.extend(
        images
            .iter()
            .filter(|image| !dataset.spectra.contains_key(&image.identifier))
            .filter_map(|image| dataset.spectrum_file(&image.identifier)),
    );
    let energy_ev = grid.ok_or_else(|| data_error(data_dir, "no usable images".into()))?;
    Ok(DialsData {
        dir: data_dir.to_path_buf(),
        energy_ev,
        images,
        report,
        files,
        common_pixel_count: sizes.flatten(),
        cache: ShoeboxCache::default(),
    })
}
