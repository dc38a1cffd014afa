#![allow(clippy::unwrap_used, clippy::expect_used)]
//! DIALS reflection tables: real CuNiR files checked against an independent reading with
//! Python `msgpack` + numpy (values recorded in tests/fixtures/dials/SOURCES.md), exact round
//! trips in both shoebox versions, unknown columns skipped, pickles refused.

use spread::formats::refl::{
    Column, ReflError, ReflectionTable, ShoeboxColumn, mask_bits, parse_refl, read_refl,
    refl_to_bytes,
};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dials")
        .join(name)
}

fn sum3<const N: usize, T: Copy + Into<f64>>(v: &[[T; N]]) -> f64 {
    v.iter().flat_map(|r| r.iter().map(|&x| x.into())).sum()
}

#[test]
fn indexed_refl_matches_python_msgpack_reading() {
    let t = read_refl(&fixture("indexed.refl")).unwrap();
    assert_eq!((t.version, t.nrows, t.columns.len()), (1, 360, 25));
    assert_eq!(t.identifiers.len(), 5);
    assert_eq!(t.identifiers[&3], "5d21590a-a521-4f74-9364-4171d6dda053");
    let Some(Column::Int6(bbox)) = t.column("bbox") else {
        panic!("bbox")
    };
    assert_eq!(bbox[0], [1300, 1303, 577, 578, 16999, 17000]);
    assert_eq!(bbox[359], [888, 891, 1919, 1921, 17003, 17004]);
    assert_eq!(sum3(bbox), 14044808.0);
    let hkl = t.column("miller_index").unwrap().as_miller_index().unwrap();
    assert_eq!(
        (hkl[0], hkl[359], sum3(hkl)),
        ([-26, 2, 20], [-8, -6, -30], 1856.0)
    );
    let Some(Column::SizeT(flags)) = t.column("flags") else {
        panic!("flags")
    };
    assert_eq!(flags.iter().sum::<u64>(), 16200);
    let Some(Column::Bool(entering)) = t.column("entering") else {
        panic!("entering")
    };
    assert!(entering.iter().all(|e| !e));
    let id = t.column("id").unwrap().as_int().unwrap();
    assert_eq!(id.iter().map(|&i| i64::from(i)).sum::<i64>(), 774);
    let s1 = t.column("s1").unwrap().as_vec3().unwrap();
    assert_eq!(
        s1[0],
        [
            0.016343755509643083,
            0.3309952800114572,
            -0.6467207160891736
        ]
    );
    let dpsi = t.column("delpsical.rad").unwrap().as_double().unwrap();
    assert_eq!(dpsi[359], -0.0008661935555156101);
    assert!((dpsi.iter().sum::<f64>() + 0.0014806242378631613).abs() < 1e-15);
}

#[test]
fn indexed_refl_shoeboxes_are_version_1_with_pixels_in_every_row() {
    let t = read_refl(&fixture("indexed.refl")).unwrap();
    let sb = t.shoeboxes().unwrap();
    assert_eq!(sb.len(), 360);
    assert!(sb.headers().iter().all(|h| h.version == 1));
    let first = sb.get(0).unwrap();
    assert_eq!(first.header.bbox, [1300, 1303, 577, 578, 16999, 17000]);
    assert_eq!(first.data, &[49.0, 41.0, 66.0]);
    assert_eq!(first.mask, &[5, 5, 5]);
    assert_eq!(first.background, &[0.0, 0.0, 0.0]);
    assert_eq!(sb.all_data().len(), 1785);
    let data_sum: f64 = sb.all_data().iter().map(|&d| f64::from(d)).sum();
    // Spot finding's summed intensity is the sum of the shoebox counts: two independent columns.
    let isum: f64 = t
        .column("intensity.sum.value")
        .unwrap()
        .as_double()
        .unwrap()
        .iter()
        .sum();
    assert_eq!((data_sum, isum), (101527.0, 101527.0));
    let valid_fg = mask_bits::VALID | mask_bits::FOREGROUND;
    assert_eq!(
        sb.all_mask().iter().filter(|&&m| m == valid_fg).count(),
        1456
    );
    assert_eq!(sb.all_mask().iter().filter(|&&m| m == 0).count(), 329);
}

#[test]
fn integrated_refl_has_5203_rows_and_no_shoeboxes() {
    let t = read_refl(&fixture("integrated.refl")).unwrap();
    assert_eq!((t.nrows, t.columns.len()), (5203, 24));
    assert!(t.shoeboxes().is_none());
    let hkl = t.column("miller_index").unwrap().as_miller_index().unwrap();
    assert_eq!(
        (hkl[0], hkl[5202], sum3(hkl)),
        ([-45, -37, 16], [1, -4, 5], 28439.0)
    );
    let i = t
        .column("intensity.sum.value")
        .unwrap()
        .as_double()
        .unwrap();
    assert_eq!((i[0], i[5202]), (-1.1484184265136719, -0.9483642578125));
    assert!((i.iter().sum::<f64>() - 133514.43140554428).abs() < 1e-8);
    let p = t.column("partiality").unwrap().as_double().unwrap();
    assert!((p.iter().sum::<f64>() - 2088.0052550425958).abs() < 1e-9);
    let Some(Column::SizeT(flags)) = t.column("flags") else {
        panic!("flags")
    };
    assert_eq!(flags.iter().sum::<u64>(), 380764856);
    let xyz = t.column("xyzobs.px.value").unwrap().as_vec3().unwrap();
    assert_eq!(
        xyz[0],
        [44.174253454763445, 6.094280160187541, 0.5000000937558773]
    );
}

#[test]
fn real_files_round_trip_byte_for_byte() {
    for name in ["indexed.refl", "integrated.refl", "strong_1.refl"] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        let t = parse_refl(&bytes, Path::new(name)).unwrap();
        assert!(refl_to_bytes(&t) == bytes, "{name} did not round-trip");
    }
}

#[test]
fn version_2_shoeboxes_round_trip_and_keep_values() {
    let mut t = read_refl(&fixture("indexed.refl")).unwrap();
    let before = t.clone();
    let Some((_, Column::Shoebox(sb))) = t.columns.iter_mut().find(|(n, _)| n == "shoebox") else {
        panic!("shoebox")
    };
    sb.set_version(2);
    let bytes = refl_to_bytes(&t);
    // A version-1 box spends 4 mask bytes per pixel, a version-2 box 1: 3 x 1785 fewer bytes.
    assert_eq!(bytes.len() + 3 * 1785, refl_to_bytes(&before).len());
    let back = parse_refl(&bytes, Path::new("v2.refl")).unwrap();
    // u8-mask shoeboxes need a version-2 table (version-1 readers do not know them).
    assert_eq!(back.version, 2);
    t.version = 2;
    assert_eq!(back, t);
    let (a, b) = (back.shoeboxes().unwrap(), before.shoeboxes().unwrap());
    assert_eq!((a.all_data(), a.all_mask()), (b.all_data(), b.all_mask()));
    assert!(a.headers().iter().all(|h| h.version == 2));
}

#[test]
fn every_column_type_round_trips() {
    let mut t = ReflectionTable::new(2);
    t.identifiers.insert(0, "a".into());
    t.identifiers.insert(-1, "negative keys are legal".into());
    t.insert("b", Column::Bool(vec![true, false])).unwrap();
    t.insert("i", Column::Int(vec![-7, i32::MAX])).unwrap();
    t.insert("s", Column::SizeT(vec![0, u64::MAX])).unwrap();
    t.insert("d", Column::Double(vec![f64::NAN, -0.0])).unwrap();
    t.insert("v2", Column::Vec2(vec![[1.0, 2.0], [3.0, 4.0]]))
        .unwrap();
    t.insert("v3", Column::Vec3(vec![[1.0, 2.0, 3.0]; 2]))
        .unwrap();
    t.insert("m3", Column::Mat3(vec![[1.5; 9], [-2.5; 9]]))
        .unwrap();
    t.insert(
        "bbox",
        Column::Int6(vec![[0, 2, 0, 1, 0, 1], [5, 5, 6, 6, 0, 0]]),
    )
    .unwrap();
    t.insert(
        "miller_index",
        Column::MillerIndex(vec![[1, -2, 3], [0, 0, 0]]),
    )
    .unwrap();
    let mut sb = ShoeboxColumn::default();
    sb.push(
        3,
        [0, 2, 0, 1, 0, 1],
        Some((&[1.0, 2.5], &[5, 3], &[0.25, 0.5])),
    )
    .unwrap();
    sb.push(0, [5, 5, 6, 6, 0, 0], None).unwrap();
    t.insert("shoebox", Column::Shoebox(sb)).unwrap();
    let bytes = refl_to_bytes(&t);
    let back = parse_refl(&bytes, Path::new("all.refl")).unwrap();
    // NaN != NaN, so compare the bytes of the re-encoded table as well as the other columns.
    assert_eq!(refl_to_bytes(&back), bytes);
    assert_eq!(back.identifiers, t.identifiers);
    assert_eq!(back.column("m3"), t.column("m3"));
    assert_eq!(back.column("shoebox"), t.column("shoebox"));
    assert!(matches!(
        t.insert("short", Column::Int(vec![1])),
        Err(ReflError::ColumnLength { .. })
    ));
}

/// Builds a table whose `data` map holds an `int` column plus a column of the given type.
fn table_with_extra_column(type_name: &str, payload: &[u8]) -> Vec<u8> {
    let mut t = ReflectionTable::new(1);
    t.insert("id", Column::Int(vec![0])).unwrap();
    let mut bytes = refl_to_bytes(&t);
    // Bump the data map length (fixmap 0x81 -> 0x82) and append [name, [type, payload]].
    let pos = bytes.iter().rposition(|&b| b == 0x81).unwrap();
    bytes[pos] = 0x82;
    let mut extra = Vec::new();
    rmp::encode::write_str(&mut extra, "zzz").unwrap();
    rmp::encode::write_array_len(&mut extra, 2).unwrap();
    rmp::encode::write_str(&mut extra, type_name).unwrap();
    extra.extend_from_slice(payload);
    bytes.extend_from_slice(&extra);
    bytes
}

#[test]
fn unknown_column_types_are_skipped_and_named() {
    let mut payload = Vec::new();
    rmp::encode::write_array_len(&mut payload, 2).unwrap();
    rmp::encode::write_uint(&mut payload, 1).unwrap();
    rmp::encode::write_bin(&mut payload, &[0u8; 32]).unwrap();
    let bytes = table_with_extra_column("std::string", &payload);
    let t = parse_refl(&bytes, Path::new("x.refl")).unwrap();
    assert_eq!(t.columns.len(), 1);
    assert_eq!(t.skipped_columns.len(), 1);
    assert_eq!(t.skipped_columns[0].name, "zzz");
    assert_eq!(t.skipped_columns[0].type_name, "std::string");
}

#[test]
fn legacy_pickles_are_refused_clearly() {
    let err = parse_refl(
        b"\x80\x02cdials_array_family_flex_ext\nreflection_table\n",
        Path::new("old.pickle"),
    )
    .unwrap_err();
    assert!(matches!(err, ReflError::Pickle { .. }));
    assert!(
        err.to_string()
            .starts_with("old.pickle: this is a legacy Python pickle")
    );
}
