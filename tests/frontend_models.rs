//! Every stdlib module and every model in models/ checks clean, under every choice of every variant;
//! the shipped example data match the numbers the models were written for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use spread::diagnostics::render_all;
use spread::ir::{self, Options};
use spread::resolve::STDLIB;
use std::path::{Path, PathBuf};

fn models() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("models").unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "spread")).collect();
    files.sort();
    files
}

fn check_clean(path: &Path, sets: &[(String, String)]) -> ir::Program {
    let opts = Options { search_path: Vec::new(), sets: sets.to_vec() };
    let compiled = ir::compile_file(path, &opts).unwrap();
    let text = render_all(&compiled.diagnostics, &compiled.sources, false);
    assert!(compiled.diagnostics.is_empty(), "{} with {sets:?}:\n{text}", path.display());
    compiled.program.unwrap()
}

#[test]
fn every_stdlib_module_checks_clean() {
    for (name, _) in STDLIB {
        let source = format!("use {name}.{{{}}}\n", exported(name).join(", "));
        let root = format!("{source}latent unused_anchor ~ Normal(0.0, 1.0)\n");
        let compiled = ir::compile("stdlib_probe.spread", root.as_bytes(), &Options::default());
        let warnings: Vec<_> = compiled.diagnostics.iter().filter(|d| d.code.as_str() != "E0206").collect();
        let text = render_all(&compiled.diagnostics, &compiled.sources, false);
        assert!(warnings.is_empty() && !compiled.has_errors(), "stdlib/{name}.spread:\n{text}");
    }
}

fn exported(module: &str) -> Vec<String> {
    let text = STDLIB.iter().find(|(n, _)| *n == module).unwrap().1;
    let parsed = spread::syntax::parse(0, text).unwrap();
    spread::resolve::exports(&parsed)
}

#[test]
fn at_least_the_required_models_exist() {
    let names: Vec<String> = models().iter().map(|p| p.file_stem().unwrap().to_string_lossy().into_owned()).collect();
    for required in ["rubredoxin_fe", "psii_oec_mn", "eight_schools", "normal_normal", "hierarchical_regression"] {
        assert!(names.iter().any(|n| n == required), "models/{required}.spread is missing");
    }
}

#[test]
fn every_model_checks_clean_under_every_variant_choice() {
    for path in models() {
        let program = check_clean(&path, &[]);
        assert!(!program.log_joint.is_empty(), "{} has an empty log-joint", path.display());
        for (variant, choices, _) in program.variants.iter().filter(|(n, _, _)| !n.contains('.')) {
            for choice in choices {
                let p = check_clean(&path, &[(variant.clone(), choice.clone())]);
                let selected = p.variants.iter().find(|(n, _, _)| n == variant).unwrap();
                assert_eq!(&selected.2, choice);
            }
        }
    }
}

#[test]
fn spot_models_offer_the_four_lattice_shapes_and_swap_them_in_the_ir() {
    for model in ["models/rubredoxin_fe.spread", "models/psii_oec_mn.spread"] {
        let program = check_clean(Path::new(model), &[]);
        let shape = program.variants.iter().find(|(n, _, _)| n == "shape").unwrap();
        assert_eq!(shape.1, vec!["gauss", "square", "round", "tophat"]);
        let square = ir::print(&check_clean(Path::new(model), &[("shape".into(), "square".into())]));
        assert!(square.contains("'square)") && !square.contains("'gauss)"), "{model}: the IR must carry the selected shape");
    }
}

#[test]
fn rubredoxin_model_has_100_channels_and_one_iron_edge_near_7120_ev() {
    let program = check_clean(Path::new("models/rubredoxin_fe.spread"), &[]);
    let text = ir::print(&program);
    assert!(text.contains("data shots = dials(\"*.expt\", \"*.refl\", n_channels = 100)"));
    assert!(text.contains("latent edge_ev ~ Normal(7119.0, 3.0)"));
    assert!(text.contains(": real[100] @param"), "f'' over the 100 channels is a Param tensor");
}

#[test]
fn eight_schools_data_are_rubins_numbers() {
    let text = std::fs::read_to_string("examples/eight_schools/schools.csv").unwrap();
    let rows: Vec<Vec<String>> = text.lines().skip(1).map(|l| l.split(',').map(str::to_string).collect()).collect();
    let y: Vec<f64> = rows.iter().map(|r| r[1].parse().unwrap()).collect();
    let sigma: Vec<f64> = rows.iter().map(|r| r[2].parse().unwrap()).collect();
    assert_eq!(y, vec![28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]);
    assert_eq!(sigma, vec![15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]);
    let program = check_clean(Path::new("models/eight_schools.spread"), &[]);
    let names: Vec<String> = program.guide.iter().map(|g| g.latent.clone()).collect();
    assert!(names.contains(&"mu".to_string()) && names.contains(&"tau".to_string()));
    assert_eq!(program.data[0].sizes, vec![("n_rows".to_string(), rows.len() as u64)]);
}
