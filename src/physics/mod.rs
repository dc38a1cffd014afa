//! Crystallographic physics: scattering tables, atoms, space groups, structure factors, and the
//! anomalous-scattering operators (Kramers-Kronig, f'/f'' parametrizations) with their adjoints.
//! Pure functions on plain data; nothing here knows about the language or the tape.

pub mod anomalous;
pub mod atoms;
pub mod constants;
pub mod form_factor;
pub mod kramers_kronig;
pub mod miller;
pub mod phase_factor;
pub mod scattering_tables;
pub mod structure_factor;
pub mod symmetry;
pub mod unit_cell;
