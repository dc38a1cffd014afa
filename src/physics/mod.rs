//! Crystallographic physics: scattering tables, atoms, space groups, structure factors, the
//! anomalous-scattering operators (Kramers-Kronig, f'/f'' parametrizations), and the nanoBragg
//! pixel model (detector, beam, crystal, mosaic domains, lattice shape transforms, polarization,
//! the fused spot kernel and its adjoint, backgrounds, noise).
//! Pure functions on plain data; nothing here knows about the language or the tape.

pub mod anomalous;
pub mod atoms;
pub mod background;
pub mod beam;
pub mod constants;
pub mod crystal;
pub mod form_factor;
pub mod geometry;
pub mod kramers_kronig;
pub mod lattice;
pub mod miller;
pub mod mosaic;
pub mod nanobragg;
pub mod noise;
pub mod phase_factor;
pub mod polarization;
pub mod response;
pub mod scattering_tables;
pub mod spot;
pub mod structure_factor;
pub mod symmetry;
pub mod unit_cell;
