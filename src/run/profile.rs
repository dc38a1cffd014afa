//! `--scan SITE=LO:HI:STEP`: the profile scan of a dataset-level latent (`crate::infer::scan`)
//! resolved against the model, its notes, and the end-of-fit check that reports a better
//! point of the profile without moving to it (a fit left in a far mode of, e.g., the edge).

use super::RunError;
use crate::infer::model::Model;
use crate::infer::scan::{self, MIN_GAIN_NATS, ProfileScan, ScanRound};
use crate::infer::svi::SviState;

/// A profile scan asked for by name.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteScan {
    /// The latent (dataset-level, one element, e.g. `edge_ev`).
    pub site: String,
    /// First grid value (constrained space, the latent's units).
    pub lo: f64,
    /// Last grid value (included when the steps land on it).
    pub hi: f64,
    /// Grid spacing.
    pub step: f64,
    /// Steps before which a scan runs and may move the location (None: the search's default,
    /// a tenth and a quarter into the lr horizon).
    pub at_steps: Option<Vec<u64>>,
    /// Guide draws averaged per score.
    pub draws: u64,
    /// SVI steps refining everything else at each point before its score (0: none).
    pub refine_steps: u64,
}

impl SiteScan {
    /// The flag as the user wrote it, for errors.
    pub fn flag(&self) -> String {
        format!("--scan {}={}:{}:{}", self.site, self.lo, self.hi, self.step)
    }
}

/// The grid lo, lo + step, ... up to hi (within a millionth of a step).
pub fn grid(lo: f64, hi: f64, step: f64) -> Result<Vec<f64>, String> {
    if !(lo.is_finite() && hi.is_finite() && step.is_finite()) {
        return Err("LO, HI and STEP must be finite numbers".into());
    }
    if hi <= lo || step <= 0.0 {
        return Err("expected LO < HI and STEP > 0".into());
    }
    let n = ((hi - lo) / step + 1e-6).floor() as usize + 1;
    if n > scan::MAX_POINTS {
        return Err(format!(
            "{n} grid points; at most {} (each costs a pass over all the data per draw)",
            scan::MAX_POINTS
        ));
    }
    Ok((0..n).map(|k| lo + k as f64 * step).collect())
}

/// The scan resolved against the model: an unknown or unscannable site, or a grid value
/// outside its support, is an error naming the flag.
pub fn profile_scan(
    s: &SiteScan,
    model: &Model,
    default_steps: Vec<u64>,
) -> Result<ProfileScan, RunError> {
    let bad = |detail: String| RunError::Usage(format!("{}: {detail}", s.flag()));
    let site = model
        .site_index(&s.site)
        .ok_or_else(|| bad(format!("the model has no latent `{}`", s.site)))?;
    scan::check_site(model, site).map_err(|e| bad(e.to_string()))?;
    let values = grid(s.lo, s.hi, s.step).map_err(bad)?;
    if let Some(v) = values.iter().find(|&&v| !scan::in_support(model, site, v)) {
        return Err(bad(format!("{v} lies outside the support of `{}`", s.site)));
    }
    if s.draws == 0 {
        return Err(bad("--scan-draws must be at least 1".into()));
    }
    Ok(ProfileScan {
        site,
        values,
        at_steps: s.at_steps.clone().unwrap_or(default_steps),
        draws: s.draws,
        refine_steps: s.refine_steps,
    })
}

/// The end-of-fit profile: the scan at the final state, reporting only (refined as the scan
/// asks, on a copy of the state).
pub fn end_check(
    model: &Model,
    state: &SviState,
    s: &ProfileScan,
    refiner: Option<scan::Refiner<'_>>,
) -> Result<ScanRound, crate::infer::error::InferError> {
    scan::scan(model, &mut state.clone(), s, false, refiner)
}

/// What a scan did, e.g. "note: profile scan of edge_ev before step 100 (41 points): moved
/// from 7129.06 to 7120.00 (+35.2 nats)".
pub fn scan_note(r: &ScanRound) -> String {
    let failed = r.gains.iter().filter(|g| !g.is_finite()).count();
    let failed = match failed {
        0 => String::new(),
        n => format!("; {n} points failed to evaluate"),
    };
    let refined = match r.refine_steps {
        0 => String::new(),
        n => format!(", each refined {n} steps"),
    };
    let head = format!(
        "note: profile scan of {} before step {} ({} points, {:.6} to {:.6}{refined})",
        r.site,
        r.step,
        r.values.len(),
        r.values.first().copied().unwrap_or(f64::NAN),
        r.values.last().copied().unwrap_or(f64::NAN),
    );
    match (r.moved_to, r.best()) {
        (Some(to), Some((_, gain))) => format!(
            "{head}: moved from {:.6} to {to:.6} ({gain:+.1} nats){failed}",
            r.current
        ),
        (_, Some((v, gain))) => format!(
            "{head}: stayed at {:.6} (best point {v:.6}, {gain:+.1} nats){failed}",
            r.current
        ),
        _ => format!("{head}: no point evaluated{failed}"),
    }
}

/// The end-of-fit check's note when a grid point beats the fitted location by more than
/// `MIN_GAIN_NATS`: the fit sits in a worse mode (or has not converged) in that latent.
pub fn end_note(r: &ScanRound) -> Option<String> {
    let (v, gain) = r.best()?;
    (gain > MIN_GAIN_NATS).then(|| {
        format!(
            "note: the fit may sit in a worse mode of {}: at the end its location {:.6} scores \
             {gain:.1} nats below the profile's point {v:.6} (the ELBO over all the data, \
             everything else held); rerun with --scan-at at earlier steps, or with a grid \
             that holds that point, before trusting it",
            r.site, r.current
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_includes_both_ends_and_refuses_bad_ranges() {
        let g = grid(7110.0, 7130.0, 0.5).unwrap();
        assert_eq!(g.len(), 41);
        assert_eq!(g[0], 7110.0);
        assert!((g[40] - 7130.0).abs() < 1e-9);
        assert_eq!(grid(0.0, 1.0, 0.3).unwrap().len(), 4);
        assert!(grid(1.0, 0.0, 0.1).is_err());
        assert!(grid(0.0, 1.0, 0.0).is_err());
        assert!(grid(0.0, 1.0, f64::NAN).is_err());
        assert!(grid(0.0, 1e6, 1.0).unwrap_err().contains("at most"));
    }

    #[test]
    fn notes_name_the_move_and_the_better_point() {
        let r = ScanRound {
            step: 100,
            site: "edge_ev".into(),
            current: 7129.0,
            values: vec![7119.0, 7120.0, 7121.0],
            gains: vec![3.0, 12.5, f64::NAN],
            moved_to: Some(7120.0),
            may_move: true,
            refine_steps: 0,
        };
        let n = scan_note(&r);
        assert!(
            n.contains("moved from 7129.000000 to 7120.000000 (+12.5 nats)"),
            "{n}"
        );
        assert!(n.contains("1 points failed"), "{n}");
        let end = end_note(&ScanRound {
            moved_to: None,
            may_move: false,
            ..r.clone()
        })
        .unwrap();
        assert!(
            end.contains("12.5 nats below the profile's point 7120.000000"),
            "{end}"
        );
        let fine = ScanRound {
            gains: vec![-3.0, 0.4, -1.0],
            ..r
        };
        assert!(end_note(&fine).is_none());
    }
}
