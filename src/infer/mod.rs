//! Variational inference: distributions, bijections, guides, the ELBO, Adam and the SVI loop
//! over a data-driven `Model` of nested plates.
//!
//! In: a validated `model::Model` and `svi::SviConfig`. Out: an `svi::SviState` (params,
//! optimizer moments, step) that checkpoints atomically and resumes bit-identically, and
//! posterior summaries. Guarantees: a seeded run is bit-identical with any thread count.

pub mod constraint;
pub mod dist;
pub mod encoder;
pub mod engine;
pub mod error;
pub mod examples;
pub mod fit_check;
pub mod flow;
pub mod guide;
pub mod linear_response;
pub mod lowrank;
pub mod mlp;
pub mod model;
pub mod normal_kernel;
pub mod optim;
pub mod posterior;
pub mod prior_scale;
pub mod reduce;
pub mod rng;
pub mod scan;
pub mod search;
pub mod spline;
pub mod svi;
pub mod warm;
