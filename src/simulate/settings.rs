//! What `spreadc simulate` reads from a model's IR: constants, variant choices, the atomic model,
//! the metal site, the program itself (for its f'/f'' lets), and the priors it samples latents
//! from.
//!
//! In: a compiled `Program` and the folder of its model file. Out: [`Settings`]. Guarantees: a
//! model that lacks something the simulator needs is a `SimulateError::Model` naming it (never a
//! default silently put in its place); priors are only sampled when every argument is a
//! constant, so a sampled latent really is a draw from the prior the model states.

use super::SimulateError;
use crate::check::value::Value as Const;
use crate::diagnostics::SourceMap;
use crate::ir::{Dist, ExprKind, PlateSize, Program, StmtKind};
use crate::physics::lattice::Shape;
use std::path::{Path, PathBuf};

/// A prior with constant arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Prior {
    /// Distribution name as written (Normal, HalfNormal, LogNormal, Beta, ...).
    pub family: String,
    /// Constant arguments.
    pub args: Vec<f64>,
}

/// Everything the simulator takes from the model.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The atomic model file (`pdb("...")`, relative to the model's folder).
    pub pdb: PathBuf,
    /// Spectrum channels (`n_channels`).
    pub n_channels: usize,
    /// Mosaic domains per image (`n_domains`).
    pub n_domains: usize,
    /// Domain size in unit cells (`domain_cells`).
    pub domain_cells: f64,
    /// Lattice shape transform (`variant shape`).
    pub shape: Shape,
    /// Element of the refined metal sites (`structure_factor(..., "FE", ...)`).
    pub metal: String,
    /// Scalar latents of the `dataset` plate with constant priors, in model order.
    pub dataset_priors: Vec<(String, Prior)>,
    /// Per-image `log_scale` prior.
    pub log_scale: Prior,
    /// Standard deviation (radians) of the per-image misorientation `rot` around `image.rot0`.
    pub rot_sd: f64,
    /// The program itself: the metal site's f'/f'' are computed by planning and evaluating its
    /// dataset-level lets (src/simulate/curves.rs).
    pub program: Program,
    /// Its sources (spans of planning errors).
    pub sources: SourceMap,
}

fn missing(what: &str) -> SimulateError {
    SimulateError::Model(format!("the model has no {what}"))
}

fn constant(program: &Program, name: &str) -> Result<f64, SimulateError> {
    program
        .consts
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.as_real())
        .ok_or_else(|| missing(&format!("numeric const `{name}`")))
}

fn choice(program: &Program, name: &str) -> Result<String, SimulateError> {
    program
        .variants
        .iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, _, chosen)| chosen.clone())
        .ok_or_else(|| missing(&format!("variant `{name}`")))
}

fn prior(dist: &Dist) -> Option<Prior> {
    let args = dist
        .args
        .iter()
        .map(|a| match &a.kind {
            ExprKind::Const(c) => c.as_real(),
            _ => None,
        })
        .collect::<Option<Vec<f64>>>()?;
    Some(Prior {
        family: dist.name.clone(),
        args,
    })
}

/// The text argument `index` of every call of extern `name` in the log joint.
fn extern_texts(program: &Program, name: &str, index: usize) -> Vec<String> {
    let mut found = Vec::new();
    for s in &program.log_joint {
        for e in s.kind.exprs() {
            crate::plan::walk(e, &mut |x| {
                if let ExprKind::Extern(n, args) = &x.kind
                    && n == name
                    && let Some(ExprKind::Const(Const::Str(s))) = args.get(index).map(|a| &a.kind)
                {
                    found.push(s.clone());
                }
            });
        }
    }
    found
}

fn shape(name: &str) -> Result<Shape, SimulateError> {
    Ok(match name {
        "gauss" => Shape::Gauss,
        "square" => Shape::Square,
        "round" => Shape::Round,
        "tophat" => Shape::Tophat,
        other => return Err(SimulateError::Model(format!("unknown shape `{other}`"))),
    })
}

/// Latents by plate name: (name, prior) for scalar dataset latents, and image latents by name.
fn latents<'a>(program: &'a Program, plate: &str) -> Vec<(&'a str, &'a Dist, usize)> {
    program
        .log_joint
        .iter()
        .filter(|s| {
            s.plate
                .and_then(|p| program.plates.get(p))
                .is_some_and(|p| p.name == plate)
        })
        .filter_map(|s| match &s.kind {
            StmtKind::Latent {
                name, shape, dist, ..
            } => Some((name.as_str(), dist, shape.len())),
            _ => None,
        })
        .collect()
}

impl Settings {
    /// Reads the settings of `program`, whose model file lives in `model_dir`.
    pub fn from_program(
        program: &Program,
        sources: &SourceMap,
        model_dir: &Path,
    ) -> Result<Self, SimulateError> {
        let pdb = program
            .data
            .iter()
            .find(|d| d.source == "pdb")
            .and_then(|d| d.paths.first())
            .ok_or_else(|| missing("`pdb(\"file\")` data source"))?;
        let images = program
            .plates
            .iter()
            .any(|p| p.name == "image" && matches!(p.size, PlateSize::Data { .. }));
        if !images {
            return Err(missing("`plate image in shots.images`"));
        }
        let dataset_priors = latents(program, "dataset")
            .into_iter()
            .filter(|(_, _, rank)| *rank == 0)
            .filter_map(|(n, d, _)| prior(d).map(|p| (n.to_string(), p)))
            .collect();
        let image = latents(program, "image");
        let find = |name: &str| {
            image
                .iter()
                .find(|(n, _, _)| *n == name)
                .map(|(_, d, _)| *d)
        };
        let log_scale = find("log_scale")
            .and_then(prior)
            .ok_or_else(|| missing("image latent `log_scale` with a constant prior"))?;
        // A model whose `rot` prior also carries the domains' common tilt (a centred
        // parametrization) names the misorientation's own spread in `const rot_sd_rad`.
        let rot_sd = constant(program, "rot_sd_rad")
            .ok()
            .or_else(|| {
                find("rot")
                    .and_then(|d| d.args.get(1))
                    .and_then(|a| match &a.kind {
                        ExprKind::Const(c) => c.as_real(),
                        _ => None,
                    })
            })
            .ok_or_else(|| {
                missing(
                    "image latent `rot ~ Normal(image.rot0, SD)` with a constant SD, or a \
                     `const rot_sd_rad`",
                )
            })?;
        let metal = extern_texts(program, "structure_factor", 3)
            .into_iter()
            .next()
            .ok_or_else(|| {
                missing("`structure_factor(xtal, hkl, energies, \"ELEMENT\", ...)` call")
            })?;
        Ok(Settings {
            pdb: model_dir.join(pdb),
            n_channels: constant(program, "n_channels")? as usize,
            n_domains: constant(program, "n_domains")? as usize,
            domain_cells: constant(program, "domain_cells")?,
            shape: shape(&choice(program, "shape")?)?,
            metal,
            dataset_priors,
            log_scale,
            rot_sd,
            program: program.clone(),
            sources: sources.clone(),
        })
    }
}
