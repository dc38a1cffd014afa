//! The `spreadc check` and `spreadc explain` commands: exit codes, plain output, emitted forms.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn spreadc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_spreadc"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_exit_codes_are_0_ok_1_model_error_2_io_or_usage() {
    assert_eq!(spreadc(&["check", "models/eight_schools.spread"]).0, 0);
    let (code, _, err) = spreadc(&["check", "tests/corpus/bad/unknown_name.spread"]);
    assert_eq!(code, 1);
    assert!(err.contains("[E0201] Error: unknown name `sigma`"), "{err}");
    assert!(!err.contains('\u{1b}'), "NO_COLOR output must be plain");
    assert_eq!(spreadc(&["check", "models/no_such_model.spread"]).0, 2);
    assert_eq!(spreadc(&["check"]).0, 2);
    assert_eq!(
        spreadc(&["check", "models/eight_schools.spread", "--set", "novalue"]).0,
        2
    );
    assert_eq!(
        spreadc(&[
            "check",
            "models/eight_schools.spread",
            "--set",
            "prior_scale=wide"
        ])
        .0,
        1
    );
}

#[test]
fn emit_ir_json_and_ast() {
    let (code, ir, _) = spreadc(&[
        "check",
        "models/eight_schools.spread",
        "--emit",
        "ir",
        "--set",
        "parametrization=noncentered",
    ]);
    assert_eq!(code, 0);
    assert!(
        ir.contains("[school] let theta = math.noncentered(mu, tau, eta)  : real @param"),
        "{ir}"
    );
    let (code, json, _) = spreadc(&["check", "models/rubredoxin_fe.spread", "--emit", "json"]);
    assert_eq!(code, 0);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["name"], "rubredoxin_fe");
    assert!(value["log_joint"].as_array().unwrap().len() > 10);
    let (code, ast, _) = spreadc(&["check", "models/normal_normal.spread", "--emit", "ast"]);
    assert_eq!(code, 0);
    assert!(ast.contains("Latent"));
}

#[test]
fn explain_prints_codes_and_rejects_unknown_ones() {
    let (code, out, _) = spreadc(&["explain", "e0401"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("E0401: value used outside its plate"),
        "{out}"
    );
    let (code, all, _) = spreadc(&["explain", "all"]);
    assert_eq!(code, 0);
    assert_eq!(all.lines().count(), spread::diagnostics::Code::ALL.len());
    assert_eq!(spreadc(&["explain", "E9999"]).0, 2);
}
