//! The recovery study (examples/recovery) in `--quick` mode: 2 tiny datasets and 2 replicates
//! through the spreadc binary. Checks that the pipeline runs (the example exits non-zero on
//! missing files or probabilities that are not probabilities) and prints its tables; it does not
//! assert the study's goals. About a minute on 2 cores.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

#[test]
fn recovery_quick_runs_and_prints_the_tables() {
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("recovery_quick");
    let _ = std::fs::remove_dir_all(&work);
    let out = Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["run", "--release", "--quiet", "--example", "recovery", "--"])
        .arg("--quick")
        .arg("--work")
        .arg(&work)
        .env("SPREADC", env!("CARGO_BIN_EXE_spreadc"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}\n{stdout}");
    assert!(
        stdout.contains("| images | shoeboxes | truth | fit |"),
        "{stdout}"
    );
    for part in ["## 1. Truth recovery", "## 2. Calibration", "## Goals"] {
        assert!(stdout.contains(part), "no {part:?} in\n{stdout}");
    }
    let written = std::fs::read_to_string(work.join("RESULTS.md")).unwrap();
    assert_eq!(written.trim(), stdout.trim());
}
