//! The errors of the inference runtime, each naming where it happened.

use super::dist::DistError;
use super::model::ModelError;
use crate::tape::TapeError;

/// An inference failure.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// A NaN or infinity appeared.
    #[error("step {step}: non-finite {what} from operator `{op}` at {label} ({plates})")]
    NonFinite {
        /// Optimization step.
        step: u64,
        /// "value" or "gradient".
        what: &'static str,
        /// Operator that produced it.
        op: &'static str,
        /// Source label of the node.
        label: String,
        /// Plate indices, e.g. "school 3" or "global".
        plates: String,
    },
    /// A site's density could not be built.
    #[error("step {step}: site `{site}` at {label} ({plates}): {source}")]
    Site {
        /// Optimization step.
        step: u64,
        /// Site name.
        site: String,
        /// Its label.
        label: String,
        /// Plate indices.
        plates: String,
        /// The cause.
        source: Box<DistError>,
    },
    /// The model is malformed.
    #[error(transparent)]
    Model(Box<ModelError>),
    /// Reading or writing a checkpoint failed.
    #[error("checkpoint {path}: {detail}")]
    Checkpoint {
        /// File.
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// A mode search was asked for a site it cannot search.
    #[error("mode search: {0}")]
    Search(String),
    /// A profile scan was asked for a site it cannot scan, or could not score a point.
    #[error("profile scan: {0}")]
    Scan(String),
    /// The linear-response covariance could not be computed.
    #[error("linear response: {0}")]
    LinearResponse(String),
    /// Posterior draws could not be formed from the guide.
    #[error("posterior draws: {0}")]
    Posterior(String),
    /// The state does not fit the model (e.g. resuming with another model).
    #[error("state does not match the model: {0}")]
    StateMismatch(String),
}

impl InferError {
    /// Wraps a tape error from a site.
    pub(crate) fn from_tape(e: TapeError, step: u64, plates: String) -> Self {
        match e {
            TapeError::NonFinite {
                op, label, what, ..
            } => InferError::NonFinite {
                step,
                what,
                op,
                label,
                plates,
            },
            other => InferError::Site {
                step,
                site: String::new(),
                label: String::new(),
                plates,
                source: Box::new(DistError::Tape(other)),
            },
        }
    }
}

impl From<ModelError> for InferError {
    fn from(e: ModelError) -> Self {
        InferError::Model(Box::new(e))
    }
}
