#![allow(clippy::unwrap_used, clippy::expect_used)]
//! DIALS experiment lists: real CuNiR, CSPAD and SACLA files, values checked by hand.

use spread::formats::expt::{ExperimentList, ExptError, parse_expt, read_expt, write_expt};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dials")
        .join(name)
}

fn close(a: [f64; 3], b: [f64; 3], tol: f64) -> bool {
    a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= tol)
}

#[test]
fn cunir_indexed_has_five_stills_sharing_one_beam_and_detector() {
    let list = read_expt(&fixture("indexed.expt")).unwrap();
    assert_eq!(list.experiments.len(), 5);
    assert_eq!(list.beams.len(), 1);
    assert_eq!(list.detectors.len(), 1);
    assert_eq!(list.crystals.len(), 5);
    assert_eq!(list.imagesets.len(), 5);
    assert_eq!(
        list.experiments[0].identifier,
        "2c2f20d9-7012-4f15-8065-c7f1dadeacec"
    );
    assert_eq!(list.experiments[4].crystal, Some(4));
    assert_eq!(
        list.imagesets[2].images,
        vec!["../cunir_serial/merlin0047_17002.cbf"]
    );
    let beam = &list.beams[0];
    assert_eq!(beam.wavelength, 1.37611);
    // 12398.4198 eV·Å / 1.37611 Å = 9009.7592 eV (just above the Cu K edge, 8979 eV).
    assert!((beam.energy_ev() - 9009.7592).abs() < 1e-3);
    assert_eq!(beam.polarization_fraction, 0.999);
}

#[test]
fn cunir_pilatus_panel_is_single_and_flat() {
    let list = read_expt(&fixture("integrated.expt")).unwrap();
    let det = &list.detectors[0];
    assert_eq!(det.hierarchy_depth, 1);
    assert_eq!(det.panels.len(), 1);
    let p = &det.panels[0];
    // The root group is the identity frame, so the lab frame equals the file's panel frame.
    assert!(close(
        p.origin,
        [-217.57980182133858, 226.6136029249939, -248.64669440423506],
        1e-12
    ));
    assert!(close(
        p.fast_axis,
        [0.9999999960070822, 0.0, 8.936350221233624e-05],
        1e-12
    ));
    assert_eq!(p.image_size, [2463, 2527]);
    assert_eq!(p.pixel_size, [0.172, 0.172]);
    assert_eq!(p.material, "Si");
    assert_eq!(p.mask.len(), 15);
    assert_eq!(p.mask[0], [487, 0, 494, 2527]);
}

#[test]
fn cunir_crystal_is_cubic_p213_with_ml_mosaicity() {
    let list = read_expt(&fixture("integrated.expt")).unwrap();
    let c = &list.crystals[0];
    assert_eq!(c.space_group_hall_symbol, " P 2ac 2ab 3");
    assert_eq!(c.ml_half_mosaicity_deg, Some(0.04057373200215286));
    assert_eq!(c.ml_domain_size_ang, Some(10228.023127344168));
    let cell = c.unit_cell();
    // |a| = sqrt(39.47688^2 + 85.44829^2 + 20.67731^2) = sqrt(9287.38) = 96.3711 Å;
    // P2(1)3 is cubic: a = b = c, all angles 90°.
    assert!((cell[0] - 96.3711).abs() < 1e-3, "a = {}", cell[0]);
    for k in 1..3 {
        assert!((cell[k] - cell[0]).abs() < 1e-6);
        assert!((cell[k + 3] - 90.0).abs() < 1e-6);
    }
    assert!((cell[3] - 90.0).abs() < 1e-6);
    let indexed = read_expt(&fixture("indexed.expt")).unwrap();
    assert_eq!(
        indexed.crystals[0].ml_domain_size_ang,
        Some(10228.023127344168)
    );
}

#[test]
fn cspad_hierarchy_has_three_levels_composed_to_the_lab_frame() {
    let list = read_expt(&fixture("cspad-single-image.expt")).unwrap();
    let det = &list.detectors[0];
    assert_eq!(det.hierarchy_depth, 3);
    assert_eq!(det.panels.len(), 64);
    let p = &det.panels[0];
    assert_eq!(p.name, "ARRAY_D0Q0S0A0");
    // By hand: root AXIS_D0_R at (0, 0, -150.0014) with identity axes; quadrant FS_D0Q0 adds
    // (-49.6, 43.6, -0.01203125); sensor FS_D0Q0S0 adds (11.304125, -23.19540625, 0.00753125),
    // so the sensor origin is (-38.295875, 20.40459375, -150.0059) with fast f = (-0.0018252,
    // 0.9999973, -0.0014239) and slow s = (-0.9999982, -0.0018259, -0.0005258). The panel's
    // local origin (-21.505, 10.175, 0) maps to O + -21.505 f + 10.175 s
    // = (-38.295875 + 0.039250 - 10.174982, 20.404594 - 21.504942 - 0.018579,
    //    -150.0059 + 0.030621 - 0.005350) = (-48.431606, -1.118927, -149.980629),
    // its fast axis (1, 0, 0) to f and its slow axis (0, -1, 0) to -s.
    assert!(
        close(p.origin, [-48.431606, -1.118927, -149.980629], 2e-6),
        "{:?}",
        p.origin
    );
    assert!(close(
        p.fast_axis,
        [-0.0018252, 0.9999973, -0.0014239],
        1e-7
    ));
    assert!(close(p.slow_axis, [0.9999982, 0.0018259, 0.0005258], 1e-7));
    assert_eq!(p.image_size, [194, 185]);
    assert_eq!(p.pixel_size, [0.11, 0.11]);
    // Every one of the 64 ASICs sits ~150 mm downstream with its normal along the beam.
    for p in &det.panels {
        assert!(
            (p.origin[2] + 150.0).abs() < 0.5,
            "{}: {:?}",
            p.name,
            p.origin
        );
        let n = [
            p.fast_axis[1] * p.slow_axis[2] - p.fast_axis[2] * p.slow_axis[1],
            p.fast_axis[2] * p.slow_axis[0] - p.fast_axis[0] * p.slow_axis[2],
            p.fast_axis[0] * p.slow_axis[1] - p.fast_axis[1] * p.slow_axis[0],
        ];
        assert!(n[2].abs() > 0.9999, "{}: normal {n:?}", p.name);
    }
    assert_eq!(list.crystals.len(), 0);
    assert_eq!(list.experiments[0].crystal, None);
}

#[test]
fn cspad_composition_is_rigid_within_each_sensor() {
    // Composing with orthonormal parent frames is a rigid motion, so two ASICs of one sensor
    // keep the distance between their file (local) origins and their relative axis angles.
    let path = fixture("cspad-single-image.expt");
    let raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let local = |i: usize, key: &str| -> [f64; 3] {
        let v = &raw["detector"][0]["panels"][i][key];
        [0, 1, 2].map(|k| v[k].as_f64().unwrap())
    };
    let lab = &read_expt(&path).unwrap().detectors[0].panels;
    let dist = |a: [f64; 3], b: [f64; 3]| (0..3).map(|k| (a[k] - b[k]).powi(2)).sum::<f64>().sqrt();
    let dot = |a: [f64; 3], b: [f64; 3]| (0..3).map(|k| a[k] * b[k]).sum::<f64>();
    for pair in 0..32 {
        let (i, j) = (2 * pair, 2 * pair + 1);
        let d_local = dist(local(i, "origin"), local(j, "origin"));
        assert!(
            (dist(lab[i].origin, lab[j].origin) - d_local).abs() < 1e-9,
            "sensor {pair}"
        );
        let cos_local = dot(local(i, "fast_axis"), local(j, "slow_axis"));
        assert!((dot(lab[i].fast_axis, lab[j].slow_axis) - cos_local).abs() < 1e-12);
    }
}

#[test]
fn sacla_mpccd_stills_carry_tetragonal_crystals_and_ml_mosaicity() {
    let list = read_expt(&fixture(
        "SACLA-MPCCD-run266702-0-subset-known_orientations.expt",
    ))
    .unwrap();
    assert_eq!(list.experiments.len(), 4);
    assert_eq!(list.detectors[0].panels.len(), 8);
    assert_eq!(list.detectors[0].hierarchy_depth, 1);
    let c = &list.crystals[0];
    assert_eq!(c.space_group_hall_symbol, "-P 4 2");
    assert_eq!(c.ml_half_mosaicity_deg, Some(0.1997401380171317));
    let cell = c.unit_cell();
    assert!((cell[0] - 77.69278441405878).abs() < 1e-9);
    assert!((cell[1] - cell[0]).abs() < 1e-9);
    assert!((cell[2] - 36.65291855003611).abs() < 1e-9);
    // Panel 0: local origin (-1.80077, 51.78009, 0.25264) under a root at
    // (0.02441, 0.01209, -49.31784) whose axes differ from the lab's by < 0.004 rad, so the
    // lab origin is within ~0.2 mm of (-1.776, 51.792, -49.065).
    let p = &list.detectors[0].panels[0];
    assert!(
        close(p.origin, [-1.776, 51.792, -49.065], 0.25),
        "{:?}",
        p.origin
    );
    assert_eq!(list.beams[0].wavelength, 1.768464241563069);
}

#[test]
fn written_lists_read_back_to_the_same_lab_geometry() {
    let list = read_expt(&fixture("cspad-single-image.expt")).unwrap();
    let dir = std::env::temp_dir().join(format!("spread-expt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("cspad.expt");
    write_expt(&list, &out).unwrap();
    let back: ExperimentList = read_expt(&out).unwrap();
    assert_eq!(back.experiments, list.experiments);
    assert_eq!(back.beams, list.beams);
    for (a, b) in back.detectors[0]
        .panels
        .iter()
        .zip(&list.detectors[0].panels)
    {
        assert!(close(a.origin, b.origin, 1e-12));
        assert!(close(a.fast_axis, b.fast_axis, 1e-15));
        assert!(close(a.slow_axis, b.slow_axis, 1e-15));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn experiment_pointing_past_the_crystal_list_is_refused() {
    let text = r#"{"experiment": [{"identifier": "x", "crystal": 2}], "crystal": []}"#;
    let err = parse_expt(text, Path::new("bad.expt")).unwrap_err();
    assert!(matches!(
        err,
        ExptError::BadReference {
            field: "crystal",
            index: 2,
            count: 0,
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        "bad.expt: experiment 0 field `crystal` refers to crystal 2, but the file lists 0"
    );
}
