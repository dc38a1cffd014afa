//! Posterior draws in an ArviZ-readable layout: `posterior.npz` + `posterior_dims.json`.
//!
//! In: the sites' f'/f'' draws (all on one energy grid). Out: `posterior.npz` holding arrays
//! `fp` and `fdp` of shape (chain = 1, draw, site, energy) and `posterior_dims.json` holding
//! `{"dims": {"fp": ["site", "energy_eV"], ...}, "coords": {"site": [...], "energy_eV": [...]}}`,
//! so that in Python
//! `az.from_dict(posterior={k: npz[k] for k in npz.files}, dims=meta["dims"], coords=meta["coords"])`
//! builds the InferenceData. Guarantees: every site has the same draw count and energy grid,
//! else a [`ReportError::Draws`](super::ReportError) naming the site.

use super::posterior::SiteDraws;
use super::{ReportError, write_atomic};
use ndarray::{Array2, Array4, Axis};
use ndarray_npy::NpzWriter;
use std::path::Path;

/// Writes `posterior.npz` and `posterior_dims.json` into `out_dir`.
pub fn write_draws(out_dir: &Path, sites: &[SiteDraws]) -> Result<(), ReportError> {
    let Some(first) = sites.first() else {
        return Ok(());
    };
    check_shapes(sites, first)?;
    write_npz(&out_dir.join("posterior.npz"), sites)?;
    let meta = serde_json::json!({
        "dims": {"fp": ["site", "energy_eV"], "fdp": ["site", "energy_eV"]},
        "coords": {
            "site": sites.iter().map(|s| s.site.clone()).collect::<Vec<_>>(),
            "energy_eV": first.energy_ev,
        },
    });
    let meta_path = out_dir.join("posterior_dims.json");
    write_atomic(&meta_path, meta.to_string().as_bytes())
}

fn check_shapes(sites: &[SiteDraws], first: &SiteDraws) -> Result<(), ReportError> {
    let shape = first.fp.dim();
    let differs = |s: &SiteDraws| {
        s.fp.dim() != shape || s.fdp.dim() != shape || s.energy_ev != first.energy_ev
    };
    match sites.iter().find(|s| differs(s)) {
        Some(s) => Err(ReportError::Draws {
            site: s.site.clone(),
            what: format!(
                "draws or energy grid differ from site `{}` ({} draws x {} energies)",
                first.site, shape.0, shape.1
            ),
        }),
        None => Ok(()),
    }
}

/// Stacks one quantity of every site into (chain = 1, draw, site, energy).
fn stack(sites: &[SiteDraws], pick: fn(&SiteDraws) -> &Array2<f64>) -> Array4<f64> {
    let (draws, energies) = pick(&sites[0]).dim();
    let mut a = Array4::<f64>::zeros((1, draws, sites.len(), energies));
    for (k, s) in sites.iter().enumerate() {
        a.index_axis_mut(Axis(0), 0)
            .index_axis_mut(Axis(1), k)
            .assign(pick(s));
    }
    a
}

fn write_npz(path: &Path, sites: &[SiteDraws]) -> Result<(), ReportError> {
    let npz_error = |e: &dyn std::fmt::Display| ReportError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    };
    let tmp = path.with_extension("npz.tmp");
    let file = std::fs::File::create(&tmp).map_err(|e| npz_error(&e))?;
    let mut npz = NpzWriter::new(file);
    npz.add_array("fp", &stack(sites, |s| &s.fp))
        .map_err(|e| npz_error(&e))?;
    npz.add_array("fdp", &stack(sites, |s| &s.fdp))
        .map_err(|e| npz_error(&e))?;
    npz.finish().map_err(|e| npz_error(&e))?;
    std::fs::rename(&tmp, path).map_err(|e| npz_error(&e))
}
