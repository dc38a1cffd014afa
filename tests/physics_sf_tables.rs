//! Scattering-table readers and interpolation against CCTBX reference values
//! (tests/fixtures/ref/henke_values.csv, f0_wk1995*.csv) and the files' own rows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use spread::physics::form_factor::FormFactors;
use spread::physics::scattering_tables::henke::HenkeTable;
use spread::physics::scattering_tables::wk1995::{self, GaussianSet};
use spread::physics::scattering_tables::{TableError, sasaki, sherrell};
use std::path::Path;

fn fixture(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

fn csv_rows(name: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

#[test]
fn henke_matches_cctbx_values() {
    for row in csv_rows("ref/henke_values.csv") {
        let table = HenkeTable::embedded(&row[0]).unwrap();
        let energy: f64 = row[1].parse().unwrap();
        let (fp_ref, fdp_ref): (f64, f64) = (row[2].parse().unwrap(), row[3].parse().unwrap());
        let (fp, fdp) = table.at_ev_f32(energy).unwrap();
        assert!(
            (fp - fp_ref).abs() <= 5e-7 && (fdp - fdp_ref).abs() <= 5e-7,
            "{row:?}: f32 path gives {fp} {fdp}"
        );
        // The f64 path differs from CCTBX's f32 arithmetic only by f32 rounding of f1 (~|f1| 1e-7 * few).
        let (fp64, fdp64) = table.at_ev(energy).unwrap();
        assert!(
            (fp64 - fp_ref).abs() <= 3e-5 && (fdp64 - fdp_ref).abs() <= 1e-6,
            "{row:?}: f64 path gives {fp64} {fdp64}"
        );
    }
}

#[test]
fn henke_file_reader_and_interpolation_convention() {
    let table = HenkeTable::read(&fixture("tables/fe.nff")).unwrap();
    assert_eq!((table.element.as_str(), table.z), ("Fe", 26));
    let missing = std::fs::read_to_string(fixture("tables/fe.nff"))
        .unwrap()
        .matches("-9999.")
        .count();
    assert_eq!(table.skipped_rows, missing);
    // At a tabulated energy: f' = f1 - Z exactly; midway: the mean of the neighbours (linear in E).
    let t = &table.table;
    let i = t.energy_ev.iter().position(|&e| e > 7000.0).unwrap();
    let (fp, fdp) = table.at_ev(t.energy_ev[i]).unwrap();
    assert_eq!((fp, fdp), (t.fp[i], t.fdp[i]));
    let mid = 0.5 * (t.energy_ev[i] + t.energy_ev[i + 1]);
    let (fp_mid, _) = table.at_ev(mid).unwrap();
    assert!((fp_mid - 0.5 * (t.fp[i] + t.fp[i + 1])).abs() < 1e-12);
    assert!(matches!(
        table.at_ev(40000.0),
        Err(TableError::OutOfRange { .. })
    ));
}

#[test]
fn wk1995_coefficients_and_values_match_cctbx() {
    let wk = FormFactors::embedded(GaussianSet::Wk1995).unwrap();
    for row in csv_rows("ref/f0_wk1995.csv") {
        let c = wk.get(&row[0]).unwrap();
        let numbers: Vec<f64> = row[1..].iter().map(|x| x.parse().unwrap()).collect();
        let ours: Vec<f64> = c.a.iter().chain(&c.b).copied().chain([c.c]).collect();
        for (a, b) in ours.iter().zip(&numbers) {
            assert!(
                (a - b).abs() <= 5e-7 * b.abs().max(1.0),
                "{}: {a} vs {b}",
                row[0]
            );
        }
    }
    for row in csv_rows("ref/f0_wk1995_values.csv") {
        let s: f64 = row[1].parse().unwrap();
        let f0 = wk.get(&row[0]).unwrap().f0(s * s);
        let reference: f64 = row[2].parse().unwrap();
        assert!(
            (f0 - reference).abs() <= 1e-6,
            "{} at s={s}: {f0} vs {reference}",
            row[0]
        );
    }
}

#[test]
fn wk1995_covers_every_element_and_common_ions() {
    let set = wk1995::embedded(GaussianSet::Wk1995).unwrap();
    assert_eq!(set.len(), 213);
    let wk = FormFactors::new(set);
    for element in [
        "H", "C", "N", "O", "S", "P", "Ca", "Mg", "Mn", "Fe", "Cu", "Zn", "Se", "I", "Hg", "U",
        "Cf",
    ] {
        assert_eq!(wk.resolve(element, 0).unwrap(), element);
    }
    assert_eq!(wk.resolve("FE", 3).unwrap(), "Fe3+");
    assert_eq!(wk.resolve("O", -1).unwrap(), "O1-");
    assert_eq!(
        wk.resolve("C", 2).unwrap(),
        "C",
        "an untabulated ion falls back to the element"
    );
    // f0(0) = sum a + c = Z for neutral atoms (to the fit's accuracy).
    for (label, z) in [("C", 6.0), ("Fe", 26.0), ("Mn4+", 21.0)] {
        let f0 = wk.get(label).unwrap().f0(0.0);
        assert!((f0 - z).abs() < 0.01, "{label}: f0(0) = {f0}");
    }
}

#[test]
fn sasaki_and_sherrell_tables_read() {
    let fe = sasaki::read(&fixture("tables/sasaki_K_Fe.dat")).unwrap();
    assert_eq!(fe.energy_ev.len(), 280);
    assert!(fe.energy_ev.windows(2).all(|w| w[1] > w[0]));
    let (fp, fdp) = fe.at_ev(7056.987).unwrap();
    assert_eq!((fp, fdp), (-4.5939, 0.4744));
    let atomic = sherrell::read(&fixture("tables/Fe.dat")).unwrap();
    assert_eq!(atomic.at_ev(1000.0).unwrap(), (-3.883686, 11.72093));
    let path = fixture("tables/Fe_ox_red_7000_7300.csv");
    let file = path.display().to_string();
    let columns = sherrell::parse_columns(&file, &std::fs::read_to_string(&path).unwrap()).unwrap();
    let ox = sherrell::curve(&file, &columns, ["energy_eV", "ox_fp", "ox_fdp"]).unwrap();
    let red = sherrell::curve(&file, &columns, ["energy_eV", "red_fp", "red_fdp"]).unwrap();
    assert_eq!(ox.energy_ev.len(), 301);
    // Values quoted in the CCTBX reference header for 7120 eV.
    let (fp, fdp) = ox.at_ev(7120.0).unwrap();
    assert!((fp + 7.172140).abs() < 1e-6 && (fdp - 2.341714).abs() < 1e-6);
    assert_eq!(ox.at_ev(7000.0).unwrap(), red.at_ev(7000.0).unwrap());
    assert!(sherrell::curve(&file, &columns, ["energy_eV", "nope", "ox_fdp"]).is_err());
    // An edge offset: the shifted curve at E + 1.5 eV is the original at E.
    let shifted = ox.shifted(1.5);
    assert_eq!(shifted.at_ev(7121.5).unwrap(), ox.at_ev(7120.0).unwrap());
}

#[test]
fn errors_name_file_and_line() {
    let err = sherrell::parse("curve.dat", "# comment\n7000 -3.1 0.5\n7001 -3.2\n").unwrap_err();
    assert_eq!(err.to_string(), "curve.dat:3: expected 3 fields, got 2");
    let err = sasaki::parse("k.dat", "1.7 7000 -4 0.5\n1.6 7100 x 0.5\n").unwrap_err();
    assert!(err.to_string().starts_with("k.dat:2:"), "{err}");
    let err = HenkeTable::parse("x.nff", " xx, Z=26, (Energy (eV),f1,f2)\n 10 20 \n").unwrap_err();
    assert!(err.to_string().starts_with("x.nff:2:"), "{err}");
    let err = wk1995::parse("w.csv", "label,n,a...\nC,1,2.0\n").unwrap_err();
    assert!(err.to_string().starts_with("w.csv:2:"), "{err}");
    let err = sherrell::parse("e.dat", "7000 -3 0.5\n6990 -3 0.5\n").unwrap_err();
    assert!(err.to_string().contains("energies must increase"), "{err}");
}
