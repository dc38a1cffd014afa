//! `spreadc run models/rubredoxin_fe.spread --data examples/rubredoxin_small` through the
//! binary: the fit finds the simulated Fe state (oxidized) and the per-image scales of
//! truth.json, writes state_probabilities.csv, fp_fdp.csv and fp_fdp.svg, counts the data it
//! used, and gives bit-identical results on 1 and 2 threads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MODEL: &str = "models/rubredoxin_fe.spread";
const DATA: &str = "examples/rubredoxin_small";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn out_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("run_physics_cli")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn run(out: &Path, args: &[&str]) -> Output {
    let o = Command::new(env!("CARGO_BIN_EXE_spreadc"))
        .current_dir(root())
        .args(["run", MODEL, "--data", DATA, "--out"])
        .arg(out)
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn fit_finds_the_oxidized_state_and_the_image_scales() {
    let out = out_dir("fit");
    let o = run(
        &out,
        &["--steps", "300", "--particles", "1", "--draws", "200"],
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("oxidation state of FE: oxidized"),
        "{stdout}"
    );
    assert!(
        stdout.contains("shoeboxes: 299 used, 0 skipped"),
        "{stdout}"
    );

    let states = read(out.join("state_probabilities.csv"));
    let mut lines = states.lines();
    assert_eq!(lines.next(), Some("site,state,probability"));
    let rows: Vec<(String, String, f64)> = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].into(), f[1].into(), f[2].parse().unwrap())
        })
        .collect();
    assert_eq!(rows.len(), 2);
    let p_ox = rows.iter().find(|r| r.1 == "oxidized").unwrap().2;
    let p_red = rows.iter().find(|r| r.1 == "reduced").unwrap().2;
    assert!((p_ox + p_red - 1.0).abs() < 1e-12);
    // truth.json: Fe oxidized; at the true latents ln L(ox) - ln L(red) = 10.1 (run_physics_fit).
    assert!(p_ox > 0.95, "P(oxidized) = {p_ox}");

    // Per-image scales against truth.json (prior N(0, 1); the fit pins them to a few percent).
    let summary: serde_json::Value = serde_json::from_str(&read(out.join("summary.json"))).unwrap();
    let truth: serde_json::Value =
        serde_json::from_str(&read(root().join(DATA).join("truth.json"))).unwrap();
    let scales = summary["quantities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "log_scale")
        .unwrap();
    for (i, image) in truth["images"].as_array().unwrap().iter().enumerate() {
        let fit = scales["elements"][i]["mean"].as_f64().unwrap();
        let t = image["log_scale"].as_f64().unwrap();
        assert!(
            (fit - t).abs() < 0.1,
            "image {i}: log_scale {fit} vs truth {t}"
        );
    }
    assert_eq!(summary["physics"]["data"][0]["shoeboxes"]["used"], 299);
    assert_eq!(summary["physics"]["states"][0]["site"], "FE");

    // ArviZ layout: per-image latents carry an `image` axis with coordinates 0..8.
    let dims: serde_json::Value =
        serde_json::from_str(&read(out.join("posterior_dims.json"))).unwrap();
    assert_eq!(
        dims["dims"]["rot"],
        serde_json::json!(["image", "rot_dim_1"])
    );
    assert_eq!(dims["coords"]["image"].as_array().unwrap().len(), 8);
    assert_eq!(dims["dims"]["background"][0], "shoebox");

    let curves = read(out.join("fp_fdp.csv"));
    assert!(
        curves.starts_with("site,energy_eV,fp_mean,fp_sd"),
        "{curves}"
    );
    assert_eq!(curves.lines().count(), 101);
    let svg = read(out.join("fp_fdp.svg"));
    assert!(
        svg.starts_with("<svg") && svg.contains("site FE"),
        "{}",
        &svg[..200]
    );
}

#[test]
fn one_and_two_threads_give_identical_fits() {
    let elbo = |threads: &str| {
        let out = out_dir(&format!("threads{threads}"));
        run(
            &out,
            &[
                "--steps",
                "15",
                "--particles",
                "2",
                "--threads",
                threads,
                "--draws",
                "20",
            ],
        );
        (
            read(out.join("elbo.csv")),
            read(out.join("state_probabilities.csv")),
        )
    };
    assert_eq!(elbo("1"), elbo("2"));
}
