//! `spreadc fcalc` end to end against CCTBX's 1BRF structure factors, and the unique-reflection
//! generator against CCTBX's `miller.build_set(anomalous_flag=True)` counts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use spread::physics::miller;
use spread::physics::symmetry::SpaceGroup;
use spread::physics::unit_cell::UnitCell;
use std::process::Command;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");

fn spreadc(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_spreadc"))
        .args(args)
        .output()
        .unwrap()
}

fn rows(text: &str) -> Vec<Vec<f64>> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .skip(1)
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect()
}

#[test]
fn fcalc_matches_cctbx_for_rubredoxin_at_three_energies() {
    let model = format!("{FIXTURES}pdb/Fe_1brf_snip_reduced.pdb");
    let hkl = format!("{FIXTURES}ref/1brf_ox_7120.csv");
    let table = format!("FE={FIXTURES}tables/pf-rd-ox_7000_7300.dat");
    let out = spreadc(&[
        "fcalc",
        &model,
        "--energy",
        "7110",
        "--energy",
        "7120",
        "--energy",
        "7130",
        "--fp-fdp-table",
        &table,
        "--hkl",
        &hkl,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with("h,k,l,energy_ev,d_spacing_A,ReF,ImF,absF\n"));
    let ours = rows(&stdout);
    for (e, energy) in [7110.0, 7120.0, 7130.0].iter().enumerate() {
        let reference = rows(
            &std::fs::read_to_string(format!("{FIXTURES}ref/1brf_ox_{energy:.0}.csv")).unwrap(),
        );
        assert_eq!(ours.len(), 3 * reference.len());
        for (i, r) in reference.iter().enumerate() {
            let o = &ours[3 * i + e];
            assert_eq!((&o[..3], o[3]), (&r[..3], *energy));
            assert!((o[4] - r[3]).abs() <= 1e-5, "d spacing {o:?} vs {r:?}");
            // Both sides print 6 decimals: allow 1e-6 relative plus one unit in the last place each.
            for (a, b) in [(o[5], r[4]), (o[6], r[5]), (o[7], r[6])] {
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs() + 2e-6,
                    "{energy} eV: ours {o:?} cctbx {r:?}"
                );
            }
        }
    }
}

#[test]
fn fcalc_errors_have_exit_codes() {
    let model = format!("{FIXTURES}pdb/Fe_1brf_snip_reduced.pdb");
    let missing = spreadc(&["fcalc", "no/such.pdb", "--energy", "7120", "--dmin", "3"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no/such.pdb"));
    let no_zinc = spreadc(&[
        "fcalc", &model, "--energy", "7120", "--dmin", "3", "--fp-fdp", "ZN=1,2",
    ]);
    assert_eq!(no_zinc.status.code(), Some(1));
    let bad = spreadc(&[
        "fcalc", &model, "--energy", "7120", "--dmin", "3", "--fp-fdp", "FE=1",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    let out_of_table = spreadc(&[
        "fcalc",
        &model,
        "--energy",
        "9000",
        "--dmin",
        "3",
        "--fp-fdp-table",
        &format!("FE={FIXTURES}tables/pf-rd-ox_7000_7300.dat"),
    ]);
    assert_eq!(out_of_table.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out_of_table.stderr).contains("outside the table"));
}

#[test]
fn unique_reflection_counts_match_cctbx() {
    // cctbx: miller.build_set(crystal.symmetry(cell, group), anomalous_flag=True, d_min).size()
    let cases = [
        (
            [34.123, 34.874, 43.683],
            [90.0, 90.0, 90.0],
            "P 21 21 21",
            2.0,
            6800,
        ),
        (
            [34.123, 34.874, 43.683],
            [90.0, 90.0, 90.0],
            "P 21 21 21",
            3.0,
            2021,
        ),
        (
            [50.0, 50.0, 70.0],
            [90.0, 90.0, 120.0],
            "P 61 2 2",
            3.0,
            1972,
        ),
        (
            [40.0, 50.0, 60.0],
            [90.0, 105.0, 90.0],
            "C 1 2 1",
            3.0,
            4508,
        ),
    ];
    for (lengths, angles, group, d_min, count) in cases {
        let cell = UnitCell::new(lengths, angles).unwrap();
        let group = SpaceGroup::from_hm(group).unwrap();
        let hkl = miller::unique_to_d_min(&cell, &group, d_min);
        assert_eq!(hkl.len(), count, "{:?} d_min {d_min}", group.hm);
        assert!(
            hkl.iter().all(
                |&h| cell.d_spacing(h) >= d_min && !miller::is_systematically_absent(&group, h)
            )
        );
    }
    assert!(miller::is_systematically_absent(
        &SpaceGroup::from_hm("P 21 21 21").unwrap(),
        [1, 0, 0]
    ));
}

#[test]
fn hkl_files_parse_with_line_numbers() {
    assert_eq!(
        miller::parse_hkl("a.hkl", "1 2 3\n# c\n-1 0 4\n").unwrap(),
        vec![[1, 2, 3], [-1, 0, 4]]
    );
    assert_eq!(
        miller::parse_hkl("b.csv", "h,k,l,x\n1,2,3,0.5\n").unwrap(),
        vec![[1, 2, 3]]
    );
    let err = miller::parse_hkl("c.hkl", "1 2 3\n1 2.5 3\n").unwrap_err();
    assert!(err.to_string().starts_with("c.hkl:2:"), "{err}");
    assert!(miller::parse_hkl("d.hkl", "1 2\n").is_err());
}

#[test]
fn henke_dir_supplies_tables_the_build_does_not_embed() {
    let pdb = "CRYST1   20.000   25.000   30.000  90.00  90.00  90.00 P 1\n\
ATOM      1  O   HOH A   1       1.000   2.000   3.000  1.00 20.00           O\n\
HETATM    2 YB   YB  A   2       4.000   5.000   6.500  1.00 12.00          YB\nEND\n";
    let path = std::env::temp_dir().join(format!("spread_fcalc_yb_{}.pdb", std::process::id()));
    std::fs::write(&path, pdb).unwrap();
    let model = path.to_str().unwrap();
    let without = spreadc(&["fcalc", model, "--energy", "7120", "--dmin", "5"]);
    assert_eq!(without.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&without.stderr).contains("--henke-dir"));
    let dir = format!("{FIXTURES}tables/henke_extra");
    let with = spreadc(&[
        "fcalc",
        model,
        "--energy",
        "7120",
        "--dmin",
        "5",
        "--henke-dir",
        &dir,
    ]);
    std::fs::remove_file(&path).unwrap();
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
    // F(0 0 1) by hand: f = f0 + f' + i f'' per atom, exp(-B s^2), phase 2 pi l z/c (P 1).
    let row = rows(&String::from_utf8(with.stdout).unwrap())
        .into_iter()
        .find(|r| r[..3] == [0.0, 0.0, 1.0])
        .unwrap();
    let s2 = 1.0 / (4.0 * 30.0 * 30.0);
    let wk = spread::physics::form_factor::FormFactors::embedded(
        spread::physics::scattering_tables::wk1995::GaussianSet::Wk1995,
    )
    .unwrap();
    let henke = |p: &str| {
        spread::physics::scattering_tables::henke::HenkeTable::read(std::path::Path::new(p))
            .unwrap()
    };
    let yb = henke(&format!("{dir}/yb.nff")).at_ev_f32(7120.0).unwrap();
    let o = spread::physics::scattering_tables::henke::HenkeTable::embedded("O")
        .unwrap()
        .at_ev_f32(7120.0)
        .unwrap();
    let term = |f0: f64, (fp, fdp): (f64, f64), b: f64, z: f64| {
        num_complex::Complex64::new(f0 + fp, fdp)
            * (-b * s2).exp()
            * num_complex::Complex64::from_polar(1.0, 2.0 * std::f64::consts::PI * z / 30.0)
    };
    let f = term(wk.get("O").unwrap().f0(s2), o, 20.0, 3.0)
        + term(wk.get("Yb").unwrap().f0(s2), yb, 12.0, 6.5);
    assert!(
        (row[5] - f.re).abs() < 2e-6 && (row[6] - f.im).abs() < 2e-6,
        "{row:?} vs {f}"
    );
}
