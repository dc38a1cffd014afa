//! `spreadc nanobragg` on every oracle case's exact command line, in a fresh directory, against
//! nanoBragg's golden float image: ≤ 1e-6 relative on every pixel above 1e-6 of the image maximum,
//! ≤ 1e-6·max absolute elsewhere. Unknown options must fail with exit code 2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

const CASES: [&str; 11] = [
    "square_mono",
    "gauss_mono",
    "round_mono",
    "tophat_mono",
    "square_hkl",
    "square_poly",
    "square_polar",
    "gauss_oversample",
    "square_energy_mn",
    "water_bg",
    "noise_seed",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oracle")
}

fn read_f32(path: &Path) -> Vec<f64> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(4)
        .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .collect()
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("spread-nanobragg-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the case's `command_argv` (minus the program name) in a fresh directory; returns the directory.
fn run_case(case: &str) -> PathBuf {
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join(format!("{case}.json"))).unwrap(),
    )
    .unwrap();
    let argv: Vec<String> = json["command_argv"]
        .as_array()
        .unwrap()
        .iter()
        .skip(1)
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let dir = fresh_dir(case);
    if let Some(hkl) = json["files"]["hkl"].as_str() {
        std::fs::copy(fixtures().join(hkl), dir.join(hkl)).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_spreadc"))
        .arg("nanobragg")
        .args(&argv)
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{case}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// Largest relative error over pixels above 1e-6·max, and largest absolute error / max elsewhere.
pub fn compare(ours: &[f64], golden: &[f64]) -> (f64, f64) {
    assert_eq!(ours.len(), golden.len());
    let max = golden.iter().copied().fold(0.0, f64::max);
    let (mut rel, mut abs) = (0.0f64, 0.0f64);
    for (a, b) in ours.iter().zip(golden) {
        if *b > 1e-6 * max {
            rel = rel.max((a - b).abs() / b);
        } else {
            abs = abs.max((a - b).abs() / max);
        }
    }
    (rel, abs)
}

#[test]
fn every_oracle_case_matches_nanobragg() {
    for case in CASES {
        let dir = run_case(case);
        let ours = read_f32(&dir.join(format!("{case}.f32")));
        let golden = read_f32(&fixtures().join(format!("{case}.f32")));
        let (rel, abs) = compare(&ours, &golden);
        assert!(
            rel <= 1e-6 && abs <= 1e-6,
            "{case}: max rel {rel:e}, max abs/max {abs:e}"
        );
        assert!(
            dir.join("scratch_int.img").exists(),
            "{case}: -intfile not written"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn unknown_options_are_usage_errors() {
    let dir = fresh_dir("unknown");
    let out = Command::new(env!("CARGO_BIN_EXE_spreadc"))
        .args([
            "nanobragg",
            "-cell",
            "50",
            "50",
            "50",
            "90",
            "90",
            "90",
            "-tophat_xtal",
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown option `-tophat_xtal`"));
    let out = Command::new(env!("CARGO_BIN_EXE_spreadc"))
        .args(["nanobragg", "-N", "5"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "no -cell");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn malformed_hkl_file_is_a_data_error_naming_the_line() {
    let dir = fresh_dir("badhkl");
    std::fs::write(dir.join("bad.hkl"), "0 0 0 10\n1 1 x 3\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_spreadc"))
        .args([
            "nanobragg",
            "-cell",
            "50",
            "50",
            "50",
            "90",
            "90",
            "90",
            "-hkl",
            "bad.hkl",
            "-N",
            "5",
            "-detpixels",
            "8",
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.hkl:2:"));
    std::fs::remove_dir_all(dir).unwrap();
}

/// Noise case: our Poisson image and nanoBragg's are independent draws around the same expectation λ.
/// Tests (each at 5σ): (1) z = (count − 40 − λ)/√λ over our image has mean 0 (σ = 1/√n) and variance 1
/// (σ = √((2 + 1/λ_min)/n), the Poisson excess kurtosis included); (2) the total photon count is
/// Σλ within 5√Σλ; (3) the two-sample statistic (ours − nanoBragg's)/√(2λ) has mean 0 and variance 1
/// with the same bounds, i.e. the two images are equal in distribution.
#[test]
fn noise_image_matches_nanobragg_in_distribution() {
    let dir = run_case("noise_seed");
    let lambda: Vec<f64> = read_f32(&fixtures().join("noise_seed.f32"));
    let read_smv = |p: &Path| -> Vec<f64> {
        let b = std::fs::read(p).unwrap();
        assert_eq!(b.len(), 512 + 2 * lambda.len());
        b[512..]
            .chunks_exact(2)
            .map(|c| f64::from(u16::from_le_bytes([c[0], c[1]])))
            .collect()
    };
    let ours = read_smv(&dir.join("noise_seed.noise.img"));
    let theirs = read_smv(&fixtures().join("noise_seed.noise.img"));
    let n = lambda.len() as f64;
    let lmin = lambda.iter().copied().fold(f64::INFINITY, f64::min);
    let var_sigma = ((2.0 + 1.0 / lmin) / n).sqrt();
    let moments = |z: &[f64]| {
        let m = z.iter().sum::<f64>() / n;
        (
            m,
            z.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (n - 1.0),
        )
    };
    let z: Vec<f64> = ours
        .iter()
        .zip(&lambda)
        .map(|(c, l)| (c - 40.0 - l) / l.sqrt())
        .collect();
    let (m, v) = moments(&z);
    assert!(
        m.abs() < 5.0 / n.sqrt() && (v - 1.0).abs() < 5.0 * var_sigma,
        "ours: z mean {m}, var {v}"
    );
    let total: f64 = ours.iter().map(|c| c - 40.0).sum();
    let expected: f64 = lambda.iter().sum();
    assert!(
        (total - expected).abs() < 5.0 * expected.sqrt(),
        "total {total} vs {expected}"
    );
    let d: Vec<f64> = ours
        .iter()
        .zip(&theirs)
        .zip(&lambda)
        .map(|((a, b), l)| (a - b) / (2.0 * l).sqrt())
        .collect();
    let (m, v) = moments(&d);
    assert!(
        m.abs() < 5.0 / n.sqrt() && (v - 1.0).abs() < 5.0 * var_sigma,
        "two-sample: mean {m}, var {v}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
