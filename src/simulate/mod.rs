//! `spreadc simulate`: a synthetic SFX dataset drawn from a model file.
//!
//! In: a model's [`Settings`] (constants, variants, atomic model, metal site, state curves,
//! priors), a [`Template`] (detector, beam, spectrum shape, resolution, shoebox size), the number
//! of images, a seed and optional fixed latents ([`Fixed`], from truth.json). Out: a
//! [`Simulated`] dataset (DIALS experiment list, reflection table with shoeboxes, per-shot
//! spectra) and its truth (every latent value used), written by [`write`] in the layout
//! `formats::dataset_dir` reads. Guarantees: deterministic for a seed (image i draws from streams
//! derived from (seed, i) only; its photon noise from (noise seed, i), the noise seed being the
//! seed unless `Template::noise_seed` is set); expected counts come from the same tape nodes a fit records
//! (see [`shot`]); Poisson noise is `physics::noise::add_noise`; every predicted reflection that
//! is not written is counted by reason in [`Skipped`].

pub mod curves;
pub mod predict;
pub mod settings;
pub mod shot;
pub mod truth;

pub use settings::{Prior, Settings};
pub use truth::{Fixed, Truth};

use crate::formats::expt::{self, Detector, Experiment, ExperimentList, ImageSet};
use crate::formats::refl::{Column, ReflectionTable, ShoeboxColumn, mask_bits};
use crate::formats::spectrum::{EV_ANGSTROM, Spectrum};
use crate::ops::{OpsError, StructureFactorOp, StructureFactorOutput};
use crate::physics::atoms::{self, Crystal};
use crate::physics::beam::{Beam, DEFAULT_FLUENCE, spectrum_channels};
use crate::physics::form_factor::FormFactors;
use crate::physics::geometry::detector::Panel;
use crate::physics::geometry::rotation::rotation_from_vector;
use crate::physics::geometry::{Mat3, Vec3, cross, mat_vec, scale};
use crate::physics::mosaic::MosaicDomains;
use crate::physics::noise::{MAX_ADU, NoiseModel, add_noise};
use crate::physics::polarization::Polarization;
use crate::physics::scattering_tables::wk1995::GaussianSet;
use crate::physics::spot::{Region, SpotModel};
use predict::{Candidate, Limits, predict, random_rotation, shoebox_region};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Exp1, StandardNormal};
use serde::Serialize;
use shot::{ImageLatents, expected_counts};
use std::path::{Path, PathBuf};

/// Why a dataset could not be simulated.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// The model lacks or misuses something the simulator needs.
    #[error("model: {0}")]
    Model(String),
    /// truth.json is unreadable or names something the model does not have.
    #[error("{path}: {detail}")]
    Truth {
        /// The truth file.
        path: PathBuf,
        /// What is wrong, naming the key.
        detail: String,
    },
    /// The atomic model could not be read.
    #[error(transparent)]
    Atoms(#[from] atoms::AtomsError),
    /// A scattering table is missing.
    #[error(transparent)]
    Table(#[from] crate::physics::scattering_tables::TableError),
    /// An operator refused its static data.
    #[error(transparent)]
    Ops(#[from] OpsError),
    /// The template geometry is unusable.
    #[error("template: {0}")]
    Template(String),
    /// Writing the dataset failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// The detector, beam and sampling choices that are not part of the model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Template {
    /// Square panel size in pixels (fast = slow).
    pub panel_pixels: usize,
    /// Pixel size, mm.
    pub pixel_mm: f64,
    /// Sample-to-detector distance along the beam, mm (beam through the panel centre).
    pub distance_mm: f64,
    /// Centre of the channel grid, eV (channels 1 eV apart).
    pub centre_ev: f64,
    /// Spread of each shot's spectral mean around `centre_ev`, eV (rms).
    pub jitter_ev: f64,
    /// Width of each shot's spectrum envelope, eV (rms), spiked by exponential SASE noise.
    pub bandwidth_ev: f64,
    /// Photons per m² per shot.
    pub fluence: f64,
    /// Resolution limit of the predicted reflections, Å.
    pub d_min_a: f64,
    /// Shoebox edge, pixels.
    pub shoebox: usize,
    /// Reflections whose brightest pixel carries fewer expected spot photons are not written.
    pub min_peak_photons: f64,
    /// At most this many shoeboxes per image (the brightest).
    pub max_shoeboxes: usize,
    /// Detector point-spread: each shoebox's spot photons blurred by a Gaussian of this sd
    /// (pixels) before the noise, the photons blurred past the shoebox's edge lost (they land
    /// in pixels outside it). 0: none, as in every model here (so > 0 is a misspecification).
    pub psf_sd_px: f64,
    /// Flat-field error along the fast axis: the pixel at fast index x detects
    /// g(x) = 1 + G (2 (x + 0.5) / panel_pixels − 1) times the photons the model expects (its
    /// counts Poisson(g(x) μ)), from 1 − G at the panel's first column to 1 + G at its last.
    /// 0: none, as in every model here (so ≠ 0 is a misspecification).
    pub gain_gradient: f64,
    /// Seed of the photon (Poisson) noise alone; None: the run's seed. Another noise seed
    /// draws new counts of the same crystal, orientations, spectra and latents (the same
    /// truth.json images): a dataset's noise told apart from its configuration.
    pub noise_seed: Option<u64>,
    /// Write each pixel's expected photons (a non-integer f32) instead of a Poisson draw: the
    /// noise-free ("Asimov") dataset, whose likelihood at the true latents is the model's
    /// maximum, so a fit of it shows what the model and the inference do with no noise.
    pub expected_counts: bool,
}

impl Default for Template {
    fn default() -> Self {
        Self {
            panel_pixels: 1920,
            pixel_mm: 0.11,
            distance_mm: 100.0,
            centre_ev: 7120.0,
            jitter_ev: 10.0,
            bandwidth_ev: 12.0,
            fluence: DEFAULT_FLUENCE * 1e-4,
            d_min_a: 2.2,
            shoebox: 11,
            min_peak_photons: 3.0,
            max_shoeboxes: 40,
            psf_sd_px: 0.0,
            gain_gradient: 0.0,
            noise_seed: None,
            expected_counts: false,
        }
    }
}

/// Predicted reflections not written, by reason.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Skipped {
    /// The shoebox would cross the panel edge.
    pub off_panel: u64,
    /// The brightest expected spot pixel is below `min_peak_photons`.
    pub weak: u64,
    /// Beyond `max_shoeboxes` for the image.
    pub over_cap: u64,
}

/// A simulated dataset and its truth.
#[derive(Debug, Clone)]
pub struct Simulated {
    /// Experiments (one per image).
    pub experiments: ExperimentList,
    /// Reflections with shoeboxes.
    pub reflections: ReflectionTable,
    /// Per-shot spectra by identifier.
    pub spectra: Vec<(String, Spectrum)>,
    /// Every latent value used.
    pub truth: Truth,
}

/// A stream seed for (seed, image, purpose), by SplitMix64 finalization.
pub fn stream_seed(seed: u64, image: u64, purpose: u64) -> u64 {
    let mut z = seed
        .wrapping_add(image.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(purpose.wrapping_mul(0xD1B5_4A32_D192_ED69));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The template's panel: beam along −z through the panel centre (DIALS convention).
pub fn template_panel(t: &Template) -> Result<Panel, SimulateError> {
    let half = t.panel_pixels as f64 * t.pixel_mm / 2.0;
    Panel::from_dials(
        [-half, half, -t.distance_mm],
        [1.0, 0.0, 0.0],
        [0.0, -1.0, 0.0],
        [t.pixel_mm, t.pixel_mm],
        [t.panel_pixels, t.panel_pixels],
    )
    .map_err(|e| SimulateError::Template(e.to_string()))
}

/// Direction of travel of the beam (DIALS direction [0, 0, 1] points to the source).
const INCIDENT: Vec3 = [0.0, 0.0, -1.0];
/// DIALS polarization plane normal and fraction of the template beam.
const POLARIZATION_NORMAL: Vec3 = [0.0, 1.0, 0.0];
const POLARIZATION_FRACTION: f64 = 0.999;

/// Channel energies of the grid: `n` channels 1 eV apart centred on `centre_ev`.
pub fn channel_energies(n: usize, centre_ev: f64) -> Vec<f64> {
    let first = centre_ev - (n / 2) as f64;
    (0..n).map(|k| first + k as f64).collect()
}

/// A SASE-like spectrum: a Gaussian envelope around a jittered mean, each channel spiked by an
/// exponential factor.
fn draw_spectrum(rng: &mut StdRng, energies: &[f64], t: &Template) -> (Vec<f64>, f64) {
    let mean = t.centre_ev + t.jitter_ev * rng.sample::<f64, _>(StandardNormal);
    let weights = energies
        .iter()
        .map(|e| {
            let z = (e - mean) / t.bandwidth_ev;
            (-0.5 * z * z).exp() * rng.sample::<f64, _>(Exp1)
        })
        .collect();
    (weights, mean)
}

/// Simulates `n_images` stills of the model described by `settings`.
pub fn simulate(
    settings: &Settings,
    template: &Template,
    n_images: usize,
    seed: u64,
    fixed: &Fixed,
) -> Result<Simulated, SimulateError> {
    let crystal = atoms::read(&settings.pdb)?;
    let panel = template_panel(template)?;
    let energies = channel_energies(settings.n_channels, template.centre_ev);
    let mut truth = Truth::draw(settings, fixed, seed)?;
    let (fp, fdp) = truth.metal_curves(settings, &crystal, &energies)?;
    let form_factors = FormFactors::embedded(GaussianSet::Wk1995)?;
    let base = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
        .map(|e| scale(crystal.cell.orthogonalize(e), 1e-10));
    let mut out = Output::new(&panel, template);
    for i in 0..n_images {
        let image = Image::draw(settings, template, fixed, &truth, seed, i, &energies)?;
        let real = base.map(|row| mat_vec(&image.orientation, row));
        let limits = Limits {
            d_min_a: template.d_min_a,
            wavelength_range_a: image.wavelength_range(),
            tolerance: 2e-3,
        };
        let real_a = real.map(|row| scale(row, 1e10));
        // Shoeboxes are drawn around the spots of the true orientation, R(rot)·U (as a refined
        // DIALS model would place them); the .expt keeps U, the `image.rot0` the fit starts from.
        let r = rotation_from_vector(image.latents.rotation);
        let true_a = real_a.map(|row| mat_vec(&r, row));
        let found = predict(&true_a, INCIDENT, &panel, &limits);
        let model = image.spot_model(&panel, real, settings, template)?;
        let kept = render(
            &crystal,
            &form_factors,
            settings,
            &found,
            &image,
            &model,
            (&fp, &fdp),
            &panel,
            template,
            &mut out.skipped,
        )?;
        let noise = (!template.expected_counts).then(|| template.noise_seed.unwrap_or(seed));
        out.push_image(&crystal, i, &image, real_a, kept, noise)?;
        truth
            .images
            .push(image.record((out.last_count, out.last_overloaded)));
        truth.overloaded_pixels += out.last_overloaded;
    }
    truth.skipped = out.skipped.clone();
    truth.psf_sd_px = template.psf_sd_px;
    truth.gain_gradient = template.gain_gradient;
    truth.noise_seed = template.noise_seed.filter(|&n| n != seed);
    truth.expected_counts = template.expected_counts;
    let reflections = out.finish()?;
    Ok(Simulated {
        experiments: out.experiments,
        reflections,
        spectra: out.spectra,
        truth,
    })
}

/// One shot's draws.
struct Image {
    identifier: String,
    orientation: Mat3,
    latents: ImageLatents,
    log_scale: f64,
    energies: Vec<f64>,
    weights: Vec<f64>,
    mean_ev: f64,
}

impl Image {
    fn draw(
        settings: &Settings,
        template: &Template,
        fixed: &Fixed,
        truth: &Truth,
        seed: u64,
        i: usize,
        energies: &[f64],
    ) -> Result<Self, SimulateError> {
        let mut rng = StdRng::seed_from_u64(stream_seed(seed, i as u64, 1));
        let orientation = random_rotation(&mut rng);
        let (weights, mean_ev) = draw_spectrum(&mut rng, energies, template);
        let normal = |rng: &mut StdRng, sd: f64| sd * rng.sample::<f64, _>(StandardNormal);
        let drawn = [0; 3].map(|_| normal(&mut rng, settings.rot_sd));
        let rotation = fixed.rot.unwrap_or(drawn);
        let log_scale = match fixed.log_scale {
            Some(v) => v,
            None => truth::sample(&settings.log_scale, &mut rng, "log_scale")?,
        };
        let tilt_sd = truth.mosaic_rad()?;
        let tilts = (0..settings.n_domains)
            .map(|_| [0; 3].map(|_| normal(&mut rng, tilt_sd)))
            .collect();
        Ok(Image {
            identifier: format!("sim-{seed}-{i:05}"),
            orientation,
            latents: ImageLatents {
                scale: log_scale.exp(),
                rotation,
                tilts,
                n_cells: [settings.domain_cells; 3],
                background: truth.background,
            },
            log_scale,
            energies: energies.to_vec(),
            weights,
            mean_ev,
        })
    }

    fn wavelength_range(&self) -> (f64, f64) {
        let lo = EV_ANGSTROM / self.energies[self.energies.len() - 1];
        let hi = EV_ANGSTROM / self.energies[0];
        (lo, hi)
    }

    fn spectrum(&self) -> Spectrum {
        Spectrum {
            wavelength_a: self.energies.iter().map(|e| EV_ANGSTROM / e).collect(),
            weight: self.weights.clone(),
        }
    }

    fn spot_model(
        &self,
        panel: &Panel,
        real_m: Mat3,
        settings: &Settings,
        template: &Template,
    ) -> Result<SpotModel, SimulateError> {
        let s = self.spectrum();
        let channels = spectrum_channels(&s.wavelength_a, &s.normalized_weights())
            .map_err(|e| SimulateError::Template(e.to_string()))?;
        let polarization =
            Polarization::from_dials(INCIDENT, POLARIZATION_NORMAL, POLARIZATION_FRACTION);
        Ok(SpotModel {
            panel: panel.clone(),
            beam: Beam {
                incident: INCIDENT,
                polar_vector: cross(POLARIZATION_NORMAL, INCIDENT),
                kahn: 2.0 * POLARIZATION_FRACTION - 1.0,
                fluence: template.fluence,
                channels,
            },
            polarization,
            real_space_m: real_m,
            rotation: [0.0; 3],
            domains: MosaicDomains::single(),
            shape: settings.shape,
            n_cells: [settings.domain_cells; 3],
            oversample: 1,
            scale: 1.0,
            background: 0.0,
        })
    }

    fn record(&self, (n_shoeboxes, overloaded_pixels): (usize, u64)) -> truth::ImageTruth {
        truth::ImageTruth {
            identifier: self.identifier.clone(),
            orientation: self.orientation,
            rot: self.latents.rotation,
            log_scale: self.log_scale,
            tilts: self.latents.tilts.clone(),
            spectrum_mean_ev: self.mean_ev,
            n_shoeboxes,
            overloaded_pixels,
        }
    }
}

/// The mask of a written pixel: VALID, unless it reached the 16-bit ceiling (an overload, whose
/// true count is unknown), which DIALS would leave out.
fn overload_mask(count: f32) -> u8 {
    if f64::from(count) >= MAX_ADU {
        0
    } else {
        mask_bits::VALID
    }
}

/// A written shoebox: its reflection, region, noisy counts.
struct Kept {
    candidate: Candidate,
    region: Region,
    counts: Vec<f32>,
}

/// Expected counts of every predicted reflection that fits on the panel, the brightest kept
/// and noised.
#[allow(clippy::too_many_arguments)]
fn render(
    crystal: &Crystal,
    form_factors: &FormFactors,
    settings: &Settings,
    found: &[Candidate],
    image: &Image,
    model: &SpotModel,
    fp_fdp: (&[f64], &[f64]),
    panel: &Panel,
    template: &Template,
    skipped: &mut Skipped,
) -> Result<Vec<Kept>, SimulateError> {
    let mut on_panel = Vec::new();
    for c in found {
        match shoebox_region(panel, c, template.shoebox) {
            Some(r) => on_panel.push((*c, r)),
            None => skipped.off_panel += 1,
        }
    }
    if on_panel.is_empty() {
        return Ok(Vec::new());
    }
    let hkl: Vec<[i32; 3]> = on_panel.iter().map(|(c, _)| c.hkl).collect();
    let regions: Vec<Region> = on_panel.iter().map(|(_, r)| *r).collect();
    let metal = [settings.metal.as_str()];
    let sf = StructureFactorOp::from_crystal(
        crystal,
        &hkl,
        &image.energies,
        form_factors,
        &metal,
        StructureFactorOutput::Intensity,
    )?;
    let (mut total, mut spot) = expected_counts(sf, fp_fdp, model, &image.latents, &regions)?;
    let n = template.shoebox * template.shoebox;
    if template.psf_sd_px > 0.0 {
        blur_spots(&mut total, &mut spot, template.shoebox, template.psf_sd_px);
    }
    if template.gain_gradient != 0.0 {
        let gain = |fast: usize| flat_field_gain(template, fast);
        apply_gain(&mut total, &mut spot, &regions, gain);
    }
    let mut ranked: Vec<(usize, f64)> = (0..regions.len())
        .map(|k| {
            (
                k,
                spot[k * n..(k + 1) * n]
                    .iter()
                    .fold(0.0f64, |a, &b| a.max(b)),
            )
        })
        .collect();
    let before = ranked.len();
    ranked.retain(|(_, peak)| *peak >= template.min_peak_photons);
    skipped.weak += (before - ranked.len()) as u64;
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if ranked.len() > template.max_shoeboxes {
        skipped.over_cap += (ranked.len() - template.max_shoeboxes) as u64;
        ranked.truncate(template.max_shoeboxes);
    }
    ranked.sort_by_key(|(k, _)| *k);
    Ok(ranked
        .into_iter()
        .map(|(k, _)| Kept {
            candidate: on_panel[k].0,
            region: regions[k],
            counts: total[k * n..(k + 1) * n]
                .iter()
                .map(|&x| x as f32)
                .collect(),
        })
        .collect())
}

/// The detected fraction g(x) of the photons at fast index `fast` under the template's
/// flat-field error (1 when there is none).
pub fn flat_field_gain(template: &Template, fast: usize) -> f64 {
    let width = template.panel_pixels as f64;
    1.0 + template.gain_gradient * (2.0 * (fast as f64 + 0.5) / width - 1.0)
}

/// Scales each pixel of every shoebox (row-major `n_slow`×`n_fast` blocks of `regions`, in
/// `total` and `spot`) by `gain` of its fast index on the panel.
fn apply_gain(
    total: &mut [f64],
    spot: &mut [f64],
    regions: &[Region],
    gain: impl Fn(usize) -> f64,
) {
    let mut at = 0;
    for r in regions {
        for _slow in 0..r.n_slow {
            for fast in 0..r.n_fast {
                let g = gain(r.fast0 + fast);
                total[at] *= g;
                spot[at] *= g;
                at += 1;
            }
        }
    }
}

/// Blurs the spot photons of every `size`×`size` shoebox in `spot` by a Gaussian point-spread
/// of sd `sd_px` pixels (separable, truncated at 4 sd and normalized over that support; photons
/// spread past the shoebox's edge are lost), and puts the change into `total`, the spot plus
/// background.
fn blur_spots(total: &mut [f64], spot: &mut [f64], size: usize, sd_px: f64) {
    let radius = (4.0 * sd_px).ceil() as isize;
    let weights: Vec<f64> = (-radius..=radius)
        .map(|d| (-0.5 * (d as f64 / sd_px).powi(2)).exp())
        .collect();
    let norm: f64 = weights.iter().sum();
    let kernel: Vec<f64> = weights.iter().map(|w| w / norm).collect();
    let n = size * size;
    let mut rows = vec![0.0; n];
    let mut blurred = vec![0.0; n];
    // One pass along an axis: out[i] = Σ_d kernel[d] in[i - d] within the shoebox.
    let pass = |src: &[f64], dst: &mut [f64], along_fast: bool| {
        dst.fill(0.0);
        for slow in 0..size {
            for fast in 0..size {
                let v = src[slow * size + fast];
                for (k, w) in kernel.iter().enumerate() {
                    let d = k as isize - radius;
                    let (s, f) = if along_fast {
                        (slow as isize, fast as isize + d)
                    } else {
                        (slow as isize + d, fast as isize)
                    };
                    if (0..size as isize).contains(&s) && (0..size as isize).contains(&f) {
                        dst[s as usize * size + f as usize] += w * v;
                    }
                }
            }
        }
    };
    for (t, s) in total.chunks_exact_mut(n).zip(spot.chunks_exact_mut(n)) {
        pass(s, &mut rows, true);
        pass(&rows, &mut blurred, false);
        for ((t, s), b) in t.iter_mut().zip(s.iter_mut()).zip(&blurred) {
            *t += b - *s;
            *s = *b;
        }
    }
}

/// The dataset being assembled.
struct Output {
    experiments: ExperimentList,
    ids: Vec<i32>,
    hkl: Vec<[i32; 3]>,
    panel: Vec<u64>,
    bbox: Vec<[i32; 6]>,
    xyzcal: Vec<[f64; 3]>,
    shoeboxes: ShoeboxColumn,
    spectra: Vec<(String, Spectrum)>,
    identifiers: Vec<String>,
    skipped: Skipped,
    last_count: usize,
    last_overloaded: u64,
}

impl Output {
    fn new(panel: &Panel, t: &Template) -> Self {
        let half = t.panel_pixels as f64 * t.pixel_mm / 2.0;
        let expt_panel = expt::Panel {
            name: "simulated".into(),
            fast_axis: panel.fast,
            slow_axis: panel.slow,
            origin: [-half, half, -t.distance_mm],
            image_size: [panel.n_fast, panel.n_slow],
            pixel_size: [t.pixel_mm, t.pixel_mm],
            // dxtbx's trusted range is inclusive: the clipped 65535 is an overload.
            trusted_range: [-1.0, MAX_ADU - 1.0],
            thickness: 0.0,
            material: String::new(),
            mu: 0.0,
            gain: 1.0,
            pedestal: 0.0,
            mask: Vec::new(),
        };
        Self {
            experiments: ExperimentList {
                experiments: Vec::new(),
                beams: Vec::new(),
                detectors: vec![Detector {
                    panels: vec![expt_panel],
                    hierarchy_depth: 0,
                }],
                crystals: Vec::new(),
                imagesets: vec![ImageSet {
                    kind: "ImageSet".into(),
                    images: Vec::new(),
                    template: None,
                    single_file_indices: None,
                }],
            },
            ids: Vec::new(),
            hkl: Vec::new(),
            panel: Vec::new(),
            bbox: Vec::new(),
            xyzcal: Vec::new(),
            shoeboxes: ShoeboxColumn::default(),
            spectra: Vec::new(),
            identifiers: Vec::new(),
            skipped: Skipped::default(),
            last_count: 0,
            last_overloaded: 0,
        }
    }

    /// Adds image `i`: its experiment, beam, crystal, spectrum and noised shoeboxes.
    fn push_image(
        &mut self,
        crystal: &Crystal,
        i: usize,
        image: &Image,
        real_a: Mat3,
        kept: Vec<Kept>,
        noise_seed: Option<u64>,
    ) -> Result<(), SimulateError> {
        let spectrum = image.spectrum();
        self.experiments.beams.push(expt::Beam {
            direction: [0.0, 0.0, 1.0],
            wavelength: spectrum.mean_wavelength_a(),
            divergence: 0.0,
            sigma_divergence: 0.0,
            polarization_normal: POLARIZATION_NORMAL,
            polarization_fraction: POLARIZATION_FRACTION,
            flux: 0.0,
            transmission: 1.0,
        });
        self.experiments.crystals.push(expt::Crystal {
            real_space_a: real_a[0],
            real_space_b: real_a[1],
            real_space_c: real_a[2],
            space_group_hall_symbol: crystal.space_group.hall.clone(),
            ml_half_mosaicity_deg: None,
            ml_domain_size_ang: None,
        });
        self.experiments.experiments.push(Experiment {
            identifier: image.identifier.clone(),
            beam: Some(i),
            detector: Some(0),
            crystal: Some(i),
            imageset: Some(0),
        });
        self.spectra.push((image.identifier.clone(), spectrum));
        self.identifiers.push(image.identifier.clone());
        let expected: Vec<f32> = kept.iter().flat_map(|k| k.counts.iter().copied()).collect();
        // Counts per pixel: a Poisson draw (in ADU, as a detector writes them), or with no
        // noise seed the expected photons themselves.
        let counts: Vec<f32> = match noise_seed {
            Some(seed) => {
                let noise = NoiseModel {
                    seed: stream_seed(seed, i as u64, 2),
                    adc_offset: 0.0,
                    ..NoiseModel::default()
                };
                add_noise(&expected, &noise)
                    .counts
                    .into_iter()
                    .map(f32::from)
                    .collect()
            }
            None => expected,
        };
        self.last_count = kept.len();
        self.last_overloaded = 0;
        let n = kept.first().map_or(0, |k| k.counts.len());
        for (k, sb) in kept.iter().enumerate() {
            let r = sb.region;
            let bbox = [
                r.fast0 as i32,
                (r.fast0 + r.n_fast) as i32,
                r.slow0 as i32,
                (r.slow0 + r.n_slow) as i32,
                0,
                1,
            ];
            let data = &counts[k * n..(k + 1) * n];
            let mask: Vec<u8> = data.iter().map(|&c| overload_mask(c)).collect();
            self.last_overloaded += mask.iter().filter(|&&m| m == 0).count() as u64;
            let background = vec![0.0f32; n];
            self.shoeboxes
                .push(0, bbox, Some((data, &mask, &background)))
                .map_err(SimulateError::Model)?;
            self.ids.push(i as i32);
            self.hkl.push(sb.candidate.hkl);
            self.panel.push(0);
            self.bbox.push(bbox);
            self.xyzcal
                .push([sb.candidate.fast_px, sb.candidate.slow_px, 0.5]);
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<ReflectionTable, SimulateError> {
        let mut table = ReflectionTable::new(self.ids.len());
        table.identifiers = self
            .identifiers
            .iter()
            .enumerate()
            .map(|(i, s)| (i as i64, s.clone()))
            .collect();
        let columns = [
            ("id", Column::Int(std::mem::take(&mut self.ids))),
            (
                "miller_index",
                Column::MillerIndex(std::mem::take(&mut self.hkl)),
            ),
            ("panel", Column::SizeT(std::mem::take(&mut self.panel))),
            ("bbox", Column::Int6(std::mem::take(&mut self.bbox))),
            ("xyzcal.px", Column::Vec3(std::mem::take(&mut self.xyzcal))),
            (
                "shoebox",
                Column::Shoebox(std::mem::take(&mut self.shoeboxes)),
            ),
        ];
        for (name, column) in columns {
            table
                .insert(name, column)
                .map_err(|e| SimulateError::Model(e.to_string()))?;
        }
        Ok(table)
    }
}

/// Writes the dataset (`NAME.expt`, `NAME.refl`, `spectra/ID.lam`), the atomic model and
/// truth.json into `dir`.
pub fn write(dir: &Path, name: &str, sim: &Simulated, pdb: &Path) -> Result<(), SimulateError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SimulateError::Io { path, source }
    };
    crate::formats::dataset_dir::write_dataset(
        dir,
        name,
        &sim.experiments,
        &sim.reflections,
        &sim.spectra,
    )
    .map_err(io(dir))?;
    if let Some(file) = pdb.file_name() {
        std::fs::copy(pdb, dir.join(file)).map_err(io(pdb))?;
    }
    let text = serde_json::to_string_pretty(&sim.truth)
        .map_err(|e| SimulateError::Model(format!("truth.json: {e}")))?;
    let path = dir.join("truth.json");
    std::fs::write(&path, text + "\n").map_err(io(&path))
}

#[cfg(test)]
mod tests {
    use super::blur_spots;

    /// A point of spot photons at the centre of a 21×21 shoebox spreads as the sampled
    /// Gaussian: neighbours at exp(-d²/2σ²) of the centre, the flux kept (the 4-sd support
    /// fits inside), the background (total − spot) untouched; at a corner most photons leave.
    #[test]
    fn point_spread_is_a_sampled_gaussian() {
        let size = 21;
        let (c, sd) = (10, 1.5);
        let mut spot = vec![0.0; size * size];
        spot[c * size + c] = 100.0;
        let mut total: Vec<f64> = spot.iter().map(|s| s + 2.0).collect();
        blur_spots(&mut total, &mut spot, size, sd);
        let at = |s: usize, f: usize| spot[s * size + f];
        let ratio = |d2: f64| (-0.5 * d2 / (sd * sd)).exp();
        assert!((at(c, c + 1) / at(c, c) - ratio(1.0)).abs() < 1e-12);
        assert!((at(c + 2, c - 1) / at(c, c) - ratio(5.0)).abs() < 1e-12);
        assert!((spot.iter().sum::<f64>() - 100.0).abs() < 1e-9);
        for (t, s) in total.iter().zip(&spot) {
            assert!((t - s - 2.0).abs() < 1e-12);
        }
        let mut corner = vec![0.0; size * size];
        corner[0] = 100.0;
        let mut corner_total = corner.clone();
        blur_spots(&mut corner_total, &mut corner, size, sd);
        // A quarter of the Gaussian (plus its half-weighted axes) stays in the quadrant.
        let kept = corner.iter().sum::<f64>();
        assert!(kept > 25.0 && kept < 45.0, "kept {kept}");
    }
}
