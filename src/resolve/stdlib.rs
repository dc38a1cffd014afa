//! The standard library modules, embedded in the binary so a model needs no files beside itself.

/// (module name, source text) of every stdlib/*.spread file.
pub const STDLIB: &[(&str, &str)] = &[
    ("physics", include_str!("../../stdlib/physics.spread")),
    ("anomalous", include_str!("../../stdlib/anomalous.spread")),
    ("flows", include_str!("../../stdlib/flows.spread")),
    ("math", include_str!("../../stdlib/math.spread")),
];
