//! refined_sf.mtz: the posterior amplitudes a physics run writes.
//!
//! - the amplitudes equal CCTBX's |F| of 1BRF at 7120 eV (tests/fixtures/ref/1brf_ox_7120.csv)
//!   when every draw holds that file's Fe f'/f'', read back from the MTZ bytes, each reference
//!   index found on the F(+) or F(-) side of its asymmetric-unit row;
//! - the posterior mean and sd of FMEAN, F(+), F(-) and DANO over three different draws equal
//!   those of `spreadc fcalc` run once per draw;
//! - Friedel pairs: with f'' = 0 everywhere F(+) = F(-) and DANO = 0; with f''(Fe) > 0 DANO is
//!   |F_N + i f'' G| - |F_N - i f'' G| (F_N the normal part, G the Fe phase sum, both from fcalc),
//!   whose sign is that of Im(F_N conj G);
//! - a short real `spreadc run` writes refined_sf.mtz, lists it in summary.json, and (optional,
//!   skipped with a message without `python3 -c "import gemmi"`) gemmi reads it with our
//!   columns, types, rows, cell, space group, wavelength and values; our asymmetric unit agrees
//!   with gemmi's for 19 space groups;
//! - a generic run writes and says nothing about it; a physics run without structure_factor
//!   prints one note.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ndarray::Array2;
use spread::formats::mtz::mtz_to_bytes;
use spread::physics::atoms::{self, Crystal};
use spread::physics::symmetry::SpaceGroup;
use spread::report::refined_sf::{ReciprocalAsu, RefinedReflection, RefinedSf, Side};
use spread::run::refined_sf::{SiteDrawsAtEnergy, henke_anomalous, posterior_amplitudes};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const SNIP: &str = "tests/fixtures/pdb/Fe_1brf_snip_reduced.pdb";
const REF_7120: &str = "tests/fixtures/ref/1brf_ox_7120.csv";
/// The Fe f', f'' of the reference file's header (pf-rd-ox at 7120 eV).
const FE_7120: (f64, f64) = (-7.172140, 2.341714);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("run_refined_mtz")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn snip() -> Crystal {
    atoms::read(&root().join(SNIP)).unwrap()
}

/// `n` draws of one Fe site, all at (fp, fdp) unless `per_draw` gives each.
fn draws(per_draw: &[(f64, f64)]) -> SiteDrawsAtEnergy {
    let n = per_draw.len();
    SiteDrawsAtEnergy {
        fp: Array2::from_shape_fn((n, 1), |(d, _)| per_draw[d].0),
        fdp: Array2::from_shape_fn((n, 1), |(d, _)| per_draw[d].1),
    }
}

fn no_anomalous(
    _: &str,
    _: f64,
) -> Result<(f64, f64), spread::physics::scattering_tables::TableError> {
    Ok((0.0, 0.0))
}

/// (labels, rows) of an MTZ file's bytes: column labels from the COLUMN records, the rows
/// from word 21 on (as the CCP4 layout has them).
fn read_mtz(bytes: &[u8]) -> (Vec<(String, char)>, Vec<Vec<f32>>, String) {
    assert_eq!(&bytes[..4], b"MTZ ");
    let header_word = i32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[4 * (header_word - 1)..]).unwrap();
    let records: Vec<&str> = (0..header.len() / 80)
        .map(|i| header[80 * i..80 * i + 80].trim_end())
        .collect();
    let columns: Vec<(String, char)> = records
        .iter()
        .filter_map(|r| r.strip_prefix("COLUMN "))
        .map(|r| {
            let mut f = r.split_whitespace();
            let label = f.next().unwrap().to_string();
            (label, f.next().unwrap().chars().next().unwrap())
        })
        .collect();
    let ncol = columns.len();
    let nref = (header_word - 21) / ncol;
    let word = |w: usize| f32::from_le_bytes(bytes[4 * (w - 1)..4 * w].try_into().unwrap());
    let rows = (0..nref)
        .map(|i| (0..ncol).map(|c| word(21 + i * ncol + c)).collect())
        .collect();
    (columns, rows, records.join("\n"))
}

/// Rows of an MTZ keyed by hkl, each a map label -> value.
fn rows_by_hkl(bytes: &[u8]) -> HashMap<[i32; 3], HashMap<String, f32>> {
    let (columns, rows, _) = read_mtz(bytes);
    rows.iter()
        .map(|r| {
            let hkl = [r[0] as i32, r[1] as i32, r[2] as i32];
            let values = columns
                .iter()
                .zip(r)
                .map(|((l, _), v)| (l.clone(), *v))
                .collect();
            (hkl, values)
        })
        .collect()
}

fn refined(crystal: &Crystal, reflections: Vec<RefinedReflection>, energy_ev: f64) -> RefinedSf {
    RefinedSf {
        element: "FE".into(),
        energy_ev,
        channel: 0,
        mean_spectrum_energy_ev: energy_ev,
        wavelength_a: 12398.4198 / energy_ev,
        draws: 1,
        observed_shoeboxes: reflections.len(),
        asu: ReciprocalAsu::new(&crystal.space_group).convention(),
        scale: spread::report::refined_sf::SCALE,
        reflections,
    }
}

fn mtz_bytes(crystal: &Crystal, sf: &RefinedSf) -> Vec<u8> {
    let c = &crystal.cell;
    let cell = [
        c.lengths[0],
        c.lengths[1],
        c.lengths[2],
        c.angles_deg[0],
        c.angles_deg[1],
        c.angles_deg[2],
    ];
    mtz_to_bytes(&sf.to_mtz(cell, &crystal.space_group, "1brf").unwrap()).unwrap()
}

/// h k l and |F| of the CCTBX reference file.
fn reference() -> Vec<([i32; 3], f64)> {
    let text = std::fs::read_to_string(root().join(REF_7120)).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('h'))
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let h = [0, 1, 2].map(|i| f[i].parse().unwrap());
            (h, f[6].parse().unwrap())
        })
        .collect()
}

/// P 21 21 21 by hand: the ASU index is (|h|, |k|, |l|); h is on the F(+) side when an even
/// number of its non-zero indices are negative (the 222 rotations flip two signs), or when it
/// has a zero index (centric: both sides are the same reflection).
fn p212121_side(h: [i32; 3]) -> ([i32; 3], bool) {
    let negatives = h.iter().filter(|&&x| x < 0).count();
    let centric = h.contains(&0);
    (h.map(i32::abs), centric || negatives % 2 == 0)
}

#[test]
fn amplitudes_match_cctbx_for_the_reference_fe() {
    let crystal = snip();
    let asu = ReciprocalAsu::new(&crystal.space_group);
    assert!(asu.is_ccp4());
    let reference = reference();
    assert_eq!(reference.len(), 60);
    let hkl = asu.unique(reference.iter().map(|r| r.0));
    let same = vec![FE_7120; 4];
    let rows = posterior_amplitudes(
        &crystal,
        &hkl,
        "FE",
        7120.0,
        &draws(&same),
        henke_anomalous,
        &asu,
    )
    .unwrap();
    let bytes = mtz_bytes(&crystal, &refined(&crystal, rows, 7120.0));
    let by_hkl = rows_by_hkl(&bytes);
    assert_eq!(by_hkl.len(), hkl.len());
    let mut worst = 0.0f64;
    for (h, abs_f) in &reference {
        let (asu_h, plus) = p212121_side(*h);
        assert_eq!(asu.reduce(*h).0, asu_h, "{h:?}");
        assert_eq!(asu.reduce(*h).1 == Side::Plus, plus || asu.is_centric(*h));
        let row = &by_hkl[&asu_h];
        let label = if plus { "F(+)" } else { "F(-)" };
        let ours = f64::from(row[label]);
        worst = worst.max((ours - abs_f).abs() / abs_f);
        // Identical draws: no posterior spread.
        assert_eq!(row["SIGF(+)"], 0.0);
        assert_eq!(row["SIGF(-)"], 0.0);
        let mean = (f64::from(row["F(+)"]) + f64::from(row["F(-)"])) / 2.0;
        assert!((f64::from(row["FMEAN"]) - mean).abs() <= 1e-5 * mean);
    }
    println!("max relative |F| difference to CCTBX over 60 reflections: {worst:.2e}");
    // f32 storage (6e-8) and Henke f'/f'' of the light atoms in f64 (CCTBX interpolates in f32).
    assert!(worst < 1e-6, "{worst}");
}

/// `spreadc fcalc` on the snip model: (ReF, ImF) per hkl at 7120 eV with the given overrides.
fn fcalc(dir: &Path, hkl: &[[i32; 3]], overrides: &[String]) -> HashMap<[i32; 3], (f64, f64)> {
    let list = dir.join("hkl.txt");
    let text: String = hkl
        .iter()
        .map(|h| format!("{} {} {}\n", h[0], h[1], h[2]))
        .collect();
    std::fs::write(&list, text).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spreadc"));
    cmd.current_dir(root())
        .args(["fcalc", SNIP, "--energy", "7120", "--hkl"])
        .arg(&list);
    for o in overrides {
        cmd.args(["--fp-fdp", o]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let h = [0, 1, 2].map(|i| f[i].parse().unwrap());
            (h, (f[5].parse().unwrap(), f[6].parse().unwrap()))
        })
        .collect()
}

fn with_mates(hkl: &[[i32; 3]]) -> Vec<[i32; 3]> {
    hkl.iter()
        .copied()
        .chain(hkl.iter().map(|h| h.map(|x| -x)))
        .collect()
}

fn mean_sd(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    let v = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, v.sqrt())
}

#[test]
fn posterior_mean_and_sd_match_fcalc_draw_by_draw() {
    let dir = tmp("fcalc_draws");
    let crystal = snip();
    let asu = ReciprocalAsu::new(&crystal.space_group);
    let hkl = asu.unique(reference().iter().map(|r| r.0));
    let per_draw = [(-7.9, 0.4), (-5.2, 3.9), (-6.6, 2.0)];
    let rows = posterior_amplitudes(
        &crystal,
        &hkl,
        "FE",
        7120.0,
        &draws(&per_draw),
        henke_anomalous,
        &asu,
    )
    .unwrap();
    let both = with_mates(&hkl);
    let runs: Vec<_> = per_draw
        .iter()
        .map(|(fp, fdp)| fcalc(&dir, &both, &[format!("FE={fp},{fdp}")]))
        .collect();
    let mut worst = 0.0f64;
    for r in &rows {
        let amp = |h: [i32; 3]| -> Vec<f64> {
            runs.iter()
                .map(|run| {
                    let (re, im) = run[&h];
                    re.hypot(im)
                })
                .collect()
        };
        let (plus, minus) = (amp(r.hkl), amp(r.hkl.map(|x| -x)));
        let fmean: Vec<f64> = plus
            .iter()
            .zip(&minus)
            .map(|(p, m)| (p + m) / 2.0)
            .collect();
        let dano: Vec<f64> = plus.iter().zip(&minus).map(|(p, m)| p - m).collect();
        let centric = r.centric;
        for (ours, theirs) in [
            (r.f_plus, mean_sd(&plus)),
            (r.f_minus, mean_sd(&minus)),
            (r.f_mean, mean_sd(&fmean)),
            (r.dano, if centric { (0.0, 0.0) } else { mean_sd(&dano) }),
        ] {
            // fcalc prints F to 6 decimals.
            worst = worst
                .max((ours.mean - theirs.0).abs())
                .max((ours.sd - theirs.1).abs());
        }
    }
    println!("max |difference| of posterior mean/sd to fcalc per draw: {worst:.2e} electrons");
    assert!(worst < 1e-4, "{worst}");
}

/// Light atoms of the snip model with their f'/f'' zeroed in fcalc, as `no_anomalous` does.
fn light_atoms_zero() -> Vec<String> {
    ["C", "H", "N", "O", "S"]
        .iter()
        .map(|e| format!("{e}=0,0"))
        .collect()
}

#[test]
fn friedel_pairs_follow_the_fe_fdp() {
    let dir = tmp("friedel");
    let crystal = snip();
    let asu = ReciprocalAsu::new(&crystal.space_group);
    let hkl = asu.unique(reference().iter().map(|r| r.0));
    let fp = -7.0;
    let amplitudes = |fdp: f64| {
        posterior_amplitudes(
            &crystal,
            &hkl,
            "FE",
            7120.0,
            &draws(&[(fp, fdp); 2]),
            no_anomalous,
            &asu,
        )
        .unwrap()
    };
    // f'' = 0 for every atom: |F(h)| = |F(-h)|.
    for r in amplitudes(0.0) {
        let scale = r.f_plus.mean.max(1.0);
        assert!(
            (r.f_plus.mean - r.f_minus.mean).abs() < 1e-10 * scale,
            "{r:?}"
        );
        assert!(r.dano.mean.abs() < 1e-10 * scale, "{r:?}");
    }
    // f''(Fe) = 3: DANO = |F_N + i f'' G| - |F_N - i f'' G| at h, from fcalc's F_N and G.
    let fdp = 3.0;
    let mut base = light_atoms_zero();
    base.push(format!("FE={fp},0"));
    let normal = fcalc(&dir, &hkl, &base);
    base.pop();
    base.push(format!("FE={},0", fp + 1.0));
    let plus_one = fcalc(&dir, &hkl, &base);
    let (mut acentric, mut positive) = (0, 0);
    for r in amplitudes(fdp) {
        let f_n = num_complex::Complex64::new(normal[&r.hkl].0, normal[&r.hkl].1);
        let g = num_complex::Complex64::new(plus_one[&r.hkl].0, plus_one[&r.hkl].1) - f_n;
        let i = num_complex::Complex64::i();
        let expected = (f_n + i * fdp * g).norm() - (f_n - i * fdp * g).norm();
        if r.centric {
            assert_eq!(r.dano.mean, 0.0);
            assert_eq!(r.f_plus, r.f_minus);
            continue;
        }
        acentric += 1;
        assert!((r.dano.mean - expected).abs() < 1e-4, "{r:?} vs {expected}");
        let sign = (f_n * g.conj()).im.signum();
        assert_eq!(r.dano.mean.signum(), sign, "{r:?}");
        assert!(r.dano.mean.abs() > 1e-3, "{r:?}");
        positive += usize::from(r.dano.mean > 0.0);
    }
    println!("{acentric} acentric reflections, {positive} with DANO > 0");
    assert!(acentric > 20 && positive > 0 && positive < acentric);
}

fn gemmi_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import gemmi"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        println!("skipped: python3 with gemmi not available (pip install gemmi)");
    }
    ok
}

fn gemmi(mode: &str, path: &Path) -> serde_json::Value {
    let out = Command::new("python3")
        .arg(root().join("tests/python/read_refined_mtz_gemmi.py"))
        .arg(mode)
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn asymmetric_unit_agrees_with_gemmi() {
    let reference = [
        "P 1",
        "P -1",
        "P 1 2 1",
        "C 1 2 1",
        "P 21 21 21",
        "C 2 2 21",
        "P n n n :1",
        "I 4",
        "P 41 21 2",
        "P 3",
        "R 3 :H",
        "P 31 2 1",
        "P 31 1 2",
        "P -3 1 m",
        "P 6",
        "P 61 2 2",
        "I 2 3",
        "P 43 3 2",
        "F 4 3 2",
    ];
    let mut cases = serde_json::Map::new();
    for hm in reference {
        let group = SpaceGroup::from_hm(hm).unwrap();
        let asu = ReciprocalAsu::new(&group);
        assert!(asu.is_ccp4(), "{hm}");
        let mut rows = Vec::new();
        for h in -3..=3 {
            for k in -3..=3 {
                for l in -3..=3 {
                    let (a, side) = asu.reduce([h, k, l]);
                    rows.push(serde_json::json!([
                        h,
                        k,
                        l,
                        a[0],
                        a[1],
                        a[2],
                        u8::from(side == Side::Plus)
                    ]));
                }
            }
        }
        cases.insert(group.hm.clone().unwrap(), rows.into());
    }
    // Settings other than the reference (up to an origin shift) are reduced by our own rule.
    for hm in ["P 1 1 21", "I 1 2 1", "R 3 :R"] {
        assert!(
            !ReciprocalAsu::new(&SpaceGroup::from_hm(hm).unwrap()).is_ccp4(),
            "{hm}"
        );
    }
    if !gemmi_available() {
        return;
    }
    let dir = tmp("asu");
    let path = dir.join("cases.json");
    std::fs::write(&path, serde_json::Value::Object(cases).to_string()).unwrap();
    let v = gemmi("asu", &path);
    println!("gemmi: {v}");
    assert_eq!(v["checked"], 19 * 343);
    assert_eq!(v["mismatches"], serde_json::json!([]));
}

fn spreadc(args: &[&str]) -> std::process::Output {
    let o = Command::new(env!("CARGO_BIN_EXE_spreadc"))
        .current_dir(root())
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_short_run_writes_refined_sf_mtz() {
    let out = tmp("run");
    let o = spreadc(&[
        "run",
        "models/rubredoxin_fe.spread",
        "--data",
        "examples/rubredoxin_small",
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "20",
        "--particles",
        "1",
        "--draws",
        "100",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("refined_sf"), "{stderr}");
    let mtz = out.join("refined_sf.mtz");
    let bytes = std::fs::read(&mtz).unwrap();
    let summary = json(&out.join("summary.json"));
    let physics = &summary["physics"];
    let outputs: Vec<&str> = physics["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(outputs.contains(&"refined_sf.mtz") && outputs.contains(&"fp_fdp.csv"));
    let record = &physics["refined_sf"];
    let rows = record["reflections"].as_array().unwrap();
    assert_eq!(record["draws"], 100);
    assert_eq!(record["observed_shoeboxes"], 299);
    let energy_ev = record["energy_ev"].as_f64().unwrap();
    let mean_ev = record["mean_spectrum_energy_ev"].as_f64().unwrap();
    assert!((energy_ev - mean_ev).abs() <= 0.5, "{energy_ev} {mean_ev}");

    // The MTZ holds summary.json's rows (to f32), one per unique asymmetric-unit index.
    let by_hkl = rows_by_hkl(&bytes);
    assert_eq!(by_hkl.len(), rows.len());
    let (columns, _, header) = read_mtz(&bytes);
    let labels: Vec<String> = columns.iter().map(|(l, t)| format!("{l}:{t}")).collect();
    assert_eq!(
        labels,
        [
            "H:H",
            "K:H",
            "L:H",
            "FMEAN:F",
            "SIGFMEAN:Q",
            "F(+):G",
            "SIGF(+):L",
            "F(-):G",
            "SIGF(-):L",
            "DANO:D",
            "SIGDANO:Q"
        ]
    );
    assert!(header.contains("absolute scale"), "{header}");
    let field = |r: &serde_json::Value, k: &str, m: &str| r[k][m].as_f64().unwrap();
    let mut json_rows = Vec::new();
    for r in rows {
        let h: Vec<i32> = r["hkl"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap() as i32)
            .collect();
        let h = [h[0], h[1], h[2]];
        let row = &by_hkl[&h];
        for (label, key, moment) in [
            ("FMEAN", "f_mean", "mean"),
            ("SIGFMEAN", "f_mean", "sd"),
            ("F(+)", "f_plus", "mean"),
            ("F(-)", "f_minus", "mean"),
            ("DANO", "dano", "mean"),
            ("SIGDANO", "dano", "sd"),
        ] {
            let want = field(r, key, moment);
            assert!(
                (f64::from(row[label]) - want).abs() <= 1e-6 * want.abs().max(1.0),
                "{h:?} {label}"
            );
        }
        json_rows.push((h, field(r, "f_mean", "mean"), field(r, "f_mean", "sd")));
    }

    // Independent: fcalc on the run's PDB at the posterior-mean Fe f'/f'' of fp_fdp.csv at
    // that energy gives FMEAN up to the curvature of |F| (E|F| - |E F| <= var / |F|) and the
    // light atoms' Henke interpolation (fcalc's is CCTBX's f32 one; 5e-7 relative).
    let csv = std::fs::read_to_string(out.join("fp_fdp.csv")).unwrap();
    let line = csv
        .lines()
        .find(|l| l.split(',').nth(1).and_then(|e| e.parse::<f64>().ok()) == Some(energy_ev))
        .unwrap();
    let f: Vec<&str> = line.split(',').collect();
    let (fp, fdp) = (f[2], f[7]);
    let sample: Vec<[i32; 3]> = json_rows.iter().step_by(25).map(|r| r.0).collect();
    let list = out.join("sample.hkl");
    let both = with_mates(&sample);
    let text: String = both
        .iter()
        .map(|h| format!("{} {} {}\n", h[0], h[1], h[2]))
        .collect();
    std::fs::write(&list, text).unwrap();
    let o = spreadc(&[
        "fcalc",
        "examples/rubredoxin_small/1brf.pdb",
        "--energy",
        &energy_ev.to_string(),
        "--fp-fdp",
        &format!("FE={fp},{fdp}"),
        "--hkl",
        list.to_str().unwrap(),
    ]);
    let amp: HashMap<[i32; 3], f64> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                [0, 1, 2].map(|i| f[i].parse().unwrap()),
                f[7].parse().unwrap(),
            )
        })
        .collect();
    for (h, fmean, sd) in json_rows.iter().step_by(25) {
        let expected = (amp[h] + amp[&h.map(|x| -x)]) / 2.0;
        println!("{h:?}: FMEAN {fmean:.4} ± {sd:.4}, fcalc at the mean f'/f'' {expected:.4}");
        assert!(
            (fmean - expected).abs() <= 1e-5 * expected + sd * sd / expected,
            "{h:?}"
        );
    }

    if !gemmi_available() {
        return;
    }
    let g = gemmi("mtz", &mtz);
    assert_eq!(g["spacegroup"], "P 21 21 21");
    assert_eq!(g["spacegroup_number"], 19);
    assert_eq!(g["nsymop"], 4);
    assert_eq!(g["nreflections"].as_u64().unwrap() as usize, rows.len());
    assert_eq!(g["in_asu"], g["nreflections"]);
    assert_eq!(g["duplicates"], 0);
    let cell: Vec<f64> = g["cell"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    for (a, b) in cell.iter().zip([34.123, 34.874, 43.683, 90.0, 90.0, 90.0]) {
        assert!((a - b).abs() < 1e-3, "{cell:?}");
    }
    let types: Vec<String> = g["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{}:{}", c[0].as_str().unwrap(), c[1].as_str().unwrap()))
        .collect();
    assert_eq!(types, labels);
    let wavelength = g["datasets"][1][4].as_f64().unwrap();
    assert!((wavelength - record["wavelength_a"].as_f64().unwrap()).abs() < 1e-5);
    for (h, fmean, sd) in &json_rows {
        let row = &g["rows"][format!("{},{},{}", h[0], h[1], h[2])];
        assert!((row["FMEAN"].as_f64().unwrap() - fmean).abs() <= 1e-6 * fmean);
        assert!((row["SIGFMEAN"].as_f64().unwrap() - sd).abs() <= 1e-6 * sd.max(1.0));
    }
    println!("gemmi read {} reflections, all in its CCP4 ASU", rows.len());
}

#[test]
fn a_generic_run_writes_and_says_nothing_about_it() {
    let out = tmp("generic");
    let o = spreadc(&[
        "run",
        "models/eight_schools.spread",
        "--data",
        "examples/eight_schools",
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "200",
        "--draws",
        "50",
    ]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!all.contains("refined_sf"), "{all}");
    assert!(!out.join("refined_sf.mtz").exists());
    let summary = json(&out.join("summary.json"));
    assert!(summary["physics"].get("refined_sf").is_none());
    assert!(summary["physics"].get("outputs").is_none());
}

#[test]
fn a_physics_run_without_structure_factor_says_why() {
    let out = tmp("no_sf");
    let model = out.join("background_only.spread");
    std::fs::write(
        &model,
        r#"use physics.{plane_background}
data shots = dials("*.expt", "*.refl", n_channels = 100)
plate image in shots.images {
  plate shoebox in image.shoeboxes {
    latent background[3] ~ Normal(0.0, 10.0)
    observe shoebox.pixels ~ Poisson(softplus(plane_background(shoebox, background)))
  }
}
"#,
    )
    .unwrap();
    let o = spreadc(&[
        "run",
        model.to_str().unwrap(),
        "--data",
        "examples/rubredoxin_small",
        "--out",
        out.join("out").to_str().unwrap(),
        "--steps",
        "3",
        "--particles",
        "1",
        "--draws",
        "2",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    let notes: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("refined_sf"))
        .collect();
    assert_eq!(
        notes,
        [
            "note: no refined_sf.mtz: the model calls no structure_factor, so it has no structure factors to refine"
        ],
        "{stderr}"
    );
    assert!(!out.join("out/refined_sf.mtz").exists());
}
