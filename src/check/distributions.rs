//! The distributions a model may use after `~`: parameters, support and event shape.
//!
//! In: a distribution name. Out: its signature. The runtime implements each by the same name; the
//! support tells it which bijection maps the unconstrained guide to the latent's domain.

use serde::Serialize;

/// Where a distribution puts its mass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Support {
    /// All reals.
    Real,
    /// (0, inf).
    Positive,
    /// (0, 1).
    Unit,
    /// Between the `low` and `high` arguments.
    Interval,
    /// Non-negative counts (observed only).
    Counts,
    /// 0 or 1 (observed only).
    Binary,
    /// Probability vectors along the last axis.
    Simplex,
}

impl Support {
    /// The name printed in the IR.
    pub fn name(self) -> &'static str {
        match self {
            Support::Real => "real",
            Support::Positive => "positive",
            Support::Unit => "unit_interval",
            Support::Interval => "interval",
            Support::Counts => "counts",
            Support::Binary => "binary",
            Support::Simplex => "simplex",
        }
    }

    /// True when a latent may have this support (reparameterizable).
    pub fn is_continuous(self) -> bool {
        !matches!(self, Support::Counts | Support::Binary)
    }
}

/// The signature of one distribution.
#[derive(Debug, Clone, Copy)]
pub struct DistSig {
    /// Name as written.
    pub name: &'static str,
    /// Parameter names in positional order.
    pub params: &'static [&'static str],
    /// Support of the samples.
    pub support: Support,
    /// 0 for scalar events, 1 for vector events (Dirichlet).
    pub event_rank: usize,
}

const fn sig(name: &'static str, params: &'static [&'static str], support: Support) -> DistSig {
    DistSig { name, params, support, event_rank: 0 }
}

/// Every distribution, by name.
pub const DISTRIBUTIONS: &[DistSig] = &[
    sig("Normal", &["loc", "scale"], Support::Real),
    sig("HalfNormal", &["scale"], Support::Positive),
    sig("LogNormal", &["loc", "scale"], Support::Positive),
    sig("StudentT", &["df", "loc", "scale"], Support::Real),
    sig("Cauchy", &["loc", "scale"], Support::Real),
    sig("HalfCauchy", &["scale"], Support::Positive),
    sig("Laplace", &["loc", "scale"], Support::Real),
    sig("Exponential", &["rate"], Support::Positive),
    sig("Gamma", &["concentration", "rate"], Support::Positive),
    sig("Beta", &["concentration1", "concentration0"], Support::Unit),
    sig("Uniform", &["low", "high"], Support::Interval),
    sig("Poisson", &["rate"], Support::Counts),
    sig("Bernoulli", &["probs"], Support::Binary),
    DistSig { name: "Dirichlet", params: &["concentration"], support: Support::Simplex, event_rank: 1 },
];

/// The signature of a distribution, if known.
pub fn lookup(name: &str) -> Option<&'static DistSig> {
    DISTRIBUTIONS.iter().find(|d| d.name == name)
}

/// All names, for "did you mean" notes.
pub fn names() -> Vec<&'static str> {
    DISTRIBUTIONS.iter().map(|d| d.name).collect()
}
