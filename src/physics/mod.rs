//! Crystallography physics: the nanoBragg pixel model and its parts.

pub mod background;
pub mod beam;
pub mod crystal;
pub mod geometry;
pub mod lattice;
pub mod mosaic;
pub mod nanobragg;
pub mod noise;
pub mod polarization;
pub mod response;
pub mod spot;
