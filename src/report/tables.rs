//! The text outputs: fp_fdp.csv, elbo.csv, state_probabilities.csv and summary.json.
//!
//! In: summarized curves, ELBO history, state probabilities, the run's inputs. Out: strings in
//! fixed column orders (documented in each function). Numbers are printed with Rust's shortest
//! round-trip formatting, so reading a CSV back gives the exact f64 written.

use super::posterior::CurveSummary;
use super::{ReportError, RunOutputs, StateProbability};
use crate::formats::dataset_dir::DataReport;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::path::Path;

/// `site,energy_eV,fp_mean,fp_sd,fp_q05,fp_q50,fp_q95,fdp_mean,fdp_sd,fdp_q05,fdp_q50,fdp_q95`.
pub fn fp_fdp_csv(curves: &[CurveSummary]) -> String {
    let mut out = String::from(
        "site,energy_eV,fp_mean,fp_sd,fp_q05,fp_q50,fp_q95,fdp_mean,fdp_sd,fdp_q05,fdp_q50,fdp_q95\n",
    );
    for c in curves {
        for ((e, fp), fdp) in c.energy_ev.iter().zip(&c.fp).zip(&c.fdp) {
            let _ = writeln!(
                out,
                "{},{e},{},{},{},{},{},{},{},{},{},{}",
                c.site,
                fp.mean,
                fp.sd,
                fp.q05,
                fp.q50,
                fp.q95,
                fdp.mean,
                fdp.sd,
                fdp.q05,
                fdp.q50,
                fdp.q95
            );
        }
    }
    out
}

/// `step,elbo`.
pub fn elbo_csv(elbo: &[(u64, f64)]) -> String {
    let mut out = String::from("step,elbo\n");
    for (step, value) in elbo {
        let _ = writeln!(out, "{step},{value}");
    }
    out
}

/// `site,state,probability`.
pub fn states_csv(states: &[StateProbability]) -> String {
    let mut out = String::from("site,state,probability\n");
    for s in states {
        let _ = writeln!(out, "{},{},{}", s.site, s.state, s.probability);
    }
    out
}

/// An input file and its SHA-256.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InputFile {
    /// The path as given.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Lower-case hex SHA-256 of the content.
    pub sha256: String,
}

/// Hashes one input file (streamed in 1 MiB blocks).
pub fn hash_input(path: &Path) -> Result<InputFile, ReportError> {
    use std::io::Read;
    let io = |source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        hasher.update(&buf[..n]);
    }
    let sha256 = hasher.finalize().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    });
    Ok(InputFile {
        path: path.display().to_string(),
        bytes,
        sha256,
    })
}

/// The machine-readable record of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary<'a> {
    /// `spread` crate version.
    pub spread_version: &'static str,
    /// Random seed.
    pub seed: u64,
    /// The model file, hashed.
    pub model: InputFile,
    /// Data files, hashed.
    pub inputs: Vec<InputFile>,
    /// Images/shoeboxes/pixels used and skipped by reason.
    pub data: &'a DataReport,
    /// Per-site f'/f'' summaries at every energy.
    pub fp_fdp: &'a [CurveSummary],
    /// Oxidation-state probabilities.
    pub state_probabilities: &'a [StateProbability],
    /// Number of ELBO records and the last one.
    pub elbo: ElboSummary,
}

/// The ELBO history in brief (elbo.csv has all of it).
#[derive(Debug, Clone, Serialize)]
pub struct ElboSummary {
    /// Records in elbo.csv.
    pub records: usize,
    /// Last step.
    pub last_step: Option<u64>,
    /// Last ELBO.
    pub last_elbo: Option<f64>,
}

/// Serializes the summary of a run as pretty JSON.
pub fn run_summary(run: &RunOutputs, curves: &[CurveSummary]) -> Result<String, ReportError> {
    let summary = RunSummary {
        spread_version: env!("CARGO_PKG_VERSION"),
        seed: run.seed,
        model: hash_input(&run.model)?,
        inputs: run
            .inputs
            .iter()
            .map(|p| hash_input(p))
            .collect::<Result<_, _>>()?,
        data: &run.data,
        fp_fdp: curves,
        state_probabilities: &run.states,
        elbo: ElboSummary {
            records: run.elbo.len(),
            last_step: run.elbo.last().map(|e| e.0),
            last_elbo: run.elbo.last().map(|e| e.1),
        },
    };
    // Non-finite numbers have no JSON form; serde_json writes them as null.
    serde_json::to_string_pretty(&summary).map_err(|e| ReportError::Io {
        path: run.model.clone(),
        source: std::io::Error::other(e),
    })
}
