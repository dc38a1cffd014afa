//! f'(E) and f''(E) of the metal site, computed by the model itself.
//!
//! In: the model's program, the channel energies, the atomic model and the dataset-level latent
//! values of a simulation. Out: f' and f'' per channel. How: the program is planned over an
//! in-memory dials source that holds only the channel grid (no images), the dataset-level
//! latents are set to the given values, and the lets that the curves passed to
//! `structure_factor` depend on are evaluated on a tape by the same code that fits the model.
//! Guarantees: every f'/f'' form a model can state (a mixture of reference states, a sigmoid
//! edge with Kramers-Kronig f', a shifted reference, ...) is simulated exactly as it is fitted;
//! a needed latent without a value, a vector latent, or a curve of the wrong length or with a
//! non-finite value is an error naming it.

use super::SimulateError;
use crate::diagnostics::SourceMap;
use crate::infer::model::{Env, Site};
use crate::ir::{ExprKind, Program, StmtKind};
use crate::physics::atoms::Crystal;
use crate::plan::physics_data::DialsData;
use crate::plan::{PhysicsData, Registry};
use crate::tape::Tape;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

/// The names of the lets holding the metal site's f' and f'': the `[...]` lists passed as
/// arguments 4 and 5 of `structure_factor(xtal, hkl, energies, "ELEMENT", [fp], [fdp])`.
pub fn curve_names(program: &Program) -> Option<(String, String)> {
    let mut found = None;
    for s in &program.log_joint {
        for e in s.kind.exprs() {
            crate::plan::walk(e, &mut |x| {
                if let ExprKind::Extern(n, args) = &x.kind
                    && n == "structure_factor"
                    && found.is_none()
                    && let (Some(fp), Some(fdp)) =
                        (single_var(args.get(4)), single_var(args.get(5)))
                {
                    found = Some((fp, fdp));
                }
            });
        }
    }
    found
}

/// `name` of an argument `[name]` (or `name`).
fn single_var(arg: Option<&crate::ir::Expr>) -> Option<String> {
    match &arg?.kind {
        ExprKind::Var(v) => Some(v.clone()),
        ExprKind::Vector(items) if items.len() == 1 => single_var(items.first()),
        _ => None,
    }
}

/// Names of model values an expression refers to (not descending into user functions, whose
/// locals are not model values).
fn referenced(e: &crate::ir::Expr, out: &mut Vec<String>) {
    crate::plan::walk(e, &mut |x| {
        if let ExprKind::Var(v) = &x.kind {
            out.push(v.clone());
        }
    });
}

/// The statements `wanted` depends on, through lets, by name.
fn dependencies(program: &Program, wanted: &[&str]) -> HashSet<String> {
    let mut needed: HashSet<String> = HashSet::new();
    let mut stack: Vec<String> = wanted.iter().map(|s| s.to_string()).collect();
    while let Some(name) = stack.pop() {
        if !needed.insert(name.clone()) {
            continue;
        }
        for s in &program.log_joint {
            if let StmtKind::Let { name: n, value } = &s.kind
                && *n == name
            {
                let mut refs = Vec::new();
                referenced(value, &mut refs);
                stack.extend(refs);
            }
        }
    }
    needed
}

/// An in-memory dials source with the channel grid and no images.
fn channel_grid(energy_ev: &[f64]) -> DialsData {
    DialsData {
        dir: PathBuf::new(),
        energy_ev: energy_ev.to_vec(),
        images: Vec::new(),
        report: Default::default(),
        files: Vec::new(),
        common_pixel_count: None,
        cache: Default::default(),
    }
}

/// f' and f'' of the metal site at `energy_ev` for the dataset latents `dataset`.
pub fn metal_curves(
    program: &Program,
    sources: &SourceMap,
    crystal: &Crystal,
    energy_ev: &[f64],
    dataset: &BTreeMap<String, f64>,
) -> Result<(Vec<f64>, Vec<f64>), SimulateError> {
    let model_err = SimulateError::Model;
    let (fp_name, fdp_name) = curve_names(program).ok_or_else(|| {
        model_err(
            "the model has no `structure_factor(xtal, hkl, energies, \"ELEMENT\", [fp], [fdp])` call \
             whose f' and f'' are named lets"
                .into(),
        )
    })?;
    let mut physics = PhysicsData::default();
    let crystal = Arc::new(crystal.clone());
    let grid = Arc::new(channel_grid(energy_ev));
    for d in &program.data {
        match d.source.as_str() {
            "pdb" => physics.crystals.push((d.name.clone(), crystal.clone())),
            "dials" => physics.dials.push((d.name.clone(), grid.clone())),
            _ => {}
        }
    }
    let planned =
        crate::plan::plan_with_physics(program, sources, &Registry::builtin(), physics)
            .map_err(|e| model_err(format!("planning the model over the channel grid: {e}")))?;
    let model = &planned.model;
    let needed = dependencies(program, &[&fp_name, &fdp_name]);
    let mut tape = Tape::new();
    let mut env = Env::new(model);
    for (i, site) in model.sites.iter().enumerate() {
        if site.plate().is_some() || !needed.contains(site.name()) {
            continue;
        }
        match site {
            Site::Latent(l) => {
                if !l.shape.is_empty() {
                    return Err(model_err(format!(
                        "f'/f'' depend on the latent `{}` of shape {:?}; the simulator draws only \
                         scalar dataset latents",
                        l.name, l.shape
                    )));
                }
                let v = dataset.get(&l.name).ok_or_else(|| {
                    model_err(format!("f'/f'' depend on `{}`, which has no value", l.name))
                })?;
                env.values[i] = Some(tape.scalar(*v));
            }
            Site::Let(d) => {
                let node = env
                    .eval(&mut tape, &d.value)
                    .map_err(|e| model_err(format!("evaluating `{}`: {e}", d.name)))?;
                env.values[i] = Some(node);
            }
            Site::Observe(_) | Site::Factor(_) => {}
        }
    }
    let read = |name: &str| -> Result<Vec<f64>, SimulateError> {
        let node = env
            .site(name)
            .ok_or_else(|| model_err(format!("`{name}` is not a dataset-level let")))?;
        let v = tape
            .real(node)
            .map_err(|e| model_err(format!("`{name}`: {e}")))?;
        let values: Vec<f64> = v.iter().copied().collect();
        if values.len() != energy_ev.len() {
            return Err(model_err(format!(
                "`{name}` has {} values for {} channels",
                values.len(),
                energy_ev.len()
            )));
        }
        if let Some(k) = values.iter().position(|x| !x.is_finite()) {
            return Err(model_err(format!(
                "`{name}` is not finite at {} eV",
                energy_ev[k]
            )));
        }
        Ok(values)
    };
    Ok((read(&fp_name)?, read(&fdp_name)?))
}
