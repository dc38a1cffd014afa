#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The output set: posterior summaries against closed forms, the files and their columns,
//! input hashes against the SHA-256 test vector, and the SVG plot's structure.

use ndarray::Array2;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal as NormalDist};
use spread::formats::dataset_dir::DataReport;
use spread::report::posterior::summarize_sample;
use spread::report::{
    ReferenceCurve, RunOutputs, SiteDraws, StateProbability, hash_input, write_report,
};
use statrs::distribution::{ContinuousCDF, Normal};
use std::path::{Path, PathBuf};

/// The rubredoxin Fe reference curves (energy, ox f', ox f'', red f', red f'').
fn sherrell() -> Vec<[f64; 5]> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/report/fe_ox_red_7090_7150.csv");
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let v: Vec<f64> = l.split(',').map(|f| f.parse().unwrap()).collect();
            [v[0], v[1], v[2], v[3], v[4]]
        })
        .collect()
}

#[test]
fn summaries_of_an_exact_normal_sample_match_the_closed_form() {
    // x_i = mu + sigma * Phi^-1((i + 0.5) / n): an evenly spaced normal sample whose moments and
    // quantiles converge to the closed form at O(1/n).
    let (mu, sigma, n) = (-5.2, 0.4, 20_001);
    let unit = Normal::new(0.0, 1.0).unwrap();
    let sample: Vec<f64> = (0..n)
        .map(|i| mu + sigma * unit.inverse_cdf((i as f64 + 0.5) / n as f64))
        .collect();
    let s = summarize_sample(sample);
    assert!((s.mean - mu).abs() < 1e-12);
    assert!((s.sd / sigma - 1.0).abs() < 2e-3, "sd {}", s.sd);
    assert!((s.q50 - mu).abs() < 1e-9);
    for (q, z) in [
        (s.q05, -1.6448536269514722),
        (s.q95, 1.6448536269514722),
        (s.q16, -0.994457883209753),
        (s.q25, -0.6744897501960817),
        (s.q75, 0.6744897501960817),
    ] {
        assert!(
            (q - (mu + sigma * z)).abs() < 1e-3,
            "{q} vs {}",
            mu + sigma * z
        );
    }
    assert!((s.q025 - (mu - 1.959963984540054 * sigma)).abs() < 1e-3);
}

#[test]
fn input_hash_is_the_sha256_test_vector() {
    let path = std::env::temp_dir().join(format!("spread-abc-{}", std::process::id()));
    std::fs::write(&path, b"abc").unwrap();
    let h = hash_input(&path).unwrap();
    // FIPS 180-2 appendix B.1.
    assert_eq!(
        h.sha256,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(h.bytes, 3);
    std::fs::remove_file(&path).unwrap();
}

/// A run whose FE1 posterior scatters (sd 0.3 / 0.1) around the reduced reference.
fn example_run(dir: &Path) -> RunOutputs {
    let rows = sherrell();
    let energy: Vec<f64> = rows.iter().map(|r| r[0]).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (nfp, nfdp) = (
        NormalDist::new(0.0, 0.3).unwrap(),
        NormalDist::new(0.0, 0.1).unwrap(),
    );
    let draws = 400;
    let fp = Array2::from_shape_fn((draws, rows.len()), |(_, j)| {
        rows[j][3] + nfp.sample(&mut rng)
    });
    let fdp = Array2::from_shape_fn((draws, rows.len()), |(_, j)| {
        rows[j][4] + nfdp.sample(&mut rng)
    });
    let reference = |label: &str, k: usize| ReferenceCurve {
        label: label.into(),
        energy_ev: energy.clone(),
        fp: rows.iter().map(|r| r[k]).collect(),
        fdp: rows.iter().map(|r| r[k + 1]).collect(),
    };
    let model = dir.join("model.spread");
    std::fs::write(&model, "// model\n").unwrap();
    RunOutputs {
        model,
        inputs: vec![],
        seed: 7,
        data: DataReport::default(),
        sites: vec![SiteDraws {
            site: "FE1".into(),
            energy_ev: energy.clone(),
            fp,
            fdp,
            references: vec![
                reference("Fe3+ (oxidized)", 1),
                reference("Fe2+ (reduced)", 3),
            ],
            edge_ev: Some(7118.2),
        }],
        states: vec![
            StateProbability {
                site: "FE1".into(),
                state: "Fe2+".into(),
                probability: 0.93,
                log_odds: 2.59,
                log_odds_se: 0.1,
                particles: 16,
            },
            StateProbability {
                site: "FE1".into(),
                state: "Fe3+".into(),
                probability: 0.07,
                log_odds: -2.59,
                log_odds_se: 0.1,
                particles: 16,
            },
        ],
        elbo: (0..50)
            .map(|s| (s * 10, -1.0e6 / (1.0 + s as f64)))
            .collect(),
    }
}

fn out_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("spread-report-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn report_files_hold_the_summaries() {
    let dir = out_dir("files");
    let run = example_run(&dir);
    let written = write_report(&dir.join("out"), &run).unwrap();
    assert_eq!(written.len(), 7);
    let csv = std::fs::read_to_string(dir.join("out/fp_fdp.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "site,energy_eV,fp_mean,fp_sd,fp_q05,fp_q50,fp_q95,fdp_mean,fdp_sd,fdp_q05,fdp_q50,fdp_q95"
    );
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    assert_eq!(rows.len(), 61);
    // Each energy's mean is the mean of its own column of draws (statrs sums incrementally,
    // ndarray pairwise: the two agree to rounding).
    let j = 30;
    let mean: f64 = run.sites[0].fdp.column(j).mean().unwrap();
    assert_eq!(rows[j][1].parse::<f64>().unwrap(), 7120.0);
    assert!((rows[j][7].parse::<f64>().unwrap() - mean).abs() < 1e-14 * mean.abs());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["seed"], 7);
    assert_eq!(
        summary["fp_fdp"][0]["fdp"][j]["mean"].as_f64().unwrap(),
        rows[j][7].parse::<f64>().unwrap()
    );
    assert_eq!(summary["state_probabilities"][0]["probability"], 0.93);
    assert_eq!(summary["elbo"]["records"], 50);
    assert_eq!(summary["model"]["bytes"], 9);
    let elbo = std::fs::read_to_string(dir.join("out/elbo.csv")).unwrap();
    assert_eq!(elbo.lines().nth(2).unwrap(), "10,-500000");
    let states = std::fs::read_to_string(dir.join("out/state_probabilities.csv")).unwrap();
    assert_eq!(
        states,
        "site,state,probability\nFE1,Fe2+,0.93\nFE1,Fe3+,0.07\n"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn svg_has_one_panel_per_site_with_bands_references_and_edge() {
    let dir = out_dir("svg");
    let mut run = example_run(&dir);
    let mut second = run.sites[0].clone();
    second.site = "FE2".into();
    run.sites.push(second);
    write_report(&dir.join("out"), &run).unwrap();
    let svg = std::fs::read_to_string(dir.join("out/fp_fdp.svg")).unwrap();
    assert!(svg.starts_with("<svg"));
    assert!(svg.contains("site FE1") && svg.contains("site FE2"));
    // Two quantities x two bands x two sites.
    assert_eq!(svg.matches("<polygon").count(), 8);
    assert!(svg.contains("reference: Fe3+ (oxidized)") && svg.contains("edge 7118.2 eV"));
    if let Ok(keep) = std::env::var("SPREAD_KEEP_SVG") {
        std::fs::copy(dir.join("out/fp_fdp.svg"), keep).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[ignore = "needs python3 with numpy"]
fn numpy_reads_the_arviz_layout() {
    let dir = out_dir("npz");
    let run = example_run(&dir);
    write_report(&dir.join("out"), &run).unwrap();
    let script = "import numpy as np, json, sys\n\
d = np.load(sys.argv[1] + '/posterior.npz'); m = json.load(open(sys.argv[1] + '/posterior_dims.json'))\n\
print(json.dumps({'shape': list(d['fdp'].shape), 'v': float(d['fdp'][0, 17, 0, 30]), 'dims': m['dims']['fdp'], 'e': m['coords']['energy_eV'][30], 'site': m['coords']['site']}))";
    let py = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(dir.join("out"))
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
    assert_eq!(j["shape"], serde_json::json!([1, 400, 1, 61]));
    assert_eq!(j["v"].as_f64().unwrap(), run.sites[0].fdp[[17, 30]]);
    assert_eq!(j["dims"], serde_json::json!(["site", "energy_eV"]));
    assert_eq!(
        (j["e"].as_f64(), j["site"][0].as_str()),
        (Some(7120.0), Some("FE1"))
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
