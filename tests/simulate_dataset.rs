//! `spreadc simulate` through the binary: identical bytes for a seed, a dataset that
//! `formats::dataset_dir` reads back whole, spots where Bragg's law puts them, the state curves
//! of truth.json against the source table, and truth.json keys the model does not have refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use spread::formats::dataset_dir::Dataset;
use spread::formats::refl::{Column, ShoeboxColumn, mask_bits, read_refl, write_refl};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MODEL: &str = "models/rubredoxin_fe.spread";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn out_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("simulate_dataset")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn simulate(out: &Path, args: &[&str]) -> Output {
    simulate_threads(out, args, "2")
}

fn simulate_threads(out: &Path, args: &[&str], threads: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spreadc"))
        .current_dir(root())
        .env("RAYON_NUM_THREADS", threads)
        .args(["simulate", MODEL, "--out"])
        .arg(out)
        .args(args)
        .output()
        .unwrap()
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push((
                p.strip_prefix(dir).unwrap().to_path_buf(),
                std::fs::read(&p).unwrap(),
            ));
        }
    }
    out.sort();
    out
}

fn truth(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("truth.json")).unwrap()).unwrap()
}

#[test]
fn same_seed_same_bytes_on_1_and_2_threads_other_seed_other_data() {
    let (a, b, c) = (out_dir("a"), out_dir("b"), out_dir("c"));
    ok(&simulate(&a, &["--images", "3", "--seed", "7"]));
    ok(&simulate_threads(
        &b,
        &["--images", "3", "--seed", "7"],
        "1",
    ));
    ok(&simulate(&c, &["--images", "3", "--seed", "8"]));
    let (fa, fb) = (files(&a), files(&b));
    assert_eq!(fa.len(), 4 + 3, "expt, refl, pdb, truth.json and 3 spectra");
    assert_eq!(fa, fb);
    let refl = |d: &Path| std::fs::read(d.join("simulated.refl")).unwrap();
    assert_ne!(refl(&a), refl(&c));
}

#[test]
fn dataset_reads_back_whole_and_spots_sit_where_bragg_puts_them() {
    let dir = out_dir("readback");
    let fixed = dir.with_extension("truth.json");
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    std::fs::write(&fixed, r#"{"rot": [0.0, 0.0, 0.0]}"#).unwrap();
    ok(&simulate(
        &dir,
        &[
            "--images",
            "4",
            "--seed",
            "3",
            "--truth",
            fixed.to_str().unwrap(),
        ],
    ));
    let t = truth(&dir);
    let ds = Dataset::open(&dir).unwrap();
    let mut stream = ds.images();
    let mut n_images = 0;
    let mut n_shoeboxes = 0;
    for (i, image) in stream.by_ref().enumerate() {
        let image = image.unwrap();
        assert_eq!(
            image.identifier,
            t["images"][i]["identifier"].as_str().unwrap()
        );
        assert_eq!(image.spectrum.wavelength_a.len(), 100);
        assert_eq!(
            image.shoeboxes.len() as u64,
            t["images"][i]["n_shoeboxes"].as_u64().unwrap()
        );
        assert!(image.use_pixel.iter().all(|&u| u));
        n_images += 1;
        n_shoeboxes += image.shoeboxes.len();
    }
    assert_eq!(n_images, 4);
    assert!(n_shoeboxes > 10, "only {n_shoeboxes} shoeboxes");
    let report = stream.report();
    assert_eq!(
        report.images.skipped.len() + report.shoeboxes.skipped.len(),
        0
    );

    // With `rot` fixed at zero the .expt orientation is the true one, so the photons above the
    // flat background are centred on the ray the Ewald construction predicts (xyzcal.px): across
    // that ray to within the mosaic tilts' mean (under 1 px), along the radius within the streak
    // a 100-channel spectrum draws (2θ moves with λ; under 8 px at 100 mm). An axis or sign error
    // in the detector frame would move spots by hundreds of pixels.
    let table = read_refl(&dir.join("simulated.refl")).unwrap();
    let Some(Column::Vec3(xyz)) = table.column("xyzcal.px") else {
        panic!("no xyzcal.px")
    };
    let boxes = table.shoeboxes().unwrap();
    let background = t["background"][0].as_f64().unwrap();
    let centre = 1920.0 / 2.0;
    for (k, sb) in boxes.iter().enumerate() {
        let [x0, _, y0, _, _, _] = sb.header.bbox;
        let (mut sum, mut sx, mut sy) = (0.0, 0.0, 0.0);
        for (p, &c) in sb.data.iter().enumerate() {
            let signal = (f64::from(c) - background).max(0.0);
            let (y, x) = ((p / 11) as f64 + 0.5, (p % 11) as f64 + 0.5);
            sum += signal;
            sx += signal * (f64::from(x0) + x);
            sy += signal * (f64::from(y0) + y);
        }
        let (dx, dy) = (sx / sum - xyz[k][0], sy / sum - xyz[k][1]);
        let (ux, uy) = (xyz[k][0] - centre, xyz[k][1] - centre);
        let r = ux.hypot(uy);
        let (radial, across) = ((dx * ux + dy * uy) / r, (dx * uy - dy * ux) / r);
        assert!(
            across.abs() < 1.0,
            "spot {k}: {across:.2} px across the ray"
        );
        assert!(
            radial.abs() < 8.0,
            "spot {k}: {radial:.2} px along the radius"
        );
    }
}

#[test]
fn fixed_oxidized_state_uses_the_sherrell_oxidized_curve() {
    let dir = out_dir("oxidized");
    let fixed = dir.with_extension("truth.json");
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    std::fs::write(&fixed, r#"{"frac_oxidized": 1.0, "mosaic_deg": 0.02}"#).unwrap();
    ok(&simulate(
        &dir,
        &["--images", "1", "--truth", fixed.to_str().unwrap()],
    ));
    let t = truth(&dir);
    assert_eq!(t["state"], "oxidized");
    assert_eq!(t["dataset"]["mosaic_deg"], 0.02);
    // Row 7120.0 of the Sherrell file, read here independently of the library's table code.
    let text =
        std::fs::read_to_string(root().join("tests/fixtures/tables/Fe_ox_red_7000_7300.csv"))
            .unwrap();
    let row: Vec<f64> = text
        .lines()
        .find(|l| l.starts_with("7120.0,"))
        .unwrap()
        .split(',')
        .map(|x| x.parse().unwrap())
        .collect();
    let energies = t["energy_ev"].as_array().unwrap();
    let k = energies
        .iter()
        .position(|e| e.as_f64() == Some(7120.0))
        .unwrap();
    assert_eq!(t["fp"][k].as_f64().unwrap(), row[1]);
    assert_eq!(t["fdp"][k].as_f64().unwrap(), row[2]);
}

#[test]
fn truth_keys_the_model_lacks_are_refused() {
    let dir = out_dir("bad_truth");
    let fixed = dir.with_extension("truth.json");
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    std::fs::write(&fixed, r#"{"frac_oxidised": 1.0}"#).unwrap();
    let o = simulate(&dir, &["--images", "1", "--truth", fixed.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("`frac_oxidised`") && err.contains("frac_oxidized"),
        "{err}"
    );
}

/// Rows (f', f'') of the Sherrell oxidized curve by energy, read from the CSV independently of
/// the library's table code.
fn sherrell_oxidized() -> Vec<(f64, f64, f64)> {
    let text =
        std::fs::read_to_string(root().join("tests/fixtures/tables/Fe_ox_red_7000_7300.csv"))
            .unwrap();
    text.lines()
        .filter_map(|l| {
            let v: Vec<f64> = l
                .split(',')
                .map(|x| x.parse().ok())
                .collect::<Option<_>>()?;
            Some((v[0], v[1], v[2]))
        })
        .collect()
}

fn simulate_form(name: &str, form: &str, truth_json: &str) -> serde_json::Value {
    let dir = out_dir(name);
    let fixed = dir.with_extension("truth.json");
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    std::fs::write(&fixed, truth_json).unwrap();
    let set = format!("fdp_model={form}");
    ok(&simulate(
        &dir,
        &[
            "--images",
            "1",
            "--truth",
            fixed.to_str().unwrap(),
            "--set",
            &set,
        ],
    ));
    truth(&dir)
}

fn column(t: &serde_json::Value, key: &str) -> Vec<f64> {
    t[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

#[test]
fn every_fdp_form_is_simulated_as_the_model_computes_it() {
    let table = sherrell_oxidized();
    let at = |e: f64| *table.iter().find(|r| r.0 == e).unwrap();
    // The shifted reference at its origin is Sherrell's oxidized pair itself, f' included (the
    // Kramers-Kronig f' relative to that pair returns its f' when f'' is its f'').
    let t = simulate_form(
        "shift_0",
        "shifted_reference",
        r#"{"frac_oxidized": 1.0, "edge_ev": 7120.0}"#,
    );
    let (e, fp, fdp) = (column(&t, "energy_ev"), column(&t, "fp"), column(&t, "fdp"));
    for k in 0..e.len() {
        let (_, fp_ref, fdp_ref) = at(e[k]);
        assert!(
            (fdp[k] - fdp_ref).abs() < 1e-12,
            "{} eV: {} vs {fdp_ref}",
            e[k],
            fdp[k]
        );
        assert!(
            (fp[k] - fp_ref).abs() < 1e-9,
            "{} eV: {} vs {fp_ref}",
            e[k],
            fp[k]
        );
    }
    // Shifted up by 3 eV, f''(E) is the table's at E - 3 (the grid is 1 eV, so no interpolation).
    let t = simulate_form(
        "shift_3",
        "shifted_reference",
        r#"{"frac_oxidized": 1.0, "edge_ev": 7123.0}"#,
    );
    let (e, fdp) = (column(&t, "energy_ev"), column(&t, "fdp"));
    for k in 0..e.len() {
        assert!((fdp[k] - at(e[k] - 3.0).2).abs() < 1e-12, "{} eV", e[k]);
    }
    assert_eq!(t["dataset"]["edge_ev"], 7123.0);
    // The sigmoid edge of the model file: 0.5 + 3.4 / (1 + exp(-(E - edge) / width)).
    let t = simulate_form(
        "sigmoid",
        "edge",
        r#"{"frac_oxidized": 1.0, "edge_ev": 7121.5, "edge_width_ev": 1.7}"#,
    );
    let (e, fdp) = (column(&t, "energy_ev"), column(&t, "fdp"));
    for k in 0..e.len() {
        let want = 0.5 + 3.4 / (1.0 + (-(e[k] - 7121.5) / 1.7).exp());
        assert!(
            (fdp[k] - want).abs() < 1e-12,
            "{} eV: {} vs {want}",
            e[k],
            fdp[k]
        );
    }
}

#[test]
fn a_form_needing_a_vector_latent_is_refused_by_name() {
    let dir = out_dir("per_channel");
    let o = simulate(&dir, &["--images", "1", "--set", "fdp_model=per_channel"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("`fdp_delta`") && err.contains("[100]"),
        "{err}"
    );
    assert!(!dir.join("truth.json").exists());
}

/// `--psf-px` outside 0..5 pixels is refused by name; a point-spread in range is recorded in
/// truth.json (and absent without one).
#[test]
fn point_spread_is_checked_and_recorded() {
    let dir = out_dir("bad_psf");
    let o = simulate(&dir, &["--images", "1", "--psf-px", "-1"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--psf-px -1"), "{err}");
    let dir = out_dir("psf");
    ok(&simulate(&dir, &["--images", "1", "--psf-px", "1.5"]));
    assert_eq!(truth(&dir)["psf_sd_px"], 1.5);
    let dir = out_dir("no_psf");
    ok(&simulate(&dir, &["--images", "1"]));
    assert!(truth(&dir).get("psf_sd_px").is_none());
}

/// A shot bright enough to overload the 16-bit detector: its clipped pixels (65535 ADU) are
/// written without the mask's VALID bit and above the panel's trusted range, counted in
/// truth.json, and left out (counted) by the reader; every pixel below the ceiling is used.
#[test]
fn overloaded_pixels_are_masked_counted_and_not_used() {
    let dir = out_dir("overload");
    let fixed = dir.with_extension("truth.json");
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    std::fs::write(&fixed, r#"{"log_scale": 5.0}"#).unwrap();
    let args = ["--images", "2", "--seed", "4", "--truth"];
    let o = simulate(&dir, &[&args[..], &[fixed.to_str().unwrap()]].concat());
    ok(&o);
    let t = truth(&dir);
    let overloaded = t["overloaded_pixels"].as_u64().unwrap();
    let per_image: u64 = (0..2)
        .map(|i| t["images"][i]["overloaded_pixels"].as_u64().unwrap())
        .sum();
    assert_eq!(per_image, overloaded);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(&format!(
            "overloaded pixels (65535 ADU, written masked): {overloaded}"
        )),
        "{stdout}"
    );

    // Counted independently from the written pixels.
    let table = read_refl(&dir.join("simulated.refl")).unwrap();
    let (mut at_ceiling, mut valid_below, mut below) = (0u64, 0u64, 0u64);
    for sb in table.shoeboxes().unwrap().iter() {
        for (&c, &m) in sb.data.iter().zip(sb.mask) {
            if c >= 65535.0 {
                at_ceiling += 1;
                assert_eq!(m, 0, "an overloaded pixel left VALID");
            } else {
                below += 1;
                valid_below += u64::from(m == 1);
            }
        }
    }
    assert!(
        at_ceiling > 10,
        "only {at_ceiling} overloads at log_scale 5"
    );
    assert_eq!(at_ceiling, overloaded);
    assert_eq!(valid_below, below);

    let expt: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("simulated.expt")).unwrap())
            .unwrap();
    assert_eq!(
        expt["detector"][0]["panels"][0]["trusted_range"],
        serde_json::json!([-1.0, 65534.0])
    );
    let ds = Dataset::open(&dir).unwrap();
    let mut stream = ds.images();
    let used: usize = stream
        .by_ref()
        .map(|i| i.unwrap().use_pixel.iter().filter(|&&u| u).count())
        .sum();
    assert_eq!(used as u64, below);
    let report = stream.report();
    assert_eq!(
        report.pixels.skipped["masked (mask lacks VALID)"],
        overloaded
    );
    assert_eq!(report.at_16bit_ceiling, 0);

    // Written as before the overloads were masked (every pixel VALID, trusted up to 1e6): the
    // clipped pixels are used, and the reader warns of them by count.
    let mut boxes = ShoeboxColumn::default();
    for sb in table.shoeboxes().unwrap().iter() {
        let valid = vec![mask_bits::VALID; sb.data.len()];
        let h = sb.header;
        boxes
            .push(h.panel, h.bbox, Some((sb.data, &valid, sb.background)))
            .unwrap();
    }
    let mut table = table.clone();
    table.insert("shoebox", Column::Shoebox(boxes)).unwrap();
    write_refl(&table, &dir.join("simulated.refl")).unwrap();
    let mut expt = expt;
    expt["detector"][0]["panels"][0]["trusted_range"] = serde_json::json!([-1.0, 1e6]);
    std::fs::write(dir.join("simulated.expt"), expt.to_string()).unwrap();
    let ds = Dataset::open(&dir).unwrap();
    let mut stream = ds.images();
    assert_eq!(stream.by_ref().filter(|i| i.is_ok()).count(), 2);
    let report = stream.report();
    assert_eq!(report.at_16bit_ceiling, overloaded);
    assert!(report.pixels.skipped.is_empty());
    let text = report.to_string();
    assert!(
        text.contains(&format!(
            "warning: {overloaded} used pixels read exactly 65535"
        )),
        "{text}"
    );
}

/// The shoeboxes of `dir`, keyed by (experiment id, bbox), with their counts.
fn shoebox_counts(dir: &Path) -> std::collections::BTreeMap<(i32, [i32; 6]), Vec<f64>> {
    let table = read_refl(&dir.join("simulated.refl")).unwrap();
    let Some(Column::Int(ids)) = table.column("id") else {
        panic!("no id column")
    };
    let ids = ids.clone();
    table
        .shoeboxes()
        .unwrap()
        .iter()
        .zip(ids)
        .map(|(sb, id)| {
            let counts = sb.data.iter().map(|&c| f64::from(c)).collect();
            ((id, sb.header.bbox), counts)
        })
        .collect()
}

/// `--gain-gradient G` (a flat-field error along the fast axis): the same seed with and without
/// it draws the same shots, and each pixel at fast index x then holds Poisson(g(x) μ) with
/// g(x) = 1 + G (2 (x + 0.5) / 1920 − 1), where the data without it hold Poisson(μ). Pooled over
/// the shoeboxes of each third of the panel, the counts with the error match g times the counts
/// without it within Poisson noise (a gain along the slow axis, or reversed, would miss by tens
/// of sds); out-of-range values are refused by name, and the value is recorded in truth.json.
#[test]
fn gain_gradient_scales_counts_by_the_flat_field_error() {
    let g = 0.5;
    let dir = out_dir("bad_gain");
    let o = simulate(&dir, &["--images", "1", "--gain-gradient", "1.5"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--gain-gradient 1.5"), "{err}");

    let args = ["--images", "6", "--seed", "8"];
    let plain = out_dir("gain_none");
    ok(&simulate(&plain, &args));
    assert!(truth(&plain).get("gain_gradient").is_none());
    let graded = out_dir("gain_half");
    ok(&simulate(
        &graded,
        &[&args[..], &["--gain-gradient", "0.5"]].concat(),
    ));
    assert_eq!(truth(&graded)["gain_gradient"], g);

    let before = shoebox_counts(&plain);
    let after = shoebox_counts(&graded);
    // Per third of the panel: observed sum, expected sum (g × the plain counts), variance,
    // plain sum.
    let mut thirds = [(0.0, 0.0, 0.0, 0.0); 3];
    let mut matched = 0;
    for (key, counts) in &after {
        let Some(plain_counts) = before.get(key) else {
            continue;
        };
        matched += 1;
        let x0 = key.1[0];
        let mut expected = 0.0;
        let mut variance = 0.0;
        for (p, &c) in plain_counts.iter().enumerate() {
            let x = f64::from(x0) + (p % 11) as f64;
            let gain = 1.0 + g * (2.0 * (x + 0.5) / 1920.0 - 1.0);
            expected += gain * c;
            // Var(Y_g − g Y) = g μ + g² μ, μ estimated by the plain count.
            variance += (gain + gain * gain) * c;
        }
        let third = ((f64::from(x0) + 5.5) / 640.0).floor().clamp(0.0, 2.0) as usize;
        let t = &mut thirds[third];
        t.0 += counts.iter().sum::<f64>();
        t.1 += expected;
        t.2 += variance;
        t.3 += plain_counts.iter().sum::<f64>();
    }
    assert!(matched > 100, "only {matched} shoeboxes in both datasets");
    for (k, (observed, expected, variance, _)) in thirds.iter().enumerate() {
        let z = (observed - expected) / variance.sqrt();
        assert!(
            z.abs() < 4.0,
            "third {k}: {observed} counts against {expected:.0} expected (z = {z:.2})"
        );
    }
    // The error is large: the left third reads well under, the right third well over.
    let ratio = |k: usize| thirds[k].0 / thirds[k].3;
    assert!(
        ratio(0) < 0.8 && ratio(2) > 1.2,
        "{:.3} {:.3}",
        ratio(0),
        ratio(2)
    );
}

/// `--noise-seed N`: new photon noise on the same dataset. With the seed's own value it writes
/// the very bytes of a run without it; with another, the same experiments, spectra, shoeboxes
/// (ids and bboxes) and truth.json images, only the counts redrawn: in every shoebox the totals
/// of the two draws differ by no more than Poisson noise of one mean allows (|a − b| < 5
/// sqrt(a + b) pooled over each image), yet the pixels are not the same draws; the noise seed
/// is recorded in truth.json.
#[test]
fn noise_seed_redraws_the_counts_alone() {
    let (base, same, other) = (out_dir("n0"), out_dir("n1"), out_dir("n2"));
    ok(&simulate(&base, &["--images", "3", "--seed", "7"]));
    ok(&simulate(
        &same,
        &["--images", "3", "--seed", "7", "--noise-seed", "7"],
    ));
    ok(&simulate(
        &other,
        &["--images", "3", "--seed", "7", "--noise-seed", "8"],
    ));
    assert_eq!(files(&base), files(&same));
    let read = |d: &Path, f: &str| std::fs::read(d.join(f)).unwrap();
    assert_eq!(
        read(&base, "simulated.expt"),
        read(&other, "simulated.expt")
    );
    for f in std::fs::read_dir(base.join("spectra")).unwrap() {
        let name = f.unwrap().file_name();
        let spectrum = Path::new("spectra").join(&name);
        assert_eq!(
            read(&base, spectrum.to_str().unwrap()),
            read(&other, spectrum.to_str().unwrap())
        );
    }
    let (tb, to) = (truth(&base), truth(&other));
    assert_eq!(tb["images"], to["images"]);
    assert_eq!(tb["dataset"], to["dataset"]);
    assert!(tb.get("noise_seed").is_none());
    assert_eq!(to["noise_seed"], 8);
    let (a, b) = (shoebox_counts(&base), shoebox_counts(&other));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "the same shoeboxes"
    );
    let (mut differ, mut pixels) = (0, 0);
    for id in 0..3 {
        let total = |m: &std::collections::BTreeMap<(i32, [i32; 6]), Vec<f64>>| -> f64 {
            m.iter()
                .filter(|((i, _), _)| *i == id)
                .flat_map(|(_, c)| c.iter())
                .sum()
        };
        let (ta, tb) = (total(&a), total(&b));
        assert!(ta > 100.0, "image {id}: {ta} counts");
        let z = (ta - tb) / (ta + tb).sqrt();
        assert!(z.abs() < 5.0, "image {id}: totals {ta} and {tb}, z = {z}");
    }
    for (key, ca) in &a {
        for (x, y) in ca.iter().zip(&b[key]) {
            pixels += 1;
            differ += usize::from(x != y);
        }
    }
    assert!(
        differ * 5 > pixels,
        "{differ} of {pixels} pixels differ: not a new draw"
    );
}
