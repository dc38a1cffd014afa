//! DIALS experiment lists (`.expt`, JSON): beams, detectors, crystals, imagesets, identifiers.
//!
//! In: the text of an `.expt` file (as written by dxtbx `ExperimentListDumper`). Out: an
//! [`ExperimentList`] whose detector panels are in the **lab frame** (mm): dxtbx stores each
//! panel and group frame relative to its parent group, and [`read_expt`] composes those frames
//! down the hierarchy exactly as dxtbx's `VirtualPanelFrame::update_global_frame` does
//! (global = parent orientation [fast | slow | fast x slow] * local + parent origin).
//! Guarantees: every experiment's beam/detector/crystal/imageset index points at an existing
//! model, every hierarchy leaf names an existing panel and every panel is placed exactly once;
//! otherwise a typed [`ExptError`] names the file and the field. [`write_expt`] writes a list
//! that dxtbx and [`read_expt`] read back to the same lab-frame geometry.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A 3-vector in the lab frame (mm for positions, unitless for directions).
pub type Vec3 = [f64; 3];

/// Everything that can go wrong reading an experiment list.
#[derive(Debug, thiserror::Error)]
pub enum ExptError {
    /// The file could not be read.
    #[error("{path}: cannot read experiment list: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The JSON is malformed or a field has the wrong type.
    #[error("{path}:{line}:{column}: malformed experiment list: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// serde_json's description, which names the field.
        message: String,
    },
    /// An experiment refers to a model index the file does not hold.
    #[error(
        "{path}: experiment {experiment} field `{field}` refers to {field} {index}, but the file lists {count}"
    )]
    BadReference {
        /// The file.
        path: PathBuf,
        /// Index of the experiment in the list.
        experiment: usize,
        /// `beam`, `detector`, `crystal` or `imageset`.
        field: &'static str,
        /// The index found.
        index: usize,
        /// How many models of that kind the file holds.
        count: usize,
    },
    /// A hierarchy leaf names a panel that is not in the detector's `panels` list.
    #[error(
        "{path}: detector {detector} field `hierarchy` refers to panel {panel}, but `panels` lists {count}"
    )]
    MissingPanel {
        /// The file.
        path: PathBuf,
        /// Index of the detector.
        detector: usize,
        /// The panel index named by the hierarchy.
        panel: usize,
        /// How many panels are listed.
        count: usize,
    },
    /// A panel is placed by no hierarchy leaf, or by more than one.
    #[error(
        "{path}: detector {detector} field `hierarchy`: panel {panel} is named by {times} hierarchy leaves (expected exactly one)"
    )]
    PanelPlacement {
        /// The file.
        path: PathBuf,
        /// Index of the detector.
        detector: usize,
        /// The panel index.
        panel: usize,
        /// How many leaves name it.
        times: usize,
    },
    /// A frame has a zero-length or parallel fast/slow axis pair.
    #[error("{path}: detector {detector} `{node}` field `fast_axis`/`slow_axis`: {what}")]
    BadFrame {
        /// The file.
        path: PathBuf,
        /// Index of the detector.
        detector: usize,
        /// Name of the panel or group.
        node: String,
        /// What is wrong.
        what: &'static str,
    },
}

/// A list of experiments and the models they share.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentList {
    /// One entry per experiment (one still shot per experiment for serial data).
    pub experiments: Vec<Experiment>,
    /// Beam models.
    pub beams: Vec<Beam>,
    /// Detector models with panels in the lab frame.
    pub detectors: Vec<Detector>,
    /// Crystal models.
    pub crystals: Vec<Crystal>,
    /// Image sets (file names only; pixels come from the reflection table's shoeboxes).
    pub imagesets: Vec<ImageSet>,
}

/// One experiment: indices into the shared model lists and its unique identifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    /// Unique identifier, matched against a reflection table's `identifiers` map.
    #[serde(default)]
    pub identifier: String,
    /// Index into [`ExperimentList::beams`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beam: Option<usize>,
    /// Index into [`ExperimentList::detectors`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detector: Option<usize>,
    /// Index into [`ExperimentList::crystals`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crystal: Option<usize>,
    /// Index into [`ExperimentList::imagesets`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imageset: Option<usize>,
}

/// A monochromatic beam model (the nominal wavelength of a shot; spectra refine it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Beam {
    /// Unit vector towards the source (dxtbx convention: s0 = -direction / wavelength).
    pub direction: Vec3,
    /// Wavelength in Å.
    pub wavelength: f64,
    /// Beam divergence, degrees.
    #[serde(default)]
    pub divergence: f64,
    /// Standard deviation of the divergence, degrees.
    #[serde(default)]
    pub sigma_divergence: f64,
    /// Normal to the polarization plane.
    #[serde(default = "default_polarization_normal")]
    pub polarization_normal: Vec3,
    /// Fraction of polarization along the plane.
    #[serde(default = "default_polarization_fraction")]
    pub polarization_fraction: f64,
    /// Flux, photons per second (0 when unknown).
    #[serde(default)]
    pub flux: f64,
    /// Transmission fraction.
    #[serde(default = "one")]
    pub transmission: f64,
}

fn default_polarization_normal() -> Vec3 {
    [0.0, 1.0, 0.0]
}
fn default_polarization_fraction() -> f64 {
    0.999
}
fn one() -> f64 {
    1.0
}

impl Beam {
    /// Photon energy in eV (E·λ = 12398.4198 eV·Å).
    pub fn energy_ev(&self) -> f64 {
        crate::formats::spectrum::EV_ANGSTROM / self.wavelength
    }
}

/// One detector panel, its frame already composed to the lab frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// Panel name.
    pub name: String,
    /// Lab-frame unit vector along increasing fast (x) pixel index.
    pub fast_axis: Vec3,
    /// Lab-frame unit vector along increasing slow (y) pixel index.
    pub slow_axis: Vec3,
    /// Lab-frame position of the corner of pixel (0, 0), mm.
    pub origin: Vec3,
    /// Pixels along fast and slow.
    pub image_size: [usize; 2],
    /// Pixel size along fast and slow, mm.
    pub pixel_size: [f64; 2],
    /// Lowest and highest trusted pixel value.
    pub trusted_range: [f64; 2],
    /// Sensor thickness, mm.
    pub thickness: f64,
    /// Sensor material.
    pub material: String,
    /// Attenuation coefficient, 1/mm.
    pub mu: f64,
    /// Gain (counts per photon).
    pub gain: f64,
    /// Pedestal (counts).
    pub pedestal: f64,
    /// Untrusted rectangles (x0, y0, x1, y1 in pixels), excluded from every shoebox.
    pub mask: Vec<[i64; 4]>,
}

/// A detector: panels in the lab frame plus the depth of the group hierarchy they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Detector {
    /// Panels in file order (the `panel` column of a reflection table indexes this).
    pub panels: Vec<Panel>,
    /// Number of group levels above the panels (0 without a hierarchy; CSPAD has 3).
    pub hierarchy_depth: usize,
}

/// A crystal model: real-space basis, space group, and stills mosaicity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Crystal {
    /// Real-space a vector in the lab frame, Å.
    pub real_space_a: Vec3,
    /// Real-space b vector in the lab frame, Å.
    pub real_space_b: Vec3,
    /// Real-space c vector in the lab frame, Å.
    pub real_space_c: Vec3,
    /// Hall symbol of the space group, kept verbatim (parsed by `physics::symmetry`).
    pub space_group_hall_symbol: String,
    /// Maximum-likelihood half mosaic angle, degrees (stills refinement).
    #[serde(
        rename = "ML_half_mosaicity_deg",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ml_half_mosaicity_deg: Option<f64>,
    /// Maximum-likelihood mosaic domain size, Å (stills refinement).
    #[serde(
        rename = "ML_domain_size_ang",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ml_domain_size_ang: Option<f64>,
}

impl Crystal {
    /// Unit cell (a, b, c in Å; alpha, beta, gamma in degrees) from the real-space basis.
    pub fn unit_cell(&self) -> [f64; 6] {
        let (a, b, c) = (self.real_space_a, self.real_space_b, self.real_space_c);
        let (la, lb, lc) = (norm(a), norm(b), norm(c));
        let angle =
            |u: Vec3, v: Vec3, lu: f64, lv: f64| (dot(u, v) / (lu * lv)).acos().to_degrees();
        [
            la,
            lb,
            lc,
            angle(b, c, lb, lc),
            angle(a, c, la, lc),
            angle(a, b, la, lb),
        ]
    }
}

/// An image set: where the images of an experiment live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageSet {
    /// dxtbx class name (`ImageSet`, `ImageSequence`, ...).
    #[serde(rename = "__id__", default)]
    pub kind: String,
    /// Image file names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    /// A `#`-template for image sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Indices into a multi-image container file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub single_file_indices: Option<Vec<usize>>,
}

/// The on-disk shape of the file, before frames are composed and references checked.
#[derive(Deserialize, Serialize)]
struct RawList {
    #[serde(rename = "__id__", default = "list_id")]
    id: String,
    #[serde(default)]
    experiment: Vec<Experiment>,
    #[serde(default)]
    imageset: Vec<ImageSet>,
    #[serde(default)]
    beam: Vec<Beam>,
    #[serde(default)]
    detector: Vec<RawDetector>,
    #[serde(default)]
    crystal: Vec<Crystal>,
}

fn list_id() -> String {
    "ExperimentList".to_string()
}

#[derive(Deserialize, Serialize)]
struct RawDetector {
    panels: Vec<RawPanel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hierarchy: Option<RawNode>,
}

#[derive(Deserialize, Serialize, Clone)]
struct RawPanel {
    #[serde(default)]
    name: String,
    #[serde(rename = "type", default)]
    panel_type: String,
    fast_axis: Vec3,
    slow_axis: Vec3,
    origin: Vec3,
    #[serde(default)]
    image_size: [usize; 2],
    #[serde(default)]
    pixel_size: [f64; 2],
    #[serde(default)]
    trusted_range: [f64; 2],
    #[serde(default)]
    thickness: f64,
    #[serde(default)]
    material: String,
    #[serde(default)]
    mu: f64,
    #[serde(default = "one")]
    gain: f64,
    #[serde(default)]
    pedestal: f64,
    #[serde(default)]
    mask: Vec<[i64; 4]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    px_mm_strategy: Option<Value>,
}

/// A hierarchy node: a group with its own frame and children, or a leaf naming a panel.
#[derive(Deserialize, Serialize)]
#[serde(untagged)]
enum RawNode {
    Leaf {
        panel: usize,
    },
    Group {
        #[serde(default)]
        name: String,
        fast_axis: Vec3,
        slow_axis: Vec3,
        origin: Vec3,
        #[serde(default)]
        children: Vec<RawNode>,
    },
}

/// A right-handed frame: origin and orthonormal fast, slow, normal axes, in the lab frame.
#[derive(Clone, Copy)]
struct Frame {
    origin: Vec3,
    fast: Vec3,
    slow: Vec3,
    normal: Vec3,
}

const LAB: Frame = Frame {
    origin: [0.0; 3],
    fast: [1.0, 0.0, 0.0],
    slow: [0.0, 1.0, 0.0],
    normal: [0.0, 0.0, 1.0],
};

impl Frame {
    /// A direction given in this frame's (fast, slow, normal) coordinates, in the lab frame.
    fn direction(&self, v: Vec3) -> Vec3 {
        let mut out = [0.0; 3];
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.fast[i] * v[0] + self.slow[i] * v[1] + self.normal[i] * v[2];
        }
        out
    }

    /// A point given in this frame's coordinates, in the lab frame.
    fn point(&self, v: Vec3) -> Vec3 {
        let d = self.direction(v);
        [
            d[0] + self.origin[0],
            d[1] + self.origin[1],
            d[2] + self.origin[2],
        ]
    }

    /// The frame whose local axes and origin (as stored in the file) are given in `self`.
    fn child(&self, fast: Vec3, slow: Vec3, origin: Vec3) -> Result<Frame, &'static str> {
        let (f, s) = (normalized(fast)?, normalized(slow)?);
        let f = self.direction(f);
        let s = self.direction(s);
        let n = normalized(cross(f, s)).map_err(|_| "fast and slow axes are parallel")?;
        Ok(Frame {
            origin: self.point(origin),
            fast: f,
            slow: s,
            normal: n,
        })
    }
}

fn dot(a: Vec3, b: Vec3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
fn norm(a: Vec3) -> f64 {
    dot(a, a).sqrt()
}
fn cross(a: Vec3, b: Vec3) -> Vec3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}
fn normalized(a: Vec3) -> Result<Vec3, &'static str> {
    let n = norm(a);
    if !(n > 0.0 && n.is_finite()) {
        return Err("axis has zero or non-finite length");
    }
    Ok([a[0] / n, a[1] / n, a[2] / n])
}

/// Reads and validates an `.expt` file.
pub fn read_expt(path: &Path) -> Result<ExperimentList, ExptError> {
    let text = std::fs::read_to_string(path).map_err(|source| ExptError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_expt(&text, path)
}

/// Parses the text of an `.expt` file; `path` is used only in error messages.
pub fn parse_expt(text: &str, path: &Path) -> Result<ExperimentList, ExptError> {
    // serde_path_to_error adds the JSON path (e.g. `beam[0].wavelength`) serde_json omits.
    let mut de = serde_json::Deserializer::from_str(text);
    let raw: RawList = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let what = inner.to_string();
        let what = what.split(" at line ").next().unwrap_or("");
        ExptError::Json {
            path: path.to_path_buf(),
            line: inner.line(),
            column: inner.column(),
            message: if field == "." {
                what.to_string()
            } else {
                format!("field `{field}`: {what}")
            },
        }
    })?;
    let detectors = raw
        .detector
        .iter()
        .enumerate()
        .map(|(i, d)| compose_detector(d, i, path))
        .collect::<Result<Vec<_>, _>>()?;
    let list = ExperimentList {
        experiments: raw.experiment,
        beams: raw.beam,
        detectors,
        crystals: raw.crystal,
        imagesets: raw.imageset,
    };
    check_references(&list, path)?;
    Ok(list)
}

fn check_references(list: &ExperimentList, path: &Path) -> Result<(), ExptError> {
    for (i, e) in list.experiments.iter().enumerate() {
        let refs = [
            ("beam", e.beam, list.beams.len()),
            ("detector", e.detector, list.detectors.len()),
            ("crystal", e.crystal, list.crystals.len()),
            ("imageset", e.imageset, list.imagesets.len()),
        ];
        for (field, index, count) in refs {
            if let Some(index) = index.filter(|&k| k >= count) {
                return Err(ExptError::BadReference {
                    path: path.to_path_buf(),
                    experiment: i,
                    field,
                    index,
                    count,
                });
            }
        }
    }
    Ok(())
}

/// Places every panel in the lab frame by walking the hierarchy from the root.
fn compose_detector(raw: &RawDetector, index: usize, path: &Path) -> Result<Detector, ExptError> {
    let frame_error = |node: &str, what| ExptError::BadFrame {
        path: path.to_path_buf(),
        detector: index,
        node: node.to_string(),
        what,
    };
    let Some(root) = &raw.hierarchy else {
        let panels = raw
            .panels
            .iter()
            .map(|p| place_panel(p, &LAB).map_err(|w| frame_error(&p.name, w)))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Detector {
            panels,
            hierarchy_depth: 0,
        });
    };
    let mut placed: Vec<Option<Panel>> = vec![None; raw.panels.len()];
    let mut times = vec![0usize; raw.panels.len()];
    let mut walk = Walk {
        raw,
        path,
        detector: index,
        placed: &mut placed,
        times: &mut times,
    };
    let depth = walk.node(root, &LAB)?;
    if let Some((panel, &t)) = times.iter().enumerate().find(|&(_, &t)| t != 1) {
        return Err(ExptError::PanelPlacement {
            path: path.to_path_buf(),
            detector: index,
            panel,
            times: t,
        });
    }
    Ok(Detector {
        panels: placed.into_iter().flatten().collect(),
        hierarchy_depth: depth,
    })
}

/// State of one hierarchy walk: the panels placed so far and how often each was named.
struct Walk<'a> {
    raw: &'a RawDetector,
    path: &'a Path,
    detector: usize,
    placed: &'a mut [Option<Panel>],
    times: &'a mut [usize],
}

impl Walk<'_> {
    /// Places the panels under `node` (whose frame is given in `parent`); returns its depth.
    fn node(&mut self, node: &RawNode, parent: &Frame) -> Result<usize, ExptError> {
        match node {
            RawNode::Leaf { panel } => {
                let count = self.raw.panels.len();
                let raw_panel = self.raw.panels.get(*panel).ok_or(ExptError::MissingPanel {
                    path: self.path.to_path_buf(),
                    detector: self.detector,
                    panel: *panel,
                    count,
                })?;
                let placed = place_panel(raw_panel, parent)
                    .map_err(|what| self.bad(&raw_panel.name, what))?;
                self.placed[*panel] = Some(placed);
                self.times[*panel] += 1;
                Ok(0)
            }
            RawNode::Group {
                name,
                fast_axis,
                slow_axis,
                origin,
                children,
            } => {
                let frame = parent
                    .child(*fast_axis, *slow_axis, *origin)
                    .map_err(|what| self.bad(name, what))?;
                let mut depth = 0;
                for child in children {
                    depth = depth.max(self.node(child, &frame)?);
                }
                Ok(depth + 1)
            }
        }
    }

    fn bad(&self, node: &str, what: &'static str) -> ExptError {
        ExptError::BadFrame {
            path: self.path.to_path_buf(),
            detector: self.detector,
            node: node.to_string(),
            what,
        }
    }
}

fn place_panel(raw: &RawPanel, parent: &Frame) -> Result<Panel, &'static str> {
    let frame = parent.child(raw.fast_axis, raw.slow_axis, raw.origin)?;
    Ok(Panel {
        name: raw.name.clone(),
        fast_axis: frame.fast,
        slow_axis: frame.slow,
        origin: frame.origin,
        image_size: raw.image_size,
        pixel_size: raw.pixel_size,
        trusted_range: raw.trusted_range,
        thickness: raw.thickness,
        material: raw.material.clone(),
        mu: raw.mu,
        gain: raw.gain,
        pedestal: raw.pedestal,
        mask: raw.mask.clone(),
    })
}

/// Serializes an experiment list as `.expt` JSON (panels written in the lab frame under an
/// identity root group, which dxtbx composes back to the same geometry).
pub fn expt_to_string(list: &ExperimentList) -> Result<String, serde_json::Error> {
    let raw = RawList {
        id: list_id(),
        experiment: list.experiments.clone(),
        imageset: list.imagesets.clone(),
        beam: list.beams.clone(),
        detector: list.detectors.iter().map(flat_detector).collect(),
        crystal: list.crystals.clone(),
    };
    let mut value = serde_json::to_value(&raw)?;
    tag_models(&mut value);
    serde_json::to_string_pretty(&value)
}

/// Adds the `__id__` class tags dxtbx writes on experiments, crystals and image sets.
fn tag_models(value: &mut Value) {
    let tags = [
        ("experiment", "Experiment"),
        ("crystal", "crystal"),
        ("imageset", "ImageSet"),
    ];
    for (list, tag) in tags {
        let Some(items) = value.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for item in items.iter_mut().filter_map(Value::as_object_mut) {
            let id = item.entry("__id__").or_insert_with(|| Value::from(tag));
            if id.as_str().is_some_and(str::is_empty) {
                *id = Value::from(tag);
            }
        }
    }
}

/// Writes an experiment list to `path`.
pub fn write_expt(list: &ExperimentList, path: &Path) -> std::io::Result<()> {
    let text = expt_to_string(list).map_err(std::io::Error::other)?;
    std::fs::write(path, text)
}

fn flat_detector(detector: &Detector) -> RawDetector {
    let panels = detector
        .panels
        .iter()
        .map(|p| RawPanel {
            name: p.name.clone(),
            panel_type: "SENSOR_PAD".to_string(),
            fast_axis: p.fast_axis,
            slow_axis: p.slow_axis,
            origin: p.origin,
            image_size: p.image_size,
            pixel_size: p.pixel_size,
            trusted_range: p.trusted_range,
            thickness: p.thickness,
            material: p.material.clone(),
            mu: p.mu,
            gain: p.gain,
            pedestal: p.pedestal,
            mask: p.mask.clone(),
            px_mm_strategy: Some(serde_json::json!({"type": "SimplePxMmStrategy"})),
        })
        .collect::<Vec<_>>();
    let children = (0..panels.len())
        .map(|panel| RawNode::Leaf { panel })
        .collect();
    RawDetector {
        panels,
        hierarchy: Some(RawNode::Group {
            name: String::new(),
            fast_axis: LAB.fast,
            slow_axis: LAB.slow,
            origin: LAB.origin,
            children,
        }),
    }
}
