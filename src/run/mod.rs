//! `run_model`: the library side of `spreadc run`. Compile a model, plan it over its data, fit
//! it by SVI (fresh or resumed from the output directory's checkpoint), draw from the fitted
//! guide, and write the report.
//!
//! In: a `RunConfig` and a per-step callback. Out: a `RunResult` (posterior draws of every
//! latent, param and let, the final SVI state, the files written) or a `RunError` that knows
//! its exit code. Guarantees: nothing is printed here; `--resume` refuses a checkpoint written
//! for another model file, other `--set` values, other data or another seed (run.json in the
//! output directory records their hashes); a failed run leaves the last good checkpoint.

pub mod convergence;
pub mod corrections;
pub mod physics;
pub mod profile;
pub mod refined_sf;

use crate::diagnostics::render_all;
use crate::infer::error::InferError;
use crate::infer::linear_response::{self, LinearResponse};
use crate::infer::model::{Env, Model, Site};
use crate::infer::optim::LrSchedule;
use crate::infer::posterior;
use crate::infer::reduce::SingleProcess;
use crate::infer::search::{MisfitSearch, ModeSearch};
use crate::infer::svi::{self, StepReport, SviConfig, SviState};
use crate::ir::{self, Options, Program};
use crate::plan::{self, PlanError, Planned, Registry};
use crate::report::latents::{LatentDraws, LatentRun, StreamedSummaries, write_latent_report};
use crate::report::posterior::summarize_sample;
use crate::report::{ReportError, hash_input};
use crate::tape::{Tape, Value};
use ndarray::{ArrayD, IxDyn};
use std::path::{Path, PathBuf};

/// Settings of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    /// The .spread model file.
    pub model: PathBuf,
    /// The data directory.
    pub data: PathBuf,
    /// The output directory.
    pub out: PathBuf,
    /// Total SVI steps (counting resumed ones).
    pub steps: u64,
    /// Seed of every random stream.
    pub seed: u64,
    /// Worker threads (None: rayon's default).
    pub threads: Option<usize>,
    /// `--set name=value` overrides.
    pub sets: Vec<(String, String)>,
    /// ELBO particles per step.
    pub particles: usize,
    /// Adam learning rate at the first step.
    pub lr: f64,
    /// Factor the learning rate falls by, exponentially, over the horizon (1 = constant).
    pub lr_decay: f64,
    /// Steps over which the rate falls by `lr_decay` (None: `steps`). A resumed run keeps the
    /// horizon of the run it continues, so its trajectory is the uninterrupted run's.
    pub lr_horizon: Option<u64>,
    /// Checkpoint every this many steps (a final checkpoint is always written).
    pub checkpoint_every: Option<u64>,
    /// Continue from the checkpoint in `out`.
    pub resume: bool,
    /// Posterior draws for the summaries.
    pub draws: usize,
    /// The size posterior.npz may take in bytes (None: no limit); quantities that would pass
    /// it are left out of the file (with a note), their summaries kept.
    pub npz_max_bytes: Option<u64>,
    /// `--search SITE:K`: a mode search of a per-instance latent during the fit.
    pub search: Option<SiteSearch>,
    /// `--scan SITE=LO:HI:STEP`: a profile scan of a dataset-level latent during the fit and
    /// at its end.
    pub scan: Option<profile::SiteScan>,
    /// `--hold SITES:N`: the named latents' guides held at their start for the first N steps.
    pub hold: Option<(Vec<String>, u64)>,
    /// `--linear-response[=SITES]`: the dataset-level latents' summaries from their
    /// linear-response covariance (`crate::infer::linear_response`; empty: every such latent).
    pub linear_response: Option<Vec<String>>,
}

/// A mode search asked for by name (`crate::infer::search`).
#[derive(Debug, Clone, PartialEq)]
pub struct SiteSearch {
    /// The latents to search (sites inside one top-level plate, e.g. `rot` and `tilt`).
    pub sites: Vec<String>,
    /// Starts drawn from their priors per instance of that plate.
    pub candidates: usize,
    /// SVI steps refining each start.
    pub refine_steps: u64,
    /// Steps before which a search runs (None: `default_search_steps` of the horizon).
    pub at_steps: Option<Vec<u64>>,
    /// A targeted round for the instances the goodness-of-fit check names: (starts, step;
    /// None: `default_misfit_step` of the horizon).
    pub misfit: Option<(usize, Option<u64>)>,
}

/// Where the targeted round of a search runs by default: 40% into the learning-rate horizon,
/// after the wide rounds (a tenth and a quarter in) have settled.
pub fn default_misfit_step(horizon: u64) -> u64 {
    horizon * 2 / 5
}

/// Where a search runs by default: a tenth and a quarter into the learning-rate horizon,
/// once scales and backgrounds have settled (at step 0 a candidate is judged against a
/// wrong scale) and while the rate is still high enough to refine the winner.
pub fn default_search_steps(horizon: u64) -> Vec<u64> {
    let mut at = vec![horizon / 10, horizon / 4];
    at.dedup();
    at
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            model: PathBuf::new(),
            data: PathBuf::new(),
            out: PathBuf::from("out"),
            steps: 10000,
            seed: 0,
            threads: None,
            sets: Vec::new(),
            particles: 1,
            lr: 0.1,
            lr_decay: 0.002,
            lr_horizon: None,
            checkpoint_every: None,
            resume: false,
            draws: 1000,
            npz_max_bytes: Some(DEFAULT_NPZ_MAX_MIB << 20),
            search: None,
            scan: None,
            hold: None,
            linear_response: None,
        }
    }
}

/// What a finished run returns.
#[derive(Debug)]
pub struct RunResult {
    /// Posterior draws of every latent, param and let.
    pub quantities: Vec<LatentDraws>,
    /// The final SVI state.
    pub state: SviState,
    /// Steps taken by this invocation (0 when a resumed run was already complete).
    pub steps_now: u64,
    /// Files written.
    pub written: Vec<PathBuf>,
    /// Compiler warnings, rendered.
    pub warnings: String,
    /// Data columns present but not declared by the model.
    pub ignored_columns: Vec<String>,
    /// Probability of each reference state of each metal site (`oxidation_state` calls).
    pub states: Vec<crate::report::StateProbability>,
    /// Used and skipped images, shoeboxes and pixels of the `dials(...)` sources.
    pub data: Vec<crate::formats::dataset_dir::DataReport>,
    /// What each correction flow changed (empty without flows).
    pub corrections: Vec<corrections::CorrectionReport>,
}

/// A failed run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The model file cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The model has errors (rendered diagnostics).
    #[error("{0}")]
    Compile(String),
    /// The program cannot be planned over the data.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The fit failed (non-finite values name op, span, plates and step).
    #[error(transparent)]
    Infer(#[from] InferError),
    /// `--resume` with a checkpoint of another model, data or seed.
    #[error("cannot resume from {path}: {detail}")]
    Resume {
        /// The run.json or checkpoint.
        path: PathBuf,
        /// What differs.
        detail: String,
    },
    /// The report could not be written.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// The thread pool could not be built.
    #[error("cannot start {0} worker threads")]
    Threads(usize),
    /// A physics report the model asks for cannot be computed.
    #[error("{0}")]
    Physics(String),
    /// A flag asks for something the model cannot do.
    #[error("{0}")]
    Usage(String),
}

impl RunError {
    /// 1 for model and data errors, 2 for usage and IO errors.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Io { .. }
            | RunError::Report(_)
            | RunError::Threads(_)
            | RunError::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// The linear response's sds beside the mean-field ones (unconstrained), e.g. "note: linear
/// response of the dataset-level latents (their summaries use it), sds in unconstrained space:
/// mu 3.3379 (mean field 1.5903); 112 gradients over 10 coordinates".
fn response_note(r: &LinearResponse) -> String {
    let parts: Vec<String> = r
        .elements
        .iter()
        .map(|e| {
            let name = if r.elements.iter().filter(|o| o.site == e.site).count() > 1 {
                format!("{}[{}]", e.site, e.element)
            } else {
                e.site.clone()
            };
            format!(
                "{name} {:.4} (mean field {:.4})",
                e.linear_response_sd, e.mean_field_sd
            )
        })
        .collect();
    format!(
        "note: linear response of the dataset-level latents (their summaries use it), sds in \
         unconstrained space: {}; {} gradients over {} coordinates",
        parts.join(", "),
        r.gradient_evaluations,
        r.coordinates
    )
}

/// What a mode search did, e.g. "note: mode search of rot, tilt before step 100 (8 starts
/// of 100 steps per image): 1 of 4 images moved (image 2 start 6, +16596 nats)".
fn search_note(r: &crate::infer::search::SearchRound) -> String {
    let moved: Vec<String> = r
        .moved
        .iter()
        .map(|(i, k, gain)| format!("{} {i} start {k}, {gain:+.0} nats", r.plate))
        .collect();
    let failed = match r.failed {
        0 => String::new(),
        n => format!("; {n} starts failed to evaluate and were passed over"),
    };
    let moved = if moved.is_empty() {
        String::new()
    } else {
        format!(" ({})", moved.join("; "))
    };
    let (sites, step, p) = (r.sites.join(", "), r.step, &r.plate);
    match &r.targeted {
        Some(named) if named.is_empty() => format!(
            "note: targeted mode search of {sites} before step {step}: the goodness-of-fit \
             check named no {p}"
        ),
        Some(named) => {
            let list: Vec<String> = named.iter().map(usize::to_string).collect();
            format!(
                "note: targeted mode search of {sites} before step {step} ({} starts of {} \
                 fresh steps per {p}) for the {} {p}s the goodness-of-fit check named ({}): {} \
                 moved{moved}{failed}",
                r.candidates,
                r.refine_steps,
                named.len(),
                list.join(", "),
                r.moved.len(),
            )
        }
        None => format!(
            "note: mode search of {sites} before step {step} ({} starts of {} steps per {p}): \
             {} of {} {p}s moved{moved}{failed}",
            r.candidates,
            r.refine_steps,
            r.moved.len(),
            r.instances,
        ),
    }
}

/// A note when the ELBO of the last 50 steps is above that of the 50 before by more than 3
/// standard errors of the difference: the fit has not converged, and its posterior (and any
/// state probability) may be far from the one a longer run gives.
fn still_rising(elbo: &[f64]) -> Option<String> {
    const W: usize = 50;
    if elbo.len() < 2 * W {
        return None;
    }
    let (prev, last) = (
        &elbo[elbo.len() - 2 * W..elbo.len() - W],
        &elbo[elbo.len() - W..],
    );
    let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len() as f64;
    let var =
        |x: &[f64], m: f64| x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (x.len() - 1) as f64;
    let (mp, ml) = (mean(prev), mean(last));
    let se = ((var(prev, mp) + var(last, ml)) / W as f64).sqrt();
    (ml - mp > 3.0 * se).then(|| {
        format!(
            "note: the ELBO was still rising at the end (mean of the last {W} steps {ml:.1}, of the {W} before {mp:.1}, {:.0} standard errors): the fit has not converged; run more steps (--resume continues it) before trusting the posterior or the state probabilities",
            (ml - mp) / se.max(1e-300)
        )
    })
}

/// posterior.npz's default size limit (MiB): every quantity of a few-thousand-shoebox fit,
/// not the per-shoebox draws of a 20,000-shoebox one (500 MB there).
pub const DEFAULT_NPZ_MAX_MIB: u64 = 256;

/// Particles (draws of the fitted guide) averaged at most in each state comparison.
const STATE_PARTICLES: usize = 16;
/// Gradient draws of the end-of-fit convergence check (`convergence::check`).
const CONVERGENCE_DRAWS: usize = 16;
/// Guide draws of the per-instance goodness-of-fit check (`fit_check`).
const FIT_CHECK_DRAWS: u64 = 2;
/// Guide draws of the correction-flow report (three model evaluations each).
const CORRECTION_DRAWS: usize = 4;

/// The `--search` request resolved against the model: an unknown or unsearchable site is an
/// error naming the flag.
fn mode_search(
    cfg: &RunConfig,
    model: &Model,
    horizon: u64,
) -> Result<Option<ModeSearch>, RunError> {
    let Some(s) = &cfg.search else {
        return Ok(None);
    };
    let flag = format!("--search {}:{}", s.sites.join(","), s.candidates);
    let bad = |detail: String| RunError::Usage(format!("{flag}: {detail}"));
    let sites = s
        .sites
        .iter()
        .map(|name| {
            model
                .site_index(name)
                .ok_or_else(|| bad(format!("the model has no latent `{name}`")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let top = crate::infer::search::search_plate(model, &sites).map_err(|e| bad(e.to_string()))?;
    if let Some((k, _)) = s.misfit
        && crate::infer::fit_check::poisson_plate(model) != Some(top)
    {
        return Err(RunError::Usage(format!(
            "--search-misfit {k}: the goodness-of-fit check that names the instances needs \
             the model's Poisson observations inside plate `{}`, the searched latents' plate",
            model.plates[top].name
        )));
    }
    Ok(Some(ModeSearch {
        sites,
        candidates: s.candidates,
        refine_steps: s.refine_steps,
        at_steps: s
            .at_steps
            .clone()
            .unwrap_or_else(|| default_search_steps(horizon)),
        misfit: s.misfit.map(|(candidates, at)| MisfitSearch {
            at_step: at.unwrap_or_else(|| default_misfit_step(horizon)),
            candidates,
        }),
    }))
}

/// `--hold SITES:N` resolved against the model: an unknown or non-latent name is an error
/// naming the flag.
fn hold(cfg: &RunConfig, model: &Model) -> Result<Option<crate::infer::svi::Hold>, RunError> {
    let Some((names, until_step)) = &cfg.hold else {
        return Ok(None);
    };
    let flag = format!("--hold {}:{until_step}", names.join(","));
    let sites = names
        .iter()
        .map(|name| match model.site_index(name) {
            Some(i) if matches!(model.sites[i], crate::infer::model::Site::Latent(_)) => Ok(i),
            _ => Err(RunError::Usage(format!(
                "{flag}: the model has no latent `{name}`"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(crate::infer::svi::Hold {
        sites,
        until_step: *until_step,
    }))
}

/// Where the checkpoint of a run in `out` lives.
pub fn checkpoint_path(out: &Path) -> PathBuf {
    out.join("checkpoint.msgpack")
}

/// Compiles and plans a model (the first half of a run; also used by benchmarks).
pub fn load(cfg: &RunConfig, registry: &Registry) -> Result<(Program, Planned, String), RunError> {
    let opts = Options {
        search_path: Vec::new(),
        sets: cfg.sets.clone(),
    };
    let compiled = ir::compile_file(&cfg.model, &opts).map_err(|source| RunError::Io {
        path: cfg.model.clone(),
        source,
    })?;
    let rendered = render_all(&compiled.diagnostics, &compiled.sources, false);
    let Some(program) = compiled.program.clone().filter(|_| !compiled.has_errors()) else {
        return Err(RunError::Compile(rendered));
    };
    let planned = plan::plan(&program, &compiled.sources, &cfg.data, registry)?;
    Ok((program, planned, rendered))
}

/// Runs a model end to end; `on_step` sees every step of this invocation.
pub fn run_model(
    cfg: &RunConfig,
    on_step: &mut (dyn FnMut(StepReport) + Send),
) -> Result<RunResult, RunError> {
    let (program, planned, warnings) = load(cfg, &Registry::builtin())?;
    std::fs::create_dir_all(&cfg.out).map_err(|source| RunError::Io {
        path: cfg.out.clone(),
        source,
    })?;
    let fingerprint = fingerprint(cfg, &planned)?;
    let (state, horizon) = start_state(cfg, &planned.model, &fingerprint)?;
    let ckpt = checkpoint_path(&cfg.out);
    let svi_cfg = SviConfig {
        steps: cfg.steps,
        seed: cfg.seed,
        particles: cfg.particles.max(1),
        adam: crate::infer::optim::Adam {
            lr: cfg.lr,
            schedule: LrSchedule::Exponential {
                decay: cfg.lr_decay,
                every: horizon.max(1),
            },
            ..Default::default()
        },
        checkpoint_every: cfg.checkpoint_every,
        checkpoint_path: Some(ckpt.clone()),
        search: mode_search(cfg, &planned.model, horizon)?,
        scan: cfg
            .scan
            .as_ref()
            .map(|s| profile::profile_scan(s, &planned.model, default_search_steps(horizon)))
            .transpose()?,
        hold: hold(cfg, &planned.model)?,
        ..SviConfig::default()
    };
    if let Some(sites) = &cfg.linear_response {
        let names = (!sites.is_empty()).then_some(sites.as_slice());
        linear_response::check_targets(&planned.model, names)
            .map_err(|e| RunError::Usage(format!("--linear-response: {e}")))?;
    }
    let before = state.step;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads.unwrap_or(0))
        .build()
        .map_err(|_| RunError::Threads(cfg.threads.unwrap_or(0)))?;
    let model = &planned.model;
    let state = pool.install(|| svi::run(model, &svi_cfg, state, &SingleProcess, on_step))?;
    state.save(&ckpt)?;
    // The fit is done and saved: a linear response that cannot be computed leaves the
    // mean-field summaries in place, with a note and the reason in summary.json.
    let (response, response_failure) = match &cfg.linear_response {
        None => (None, None),
        Some(sites) => {
            let names = (!sites.is_empty()).then_some(sites.as_slice());
            match pool.install(|| linear_response::linear_response(model, &state, names)) {
                Ok(r) => (Some(r), None),
                Err(e) => (None, Some(e.to_string())),
            }
        }
    };
    let mut quantities = pool.install(|| {
        draw_quantities(
            model,
            &state,
            cfg.draws,
            &planned.data_lets,
            response.as_ref(),
            cfg.npz_max_bytes,
        )
    })?;
    for q in quantities.iter_mut().filter(|q| q.plates.is_empty()) {
        if let Some(chain) = planned.scope.sites.get(&q.name) {
            q.plates = chain
                .iter()
                .map(|&p| planned.scope.plates[p].name.clone())
                .collect();
        }
    }
    let elbo: Vec<(u64, f64)> = state
        .elbo
        .iter()
        .enumerate()
        .map(|(i, v)| (i as u64 + 1, *v))
        .collect();
    let sites = physics::anomalous_sites(&program, &planned, &quantities);
    let (choices, mut notes) = physics::state_choices(&program);
    let refined = refined_sf::refine_run(&program, &planned, &quantities)?;
    if let refined_sf::Outcome::Note(n) = &refined {
        notes.push(n.clone());
    }
    notes.extend(state.searches.iter().map(search_note));
    notes.extend(state.scans.iter().map(profile::scan_note));
    let end_scan = match &svi_cfg.scan {
        Some(s) => {
            let step_scale = state.layout.step_scales(model);
            let refiner = crate::infer::scan::Refiner {
                cfg: &svi_cfg,
                reducer: &SingleProcess,
                step_scale: &step_scale,
            };
            Some(pool.install(|| profile::end_check(model, &state, s, Some(refiner)))?)
        }
        None => None,
    };
    notes.extend(end_scan.as_ref().and_then(profile::end_note));
    let instance_fit =
        pool.install(|| crate::infer::fit_check::fit_check(model, &state, FIT_CHECK_DRAWS))?;
    notes.extend(
        instance_fit
            .as_ref()
            .and_then(crate::infer::fit_check::note),
    );
    notes.extend(still_rising(&state.elbo));
    let end_check = pool.install(|| convergence::check(model, &state, CONVERGENCE_DRAWS))?;
    notes.extend(convergence::note(&end_check.drifts, CONVERGENCE_DRAWS));
    notes.extend(convergence::scale_note(
        &end_check.global_distances,
        CONVERGENCE_DRAWS,
    ));
    notes.extend(response.as_ref().map(response_note));
    notes.extend(
        response_failure
            .as_ref()
            .map(|e| format!("note: {e}; the summaries are the mean-field guide's")),
    );
    let warnings = notes.iter().fold(warnings, |w, n| w + n + "\n");
    let states =
        pool.install(|| physics::state_probabilities(model, &state, &choices, STATE_PARTICLES))?;
    let corrections =
        pool.install(|| corrections::correction_reports(model, &state, CORRECTION_DRAWS))?;
    let data: Vec<_> = planned
        .physics
        .dials
        .iter()
        .map(|(_, d)| d.report.clone())
        .collect();
    let mut inputs = planned.inputs.clone();
    inputs.extend(planned.physics.inputs());
    let mut written = crate::report::write_physics_outputs(&cfg.out, &sites, &states)?;
    let mut physics_record = serde_json::json!({ "states": &states, "data": &data });
    if !corrections.is_empty() {
        physics_record["corrections"] = serde_json::to_value(&corrections).unwrap_or_default();
    }
    if let refined_sf::Outcome::Ready(r) = &refined {
        written.push(refined_sf::write(&cfg.out, r)?);
        physics_record["refined_sf"] = refined_sf::summary_json(r);
    }
    if !matches!(refined, refined_sf::Outcome::NotPhysics) {
        physics_record["outputs"] = output_names(&written).into();
    }
    let run = LatentRun {
        model: &cfg.model,
        inputs: &inputs,
        seed: state.seed,
        steps: state.step,
        elbo: &elbo,
        quantities: &quantities,
        settings: settings(cfg, &program, horizon),
        physics: physics_record,
        convergence: serde_json::json!({
            "draws": CONVERGENCE_DRAWS,
            "min_distance_sd": convergence::MIN_DISTANCE_SD,
            "min_t": convergence::MIN_T,
            "drifts": &end_check.drifts,
            "global_distances": &end_check.global_distances,
            "mode_searches": &state.searches,
            "profile_scans": &state.scans,
            "end_profile": &end_scan,
            "instance_fit": &instance_fit,
        }),
        linear_response: match (&response, &response_failure) {
            (Some(r), _) => serde_json::to_value(r).unwrap_or_default(),
            (None, Some(e)) => serde_json::json!({ "error": e }),
            (None, None) => serde_json::Value::Null,
        },
        npz_max_bytes: cfg.npz_max_bytes,
    };
    let files = write_latent_report(&cfg.out, &run)?;
    written.extend(files.written);
    let warnings = warnings + &npz_note(&files.omitted, cfg.npz_max_bytes);
    written.push(ckpt);
    Ok(RunResult {
        steps_now: state.step - before,
        quantities,
        state,
        written,
        warnings,
        ignored_columns: planned.ignored_columns,
        states,
        data,
        corrections,
    })
}

/// The note naming the quantities posterior.npz left out (empty when none was).
fn npz_note(omitted: &[crate::report::latents::OmittedDraws], max_bytes: Option<u64>) -> String {
    let (Some(max_bytes), false) = (max_bytes, omitted.is_empty()) else {
        return String::new();
    };
    let mib = |b: u64| b as f64 / 1048576.0;
    let total: u64 = omitted.iter().map(|o| o.bytes).sum();
    let names: Vec<String> = omitted
        .iter()
        .map(|o| {
            format!(
                "`{}` ({} values, {:.1} MiB)",
                o.name,
                o.elements,
                mib(o.bytes)
            )
        })
        .collect();
    format!(
        "note: posterior.npz leaves out the draws of {} quantit{} over its {:.1} MiB limit ({}; {:.1} MiB in all); their summaries are in summary.json; --npz-max-mib 0 writes every draw\n",
        omitted.len(),
        if omitted.len() == 1 { "y" } else { "ies" },
        mib(max_bytes),
        names.join(", "),
        mib(total)
    )
}

/// File names of `paths` (for summary.json's `physics.outputs`).
fn output_names(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .filter_map(|p| p.file_name())
        .map(|n| n.to_string_lossy().to_string())
        .collect()
}

fn settings(cfg: &RunConfig, program: &Program, horizon: u64) -> serde_json::Value {
    let variants: serde_json::Map<String, serde_json::Value> = program
        .variants
        .iter()
        .map(|(n, _, c)| (n.clone(), c.clone().into()))
        .collect();
    serde_json::json!({
        "variants": variants,
        "sets": cfg.sets.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        "particles": cfg.particles.max(1),
        "lr": cfg.lr,
        "lr_decay": cfg.lr_decay,
        "lr_horizon": horizon,
        "draws": cfg.draws,
    })
}

/// What a checkpoint must match to be resumed: model bytes, `--set`s, data bytes, seed.
fn fingerprint(cfg: &RunConfig, planned: &Planned) -> Result<serde_json::Value, RunError> {
    let model = hash_input(&cfg.model)?;
    // Every data file the model reads: tables and the physics sources' files (atomic models,
    // experiment lists, reflection tables, spectra).
    let data = planned
        .inputs
        .iter()
        .chain(&planned.physics.inputs())
        .map(|p| hash_input(p).map(|h| serde_json::json!({"file": p.file_name().map(|f| f.to_string_lossy().to_string()), "sha256": h.sha256})))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(serde_json::json!({
        "model_sha256": model.sha256,
        "sets": cfg.sets.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        "data": data,
        "seed": cfg.seed,
    }))
}

/// A fresh state (recording the fingerprint and the learning-rate horizon), or the
/// checkpoint's after checking it, with the horizon of the run it continues.
fn start_state(
    cfg: &RunConfig,
    model: &Model,
    fingerprint: &serde_json::Value,
) -> Result<(SviState, u64), RunError> {
    let run_json = cfg.out.join("run.json");
    if !cfg.resume {
        let horizon = cfg.lr_horizon.unwrap_or(cfg.steps);
        let mut record = fingerprint.clone();
        record["lr_horizon"] = horizon.into();
        let text = serde_json::to_string_pretty(&record).unwrap_or_default();
        crate::report::write_atomic(&run_json, text.as_bytes())?;
        return Ok((SviState::new(model, cfg.seed), horizon));
    }
    let refuse = |detail: String| RunError::Resume {
        path: run_json.clone(),
        detail,
    };
    let text = std::fs::read_to_string(&run_json)
        .map_err(|e| refuse(format!("no run to resume ({e})")))?;
    let old: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| refuse(format!("not a run record: {e}")))?;
    for (key, what) in [
        ("model_sha256", "the model file"),
        ("sets", "the --set values"),
        ("data", "the data files"),
        ("seed", "the seed"),
    ] {
        if old.get(key) != fingerprint.get(key) {
            return Err(refuse(format!("{what} differ from the checkpointed run's")));
        }
    }
    let state = SviState::load(&checkpoint_path(&cfg.out))?;
    if state.layout != crate::infer::guide::ParamLayout::new(model) {
        return Err(refuse(
            "the checkpoint's parameters do not fit this model".into(),
        ));
    }
    let horizon = old
        .get("lr_horizon")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(cfg.steps);
    Ok((state, cfg.lr_horizon.unwrap_or(horizon)))
}

/// Bytes of posterior draws one block of a streamed site holds at a time (per worker).
const STREAM_BLOCK_BYTES: usize = 16 << 20;

/// The latent sites whose `n` draws are summarized a block of instances at a time and never
/// held whole: those posterior.npz would leave out under `max_bytes` (the smallest sites
/// first while the total stays within it, as `latents::npz_selection` keeps them). Only
/// latents in plates: the dataset-level ones feed the lets drawn after them. None when there
/// is no limit, or when a site is partially centred (its draws need the whole draws of the
/// sites before it).
fn streamed_sites(model: &Model, state: &SviState, n: usize, max_bytes: Option<u64>) -> Vec<bool> {
    let mut streamed = vec![false; model.sites.len()];
    let blocks = &state.layout.blocks;
    let centred = blocks
        .iter()
        .flatten()
        .any(|b| b.kind == crate::infer::model::GuideKind::PartialCentring);
    let (Some(limit), false) = (max_bytes, centred) else {
        return streamed;
    };
    let bytes = |b: &crate::infer::guide::SiteBlock| 8 * (n * b.instances * b.event) as u64;
    let mut latents: Vec<usize> = (0..model.sites.len())
        .filter(|&i| matches!(&model.sites[i], Site::Latent(l) if l.plate.is_some()))
        .filter(|&i| blocks[i].is_some())
        .collect();
    latents.sort_by_key(|&i| blocks[i].as_ref().map_or(0, bytes));
    let mut total = 0u64;
    for i in latents {
        let b = blocks[i].as_ref().map_or(0, bytes);
        if total + b > limit {
            streamed[i] = true;
        } else {
            total += b;
        }
    }
    streamed
}

/// Mean, sd and quantiles of every element of latent site `site`'s `n` draws, a block of
/// instances at a time (blocks in parallel): the draws of one block at a time per worker.
fn streamed_summaries(
    model: &Model,
    state: &SviState,
    n: usize,
    site: usize,
) -> Result<StreamedSummaries, RunError> {
    use rayon::prelude::*;
    let Some(b) = state.layout.blocks.get(site).and_then(Option::as_ref) else {
        return Err(InferError::Posterior(format!("site {site} has no guide to draw from")).into());
    };
    let per_block = (STREAM_BLOCK_BYTES / (8 * n.max(1) * b.event.max(1))).max(1);
    let starts: Vec<usize> = (0..b.instances).step_by(per_block).collect();
    let blocks = starts
        .par_iter()
        .map(|&first| {
            let last = (first + per_block).min(b.instances);
            let draws = posterior::sample_instances(model, state, n, site, first..last)?;
            let width = (last - first) * b.event;
            Ok((0..width)
                .map(|j| summarize_sample(draws.iter().map(|d| d[j]).collect()))
                .collect::<Vec<_>>())
        })
        .collect::<Result<Vec<_>, InferError>>()?;
    Ok(StreamedSummaries {
        draws: n,
        elements: blocks.into_iter().flatten().collect(),
    })
}

/// Draws of every latent and param from the guide, and of every let computed from them
/// (except the lets named in `skip`). The latents posterior.npz would leave out under
/// `max_bytes` come summarized instead (`LatentDraws::streamed`), their draws never held.
pub fn draw_quantities(
    model: &Model,
    state: &SviState,
    n: usize,
    skip: &[String],
    response: Option<&LinearResponse>,
    max_bytes: Option<u64>,
) -> Result<Vec<LatentDraws>, RunError> {
    let streamed = streamed_sites(model, state, n, max_bytes);
    let mut sampled = posterior::sample_except(model, state, n, &streamed)?;
    if let Some(r) = response {
        linear_response::resample(r, model, state.seed, &mut sampled)?;
    }
    let mut out = Vec::new();
    let mut by_site = vec![None; model.sites.len()];
    let mut sampled = sampled.into_iter().peekable();
    for (i, site) in model.sites.iter().enumerate() {
        let Site::Latent(l) = site else {
            continue;
        };
        let (draws, summaries) = if streamed[i] {
            (Vec::new(), Some(streamed_summaries(model, state, n, i)?))
        } else {
            match sampled.next_if(|s| s.name == l.name) {
                Some(s) => (s.values, None),
                None => continue,
            }
        };
        let instances = state.layout.blocks[i].as_ref().map_or(1, |b| b.instances);
        let kind = if l.prior.is_some() { "latent" } else { "param" };
        // A latent in a plate the engine iterates (image, shoebox) gets a leading instance axis.
        let mut shape = l.shape.clone();
        let plates = l
            .plate
            .map(|p| model.plates[p].name.clone())
            .into_iter()
            .collect();
        if l.plate.is_some() {
            shape.insert(0, instances);
        } else {
            by_site[i] = Some(out.len());
        }
        out.push(LatentDraws {
            name: l.name.clone(),
            kind,
            shape,
            plates,
            draws,
            streamed: summaries,
        });
    }
    // Lets of the global plates only: per-image and per-shoebox lets (spots, pixels) are
    // intermediate values, not posterior summaries.
    let lets: Vec<usize> = (0..model.sites.len())
        .filter(|&i| matches!(&model.sites[i], Site::Let(l) if l.plate.is_none()))
        .collect();
    let mut let_draws: Vec<Option<LatentDraws>> = vec![None; lets.len()];
    let mut tape = Tape::new();
    for d in 0..n {
        tape.clear();
        let mut env = Env::new(model);
        for (i, slot) in by_site.iter().enumerate() {
            if let (Some(k), Site::Latent(l)) = (slot, &model.sites[i]) {
                let a = ArrayD::from_shape_vec(IxDyn(&l.shape), out[*k].draws[d].clone())
                    .unwrap_or_default();
                env.values[i] = Some(tape.constant_real(a));
            }
        }
        for (j, &i) in lets.iter().enumerate() {
            let Site::Let(site) = &model.sites[i] else {
                continue;
            };
            let node = env
                .eval(&mut tape, &site.value)
                .map_err(|e| InferError::from_tape(e, state.step, "posterior draw".into()))?;
            env.values[i] = Some(node);
            if skip.contains(&site.name) {
                continue;
            }
            let Value::Real(a) = tape.value(node) else {
                continue;
            };
            let slot = let_draws[j].get_or_insert_with(|| LatentDraws {
                name: site.name.clone(),
                kind: "let",
                shape: a.shape().to_vec(),
                plates: Vec::new(),
                draws: Vec::with_capacity(n),
                streamed: None,
            });
            slot.draws.push(a.iter().copied().collect());
        }
    }
    out.extend(let_draws.into_iter().flatten());
    Ok(out)
}
