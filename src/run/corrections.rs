//! How much each correction flow changed the likelihood, at the fitted parameters.
//!
//! In: the model, the final SVI state. Out: per observe site with a flow, the mean over guide
//! draws of log P*(data) − penalty − log P(data), where P is the uncorrected physics likelihood
//! (Poisson) and both are evaluated with the same latent draws: the log-likelihood the correction
//! buys, in nats (mini-batches are scaled up as in the ELBO, so it estimates the full data's;
//! the corrected density at integer counts is compared with the Poisson mass, a unit bin).
//! Also the gain over the flow's starting point (the flow at identity): for the residual kinds
//! the Gaussian approximation, which at a few counts per pixel is crude, and a flow given
//! ln(1 + μ) learns to undo it, so this gain is large even for a correct model; for the gain
//! kind the Poisson likelihood itself, so the two gains agree. A large gain over Poisson
//! says the physics misses something the flow had to absorb (look at it before trusting the
//! physics latents). Guarantee: the state is not changed.

use super::RunError;
use crate::infer::engine::{Evaluator, ParticleSpec};
use crate::infer::model::{Model, Site};
use crate::infer::reduce::SingleProcess;
use crate::infer::svi::SviState;

/// One correction flow's effect.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CorrectionReport {
    /// The observe statement (file:line and text).
    pub observe: String,
    /// Flow declaration name.
    pub flow: String,
    /// Bijection family.
    pub kind: String,
    /// Penalty weight W.
    pub penalty: f64,
    /// Conditioner parameters.
    pub parameters: usize,
    /// Mean log-likelihood gain over the uncorrected (Poisson) likelihood, penalty included (nats).
    pub log_lik_gain: f64,
    /// Its standard error over the draws.
    pub log_lik_gain_se: f64,
    /// Mean gain over the identity flow (for the residual kinds the Gaussian approximation, for
    /// the gain kind Poisson), penalty included (nats).
    pub gain_over_identity: f64,
    /// Guide draws used.
    pub draws: usize,
}

/// The report of every correction flow of `model` (empty without flows).
pub fn correction_reports(
    model: &Model,
    state: &SviState,
    draws: usize,
) -> Result<Vec<CorrectionReport>, RunError> {
    let mut out = Vec::new();
    for (i, site) in model.sites.iter().enumerate() {
        let Site::Observe(o) = site else { continue };
        let (Some(c), Some(b)) = (&o.correction, &state.layout.blocks[i]) else {
            continue;
        };
        let mut identity = state.params.clone();
        identity[b.offset..b.offset + b.len()].fill(0.0);
        // The same sites and layout, this observation uncorrected.
        let mut uncorrected = model.clone();
        if let Site::Observe(u) = &mut uncorrected.sites[i] {
            u.correction = None;
        }
        let log_weight = |model: &Model, params: &[f64], particle: u64| {
            let spec = ParticleSpec {
                seed: state.seed,
                step: u64::MAX - 2,
                particle,
                analytic_kl: false,
            };
            Evaluator {
                model,
                layout: &state.layout,
                params,
                spec,
                proposal: None,
            }
            .particle(&SingleProcess)
            .map(|p| p.log_weight)
        };
        let mut gains = Vec::new();
        let mut over_identity = 0.0;
        for k in 0..draws.max(2) as u64 {
            let corrected = log_weight(model, &state.params, k)?;
            gains.push(corrected - log_weight(&uncorrected, &state.params, k)?);
            over_identity += corrected - log_weight(model, &identity, k)?;
        }
        let n = gains.len() as f64;
        let mean = gains.iter().sum::<f64>() / n;
        let var = gains.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / (n - 1.0);
        out.push(CorrectionReport {
            observe: o.label.clone(),
            flow: c.flow.clone(),
            kind: c.kind.describe(),
            penalty: c.penalty,
            parameters: c.n_params(),
            log_lik_gain: mean,
            log_lik_gain_se: (var / n).sqrt(),
            gain_over_identity: over_identity / n,
            draws: gains.len(),
        });
    }
    Ok(out)
}
