//! Bijections from unconstrained space to a latent's support, with log|det J|.
//!
//! In: an unconstrained tape node u. Out: the constrained value z = T(u) and the elementwise
//! log|dz/du|, so that log p_U(u) = log p_Z(T(u)) + log|J|. `inverse` maps numbers back (for
//! initial values). Guarantees: T is smooth and strictly increasing elementwise.

use crate::infer::dist::DistError;
use crate::tape::{NodeId, Tape};

/// The support of a latent.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Constraint {
    /// The whole real line (identity map).
    Real,
    /// (0, ∞) through exp.
    Positive,
    /// (low, ∞) through low + exp.
    GreaterThan(f64),
    /// (low, high) through a scaled sigmoid.
    Interval(f64, f64),
}

impl Constraint {
    /// z = T(u) and elementwise log|dz/du| (None for the identity, whose log|J| is 0).
    pub fn forward(self, t: &mut Tape, u: NodeId) -> Result<(NodeId, Option<NodeId>), DistError> {
        Ok(match self {
            Constraint::Real => (u, None),
            Constraint::Positive => (t.exp(u)?, Some(u)),
            Constraint::GreaterThan(low) => {
                let e = t.exp(u)?;
                (t.shift(e, low)?, Some(u))
            }
            Constraint::Interval(low, high) => {
                let s = t.sigmoid(u)?;
                let w = t.scale(s, high - low)?;
                let z = t.shift(w, low)?;
                let sp_pos = t.softplus(u)?;
                let nu = t.neg(u)?;
                let sp_neg = t.softplus(nu)?;
                let sum = t.add(sp_pos, sp_neg)?;
                let neg = t.neg(sum)?;
                (z, Some(t.shift(neg, (high - low).ln())?))
            }
        })
    }

    /// u = T⁻¹(z) for a number inside the support.
    pub fn inverse(self, z: f64) -> f64 {
        match self {
            Constraint::Real => z,
            Constraint::Positive => z.ln(),
            Constraint::GreaterThan(low) => (z - low).ln(),
            Constraint::Interval(low, high) => {
                let p = (z - low) / (high - low);
                (p / (1.0 - p)).ln()
            }
        }
    }

    /// z = T(u) for a number.
    pub fn apply(self, u: f64) -> f64 {
        match self {
            Constraint::Real => u,
            Constraint::Positive => u.exp(),
            Constraint::GreaterThan(low) => low + u.exp(),
            Constraint::Interval(low, high) => {
                low + (high - low) * crate::tape::elementwise::sigmoid(u)
            }
        }
    }
}
