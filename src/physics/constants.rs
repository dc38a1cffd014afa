//! Physical constants used across the physics modules, in one place with their units.

/// Photon energy times wavelength: E (eV) * lambda (Angstrom).
pub const EV_ANGSTROM: f64 = 12398.4198;

/// Square of the classical electron radius, in m^2.
pub const R_E_SQUARED_M2: f64 = 7.940_792_480_189_65e-30;

/// K absorption edges (eV) of the metals SPREAD looks at.
pub const K_EDGE_MN_EV: f64 = 6539.0;
/// Fe K edge, eV.
pub const K_EDGE_FE_EV: f64 = 7112.0;
/// Cu K edge, eV.
pub const K_EDGE_CU_EV: f64 = 8979.0;

/// Wavelength in Angstrom of a photon of `energy_ev`.
pub fn wavelength_angstrom(energy_ev: f64) -> f64 {
    EV_ANGSTROM / energy_ev
}

/// Photon energy in eV of a wavelength in Angstrom.
pub fn energy_ev(wavelength_angstrom: f64) -> f64 {
    EV_ANGSTROM / wavelength_angstrom
}
