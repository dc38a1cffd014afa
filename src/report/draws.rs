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
use ndarray::{Array4, Axis};
use ndarray_npy::NpzWriter;
use std::path::Path;

/// Writes `posterior.npz` and `posterior_dims.json` into `out_dir`.
pub fn write_draws(out_dir: &Path, sites: &[SiteDraws]) -> Result<(), ReportError> {
    let Some(first) = sites.first() else {
        return Ok(());
    };
    let (draws, energies) = first.fp.dim();
    for s in sites {
        if s.fp.dim() != (draws, energies)
            || s.fdp.dim() != (draws, energies)
            || s.energy_ev != first.energy_ev
        {
            return Err(ReportError::Draws {
                site: s.site.clone(),
                what: format!(
                    "draws or energy grid differ from site `{}` ({draws} draws x {energies} energies)",
                    first.site
                ),
            });
        }
    }
    let stack = |pick: fn(&SiteDraws) -> &ndarray::Array2<f64>| {
        let mut a = Array4::<f64>::zeros((1, draws, sites.len(), energies));
        for (k, s) in sites.iter().enumerate() {
            a.index_axis_mut(Axis(0), 0)
                .index_axis_mut(Axis(1), k)
                .assign(pick(s));
        }
        a
    };
    let path = out_dir.join("posterior.npz");
    let npz_error = |e: &dyn std::fmt::Display| ReportError::Io {
        path: path.clone(),
        source: std::io::Error::other(e.to_string()),
    };
    let tmp = out_dir.join("posterior.npz.tmp");
    let file = std::fs::File::create(&tmp).map_err(|e| npz_error(&e))?;
    let mut npz = NpzWriter::new(file);
    npz.add_array("fp", &stack(|s| &s.fp))
        .map_err(|e| npz_error(&e))?;
    npz.add_array("fdp", &stack(|s| &s.fdp))
        .map_err(|e| npz_error(&e))?;
    npz.finish().map_err(|e| npz_error(&e))?;
    std::fs::rename(&tmp, &path).map_err(|e| npz_error(&e))?;
    let meta = serde_json::json!({
        "dims": {"fp": ["site", "energy_eV"], "fdp": ["site", "energy_eV"]},
        "coords": {
            "site": sites.iter().map(|s| s.site.clone()).collect::<Vec<_>>(),
            "energy_eV": first.energy_ev,
        },
    });
    write_atomic(
        &out_dir.join("posterior_dims.json"),
        meta.to_string().as_bytes(),
    )
}
