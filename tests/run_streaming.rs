#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A fit reads shoeboxes on demand (issue 5, streaming): the `dials(...)` source keeps only
//! per-image metadata and a cache of the current batch's images. On rubredoxin_small with two
//! images per step the cache holds two images and images are read again from disk, and the
//! fit's ELBO trace and parameters are bit-identical to a fit whose cache holds every image;
//! a reflection table changed under a running fit stops it with an error naming the file.

use spread::infer::reduce::SingleProcess;
use spread::infer::svi::{SviConfig, SviState, run};
use spread::plan::{Planned, Registry};
use spread::run::{RunConfig, load};
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// examples/rubredoxin_small copied to a fresh directory.
fn copy_example(tag: &str) -> PathBuf {
    let src = root().join("examples/rubredoxin_small");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("run-streaming-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("spectra")).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    for entry in std::fs::read_dir(src.join("spectra")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join("spectra").join(path.file_name().unwrap())).unwrap();
    }
    dir
}

fn plan(data: &Path) -> Planned {
    let cfg = RunConfig {
        model: root().join("models/rubredoxin_fe.spread"),
        data: data.to_path_buf(),
        sets: vec![("images_per_step".into(), "2".into())],
        ..RunConfig::default()
    };
    load(&cfg, &Registry::builtin()).unwrap().1
}

fn fit(planned: &Planned, steps: u64) -> Result<SviState, String> {
    let cfg = SviConfig {
        steps,
        seed: 3,
        ..SviConfig::default()
    };
    let model = &planned.model;
    run(
        model,
        &cfg,
        SviState::new(model, 3),
        &SingleProcess,
        &mut |_| {},
    )
    .map_err(|e| e.to_string())
}

#[test]
fn results_do_not_depend_on_the_cache_size() {
    let dir = root().join("examples/rubredoxin_small");
    let small = plan(&dir);
    let data = small.physics.dials[0].1.clone();
    assert_eq!(data.images.len(), 8);
    assert_eq!(data.cache.capacity(), 2, "the cache holds one step's batch");
    let a = fit(&small, 6).unwrap();
    assert!(data.cache.len() <= 2);
    assert!(
        data.cache.reads() > 8,
        "{} reads: images were read again",
        data.cache.reads()
    );
    let big = plan(&dir);
    big.physics.dials[0].1.cache.set_capacity(8);
    let b = fit(&big, 6).unwrap();
    assert!(big.physics.dials[0].1.cache.reads() <= 8);
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a.elbo), bits(&b.elbo));
    assert_eq!(bits(&a.params), bits(&b.params));
}

#[test]
fn a_reflection_table_changed_during_a_fit_names_the_file() {
    let dir = copy_example("changed");
    let planned = plan(&dir);
    let refl = dir.join("simulated.refl");
    let mut bytes = std::fs::read(&refl).unwrap();
    bytes.push(0);
    std::fs::write(&refl, bytes).unwrap();
    let err = fit(&planned, 2).unwrap_err();
    assert!(
        err.contains("simulated.refl") && err.contains("changed since it was loaded"),
        "{err}"
    );
}
