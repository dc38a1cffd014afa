//! The errors of planning a program: each names the source span (file:line:col) or the data
//! file (and line) it comes from.

/// A program that cannot be turned into a runnable model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// A physics operator with no implementation in the registry.
    #[error("{at}: physics operator `{name}` has no implementation in this build of spreadc")]
    MissingExtern {
        /// Operator name.
        name: String,
        /// Source location of the statement calling it.
        at: String,
    },
    /// A construct the planner does not run (yet), at a source location.
    #[error("{at}: {what} is not supported by the planner")]
    Unsupported {
        /// Source location or item.
        at: String,
        /// What.
        what: String,
    },
    /// A data file that is missing or malformed.
    #[error("{path}{}: {detail}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Data {
        /// The file.
        path: String,
        /// 1-based line, where one applies.
        line: Option<usize>,
        /// What is wrong.
        detail: String,
    },
    /// The assembled model failed validation.
    #[error(transparent)]
    Model(#[from] crate::infer::model::ModelError),
}
