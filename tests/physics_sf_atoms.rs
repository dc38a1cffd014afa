//! Atomic models from PDB and mmCIF: the 1BRF quirk, cell and symmetry, mmCIF against PDB,
//! anisotropic U against its isotropic equivalent, and errors that name the file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use spread::physics::atoms::{self, AtomsError};
use spread::physics::form_factor::FormFactors;
use spread::physics::scattering_tables::wk1995::GaussianSet;
use spread::physics::structure_factor::StructureFactorModel;
use std::f64::consts::PI;
use std::path::Path;

fn fixture(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

#[test]
fn rubredoxin_reads_despite_the_short_dbref_record() {
    let path = fixture("pdb/Fe_1brf_snip_reduced.pdb");
    let raw = pdbtbx::ReadOptions::new()
        .set_level(pdbtbx::StrictnessLevel::Loose)
        .read(path.to_str().unwrap());
    assert!(
        raw.is_err(),
        "pdbtbx alone is expected to refuse this file (the reason for padding)"
    );
    let crystal = atoms::read(&path).unwrap();
    assert_eq!(crystal.atoms.len(), 975);
    assert_eq!(crystal.space_group.hm.as_deref(), Some("P 21 21 21"));
    assert_eq!(crystal.cell.lengths, [34.123, 34.874, 43.683]);
    let fe: Vec<_> = crystal.atoms.iter().filter(|a| a.element == "Fe").collect();
    assert_eq!(fe.len(), 1);
    assert_eq!((fe[0].b_iso, fe[0].occupancy, fe[0].charge), (6.35, 1.0, 0));
    assert!((fe[0].fractional[0] - 10.091 / 34.123).abs() < 1e-12);
    let partial = crystal.atoms.iter().filter(|a| a.occupancy < 1.0).count();
    assert_eq!(
        partial, 98,
        "alternate conformers are kept with their occupancies"
    );
}

#[test]
fn mmcif_and_pdb_agree() {
    let pdb = atoms::read(&fixture("pdb/psii_OEC_chainA_fixture.pdb")).unwrap();
    let cif = atoms::read(&fixture("pdb/psii_OEC_chainA_fixture.cif")).unwrap();
    assert_eq!(pdb.cell, cif.cell);
    assert_eq!(pdb.space_group.ops, cif.space_group.ops);
    assert_eq!(pdb.atoms.len(), cif.atoms.len());
    for (a, b) in pdb.atoms.iter().zip(&cif.atoms) {
        assert_eq!(
            (&a.element, a.occupancy, a.b_iso, a.cartesian),
            (&b.element, b.occupancy, b.b_iso, b.cartesian)
        );
    }
}

const TWO_ATOMS: &str = "CRYST1   20.000   25.000   30.000  90.00 100.00  90.00 P 1 21 1
ATOM      1  SG  CYS A   1       1.000   2.000   3.000  1.00 20.00           S
ATOM      2  FE  FE  A   2       4.000   5.000   6.500  0.80 12.00          FE
END
";

fn with_anisou(b: f64) -> String {
    let u = (b / (8.0 * PI * PI) * 1e4).round() as i64;
    let record = format!(
        "ANISOU    1  SG  CYS A   1  {u:>7}{u:>7}{u:>7}{:>7}{:>7}{:>7}       S",
        0, 0, 0
    );
    TWO_ATOMS.replacen("           S\n", &format!("           S\n{record}\n"), 1)
}

#[test]
fn anisotropic_u_equal_to_b_over_8pi2_gives_the_isotropic_structure_factor() {
    let b = 20.0;
    let aniso = atoms::parse("aniso.pdb", &with_anisou(b), false).unwrap();
    let u = aniso.atoms[0].u_aniso.expect("ANISOU read");
    let b_equivalent = u[0][0] * 8.0 * PI * PI;
    let mut iso = atoms::parse("iso.pdb", TWO_ATOMS, false).unwrap();
    iso.atoms[0].b_iso = b_equivalent;
    let wk = FormFactors::embedded(GaussianSet::Wk1995).unwrap();
    let hkl = [[1, 0, 0], [2, 3, -1], [-3, 4, 5], [0, 6, 2]];
    let f = |c| {
        let model = StructureFactorModel::new(c, &hkl, &wk, &["Fe"]).unwrap();
        model
            .fixed_part(&[7000.0], |_, _| Ok((0.0, 0.0)))
            .unwrap()
            .f_fixed
    };
    let (fa, fi) = (f(&aniso), f(&iso));
    for (a, i) in fa.iter().zip(fi.iter()) {
        assert!((a - i).norm() <= 1e-12 * i.norm().max(1.0), "{a} vs {i}");
    }
}

#[test]
fn errors_name_the_file() {
    let missing = atoms::read(Path::new("no/such/model.pdb")).unwrap_err();
    assert!(
        matches!(missing, AtomsError::Io { .. })
            && missing.to_string().starts_with("no/such/model.pdb")
    );
    let no_cell = atoms::parse(
        "nocell.pdb",
        &TWO_ATOMS.replacen("CRYST1", "REMARK", 1),
        false,
    )
    .unwrap_err();
    assert!(
        no_cell.to_string().starts_with("nocell.pdb: no unit cell"),
        "{no_cell}"
    );
    let bad_group = atoms::parse(
        "bad.pdb",
        &TWO_ATOMS.replacen("P 1 21 1", "Q 9    ", 1),
        false,
    )
    .unwrap_err();
    assert!(bad_group.to_string().starts_with("bad.pdb"), "{bad_group}");
}
