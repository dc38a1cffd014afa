//! The refined structure factors of a physics run (refined_sf.mtz).
//!
//! In: the program (its `structure_factor(xtal, hkl, shots.energies, "FE", fp, fdp)` call), the
//! planned physics data (the `pdb(...)` crystal, the `dials(...)` shoeboxes and channel grid)
//! and the posterior draws of the dataset-level lets the call's f'/f'' arguments name. Out: an
//! [`Outcome`]: nothing for a model without physics data, a one-line note when a physics model
//! has no structure factors to refine (or they cannot be tied to posterior draws), else the
//! posterior of |F(h)| and |F(-h)| of every unique observed reflection and its MTZ.
//! Guarantees: the amplitudes come from the code the `structure_factor` extern runs
//! (`StructureFactorModel`: WK1995 f0, Henke f'/f'' of every other element, the draws' f'/f''
//! for the metal sites), evaluated for the unique asymmetric-unit indices only, at one energy:
//! the channel nearest the mean over images of the spectrum-weighted energy. They are on the
//! model's absolute scale (electrons per cell): a per-image scale the model fits is not applied.

use super::{LatentDraws, RunError};
use crate::formats::mtz::{Mtz, mtz_to_bytes};
use crate::ir::{Expr, ExprKind, Program, StmtKind};
use crate::physics::atoms::Crystal;
use crate::physics::constants::EV_ANGSTROM;
use crate::physics::form_factor::FormFactors;
use crate::physics::scattering_tables::TableError;
use crate::physics::scattering_tables::henke::HenkeTable;
use crate::physics::scattering_tables::wk1995::GaussianSet;
use crate::physics::structure_factor::{StructureFactorModel, structure_factors_into};
use crate::plan::Planned;
use crate::plan::physics_data::DialsData;
use crate::report::refined_sf::{
    AmplitudeDraws, FILE_NAME, ReciprocalAsu, RefinedReflection, RefinedSf, SCALE,
};
use ndarray::{Array2, s};
use num_complex::Complex64;
use std::path::{Path, PathBuf};

/// What a run does about refined_sf.mtz.
#[derive(Debug)]
pub enum Outcome {
    /// Not a physics run: nothing is written or said.
    NotPhysics,
    /// A physics run without refinable structure factors: this one-line note is printed.
    Note(String),
    /// The refined structure factors and their MTZ.
    Ready(Box<Refined>),
}

/// The refined structure factors of a run.
#[derive(Debug)]
pub struct Refined {
    /// Posterior summaries per unique reflection.
    pub sf: RefinedSf,
    /// The MTZ they are written as.
    pub mtz: Mtz,
}

/// Posterior draws of the metal sites' f', f'' at one energy: shape (draws, sites).
#[derive(Debug, Clone)]
pub struct SiteDrawsAtEnergy {
    /// f' draws.
    pub fp: Array2<f64>,
    /// f'' draws.
    pub fdp: Array2<f64>,
}

/// How a `structure_factor` f'/f'' argument names its posterior draws.
#[derive(Debug, Clone, PartialEq)]
enum SiteArg {
    /// `[fp_a, fp_b]`: one dataset-level let of K channels per site.
    Rows(Vec<String>),
    /// `fp`: one dataset-level let of shape (sites, K).
    Matrix(String),
}

/// The first `structure_factor` call of the program, by its arguments' names.
#[derive(Debug, Clone, PartialEq)]
struct SfCall {
    crystal: String,
    shots: String,
    element: String,
    fp: SiteArg,
    fdp: SiteArg,
}

fn note(why: &str) -> Outcome {
    Outcome::Note(format!("note: no {FILE_NAME}: {why}"))
}

/// Every `structure_factor` call in the model's statements.
fn sf_calls(program: &Program) -> Vec<Vec<Expr>> {
    let mut calls = Vec::new();
    let mut visit = |e: &Expr| {
        crate::plan::walk(e, &mut |x: &Expr| {
            if let ExprKind::Extern(name, args) = &x.kind
                && name == "structure_factor"
            {
                calls.push(args.clone());
            }
        });
    };
    // Statement by statement without an exhaustive match: a statement kind added later is
    // searched by the kinds that carry expressions named here.
    for s in &program.log_joint {
        if let StmtKind::Let { value, .. } = &s.kind {
            visit(value);
        }
        if let StmtKind::Observe { data, dist, .. } = &s.kind {
            visit(data);
            dist.args.iter().for_each(&mut visit);
        }
        if let StmtKind::Latent { dist, .. } = &s.kind {
            dist.args.iter().for_each(&mut visit);
        }
        if let StmtKind::Param { init, .. } = &s.kind {
            visit(init);
        }
    }
    calls
}

fn var(e: &Expr) -> Option<&str> {
    match &e.kind {
        ExprKind::Var(v) => Some(v),
        _ => None,
    }
}

fn site_arg(e: &Expr) -> Option<SiteArg> {
    match &e.kind {
        ExprKind::Var(v) => Some(SiteArg::Matrix(v.clone())),
        ExprKind::Vector(items) => items
            .iter()
            .map(|x| var(x).map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .map(SiteArg::Rows),
        _ => None,
    }
}

/// The call's arguments by name, or why they cannot be used.
fn parse_call(args: &[Expr]) -> Result<SfCall, &'static str> {
    let [xtal, _hkl, energies, element, fp, fdp] = args else {
        return Err("structure_factor has an unexpected argument list");
    };
    let crystal = var(xtal).ok_or("structure_factor's crystal is not a `pdb(...)` binding")?;
    let shots = match &energies.kind {
        ExprKind::Field(base, field) if field == "energies" => var(base),
        _ => None,
    }
    .ok_or("structure_factor's energies are not a `dials(...)` source's `.energies`")?;
    let element = match &element.kind {
        ExprKind::Const(crate::check::value::Value::Str(s)) => s.clone(),
        _ => return Err("structure_factor's element is not a text constant"),
    };
    let unnamed = "structure_factor's f'/f'' arguments are not dataset-level lets (or lists of them) with posterior draws";
    Ok(SfCall {
        crystal: crystal.to_string(),
        shots: shots.to_string(),
        element,
        fp: site_arg(fp).ok_or(unnamed)?,
        fdp: site_arg(fdp).ok_or(unnamed)?,
    })
}

/// Draws (draws, sites) of an f'/f'' argument at `channel` of a `k`-channel grid.
fn draws_at(
    arg: &SiteArg,
    quantities: &[LatentDraws],
    k: usize,
    channel: usize,
) -> Option<Array2<f64>> {
    let find = |name: &str| {
        quantities
            .iter()
            .find(|q| q.name == name && q.plates.is_empty() && !q.draws.is_empty())
    };
    // (quantity, row) of every site.
    let rows: Vec<(&LatentDraws, usize)> = match arg {
        SiteArg::Rows(names) => names
            .iter()
            .map(|n| find(n).filter(|q| q.shape == [k]).map(|q| (q, 0)))
            .collect::<Option<_>>()?,
        SiteArg::Matrix(name) => {
            let q = find(name)?;
            match q.shape.as_slice() {
                [n, kk] if *kk == k => (0..*n).map(|m| (q, m)).collect(),
                [kk] if *kk == k => vec![(q, 0)],
                _ => return None,
            }
        }
    };
    let n_draws = rows.iter().map(|(q, _)| q.draws.len()).min()?;
    let mut out = Array2::zeros((n_draws, rows.len()));
    for (m, (q, row)) in rows.iter().enumerate() {
        for d in 0..n_draws {
            out[(d, m)] = *q.draws[d].get(row * k + channel)?;
        }
    }
    Some(out)
}

/// The mean over images of the spectrum-weighted energy (eV).
pub fn mean_spectrum_energy_ev(data: &DialsData) -> f64 {
    let per_image = data.images.iter().map(|image| {
        let total: f64 = image.spectrum.iter().sum();
        let weighted: f64 = image
            .spectrum
            .iter()
            .zip(&data.energy_ev)
            .map(|(w, e)| w * e)
            .sum();
        weighted / total
    });
    per_image.sum::<f64>() / data.images.len().max(1) as f64
}

/// The channel of `grid_ev` nearest `energy_ev`.
pub fn nearest_channel(grid_ev: &[f64], energy_ev: f64) -> usize {
    (0..grid_ev.len())
        .min_by(|&a, &b| {
            (grid_ev[a] - energy_ev)
                .abs()
                .total_cmp(&(grid_ev[b] - energy_ev).abs())
        })
        .unwrap_or(0)
}

/// Henke f'/f'' of a non-metal element, as the `structure_factor` extern reads them.
pub fn henke_anomalous(element: &str, energy_ev: f64) -> Result<(f64, f64), TableError> {
    HenkeTable::embedded_shared(element)?.at_ev(energy_ev)
}

/// The posterior of |F(h)| and |F(-h)| for every asymmetric-unit index `hkl`, one draw of the
/// metal sites' f'/f'' at a time, with the other elements' f'/f'' from `anomalous`.
pub fn posterior_amplitudes<A>(
    crystal: &Crystal,
    hkl: &[[i32; 3]],
    element: &str,
    energy_ev: f64,
    draws: &SiteDrawsAtEnergy,
    anomalous: A,
    asu: &ReciprocalAsu,
) -> Result<Vec<RefinedReflection>, String>
where
    A: Fn(&str, f64) -> Result<(f64, f64), TableError>,
{
    let n = hkl.len();
    let both: Vec<[i32; 3]> = hkl
        .iter()
        .copied()
        .chain(hkl.iter().map(|h| h.map(|x| -x)))
        .collect();
    let form_factors = FormFactors::embedded(GaussianSet::Wk1995).map_err(|e| e.to_string())?;
    let model = StructureFactorModel::new(crystal, &both, &form_factors, &[element])
        .map_err(|e| e.to_string())?;
    if model.n_sites() != draws.fp.ncols() || draws.fp.dim() != draws.fdp.dim() {
        return Err(format!(
            "the crystal has {} `{element}` site(s); the f'/f'' draws have shapes {:?} and {:?} (draws, sites)",
            model.n_sites(),
            draws.fp.dim(),
            draws.fdp.dim()
        ));
    }
    let fixed = model
        .fixed_part(&[energy_ev], anomalous)
        .map_err(|e| e.to_string())?;
    let mut f = Array2::from_elem((2 * n, 1), Complex64::new(0.0, 0.0));
    let mut summary = AmplitudeDraws::new(hkl);
    let column = |a: &Array2<f64>, d: usize| a.slice(s![d..=d, ..]).reversed_axes().to_owned();
    for d in 0..draws.fp.nrows() {
        let (fp, fdp) = (column(&draws.fp, d), column(&draws.fdp, d));
        structure_factors_into(&model, &fixed, fp.view(), fdp.view(), &mut f)
            .map_err(|e| e.to_string())?;
        let amplitude: Vec<f64> = f.iter().map(|z| z.norm()).collect();
        summary.push(&amplitude[..n], &amplitude[n..]);
    }
    Ok(summary.finish(asu))
}

/// The pdb(...) binding `name`, its file, and the dials(...) source `shots`.
type Sources<'a> = (&'a Crystal, Option<&'a PathBuf>, &'a DialsData);

fn sources<'a>(planned: &'a Planned, call: &SfCall) -> Option<Sources<'a>> {
    let physics = &planned.physics;
    let at = physics
        .crystals
        .iter()
        .position(|(n, _)| *n == call.crystal)?;
    let data = physics.dials.iter().find(|(n, _)| *n == call.shots)?;
    Some((&physics.crystals[at].1, physics.files.get(at), &data.1))
}

/// refined_sf.mtz of a finished run, a note, or nothing (see [`Outcome`]).
pub fn refine_run(
    program: &Program,
    planned: &Planned,
    quantities: &[LatentDraws],
) -> Result<Outcome, RunError> {
    if planned.physics.crystals.is_empty() && planned.physics.dials.is_empty() {
        return Ok(Outcome::NotPhysics);
    }
    let calls = sf_calls(program);
    let Some(first) = calls.first() else {
        return Ok(note(
            "the model calls no structure_factor, so it has no structure factors to refine",
        ));
    };
    let call = match parse_call(first) {
        Ok(c) => c,
        Err(why) => return Ok(note(why)),
    };
    let Some((crystal, pdb_file, data)) = sources(planned, &call) else {
        return Ok(note(
            "structure_factor's crystal or energies are not this run's pdb(...)/dials(...) data",
        ));
    };
    let k = data.energy_ev.len();
    let mean_ev = mean_spectrum_energy_ev(data);
    let channel = nearest_channel(&data.energy_ev, mean_ev);
    let (Some(fp), Some(fdp)) = (
        draws_at(&call.fp, quantities, k, channel),
        draws_at(&call.fdp, quantities, k, channel),
    ) else {
        return Ok(note(
            "structure_factor's f'/f'' arguments are not dataset-level lets (or lists of them) with posterior draws",
        ));
    };
    let pdb_name = pdb_file.map_or(call.crystal.clone(), |p| p.display().to_string());
    let fail = |what: String| RunError::Physics(format!("{FILE_NAME} from {pdb_name}: {what}"));
    let asu = ReciprocalAsu::new(&crystal.space_group);
    let observed = data.miller_indices()?;
    let hkl = asu.unique(observed.iter().copied());
    let energy_ev = data.energy_ev[channel];
    let draws = SiteDrawsAtEnergy { fp, fdp };
    let reflections = posterior_amplitudes(
        crystal,
        &hkl,
        &call.element,
        energy_ev,
        &draws,
        henke_anomalous,
        &asu,
    )
    .map_err(fail)?;
    let sf = RefinedSf {
        element: call.element.to_uppercase(),
        energy_ev,
        channel,
        mean_spectrum_energy_ev: mean_ev,
        wavelength_a: EV_ANGSTROM / energy_ev,
        draws: draws.fp.nrows(),
        observed_shoeboxes: observed.len(),
        asu: asu.convention(),
        scale: SCALE,
        reflections,
    };
    let stem = pdb_file
        .and_then(|p| p.file_stem())
        .map_or(call.crystal.clone(), |s| s.to_string_lossy().to_string());
    let mtz = sf
        .to_mtz(cell_of(crystal), &crystal.space_group, &stem)
        .map_err(fail)?;
    Ok(Outcome::Ready(Box::new(Refined { sf, mtz })))
}

/// a, b, c (Å), alpha, beta, gamma (degrees).
fn cell_of(crystal: &Crystal) -> [f64; 6] {
    let [a, b, c] = crystal.cell.lengths;
    let [al, be, ga] = crystal.cell.angles_deg;
    [a, b, c, al, be, ga]
}

/// Writes refined_sf.mtz into `out` (atomically); returns its path.
pub fn write(out: &Path, refined: &Refined) -> Result<PathBuf, RunError> {
    let path = out.join(FILE_NAME);
    let bytes =
        mtz_to_bytes(&refined.mtz).map_err(|e| RunError::Physics(format!("{FILE_NAME}: {e}")))?;
    crate::report::write_atomic(&path, &bytes)?;
    Ok(path)
}

/// The record of refined_sf.mtz in summary.json (`physics.refined_sf`).
pub fn summary_json(refined: &Refined) -> serde_json::Value {
    let mut v = serde_json::to_value(&refined.sf).unwrap_or(serde_json::Value::Null);
    v["file"] = FILE_NAME.into();
    v["columns"] = serde_json::json!(
        refined
            .mtz
            .columns
            .iter()
            .map(|c| [c.label.clone(), c.kind.to_string()])
            .collect::<Vec<_>>()
    );
    v["space_group"] = refined.mtz.space_group.name.clone().into();
    v["cell"] = serde_json::json!(refined.mtz.cell);
    v
}
