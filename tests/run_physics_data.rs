//! The planner's physics data sources on a simulated dataset: `dials(...)` reads every image,
//! its channel grid and shoeboxes; spectra off the model's grid and missing atomic models are
//! errors naming the file and the image.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use spread::plan::physics_data::{load_dials, load_pdb};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn simulated(name: &str, images: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("run_physics_data")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    let o = Command::new(env!("CARGO_BIN_EXE_spreadc"))
        .current_dir(root())
        .args([
            "simulate",
            "models/rubredoxin_fe.spread",
            "--seed",
            "11",
            "--images",
            images,
        ])
        .arg("--out")
        .arg(&d)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    d
}

#[test]
fn dials_source_reads_grid_images_and_shoeboxes() {
    let dir = simulated("whole", "3");
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("truth.json")).unwrap()).unwrap();
    let data = load_dials(&dir, 100).unwrap();
    // The model's grid: 100 channels 1 eV apart, 7070 ... 7169 eV (models/rubredoxin_fe.spread).
    assert_eq!(data.energy_ev.len(), 100);
    for (k, e) in data.energy_ev.iter().enumerate() {
        assert!((e - (7070.0 + k as f64)).abs() < 1e-6, "channel {k} at {e}");
    }
    assert_eq!(data.images.len(), 3);
    for (i, image) in data.images.iter().enumerate() {
        let t = &truth["images"][i];
        assert_eq!(image.identifier, t["identifier"].as_str().unwrap());
        assert_eq!(image.n_shoeboxes as u64, t["n_shoeboxes"].as_u64().unwrap());
        assert!((image.spectrum.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let shoeboxes = data.shoeboxes(i).unwrap();
        assert_eq!(shoeboxes.shoeboxes.len(), image.n_shoeboxes);
        assert_eq!(shoeboxes.counts.len(), image.n_shoeboxes * 121);
    }
    assert_eq!(data.report.shoeboxes.total_skipped(), 0);
    assert_eq!(data.report.images.total_skipped(), 0);
}

#[test]
fn wrong_channel_count_and_grid_name_the_image() {
    let dir = simulated("grid", "2");
    let err = load_dials(&dir, 50).unwrap_err().to_string();
    assert!(
        err.contains("100 channels") && err.contains("n_channels = 50"),
        "{err}"
    );
    // Move the second shot's spectrum by 0.5 eV: its channels no longer match the first's.
    let list: Vec<_> = std::fs::read_dir(dir.join("spectra")).unwrap().collect();
    let mut names: Vec<PathBuf> = list.into_iter().map(|e| e.unwrap().path()).collect();
    names.sort();
    let text = std::fs::read_to_string(&names[1]).unwrap();
    let shifted: String = text
        .lines()
        .map(|l| match l.split_once(',') {
            Some((w, rest)) if w.trim().parse::<f64>().is_ok() => {
                let e = 12398.4198 / w.trim().parse::<f64>().unwrap() + 0.5;
                format!("{},{rest}\n", 12398.4198 / e)
            }
            _ => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&names[1], shifted).unwrap();
    let err = load_dials(&dir, 100).unwrap_err().to_string();
    let id = names[1].file_stem().unwrap().to_str().unwrap();
    assert!(err.contains(id) && err.contains("channel 0"), "{err}");
}

#[test]
fn pdb_comes_from_data_then_model_folder() {
    let models = root().join("models");
    let c = load_pdb(Path::new("/nonexistent"), &models, "1brf.pdb").unwrap();
    assert!(c.atoms.iter().any(|a| a.element == "Fe"));
    let err = load_pdb(Path::new("/nonexistent"), &models, "none.pdb")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/nonexistent/none.pdb") && err.contains("not found"),
        "{err}"
    );
}
