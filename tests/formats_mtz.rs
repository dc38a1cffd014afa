#![allow(clippy::unwrap_used, clippy::expect_used)]
//! MTZ writer: 1/d² against closed forms, the byte layout of the CCP4 format, and (optional,
//! `-- --ignored`, needs `pip install gemmi`) gemmi reading our file back.

use spread::formats::mtz::{Mtz, MtzColumn, MtzSpaceGroup, mtz_to_bytes, write_mtz};
use std::path::Path;
use std::process::Command;

/// Rubredoxin 1BRF cell and P 21 21 21 with an anomalous pair of F columns.
fn example() -> Mtz {
    let hkl = vec![[1, 0, 0], [1, 2, 3], [-4, 5, 6], [0, 0, 2]];
    let col = |label: &str, kind, values: [f32; 4]| MtzColumn {
        label: label.into(),
        kind,
        values: values.to_vec(),
    };
    Mtz {
        title: "spread refined structure factors".into(),
        cell: [34.123, 34.874, 43.683, 90.0, 90.0, 90.0],
        space_group: MtzSpaceGroup {
            number: 19,
            name: "P 21 21 21".into(),
            point_group: "PG222".into(),
            lattice: 'P',
            operators: [
                "x,y,z",
                "-x+1/2,-y,z+1/2",
                "x+1/2,-y+1/2,-z",
                "-x,y+1/2,-z+1/2",
            ]
            .map(String::from)
            .to_vec(),
            primitive_operators: 4,
        },
        wavelength_a: 1.7412,
        names: ["spread".into(), "rubredoxin".into(), "fe_edge".into()],
        hkl,
        columns: vec![
            col("F", 'F', [10.5, 20.25, 30.0, 40.0]),
            col("SIGF", 'Q', [1.0, 2.0, 3.0, 4.0]),
            col("F(+)", 'G', [10.0, 20.0, f32::NAN, 41.0]),
            col("SIGF(+)", 'L', [1.0, 2.0, f32::NAN, 4.0]),
            col("F(-)", 'G', [11.0, 20.5, 30.0, 39.0]),
            col("SIGF(-)", 'L', [1.5, 2.5, 3.5, 4.5]),
        ],
    }
}

#[test]
fn inverse_d_squared_matches_closed_forms() {
    let m = example();
    // Orthorhombic: 1/d² = h²/a² + k²/b² + l²/c².
    let (a, b, c) = (34.123f64, 34.874f64, 43.683f64);
    let expect = 16.0 / (a * a) + 25.0 / (b * b) + 36.0 / (c * c);
    assert!((m.inverse_d_squared([-4, 5, 6]) - expect).abs() < 1e-15);
    // Triclinic: |h a* + k b* + l c*|² with a* = (b x c) / V built from explicit vectors.
    let mut t = example();
    t.cell = [30.0, 40.0, 50.0, 80.0, 95.0, 110.0];
    let (al, be, ga) = (80f64.to_radians(), 95f64.to_radians(), 110f64.to_radians());
    let va = [30.0, 0.0, 0.0];
    let vb = [40.0 * ga.cos(), 40.0 * ga.sin(), 0.0];
    let cx = 50.0 * be.cos();
    let cy = 50.0 * (al.cos() - be.cos() * ga.cos()) / ga.sin();
    let vc = [cx, cy, (2500.0 - cx * cx - cy * cy).sqrt()];
    let cross = |u: [f64; 3], v: [f64; 3]| {
        [
            u[1] * v[2] - u[2] * v[1],
            u[2] * v[0] - u[0] * v[2],
            u[0] * v[1] - u[1] * v[0],
        ]
    };
    let dot = |u: [f64; 3], v: [f64; 3]| u[0] * v[0] + u[1] * v[1] + u[2] * v[2];
    let vol = dot(va, cross(vb, vc));
    let (sa, sb, sc) = (cross(vb, vc), cross(vc, va), cross(va, vb));
    let h = [2.0, -3.0, 5.0];
    let s: Vec<f64> = (0..3)
        .map(|i| (h[0] * sa[i] + h[1] * sb[i] + h[2] * sc[i]) / vol)
        .collect();
    let expect = s.iter().map(|x| x * x).sum::<f64>();
    assert!((t.inverse_d_squared([2, -3, 5]) / expect - 1.0).abs() < 1e-12);
}

#[test]
fn bytes_follow_the_ccp4_layout() {
    let m = example();
    let bytes = mtz_to_bytes(&m).unwrap();
    assert_eq!(&bytes[..4], b"MTZ ");
    let header_word = i32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    assert_eq!(header_word, 21 + 9 * 4);
    assert_eq!(&bytes[8..10], &[0x44, 0x41]);
    let f32_at =
        |word: usize| f32::from_le_bytes(bytes[4 * (word - 1)..4 * word].try_into().unwrap());
    // Row 2 (0-based 1): H K L F SIGF F(+) SIGF(+) F(-) SIGF(-).
    let row: Vec<f32> = (0..9).map(|c| f32_at(21 + 9 + c)).collect();
    assert_eq!(row, [1.0, 2.0, 3.0, 20.25, 2.0, 20.0, 2.0, 20.5, 2.5]);
    assert!(f32_at(21 + 18 + 5).is_nan());
    let header = std::str::from_utf8(&bytes[4 * (header_word - 1)..]).unwrap();
    assert_eq!(header.len() % 80, 0);
    let records: Vec<&str> = (0..header.len() / 80)
        .map(|i| header[80 * i..80 * i + 80].trim_end())
        .collect();
    assert_eq!(records[0], "VERS MTZ:V1.1");
    assert!(records.contains(&"SYMM -X+1/2,-Y,Z+1/2"));
    assert!(
        records
            .iter()
            .any(|r| r.starts_with("COLUMN F(+)") && r.contains(" G "))
    );
    assert_eq!(records.last().unwrap(), &"MTZENDOFHEADERS");
}

#[test]
fn short_column_is_refused() {
    let mut m = example();
    m.columns[1].values.pop();
    let err = mtz_to_bytes(&m).unwrap_err();
    assert_eq!(
        err.to_string(),
        "MTZ column `SIGF` has 3 values for 4 reflections"
    );
}

#[test]
#[ignore = "needs python3 with gemmi"]
fn gemmi_reads_our_mtz() {
    let out = std::env::temp_dir().join(format!("spread-{}.mtz", std::process::id()));
    write_mtz(&example(), &out).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/read_mtz_gemmi.py");
    let py = Command::new("python3")
        .arg(script)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
    assert_eq!(j["spacegroup"], "P 21 21 21");
    assert_eq!(j["nreflections"], 4);
    assert_eq!(j["columns"][3], serde_json::json!(["F", "F", 1]));
    assert_eq!(j["columns"][5], serde_json::json!(["F(+)", "G", 1]));
    assert_eq!(j["datasets"][1][3], "fe_edge");
    assert!((j["datasets"][1][4].as_f64().unwrap() - 1.7412).abs() < 1e-5);
    assert!((j["cell"][2].as_f64().unwrap() - 43.683).abs() < 1e-4);
    assert_eq!(
        j["first_row"],
        serde_json::json!([1.0, 0.0, 0.0, 10.5, 1.0, 10.0, 1.0, 11.0, 1.5])
    );
    assert_eq!(j["last_row"][5], 41.0);
    // d_min over the four reflections: (-4, 5, 6) has the largest 1/d².
    let dmin = 1.0
        / (16.0 / 34.123f64.powi(2) + 25.0 / 34.874f64.powi(2) + 36.0 / 43.683f64.powi(2)).sqrt();
    assert!((j["resolution_high"].as_f64().unwrap() - dmin).abs() < 1e-4);
    std::fs::remove_file(&out).unwrap();
}
