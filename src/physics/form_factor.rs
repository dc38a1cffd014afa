//! Atomic form factors f0(s) from Gaussian coefficient sets (WK1995 by default, IT1992 on
//! request). In: a scattering-type label or an element plus charge, and s^2 = (sin(theta)/lambda)^2
//! in 1/Angstrom^2. Out: f0 in electrons, f0(s) = sum_i a_i exp(-b_i s^2) + c.
//! Ions resolve to their own coefficients when the set has them ("Fe3+"), otherwise to the
//! neutral element; [`FormFactors::resolve`] says which label it used.

use crate::physics::scattering_tables::wk1995::{self, GaussianCoefficients, GaussianSet};
use crate::physics::scattering_tables::{TableError, normalize_element};
use std::collections::HashMap;

/// A coefficient set indexed by scattering-type label.
#[derive(Debug, Clone)]
pub struct FormFactors {
    by_label: HashMap<String, GaussianCoefficients>,
}

impl FormFactors {
    /// Index a list of coefficients by label.
    pub fn new(coefficients: Vec<GaussianCoefficients>) -> Self {
        Self {
            by_label: coefficients
                .into_iter()
                .map(|c| (c.label.clone(), c))
                .collect(),
        }
    }

    /// The embedded WK1995 or IT1992 set.
    pub fn embedded(set: GaussianSet) -> Result<Self, TableError> {
        Ok(Self::new(wk1995::embedded(set)?))
    }

    /// Coefficients of an exact label ("Fe3+", "O").
    pub fn get(&self, label: &str) -> Result<&GaussianCoefficients, TableError> {
        self.by_label.get(label).ok_or_else(|| TableError::Unknown {
            kind: "form-factor",
            label: label.to_string(),
        })
    }

    /// The label for `element` with formal `charge`: the ion if tabulated, else the element.
    pub fn resolve(&self, element: &str, charge: i32) -> Result<String, TableError> {
        let symbol = normalize_element(element);
        let ion = match charge {
            0 => symbol.clone(),
            q if q > 0 => format!("{symbol}{q}+"),
            q => format!("{symbol}{}-", -q),
        };
        [ion, symbol]
            .into_iter()
            .find(|l| self.by_label.contains_key(l))
            .ok_or_else(|| TableError::Unknown {
                kind: "form-factor",
                label: element.to_string(),
            })
    }
}

impl GaussianCoefficients {
    /// f0 at s^2 = (sin(theta)/lambda)^2, in electrons.
    pub fn f0(&self, stol_sq: f64) -> f64 {
        self.a
            .iter()
            .zip(&self.b)
            .map(|(a, b)| a * (-b * stol_sq).exp())
            .sum::<f64>()
            + self.c
    }
}
