//! Results out (`--out DIR`): summary.json, fp_fdp.csv, fp_fdp.svg, state_probabilities.csv,
//! elbo.csv, posterior.npz + posterior_dims.json (ArviZ layout), refined_sf.mtz.
//!
//! In: a [`RunOutputs`] (posterior draws of f'/f'' per site, optional oxidation-state
//! probabilities, the ELBO history, the data counts and the inputs). Out: the files above,
//! written atomically (temp file + rename) so an interrupted run never leaves half a file.
//! Guarantees: summary.json holds every figure the other files hold, the SHA-256 of every
//! input, the crate version and the seed.

mod draws;
pub mod json;
pub mod latents;
pub mod plot;
pub mod posterior;
pub mod refined_sf;
mod tables;

pub use posterior::{CurveSummary, PointSummary, ReferenceCurve, SiteDraws, summarize_site};
pub use tables::{InputFile, RunSummary, hash_input};

use crate::formats::dataset_dir::DataReport;
use std::path::{Path, PathBuf};

/// The probability of one oxidation state of one site.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StateProbability {
    /// Site label.
    pub site: String,
    /// State label (e.g. `Fe3+`).
    pub state: String,
    /// Posterior probability.
    pub probability: f64,
    /// log(P(this state) / P(the other)) estimated as the mean over guide draws of the
    /// log-likelihood ratio of the two pinned states.
    pub log_odds: f64,
    /// Monte Carlo standard error of `log_odds`.
    pub log_odds_se: f64,
    /// Guide draws averaged (up to 16; fewer when more could not change the printed value).
    pub particles: usize,
}

/// Everything a finished (or checkpointed) run reports.
#[derive(Debug, Clone)]
pub struct RunOutputs {
    /// The model file.
    pub model: PathBuf,
    /// Data files read (hashed into summary.json).
    pub inputs: Vec<PathBuf>,
    /// Random seed of the run.
    pub seed: u64,
    /// Used/skipped counts of the data.
    pub data: DataReport,
    /// f'/f'' posterior draws per metal site.
    pub sites: Vec<SiteDraws>,
    /// Oxidation-state probabilities (empty when the model has no state choice).
    pub states: Vec<StateProbability>,
    /// (step, ELBO) history.
    pub elbo: Vec<(u64, f64)>,
}

/// Anything that stops the report from being written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file could not be written or an input could not be hashed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Posterior draws that cannot be summarized.
    #[error(transparent)]
    Posterior(#[from] posterior::PosteriorError),
    /// Sites whose draws cannot share one array.
    #[error("site `{site}`: {what}")]
    Draws {
        /// Site label.
        site: String,
        /// What differs.
        what: String,
    },
    /// The plot could not be drawn.
    #[error("{path}: cannot draw plot: {message}")]
    Plot {
        /// The file.
        path: PathBuf,
        /// plotters' message.
        message: String,
    },
}

/// Writes every output file into `out_dir` (created if needed); returns the paths written.
pub fn write_report(out_dir: &Path, run: &RunOutputs) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(out_dir).map_err(|source| ReportError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let curves = run
        .sites
        .iter()
        .map(summarize_site)
        .collect::<Result<Vec<_>, _>>()?;
    let mut written = Vec::new();
    let mut put = |name: &str, text: String| -> Result<(), ReportError> {
        let path = out_dir.join(name);
        write_atomic(&path, text.as_bytes())?;
        written.push(path);
        Ok(())
    };
    put("fp_fdp.csv", tables::fp_fdp_csv(&curves))?;
    put("elbo.csv", tables::elbo_csv(&run.elbo))?;
    if !run.states.is_empty() {
        put("state_probabilities.csv", tables::states_csv(&run.states))?;
    }
    let svg_path = out_dir.join("fp_fdp.svg");
    let svg = plot::fp_fdp_svg(&run.sites, &curves).map_err(|message| ReportError::Plot {
        path: svg_path.clone(),
        message,
    })?;
    put("fp_fdp.svg", svg)?;
    let summary = tables::run_summary(run, &curves)?;
    put("summary.json", summary)?;
    if !run.sites.is_empty() {
        draws::write_draws(out_dir, &run.sites)?;
        written.push(out_dir.join("posterior.npz"));
        written.push(out_dir.join("posterior_dims.json"));
    }
    Ok(written)
}

/// Writes fp_fdp.csv and fp_fdp.svg (when there are f'/f'' sites) and
/// state_probabilities.csv (when there are state choices) into `out_dir`.
pub fn write_physics_outputs(
    out_dir: &Path,
    sites: &[SiteDraws],
    states: &[StateProbability],
) -> Result<Vec<PathBuf>, ReportError> {
    let mut written = Vec::new();
    let mut put = |name: &str, text: String| -> Result<(), ReportError> {
        let path = out_dir.join(name);
        write_atomic(&path, text.as_bytes())?;
        written.push(path);
        Ok(())
    };
    if !sites.is_empty() {
        let curves = sites
            .iter()
            .map(summarize_site)
            .collect::<Result<Vec<_>, _>>()?;
        put("fp_fdp.csv", tables::fp_fdp_csv(&curves))?;
        let svg = plot::fp_fdp_svg(sites, &curves).map_err(|message| ReportError::Plot {
            path: out_dir.join("fp_fdp.svg"),
            message,
        })?;
        put("fp_fdp.svg", svg)?;
    }
    if !states.is_empty() {
        put("state_probabilities.csv", tables::states_csv(states))?;
    }
    Ok(written)
}

/// Writes `bytes` to a temporary sibling, then renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let io = |source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
