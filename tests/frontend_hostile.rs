//! Hostile input gives a diagnostic, never a panic or a stack overflow. Each case runs on a thread
//! with a 2 MiB stack (the default for test threads, a quarter of a main thread's), so a recursion
//! that grows with the input would overflow here first.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use spread::diagnostics::{Code, render_all};
use spread::ir::{self, Compiled, Options};

fn compile_on_small_stack(bytes: Vec<u8>) -> Compiled {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let compiled = ir::compile("hostile.spread", &bytes, &Options::default());
            // Rendering must survive too (it reads the same spans).
            let _ = render_all(&compiled.diagnostics, &compiled.sources, false);
            compiled
        })
        .unwrap()
        .join()
        .expect("the compiler panicked or overflowed its stack")
}

fn codes(c: &Compiled) -> Vec<Code> {
    c.diagnostics.iter().map(|d| d.code).collect()
}

#[test]
fn empty_file_warns() {
    let c = compile_on_small_stack(Vec::new());
    assert_eq!(codes(&c), vec![Code::E0107]);
    assert!(!c.has_errors());
}

#[test]
fn non_utf8_bytes_are_reported_with_their_offset() {
    let mut bytes = b"latent mu ~ Normal(0.0, 1.0)\n".to_vec();
    bytes.extend([0xC3, 0x28, 0xFF]);
    let c = compile_on_small_stack(bytes);
    assert_eq!(codes(&c), vec![Code::E0101]);
    assert!(c.diagnostics[0].message.contains("byte 29"), "{}", c.diagnostics[0].message);
}

#[test]
fn ten_megabyte_file_is_refused_by_size() {
    let line = "let x = 1.0 + 2.0 * 3.0 // filler\n";
    let bytes = line.repeat(10 * 1024 * 1024 / line.len() + 1).into_bytes();
    assert!(bytes.len() >= 10 * 1024 * 1024);
    let c = compile_on_small_stack(bytes);
    assert_eq!(codes(&c), vec![Code::E0106]);
}

#[test]
fn hundred_thousand_nested_parentheses_are_bounded() {
    let text = format!("let x = {}1.0{}\n", "(".repeat(100_000), ")".repeat(100_000));
    let c = compile_on_small_stack(text.into_bytes());
    assert_eq!(codes(&c), vec![Code::E0102]);
    let span = c.diagnostics[0].primary.as_ref().unwrap().span;
    assert_eq!(span.start, "let x = ".len() + 64, "points at the 65th bracket");
}

#[test]
fn unbalanced_hundred_thousand_open_brackets_are_bounded() {
    let text = format!("plate a {}", "{[(".repeat(100_000));
    let c = compile_on_small_stack(text.into_bytes());
    assert_eq!(codes(&c), vec![Code::E0102]);
}

#[test]
fn one_megabyte_identifier_is_refused() {
    let text = format!("latent {} ~ Normal(0.0, 1.0)\n", "a".repeat(1 << 20));
    let c = compile_on_small_stack(text.into_bytes());
    assert_eq!(codes(&c), vec![Code::E0103]);
}

#[test]
fn long_operator_chains_and_sign_runs_are_bounded() {
    let chain = format!("let x = {}1.0\n", "1.0 + ".repeat(200_000));
    assert_eq!(codes(&compile_on_small_stack(chain.into_bytes())), vec![Code::E0104]);
    let powers = format!("let x = {}2.0\n", "2.0 ^ ".repeat(500));
    assert_eq!(codes(&compile_on_small_stack(powers.into_bytes())), vec![Code::E0104]);
    let signs = format!("let x = {}1.0\n", "-".repeat(1 << 20));
    assert_eq!(codes(&compile_on_small_stack(signs.into_bytes())), vec![Code::E0104]);
}

#[test]
fn many_statements_near_the_size_limit_check_and_errors_are_capped() {
    let mut text = String::new();
    for i in 0..60_000 {
        text.push_str(&format!("let x{i} = {i}.0 * 2.0\n"));
    }
    let c = compile_on_small_stack(text.clone().into_bytes());
    assert!(!c.has_errors(), "60,000 lets are a valid (if odd) model");
    let duplicated = "let x = 1.0\n".repeat(50_000);
    let c = compile_on_small_stack(duplicated.into_bytes());
    assert!(c.has_errors());
    assert!(c.diagnostics.len() <= spread::check::MAX_DIAGNOSTICS);
}

#[test]
fn control_characters_and_stray_unicode_give_syntax_errors() {
    for text in ["\u{0}\u{1}\u{7f}", "latent µ ~ Normal(0.0, 1.0)", "let x = 1.0 ⨯ 2.0", "\"unterminated", "/* open comment"] {
        let c = compile_on_small_stack(text.as_bytes().to_vec());
        assert_eq!(codes(&c), vec![Code::E0100], "{text:?}");
    }
}
