//! The pixel-model externs of stdlib/physics.spread as registry entries: `structure_factor`,
//! `bragg_spot` and `plane_background`, evaluated for one shoebox of one image.
//!
//! In: evaluated arguments: the crystal and the shoebox as resolved data records, Miller
//! indices, channel energies and the shot's spectrum as data tensors, f'/f'', rotation, mosaic
//! tilts, domain size and plane coefficients as tensors (on the tape when they depend on
//! latents), the lattice shape as a variant choice. Out: one fused node per call
//! (`StructureFactorOp`, `BraggSpotOp`, `PlaneBackgroundOp` of src/ops, whose adjoints are
//! tested there against finite differences). Guarantees: the per-hkl structure-factor sums
//! and the per-(image, panel) spot templates are computed once and cached for the run; the
//! spectrum and the channel energies must be data (an error otherwise, never a silently
//! dropped gradient); a shoebox outside its panel, an unknown shape or a wrong argument is an
//! `Op` error naming the operator and the argument.

use super::eval::Val;
use super::externs::{Extern, ExternArg, Registry, ShoeboxRef};
use super::image_cache::Lru;
use crate::formats::expt::Panel as ExptPanel;
use crate::ops::StructureFactorOutput;
use crate::ops::{BraggSpotOp, MosaicInput, PlaneBackgroundOp, StructureFactorOp};
use crate::physics::atoms::Crystal;
use crate::physics::beam::{Beam, incident_from_dials_direction, spectrum_channels};
use crate::physics::constants::EV_ANGSTROM;
use crate::physics::form_factor::FormFactors;
use crate::physics::geometry::cross;
use crate::physics::geometry::detector::Panel;
use crate::physics::lattice::Shape;
use crate::physics::mosaic::MosaicDomains;
use crate::physics::polarization::Polarization;
use crate::physics::scattering_tables::henke::HenkeTable;
use crate::physics::scattering_tables::wk1995::GaussianSet;
use crate::physics::spot::{Region, SpotModel};
use crate::physics::structure_factor::{FixedPart, StructureFactorModel};
use crate::tape::{Tape, TapeError, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

fn fail(op: &'static str, detail: impl Into<String>) -> TapeError {
    TapeError::Op {
        op,
        label: format!("extern {op}"),
        detail: detail.into(),
    }
}

fn arg<'a>(op: &'static str, args: &'a [ExternArg], i: usize) -> Result<&'a ExternArg, TapeError> {
    args.get(i)
        .ok_or_else(|| fail(op, format!("missing argument {i}")))
}

/// Argument `i` as a tensor value without plate axes (data or on the tape).
fn tensor(op: &'static str, args: &[ExternArg], i: usize) -> Result<Val, TapeError> {
    match arg(op, args, i)? {
        ExternArg::Tensor(v) | ExternArg::Data(v) if v.plates.is_empty() => Ok(v.clone()),
        ExternArg::Tensor(_) | ExternArg::Data(_) => Err(fail(
            op,
            format!(
                "argument {i} varies over a vectorized plate; this operator takes one shoebox's values"
            ),
        )),
        other => Err(fail(
            op,
            format!("argument {i} must be a tensor, got {}", other.kind()),
        )),
    }
}

/// Argument `i` as data values (no gradient can flow to it).
fn data(op: &'static str, t: &Tape, args: &[ExternArg], i: usize) -> Result<Vec<f64>, TapeError> {
    match arg(op, args, i)? {
        ExternArg::Data(v) if v.plates.is_empty() => match t.value(v.node) {
            Value::Real(a) => Ok(a.iter().copied().collect()),
            Value::Complex(_) => Err(fail(op, format!("argument {i} must be real"))),
        },
        ExternArg::Tensor(_) => Err(fail(
            op,
            format!(
                "argument {i} depends on latents, but this operator takes it as data (it has no gradient for it)"
            ),
        )),
        other => Err(fail(
            op,
            format!("argument {i} must be data, got {}", other.kind()),
        )),
    }
}

fn text<'a>(op: &'static str, args: &'a [ExternArg], i: usize) -> Result<&'a str, TapeError> {
    match arg(op, args, i)? {
        ExternArg::Text(s) => Ok(s),
        other => Err(fail(
            op,
            format!("argument {i} must be text, got {}", other.kind()),
        )),
    }
}

fn crystal<'a>(
    op: &'static str,
    args: &'a [ExternArg],
    i: usize,
) -> Result<&'a Arc<Crystal>, TapeError> {
    match arg(op, args, i)? {
        ExternArg::Crystal(c) => Ok(c),
        other => Err(fail(
            op,
            format!(
                "argument {i} must be a `pdb(...)` crystal, got {}",
                other.kind()
            ),
        )),
    }
}

fn shoebox<'a>(
    op: &'static str,
    args: &'a [ExternArg],
    i: usize,
) -> Result<&'a ShoeboxRef, TapeError> {
    match arg(op, args, i)? {
        ExternArg::Shoebox(s) => Ok(s),
        other => Err(fail(
            op,
            format!(
                "argument {i} must be the current shoebox record, got {}",
                other.kind()
            ),
        )),
    }
}

/// WK1995 form factors, read once.
fn form_factors() -> Result<&'static FormFactors, TapeError> {
    static TABLE: OnceLock<Result<FormFactors, String>> = OnceLock::new();
    TABLE
        .get_or_init(|| FormFactors::embedded(GaussianSet::Wk1995).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| fail("structure_factor", e.clone()))
}

/// Key of a cached structure-factor precomputation.
#[derive(Clone, PartialEq, Eq, Hash)]
struct SfKey {
    crystal: usize,
    element: String,
    hkl: [i32; 3],
    energies: Vec<u64>,
}

type SfParts = (Arc<StructureFactorModel>, Arc<FixedPart>);

/// `structure_factor(xtal, hkl, energy_ev, element, fp[S, K], fdp[S, K])` → F (K), complex.
#[derive(Default)]
struct StructureFactor {
    cache: Mutex<HashMap<SfKey, SfParts>>,
}

impl StructureFactor {
    fn parts(
        &self,
        crystal: &Arc<Crystal>,
        element: &str,
        hkl: [i32; 3],
        energy_ev: &[f64],
    ) -> Result<SfParts, TapeError> {
        const OP: &str = "structure_factor";
        let key = SfKey {
            crystal: Arc::as_ptr(crystal) as usize,
            element: element.to_string(),
            hkl,
            energies: energy_ev.iter().map(|e| e.to_bits()).collect(),
        };
        if let Some(p) = self.cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(p);
        }
        let model = StructureFactorModel::new(crystal, &[hkl], form_factors()?, &[element])
            .map_err(|e| fail(OP, e.to_string()))?;
        if model.metal_atoms.is_empty() {
            return Err(fail(
                OP,
                format!("the crystal has no `{element}` atom to refine"),
            ));
        }
        let fixed = model
            .fixed_part(energy_ev, |el, e| HenkeTable::embedded_shared(el)?.at_ev(e))
            .map_err(|e| fail(OP, e.to_string()))?;
        let parts = (Arc::new(model), Arc::new(fixed));
        if let Ok(mut c) = self.cache.lock() {
            c.insert(key, parts.clone());
        }
        Ok(parts)
    }
}

/// Miller indices from a data tensor of three integers.
fn miller(op: &'static str, values: &[f64]) -> Result<[i32; 3], TapeError> {
    match values {
        [h, k, l] if [h, k, l].iter().all(|x| x.fract() == 0.0 && x.abs() < 1e6) => {
            Ok([*h as i32, *k as i32, *l as i32])
        }
        other => Err(fail(
            op,
            format!("hkl must be three integers, got {other:?}"),
        )),
    }
}

impl Extern for StructureFactor {
    fn call(&self, t: &mut Tape, args: &[ExternArg]) -> Result<Val, TapeError> {
        const OP: &str = "structure_factor";
        let xtal = crystal(OP, args, 0)?;
        let hkl = miller(OP, &data(OP, t, args, 1)?)?;
        let energy_ev = data(OP, t, args, 2)?;
        let element = text(OP, args, 3)?;
        let (fp, fdp) = (tensor(OP, args, 4)?, tensor(OP, args, 5)?);
        let (model, fixed) = self.parts(xtal, element, hkl, &energy_ev)?;
        let sites = model.metal_atoms.len();
        for (name, v) in [("fp", &fp), ("fdp", &fdp)] {
            let shape = t.shape(v.node).to_vec();
            if shape != [sites, energy_ev.len()] {
                return Err(fail(
                    OP,
                    format!(
                        "{name} has shape {shape:?}; the crystal has {sites} `{element}` site(s) and the grid {} channels",
                        energy_ev.len()
                    ),
                ));
            }
        }
        let op = StructureFactorOp::new(model, fixed, StructureFactorOutput::Complex)
            .squeezed()
            .map_err(|e| fail(OP, e.to_string()))?;
        let node = t.fused(Arc::new(op), &[fp.node, fdp.node])?;
        Ok(Val {
            node,
            plates: vec![],
        })
    }
}

/// Key of a cached spot template: the dataset, the image and the panel.
type TemplateKey = (usize, usize, u32);

/// A cached spot template and the spectrum weights it was built from.
type Template = (Vec<f64>, Arc<SpotModel>);

/// `bragg_spot(sb, f_squared[K], spectrum[K], energy_ev[K], rot[3], tilts[D, 3], n_cells[3], shape)`.
/// Templates are kept for as many images as the source's shoebox cache holds (one step's
/// batch), times the image's panels: rebuilding one gives the same template.
#[derive(Default)]
struct BraggSpot {
    templates: Mutex<Lru<TemplateKey, Template>>,
}

fn panel(p: &ExptPanel) -> Result<Panel, String> {
    Panel::from_dials(
        p.origin,
        p.fast_axis,
        p.slow_axis,
        p.pixel_size,
        p.image_size,
    )
    .map_err(|e| format!("panel `{}`: {e}", p.name))
}

fn shape_of(name: &str) -> Result<Shape, String> {
    Ok(match name {
        "gauss" => Shape::Gauss,
        "square" => Shape::Square,
        "round" => Shape::Round,
        "tophat" => Shape::Tophat,
        other => {
            return Err(format!(
                "unknown lattice shape `{other}` (gauss, square, round, tophat)"
            ));
        }
    })
}

/// Everything of a shot's pixel model but the latents: panel, beam with the spectrum's
/// channels, polarization and the DIALS orientation.
fn template(
    sb: &ShoeboxRef,
    spectrum: &[f64],
    energy_ev: &[f64],
    shape: Shape,
) -> Result<SpotModel, String> {
    let image = &sb.data.images[sb.image];
    let obs = sb.obs()?;
    let p = image.panels.get(obs.panel as usize).ok_or_else(|| {
        format!(
            "shoebox on panel {} but the detector has {} panels",
            obs.panel,
            image.panels.len()
        )
    })?;
    if spectrum.len() != energy_ev.len() {
        return Err(format!(
            "spectrum has {} channels, energies {}",
            spectrum.len(),
            energy_ev.len()
        ));
    }
    let wavelength_a: Vec<f64> = energy_ev.iter().map(|e| EV_ANGSTROM / e).collect();
    let channels = spectrum_channels(&wavelength_a, spectrum).map_err(|e| e.to_string())?;
    let incident = incident_from_dials_direction(image.beam.direction);
    let (normal, fraction) = (
        image.beam.polarization_normal,
        image.beam.polarization_fraction,
    );
    let polarization = Polarization::from_dials(incident, normal, fraction);
    let c = &image.crystal;
    let m = |v: [f64; 3]| v.map(|x| x * 1e-10);
    Ok(SpotModel {
        panel: panel(p)?,
        beam: Beam {
            incident,
            polar_vector: cross(normal, incident),
            kahn: 2.0 * fraction - 1.0,
            fluence: image.fluence_per_m2,
            channels,
        },
        polarization,
        real_space_m: [m(c.real_space_a), m(c.real_space_b), m(c.real_space_c)],
        rotation: [0.0; 3],
        domains: MosaicDomains::single(),
        shape,
        n_cells: [1.0; 3],
        oversample: 1,
        scale: 1.0,
        background: 0.0,
    })
}

/// The shoebox's window on its panel.
fn region(sb: &ShoeboxRef) -> Result<Region, String> {
    let b = sb.obs()?.bbox;
    let len = |lo: i32, hi: i32| usize::try_from(hi - lo).ok().filter(|&n| n > 0);
    match (
        usize::try_from(b[2]),
        usize::try_from(b[0]),
        len(b[2], b[3]),
        len(b[0], b[1]),
        len(b[4], b[5]),
    ) {
        (Ok(slow0), Ok(fast0), Some(n_slow), Some(n_fast), Some(1)) => Ok(Region {
            slow0,
            fast0,
            n_slow,
            n_fast,
        }),
        _ => Err(format!("shoebox bbox {b:?} is not one frame of a panel")),
    }
}

impl BraggSpot {
    fn template(
        &self,
        sb: &ShoeboxRef,
        spectrum: &[f64],
        energy_ev: &[f64],
        shape: Shape,
    ) -> Result<Arc<SpotModel>, String> {
        let obs = sb.obs()?;
        let key = (Arc::as_ptr(&sb.data) as usize, sb.image, obs.panel);
        if let Some((weights, m)) = self.templates.lock().ok().and_then(|mut c| c.get(&key))
            && m.shape == shape
            && weights == spectrum
        {
            return Ok(m);
        }
        let m = Arc::new(template(sb, spectrum, energy_ev, shape)?);
        if let Ok(mut c) = self.templates.lock() {
            let panels = sb.data.images[sb.image].panels.len().max(1);
            c.grow_to(sb.data.cache.capacity().saturating_mul(panels));
            c.insert(key, (spectrum.to_vec(), m.clone()));
        }
        Ok(m)
    }
}

impl Extern for BraggSpot {
    fn call(&self, t: &mut Tape, args: &[ExternArg]) -> Result<Val, TapeError> {
        const OP: &str = "bragg_spot";
        let sb = shoebox(OP, args, 0)?;
        let fsq = tensor(OP, args, 1)?;
        let spectrum = data(OP, t, args, 2)?;
        let energy_ev = data(OP, t, args, 3)?;
        let rot = tensor(OP, args, 4)?;
        let tilts = tensor(OP, args, 5)?;
        let n_cells = tensor(OP, args, 6)?;
        let shape = shape_of(text(OP, args, 7)?).map_err(|e| fail(OP, e))?;
        let template = self
            .template(sb, &spectrum, &energy_ev, shape)
            .map_err(|e| fail(OP, e))?;
        let region = region(sb).map_err(|e| fail(OP, e))?;
        let op = BraggSpotOp::new((*template).clone(), vec![region], MosaicInput::Tilts)
            .map_err(|e| fail(OP, e.to_string()))?;
        let scale = t.scalar(1.0);
        let node = t.fused(
            Arc::new(op),
            &[fsq.node, scale, rot.node, n_cells.node, tilts.node],
        )?;
        Ok(Val {
            node,
            plates: vec![],
        })
    }
}

/// `plane_background(sb, coeffs[3])`.
struct PlaneBackground;

impl Extern for PlaneBackground {
    fn call(&self, t: &mut Tape, args: &[ExternArg]) -> Result<Val, TapeError> {
        const OP: &str = "plane_background";
        let sb = shoebox(OP, args, 0)?;
        let coeffs = tensor(OP, args, 1)?;
        let region = region(sb).map_err(|e| fail(OP, e))?;
        let op = PlaneBackgroundOp::new(vec![region]).map_err(|e| fail(OP, e.to_string()))?;
        let node = t.fused(Arc::new(op), &[coeffs.node])?;
        Ok(Val {
            node,
            plates: vec![],
        })
    }
}

/// Registers the three operators.
pub fn register(registry: &mut Registry) {
    registry
        .register("structure_factor", Arc::new(StructureFactor::default()))
        .register("bragg_spot", Arc::new(BraggSpot::default()))
        .register("plane_background", Arc::new(PlaneBackground));
}
