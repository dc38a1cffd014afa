//! Data in: DIALS experiment lists and reflection tables, per-shot spectra, the `--data DIR`
//! layout; data out: the same formats (for `spreadc simulate`) and MTZ.
//!
//! In: file paths or bytes. Out: typed models (lab-frame geometry, typed columns, shoebox pixels)
//! or a typed error naming the file and the field. Nothing here prints; warnings and counts are
//! returned to the caller.

pub mod dataset_dir;
pub mod expt;
pub mod image_index;
pub mod inspect;
pub mod mtz;
pub mod refl;
pub mod spectrum;
