#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Optional: a Python reader that follows DIALS' own msgpack adapter reads what we write.
//! Needs `python3` with `msgpack` (`pip install msgpack`); run with
//! `cargo test --test formats_python -- --ignored`.

use spread::formats::inspect::summarize_refl;
use spread::formats::refl::{Column, read_refl, write_refl};
use std::path::Path;
use std::process::Command;

#[test]
#[ignore = "needs python3 with msgpack"]
fn dials_layout_reader_reads_our_version_2_tables() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut table = read_refl(&root.join("tests/fixtures/dials/indexed.refl")).unwrap();
    table.version = 2;
    let Some((_, Column::Shoebox(sb))) = table.columns.iter_mut().find(|(n, _)| n == "shoebox")
    else {
        panic!("no shoebox column")
    };
    sb.set_version(2);
    table
        .insert("mat", Column::Mat3(vec![[0.5; 9]; table.nrows]))
        .unwrap();
    table
        .insert("xy", Column::Vec2(vec![[1.0, 2.0]; table.nrows]))
        .unwrap();
    let out = std::env::temp_dir().join(format!("spread-py-{}.refl", std::process::id()));
    write_refl(&table, &out).unwrap();
    let py = Command::new("python3")
        .arg(root.join("tests/python/dials_layout_reader.py"))
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let theirs: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
    let ours = serde_json::to_value(summarize_refl(&table, String::new())).unwrap();
    assert_eq!(theirs["version"], 2);
    assert_eq!(theirs["rows"], ours["rows"]);
    assert_eq!(theirs["columns"], ours["columns"]);
    for key in [
        "total",
        "with_pixels",
        "pixel_count",
        "data_sum",
        "versions",
    ] {
        assert_eq!(theirs["shoeboxes"][key], ours["shoeboxes"][key], "{key}");
    }
    assert_eq!(theirs["shoeboxes"]["data_sum"], 101527.0);
    assert_eq!(
        theirs["identifiers"]["4"],
        "4924c63b-abfb-4265-bd1b-bf46d0fb0ca8"
    );
    std::fs::remove_file(&out).unwrap();
}

/// Optional: ArviZ reads a run's posterior.npz with posterior_dims.json (plates as named
/// dimensions with coordinates). Needs `pip install arviz`.
#[test]
#[ignore = "needs python3 with arviz"]
fn arviz_reads_posterior_draws_with_plate_dims() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("spread-arviz-{}", std::process::id()));
    let run = Command::new(env!("CARGO_BIN_EXE_spreadc"))
        .current_dir(root)
        .args([
            "run",
            "models/eight_schools.spread",
            "--data",
            "examples/eight_schools",
            "--steps",
            "2000",
            "--set",
            "parametrization=noncentered",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let py = Command::new("python3")
        .arg(root.join("tests/python/arviz_posterior.py"))
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
    assert_eq!(
        v["theta"]["dims"],
        serde_json::json!(["chain", "draw", "school"])
    );
    assert_eq!(v["mu"]["dims"], serde_json::json!(["chain", "draw"]));
    // NUTS: mu = 4.41 (tests/fixtures/infer/eight_schools_nuts.json); the SVI mean is close.
    let mu = v["mu"]["mean"].as_f64().unwrap();
    assert!((mu - 4.41).abs() < 1.5, "mu = {mu}");
    std::fs::remove_dir_all(&out).unwrap();
}
