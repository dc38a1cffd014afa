//! Space groups from Hall and Hermann-Mauguin symbols against gemmi's operator sets for every
//! tabulated setting (tests/fixtures/ref/spacegroup_ops.csv, from gen_tables.py).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use spread::physics::symmetry::{SpaceGroup, SymOp, table};
use std::collections::BTreeSet;

fn op_key(op: &SymOp) -> String {
    let r = op.rot;
    let v: Vec<i32> = r.iter().flatten().copied().chain(op.tran).collect();
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn every_setting_matches_gemmi() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ref/spacegroup_ops.csv"
    ))
    .unwrap();
    let mut checked = 0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let fields: Vec<&str> = line.split(';').collect();
        let (hall, order): (&str, usize) = (fields[0], fields[1].parse().unwrap());
        let expected: BTreeSet<String> = fields[2].split('|').map(str::to_string).collect();
        let group = SpaceGroup::from_hall(hall).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(group.order(), order, "order of '{hall}'");
        let ours: BTreeSet<String> = group.ops.iter().map(op_key).collect();
        assert_eq!(ours, expected, "operators of '{hall}'");
        checked += 1;
    }
    assert_eq!(checked, table::entries().len());
}

#[test]
fn table_is_complete() {
    let numbers: BTreeSet<u32> = table::entries().iter().map(|e| e.number).collect();
    assert_eq!(numbers.len(), 230);
    assert_eq!(table::entries().len(), 564);
    for n in 1..=230 {
        let group = SpaceGroup::from_number(n).unwrap();
        assert_eq!(group.number, Some(n));
    }
}

#[test]
fn hermann_mauguin_lookups() {
    let p212121 = SpaceGroup::from_hm("P 21 21 21").unwrap();
    assert_eq!(
        (p212121.hall.as_str(), p212121.order(), p212121.number),
        ("P 2ac 2ab", 4, Some(19))
    );
    assert_eq!(SpaceGroup::from_hm("p212121").unwrap().ops, p212121.ops);
    assert_eq!(SpaceGroup::from_hm("P 21").unwrap().hall, "P 2yb");
    assert_eq!(
        SpaceGroup::from_hm("R 3").unwrap().hm.as_deref(),
        Some("R 3 :H")
    );
    assert_eq!(
        SpaceGroup::from_hm("H 3").unwrap().hm.as_deref(),
        Some("R 3 :H")
    );
    assert_eq!(SpaceGroup::from_hm("R 3 :R").unwrap().order(), 3);
    assert_eq!(SpaceGroup::from_hm("F d -3 m :2").unwrap().order(), 192);
    assert_eq!(SpaceGroup::from_hm("P 43 21 2").unwrap().number, Some(96));
    assert!(SpaceGroup::from_hm("P 7").is_err());
}

#[test]
fn dials_hall_symbols_parse() {
    // As written in DIALS .expt files (CuNiR stills, CSPAD geometry): note the leading space.
    let p213 = SpaceGroup::from_hall(" P 2ac 2ab 3").unwrap();
    assert_eq!((p213.number, p213.order()), (Some(198), 12));
    let p422 = SpaceGroup::from_hall("-P 4 2").unwrap();
    assert_eq!((p422.hm.as_deref(), p422.order()), (Some("P 4/m m m"), 16));
}

#[test]
fn bad_hall_symbols_are_errors() {
    for bad in [
        "",
        "Q 2",
        "P 5",
        "P 2q",
        "P 31 2 (0 0",
        "P 2 (1 2)",
        "P 2 (x,y)",
        "P 2 (x,x,z)",
        "C 2y (x+y,x-y,2*z)",
        "P 2 (x+1/5,y,z)",
        "P 2 (x,y,z) q",
        "P 2 )(",
    ] {
        assert!(SpaceGroup::from_hall(bad).is_err(), "'{bad}' should fail");
    }
    let p21 = SpaceGroup::from_hall("P 2yb").unwrap();
    assert_eq!(
        p21.ops.iter().map(|o| o.triplet()).collect::<Vec<_>>(),
        ["x,y,z", "-x,y+1/2,-z"]
    );
}

/// Hall symbols with change-of-basis triplets, as cctbx.sgtbx writes them for non-reference
/// settings, against sgtbx's operator sets (tests/fixtures/ref/gen_hall_cb.py).
#[test]
fn change_of_basis_hall_symbols_match_sgtbx() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ref/hall_change_of_basis_ops.csv"
    ))
    .unwrap();
    let mut checked = 0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let fields: Vec<&str> = line.split(';').collect();
        let (hall, order): (&str, usize) = (fields[2], fields[3].parse().unwrap());
        let expected: BTreeSet<String> = fields[4].split('|').map(str::to_string).collect();
        let group = SpaceGroup::from_hall(hall).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(group.order(), order, "order of '{hall}'");
        let ours: BTreeSet<String> = group.ops.iter().map(op_key).collect();
        assert_eq!(
            ours, expected,
            "operators of '{hall}' ({} with {})",
            fields[0], fields[1]
        );
        checked += 1;
    }
    assert_eq!(checked, 13);
    // The same origin shift written both ways.
    assert_eq!(
        SpaceGroup::from_hall("P 61 2 (0 0 2)").unwrap().ops,
        SpaceGroup::from_hall("P 61 2 (x,y,z+1/6)").unwrap().ops
    );
}
