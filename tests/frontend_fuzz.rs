//! Property-based fuzzing of the whole front end: random token soup, grammar-shaped random
//! programs, and byte/token mutations of real models. Properties: no panic; every diagnostic span
//! lies inside a known file; rendering works; an accepted program lowers, prints and serializes.
//! CI runs proptest's default case count; a long run: PROPTEST_CASES=1000000 cargo test --release
//! --test frontend_fuzz (the cases are split over the three properties).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use spread::diagnostics::render_all;
use spread::ir::{self, Options};

const SEEDS: &[&str] = &[
    include_str!("../models/rubredoxin_fe.spread"),
    include_str!("../models/psii_oec_mn.spread"),
    include_str!("../models/eight_schools.spread"),
    include_str!("../models/hierarchical_regression.spread"),
    include_str!("corpus/good/every_construct.spread"),
    include_str!("corpus/good/tensor_broadcasting.spread"),
    include_str!("corpus/good/variant_selected_by_set.spread"),
];

/// Every token the generators draw from: the language keywords and the others below.
fn tokens() -> Vec<&'static str> {
    let mut all = spread::syntax::KEYWORDS.to_vec();
    all.extend_from_slice(OTHER_TOKENS);
    all
}

/// Tokens beyond the keywords (spread::syntax::KEYWORDS) that the generators draw from.
const OTHER_TOKENS: &[&str] = &[
    "true",
    "false",
    "x",
    "y",
    "mu",
    "tau",
    "image",
    "shoebox",
    "shots",
    "xtal",
    "physics",
    "math",
    "sum",
    "stack",
    "mean",
    "Normal",
    "Poisson",
    "HalfNormal",
    "Dirichlet",
    "real",
    "int",
    "complex",
    "0",
    "1",
    "2.5",
    "7120.0",
    "1e3",
    "3i",
    "\"FE\"",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ".",
    ":",
    "=",
    "==",
    "=>",
    "~",
    "+",
    "-",
    "*",
    "/",
    "^",
    "<",
    "<=",
    "!",
    "&&",
    "||",
    "|",
    "_",
    "->",
    "\n",
    "// c\n",
    "/* c */",
    "pdb",
    "dials",
    "table",
    "rows",
    "pixels",
    "hkl",
    "sites",
    "mean_field",
    "map",
    "x[3]",
    "shots.images",
];

fn check_properties(bytes: &[u8]) -> Result<(), TestCaseError> {
    let opts = Options {
        search_path: Vec::new(),
        sets: Vec::new(),
    };
    let compiled = ir::compile("fuzz.spread", bytes, &opts);
    for d in &compiled.diagnostics {
        for label in d.primary.iter().map(|b| &**b).chain(&d.labels) {
            let file = compiled.sources.get(label.span.file);
            prop_assert!(file.is_some(), "span in unknown file: {d:?}");
            let len = file.map(|f| f.text.len()).unwrap_or(0);
            prop_assert!(
                label.span.start <= label.span.end && label.span.end <= len,
                "span out of range: {d:?}"
            );
        }
    }
    let _ = render_all(&compiled.diagnostics, &compiled.sources, false);
    if !compiled.has_errors() {
        let program = compiled.program.as_ref();
        prop_assert!(program.is_some(), "accepted without a program");
        if let Some(p) = program {
            let _ = ir::print(p);
            prop_assert!(serde_json::to_string(p).is_ok());
        }
    }
    Ok(())
}

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(tokens()), 0..60).prop_map(|t| t.join(" "))
}

/// Random expressions over a pool of names, sizes and operators.
fn expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        4 => prop::sample::select(vec!["mu", "tau", "n", "row.y", "a[0]", "a[1]", "a", "1.0", "2", "0.5"]).prop_map(str::to_string),
        1 => prop::sample::select(vec!["x", "z", "w", "shape", "image.spectrum", "3.5i", "true", "\"gauss\""]).prop_map(str::to_string),
        1 => (-1000.0f64..1000.0).prop_map(|v| format!("{v:?}")),
    ];
    leaf.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            6 => (
                inner.clone(),
                prop::sample::select(vec!["+", "-", "*", "/", "+", "*", "^", "==", "<", "&&"]),
                inner.clone()
            )
                .prop_map(|(a, o, b)| format!("({a} {o} {b})")),
            3 => (
                prop::sample::select(vec!["exp", "log", "sum", "abs2", "sigmoid", "norm", "conj"]),
                inner.clone()
            )
                .prop_map(|(f, a)| format!("{f}({a})")),
            1 => prop::collection::vec(inner.clone(), 1..4)
                .prop_map(|xs| format!("[{}]", xs.join(", "))),
            1 => (
                prop::sample::select(vec!["sum", "mean", "stack"]),
                inner.clone(),
                prop::sample::select(vec!["d", "row", "image", "mu"])
            )
                .prop_map(|(r, a, p)| format!("{r}({a} over {p})")),
            1 => inner.clone().prop_map(|a| format!("-{a}")),
            1 => (inner.clone(), inner)
                .prop_map(|(a, b)| format!("match shape {{ gauss => {a}, _ => {b} }}")),
        ]
    })
}

/// Grammar-shaped statements: declarations, plates and statements with random expressions.
fn program() -> impl Strategy<Value = String> {
    let stmt = prop_oneof![
        (
            prop::sample::select(vec!["x", "z", "u", "v"]),
            prop::sample::select(vec!["", "[3]", "[n]", "[2, 3]"]),
            expr(),
            expr()
        )
            .prop_map(|(n, s, a, b)| format!("latent {n}{s} ~ Normal({a}, {b})")),
        (prop::sample::select(vec!["w", "x", "z"]), expr())
            .prop_map(|(n, e)| format!("let {n} = {e}")),
        (expr(), expr()).prop_map(|(a, b)| format!("observe row.y ~ Normal({a}, {b})")),
        expr().prop_map(|e| format!("plate d[n] {{ let q = {e} }}")),
        expr().prop_map(|e| format!("param p[3]: positive = {e}")),
    ];
    let header = "const n = 3\nvariant shape = gauss | square\ndata t = table(\"t.csv\", y: real)\nlatent a[4] ~ Normal(0.0, 1.0)\nlatent mu ~ Normal(0.0, 1.0)\nlatent tau ~ HalfNormal(1.0)\n";
    prop::collection::vec(stmt, 1..8)
        .prop_map(move |s| format!("{header}plate row in t.rows {{\n{}\n}}\n", s.join("\n")))
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize, usize),
    Insert(usize, &'static str),
    Duplicate(usize, usize),
    Byte(usize, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(a, n)| Mutation::Delete(a, n)),
        (any::<usize>(), prop::sample::select(tokens())).prop_map(|(a, t)| Mutation::Insert(a, t)),
        (any::<usize>(), 1usize..80).prop_map(|(a, n)| Mutation::Duplicate(a, n)),
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Byte(a, b)),
    ]
}

fn mutate(seed: &str, mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = seed.as_bytes().to_vec();
    for m in mutations {
        let len = bytes.len().max(1);
        match *m {
            Mutation::Delete(a, n) => {
                let a = a % len;
                let end = (a + n).min(bytes.len());
                bytes.drain(a.min(end)..end);
            }
            Mutation::Insert(a, t) => {
                let a = a % len;
                bytes.splice(a..a, format!(" {t} ").bytes());
            }
            Mutation::Duplicate(a, n) => {
                let a = a % len;
                let piece: Vec<u8> = bytes[a.min(bytes.len())..(a + n).min(bytes.len())].to_vec();
                bytes.splice(a..a, piece);
            }
            Mutation::Byte(a, b) => {
                if !bytes.is_empty() {
                    let a = a % bytes.len();
                    bytes[a] = b;
                }
            }
        }
    }
    bytes
}

proptest! {
    #[test]
    fn random_token_soup_never_panics(text in token_soup()) {
        check_properties(text.as_bytes())?;
    }

    #[test]
    fn grammar_shaped_programs_never_panic(text in program()) {
        check_properties(text.as_bytes())?;
    }

    #[test]
    fn mutated_models_never_panic(seed in 0usize..SEEDS.len(), mutations in prop::collection::vec(mutation(), 1..6)) {
        check_properties(&mutate(SEEDS[seed], &mutations))?;
    }
}

/// The grammar-shaped generator must reach checking and lowering, not only the parser: a fixed-seed
/// sample must contain accepted programs and programs rejected by the checker.
#[test]
fn grammar_shaped_programs_reach_the_checker_and_lowering() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    let (mut accepted, mut check_errors, total) = (0, 0, 2000);
    let mut first_codes = std::collections::BTreeMap::new();
    for _ in 0..total {
        let text = program().new_tree(&mut runner).unwrap().current();
        let compiled = ir::compile("fuzz.spread", text.as_bytes(), &Options::default());
        if let Some(d) = compiled.diagnostics.iter().find(|d| d.is_error()) {
            *first_codes.entry(d.code.as_str()).or_insert(0) += 1;
        }
        if !compiled.has_errors() {
            accepted += 1;
        } else if compiled
            .diagnostics
            .iter()
            .all(|d| d.code.as_str() >= "E0200")
        {
            check_errors += 1;
        }
    }
    println!(
        "grammar-shaped sample: {accepted} accepted, {check_errors} rejected by the checker, of {total}"
    );
    println!("first error codes: {first_codes:?}");
    assert!(
        accepted * 50 >= total,
        "under 2% accepted: {accepted}/{total}"
    );
    assert!(
        check_errors * 4 >= total,
        "under 25% reach the checker: {check_errors}/{total}"
    );
}
