//! spread: a probabilistic programming language and runtime for SPREAD crystallography.
//!
//! The library is pure: it takes model sources and data and returns values and diagnostics.
//! Only the `spreadc` binary (src/main.rs) prints, reads arguments and chooses exit codes.
//! Modules follow the pipeline of DESIGN.md §1; imports point backward only.

pub mod check;
pub mod diagnostics;
pub mod formats;
pub mod infer;
pub mod ir;
pub mod ops;
pub mod physics;
pub mod report;
pub mod resolve;
pub mod syntax;
pub mod tape;
pub mod plan;
pub mod run;
