//! The corpus: every good program checks clean and its IR matches a snapshot; every bad program
//! gives exactly the one diagnostic its first line announces (`// expect: CODE`), rendered plain
//! and snapshotted with its source. `// set: name=value` lines become `--set` overrides.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use spread::diagnostics::{Code, render_all};
use spread::ir::{self, Compiled, Options};
use std::path::{Path, PathBuf};

fn corpus(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "spread"))
        .collect();
    files.sort();
    files
}

fn header(bytes: &[u8], key: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .take_while(|l| l.starts_with("//"))
        .filter_map(|l| l.strip_prefix(&format!("// {key}: ")).map(str::to_string))
        .collect()
}

fn compile(path: &Path) -> (Compiled, Vec<u8>, String) {
    let bytes = std::fs::read(path).unwrap();
    let sets = header(&bytes, "set")
        .iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .unwrap()
        })
        .collect();
    // Relative (cargo runs tests in the package root), so snapshots do not depend on the checkout path.
    let modules = PathBuf::from("tests/corpus/modules");
    let opts = Options {
        search_path: vec![modules],
        sets,
    };
    let dir = path
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let name = format!("{dir}/{}", path.file_name().unwrap().to_string_lossy());
    let compiled = ir::compile(&name, &bytes, &opts);
    (compiled, bytes, name)
}

fn stem(path: &Path) -> String {
    path.file_stem().unwrap().to_string_lossy().into_owned()
}

#[test]
fn good_programs_check_clean_and_match_their_ir_snapshots() {
    let files = corpus("good");
    assert!(files.len() >= 5);
    for path in files {
        let (compiled, bytes, name) = compile(&path);
        let rendered = render_all(&compiled.diagnostics, &compiled.sources, false);
        assert!(
            compiled.diagnostics.is_empty(),
            "{name} should check clean:\n{rendered}"
        );
        let program = compiled.program.as_ref().unwrap();
        let snapshot = format!(
            "{}\n---- ir ----\n{}",
            String::from_utf8_lossy(&bytes),
            ir::print(program)
        );
        insta::with_settings!({ snapshot_path => "snapshots/good", prepend_module_to_snapshot => false, omit_expression => true }, {
            insta::assert_snapshot!(stem(&path), snapshot);
        });
    }
}

#[test]
fn bad_programs_give_exactly_their_announced_diagnostic() {
    let files = corpus("bad");
    assert!(files.len() >= 40, "the bad corpus needs at least 40 files");
    for path in files {
        let (compiled, bytes, name) = compile(&path);
        let expected = header(&bytes, "expect");
        let rendered = render_all(&compiled.diagnostics, &compiled.sources, false);
        assert_eq!(
            expected.len(),
            1,
            "{name} must start with `// expect: CODE`"
        );
        let codes: Vec<&str> = compiled
            .diagnostics
            .iter()
            .map(|d| d.code.as_str())
            .collect();
        assert_eq!(
            codes,
            vec![expected[0].as_str()],
            "{name}: wrong diagnostics:\n{rendered}"
        );
        // Warning-only programs say so with `// severity: warning` (a code may be either).
        let is_warning = header(&bytes, "severity") == ["warning"];
        assert_eq!(compiled.has_errors(), !is_warning, "{name}: severity");
        let snapshot = format!(
            "{}\n---- diagnostics ----\n{}",
            String::from_utf8_lossy(&bytes),
            rendered
        );
        insta::with_settings!({ snapshot_path => "snapshots/bad", prepend_module_to_snapshot => false, omit_expression => true }, {
            insta::assert_snapshot!(stem(&path), snapshot);
        });
    }
}

#[test]
fn every_code_has_a_bad_program() {
    let mut covered = Vec::new();
    for path in corpus("bad") {
        let bytes = std::fs::read(&path).unwrap();
        covered.extend(header(&bytes, "expect"));
    }
    // E0106 (file over 4 MiB) cannot live in the corpus; tests/frontend_hostile.rs covers it.
    let missing: Vec<&str> = Code::ALL
        .iter()
        .map(|c| c.as_str())
        .filter(|c| *c != "E0106" && !covered.iter().any(|x| x == c))
        .collect();
    assert!(
        missing.is_empty(),
        "codes without a bad program: {missing:?}"
    );
}

#[test]
fn every_code_has_an_explanation_that_names_it_back() {
    for code in Code::ALL {
        assert_eq!(Code::parse(code.as_str()), Some(*code));
        assert!(
            code.explanation().len() > 40,
            "{} needs a real explanation",
            code.as_str()
        );
    }
    assert_eq!(Code::parse("e0401"), Some(Code::E0401));
    assert_eq!(Code::parse("E9999"), None);
}
