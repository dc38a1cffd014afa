//! Results of generic models (every latent, param and let, not only f'/f''): summary.json,
//! elbo.csv and posterior.npz.
//!
//! In: a [`LatentRun`]: posterior draws of every named quantity (draw-major, each draw the
//! quantity's row-major elements), the ELBO history, the inputs and the seed. Out: the files,
//! written atomically. Guarantees: summary.json holds mean, sd and the 2.5/5/16/25/50/75/84/95/97.5%
//! quantiles of every element, the SHA-256 of the model and of every input, the seed and the step count;
//! it holds no timings, so two runs that reach the same state write the same file.
//! posterior.npz holds one array per quantity of shape (chain = 1, draw, ...shape), the
//! smallest quantities first up to `LatentRun::npz_max_bytes`; the ones left out are listed in
//! summary.json (`posterior_npz.omitted`) and posterior_dims.json (`omitted`). A quantity may
//! come already summarized (`LatentDraws::streamed`, its draws never held): it is summarized
//! as given and always left out of posterior.npz.

use super::posterior::{PointSummary, summarize_sample};
use super::tables::{InputFile, elbo_csv, hash_input};
use super::{ReportError, write_atomic};
use ndarray::{ArrayD, IxDyn};
use ndarray_npy::NpzWriter;
use std::path::{Path, PathBuf};

/// Draws of one named quantity.
#[derive(Debug, Clone, PartialEq)]
pub struct LatentDraws {
    /// Name in the model.
    pub name: String,
    /// `latent`, `param` or `let`.
    pub kind: &'static str,
    /// Shape of one draw (plate axes first).
    pub shape: Vec<usize>,
    /// Names of the leading axes that run over plates (`image`, `school`), outermost first.
    pub plates: Vec<String>,
    /// `draws[d]` holds draw d's elements, row-major (empty when `streamed` holds the
    /// summaries instead).
    pub draws: Vec<Vec<f64>>,
    /// For a quantity too large to keep whole: its element summaries, computed a block of
    /// plate instances at a time while drawing, and the number of draws they summarize. Its
    /// draws are not held, so posterior.npz leaves it out.
    pub streamed: Option<StreamedSummaries>,
}

/// Element summaries of a quantity whose draws were summarized block by block and dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamedSummaries {
    /// Draws summarized.
    pub draws: usize,
    /// One summary per element, row-major.
    pub elements: Vec<PointSummary>,
}

/// The summary of one element.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ElementSummary {
    /// `mu`, `eta[3]`, `w[1,2]`.
    pub name: String,
    /// Posterior mean, sd and quantiles.
    #[serde(flatten)]
    pub summary: PointSummary,
}

/// Everything a finished generic run reports.
#[derive(Debug, Clone)]
pub struct LatentRun<'a> {
    /// The model file.
    pub model: &'a Path,
    /// Data files read.
    pub inputs: &'a [PathBuf],
    /// Seed of the run.
    pub seed: u64,
    /// Steps taken.
    pub steps: u64,
    /// (step, ELBO) history.
    pub elbo: &'a [(u64, f64)],
    /// Posterior draws of every named quantity.
    pub quantities: &'a [LatentDraws],
    /// Settings to record (variants, consts, optimizer).
    pub settings: serde_json::Value,
    /// Physics results (state probabilities, data counts); null for generic models.
    pub physics: serde_json::Value,
    /// The end-of-fit convergence check (null when it was not run).
    pub convergence: serde_json::Value,
    /// The linear-response covariance of the dataset-level latents (null unless asked for).
    pub linear_response: serde_json::Value,
    /// The size posterior.npz may take (None: no limit): the quantities with the fewest
    /// values go in first, and a quantity that would pass the limit is left out (named in
    /// summary.json and posterior_dims.json; its summaries stay in summary.json).
    pub npz_max_bytes: Option<u64>,
}

/// A quantity whose draws were left out of posterior.npz by its size limit.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OmittedDraws {
    /// Name in the model.
    pub name: String,
    /// Values per draw.
    pub elements: usize,
    /// Bytes its draws would have taken.
    pub bytes: u64,
}

/// The files written, and what posterior.npz left out.
#[derive(Debug, Clone)]
pub struct LatentFiles {
    /// Paths written.
    pub written: Vec<PathBuf>,
    /// Quantities left out of posterior.npz, in model order.
    pub omitted: Vec<OmittedDraws>,
}

/// Bytes of `q`'s draws as f64 (of the draws a streamed quantity summarized).
fn draw_bytes(q: &LatentDraws) -> u64 {
    let draws = q.streamed.as_ref().map_or(q.draws.len(), |s| s.draws);
    8 * draws as u64 * q.shape.iter().product::<usize>() as u64
}

/// Which quantities posterior.npz holds under `max_bytes`: the smallest first (ties in model
/// order) while the total stays within the limit. Returns a flag per quantity. A streamed
/// quantity (no draws held) is never kept.
pub fn npz_selection(quantities: &[LatentDraws], max_bytes: Option<u64>) -> Vec<bool> {
    let Some(limit) = max_bytes else {
        return quantities.iter().map(|q| q.streamed.is_none()).collect();
    };
    let mut order: Vec<usize> = (0..quantities.len()).collect();
    order.sort_by_key(|&i| draw_bytes(&quantities[i]));
    let mut keep = vec![false; quantities.len()];
    let mut total = 0u64;
    for i in order {
        if quantities[i].streamed.is_some() {
            continue;
        }
        let b = draw_bytes(&quantities[i]);
        if total + b > limit {
            break;
        }
        total += b;
        keep[i] = true;
    }
    keep
}

#[derive(serde::Serialize)]
struct Summary<'a> {
    spread_version: &'static str,
    seed: u64,
    steps: u64,
    model: InputFile,
    inputs: Vec<InputFile>,
    settings: &'a serde_json::Value,
    elbo: ElboTail,
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    physics: &'a serde_json::Value,
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    convergence: &'a serde_json::Value,
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    linear_response: &'a serde_json::Value,
    posterior_npz: NpzRecord<'a>,
    quantities: Vec<Quantity<'a>>,
}

/// posterior.npz's size limit and what it left out.
#[derive(serde::Serialize)]
struct NpzRecord<'a> {
    max_bytes: Option<u64>,
    omitted: &'a [OmittedDraws],
}

#[derive(serde::Serialize)]
struct ElboTail {
    records: usize,
    last: Option<f64>,
    mean_last_100: Option<f64>,
}

#[derive(serde::Serialize)]
struct Quantity<'a> {
    name: &'a str,
    kind: &'a str,
    shape: &'a [usize],
    elements: Vec<ElementSummary>,
}

/// `name`, or `name[i,j]` for element `flat` of a tensor of `shape`.
pub fn element_name(name: &str, shape: &[usize], flat: usize) -> String {
    if shape.is_empty() {
        return name.into();
    }
    let mut idx = vec![0; shape.len()];
    let mut rest = flat;
    for (k, &n) in shape.iter().enumerate().rev() {
        idx[k] = rest % n.max(1);
        rest /= n.max(1);
    }
    let parts: Vec<String> = idx.iter().map(usize::to_string).collect();
    format!("{name}[{}]", parts.join(","))
}

/// Mean, sd and quantiles of every element of a quantity.
pub fn summarize(q: &LatentDraws) -> Vec<ElementSummary> {
    if let Some(s) = &q.streamed {
        return s
            .elements
            .iter()
            .enumerate()
            .map(|(i, summary)| ElementSummary {
                name: element_name(&q.name, &q.shape, i),
                summary: *summary,
            })
            .collect();
    }
    let n: usize = q.shape.iter().product();
    (0..n)
        .map(|i| ElementSummary {
            name: element_name(&q.name, &q.shape, i),
            summary: summarize_sample(q.draws.iter().filter_map(|d| d.get(i).copied()).collect()),
        })
        .collect()
}

/// Writes summary.json, elbo.csv and posterior.npz into `out_dir`; returns the paths and the
/// quantities posterior.npz left out.
pub fn write_latent_report(out_dir: &Path, run: &LatentRun) -> Result<LatentFiles, ReportError> {
    std::fs::create_dir_all(out_dir).map_err(|source| ReportError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let tail: Vec<f64> = run.elbo.iter().rev().take(100).map(|(_, v)| *v).collect();
    let keep = npz_selection(run.quantities, run.npz_max_bytes);
    let omitted: Vec<OmittedDraws> = run
        .quantities
        .iter()
        .zip(&keep)
        .filter(|(_, k)| !**k)
        .map(|(q, _)| OmittedDraws {
            name: q.name.clone(),
            elements: q.shape.iter().product(),
            bytes: draw_bytes(q),
        })
        .collect();
    let kept: Vec<&LatentDraws> = run
        .quantities
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(q, _)| q)
        .collect();
    let summary = Summary {
        spread_version: env!("CARGO_PKG_VERSION"),
        seed: run.seed,
        steps: run.steps,
        model: hash_input(run.model)?,
        inputs: run
            .inputs
            .iter()
            .map(|p| hash_input(p))
            .collect::<Result<_, _>>()?,
        settings: &run.settings,
        physics: &run.physics,
        convergence: &run.convergence,
        linear_response: &run.linear_response,
        posterior_npz: NpzRecord {
            max_bytes: run.npz_max_bytes,
            omitted: &omitted,
        },
        elbo: ElboTail {
            records: run.elbo.len(),
            last: run.elbo.last().map(|(_, v)| *v),
            mean_last_100: (!tail.is_empty()).then(|| tail.iter().sum::<f64>() / tail.len() as f64),
        },
        quantities: run
            .quantities
            .iter()
            .map(|q| Quantity {
                name: &q.name,
                kind: q.kind,
                shape: &q.shape,
                elements: summarize(q),
            })
            .collect(),
    };
    // One line per element record (depth 5: root, quantities, quantity, elements, record).
    let json = super::json::to_string_lines(&summary, 4).map_err(|e| ReportError::Io {
        path: out_dir.join("summary.json"),
        source: std::io::Error::other(e.to_string()),
    })?;
    let mut written = Vec::new();
    for (name, text) in [("summary.json", json), ("elbo.csv", elbo_csv(run.elbo))] {
        let path = out_dir.join(name);
        write_atomic(&path, text.as_bytes())?;
        written.push(path);
    }
    let npz = out_dir.join("posterior.npz");
    write_npz(&npz, &kept)?;
    written.push(npz);
    let dims = out_dir.join("posterior_dims.json");
    let mut meta = dims_json(&kept);
    meta["omitted"] = serde_json::to_value(&omitted).unwrap_or_default();
    write_atomic(&dims, meta.to_string().as_bytes())?;
    written.push(dims);
    Ok(LatentFiles { written, omitted })
}

/// `{"dims": {name: [axis names after chain, draw]}, "coords": {plate: [0, 1, ...]}}` for
/// `arviz.from_dict(posterior=dict(np.load("posterior.npz")), dims=..., coords=...)`.
fn dims_json(quantities: &[&LatentDraws]) -> serde_json::Value {
    let mut dims = serde_json::Map::new();
    let mut coords = serde_json::Map::new();
    for q in quantities {
        let names: Vec<String> = (0..q.shape.len())
            .map(|k| match q.plates.get(k) {
                Some(p) => {
                    coords
                        .entry(p.clone())
                        .or_insert_with(|| serde_json::json!((0..q.shape[k]).collect::<Vec<_>>()));
                    p.clone()
                }
                None => format!("{}_dim_{k}", q.name),
            })
            .collect();
        dims.insert(q.name.clone(), serde_json::json!(names));
    }
    serde_json::json!({ "dims": dims, "coords": coords })
}

fn write_npz(path: &Path, quantities: &[&LatentDraws]) -> Result<(), ReportError> {
    let fail = |e: &dyn std::fmt::Display| ReportError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    };
    let tmp = path.with_extension("npz.tmp");
    let file = std::fs::File::create(&tmp).map_err(|e| fail(&e))?;
    let mut npz = NpzWriter::new(file);
    for q in quantities {
        let mut shape = vec![1, q.draws.len()];
        shape.extend(&q.shape);
        let flat: Vec<f64> = q.draws.iter().flatten().copied().collect();
        let a = ArrayD::from_shape_vec(IxDyn(&shape), flat).map_err(|e| fail(&e))?;
        npz.add_array(q.name.as_str(), &a).map_err(|e| fail(&e))?;
    }
    npz.finish().map_err(|e| fail(&e))?;
    std::fs::rename(&tmp, path).map_err(|e| fail(&e))
}
