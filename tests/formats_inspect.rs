#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `spreadc inspect`: the JSON shape fixed by issue 5, values from the Python msgpack reading.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dials")
        .join(name)
}

fn inspect(args: &[&Path]) -> (i32, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_spreadc"))
        .arg("inspect")
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.code().unwrap(),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn refl_json_has_the_issue_shape_and_real_values() {
    let (code, j, _) = inspect(&[&fixture("indexed.refl")]);
    assert_eq!(code, 0);
    assert_eq!(j["version"], 1);
    assert_eq!(j["rows"], 360);
    assert_eq!(j["columns"].as_array().unwrap().len(), 25);
    assert_eq!(
        j["columns"][14],
        serde_json::json!({"name": "shoebox", "type": "Shoebox<>"})
    );
    let sb = &j["shoeboxes"];
    assert_eq!(
        (sb["total"].as_u64(), sb["with_pixels"].as_u64()),
        (Some(360), Some(360))
    );
    assert_eq!(sb["pixel_count"], 1785);
    assert_eq!(sb["data_sum"].as_f64(), Some(101527.0));
    assert_eq!(
        (sb["mask"]["valid"].as_u64(), sb["mask"]["invalid"].as_u64()),
        (Some(1456), Some(329))
    );
}

#[test]
fn expt_json_reports_panels_depth_and_cells() {
    let (code, j, _) = inspect(&[
        &fixture("cspad-single-image.expt"),
        &fixture("integrated.expt"),
    ]);
    assert_eq!(code, 0);
    assert_eq!(j[0]["kind"], "experiments");
    assert_eq!(j[0]["detectors"][0]["panels"], 64);
    assert_eq!(j[0]["detectors"][0]["hierarchy_depth"], 3);
    assert_eq!(j[1]["experiments"], 5);
    assert_eq!(
        j[1]["crystals"][0]["space_group_hall_symbol"],
        " P 2ac 2ab 3"
    );
    let a = j[1]["crystals"][0]["unit_cell"][0].as_f64().unwrap();
    assert!((a - 96.3711).abs() < 1e-3);
}

#[test]
fn missing_file_exits_2_and_malformed_file_exits_1() {
    let (code, _, err) = inspect(&[Path::new("/nonexistent/x.refl")]);
    assert_eq!(code, 2);
    assert!(
        err.contains("/nonexistent/x.refl: cannot read reflection table"),
        "{err}"
    );
    let (code, _, err) = inspect(&[&Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown kind of file"), "{err}");
}

#[test]
fn data_directory_reports_used_and_skipped_counts() {
    let dir = std::env::temp_dir().join(format!("spread-inspect-dir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["indexed.expt", "indexed.refl"] {
        std::fs::copy(fixture(f), dir.join(f)).unwrap();
    }
    let (code, j, _) = inspect(&[&dir]);
    assert_eq!(code, 0);
    assert_eq!(j["kind"], "dataset");
    assert_eq!(j["report"]["images"]["used"], 5);
    assert_eq!(j["report"]["shoeboxes"]["used"], 360);
    assert_eq!(j["report"]["pixels"]["used"], 1456);
    assert_eq!(
        j["report"]["pixels"]["skipped"]["masked (mask lacks VALID)"],
        329
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
