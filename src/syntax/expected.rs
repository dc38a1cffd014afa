//! Turns pest's "expected rule X, Y" errors into sentences a crystallographer can act on.
//!
//! In: a pest error. Out: an E0100 diagnostic naming what was found and what was expected, in words.
//! The table `DESCRIBE` maps grammar rules to phrases; several rules share one phrase, and the
//! phrases are deduplicated, so "expected expr, unary, postfix" reads "expected a value".

use super::parser::Rule;
use crate::diagnostics::{Code, Diagnostic, FileId, Span};
use pest::error::{Error, ErrorVariant, InputLocation};

/// The words that start or join statements; they cannot be used as names.
pub const KEYWORDS: &[&str] = &[
    "use",
    "const",
    "variant",
    "data",
    "fn",
    "extern",
    "flow",
    "encoder",
    "plate",
    "in",
    "latent",
    "param",
    "let",
    "observe",
    "guide",
    "corrected",
    "by",
    "penalty",
    "subsample",
    "match",
    "over",
    "if",
];

/// Grammar rules and the words for them.
const DESCRIBE: &[(Rule, &str)] = &[
    (
        Rule::use_decl,
        "a declaration (use, const, variant, data, fn, extern, flow, encoder)",
    ),
    (
        Rule::const_decl,
        "a declaration (use, const, variant, data, fn, extern, flow, encoder)",
    ),
    (
        Rule::variant_decl,
        "a declaration (use, const, variant, data, fn, extern, flow, encoder)",
    ),
    (
        Rule::data_decl,
        "a declaration (use, const, variant, data, fn, extern, flow, encoder)",
    ),
    (
        Rule::fn_decl,
        "a declaration (use, const, variant, data, fn, extern, flow, encoder)",
    ),
    (
        Rule::extern_decl,
        "a declaration (use, const, variant, data, fn, extern, flow, encoder)",
    ),
    (
        Rule::flow_decl,
        "a declaration (use, const, variant, data, fn, extern, flow, encoder)",
    ),
    (
        Rule::encoder_decl,
        "a declaration (use, const, variant, data, fn, extern, flow, encoder)",
    ),
    (
        Rule::plate_stmt,
        "a statement (plate, latent, param, let, observe, factor)",
    ),
    (
        Rule::latent_stmt,
        "a statement (plate, latent, param, let, observe, factor)",
    ),
    (
        Rule::param_stmt,
        "a statement (plate, latent, param, let, observe, factor)",
    ),
    (
        Rule::let_stmt,
        "a statement (plate, latent, param, let, observe, factor)",
    ),
    (
        Rule::observe_stmt,
        "a statement (plate, latent, param, let, observe, factor)",
    ),
    (
        Rule::factor_stmt,
        "a statement (plate, latent, param, let, observe, factor)",
    ),
    (Rule::tilde, "`~` and a distribution"),
    (Rule::assign, "`=` and a value"),
    (Rule::ident, "a name"),
    (Rule::dim_path, "a size (a number, `_`, or a name)"),
    (Rule::dim, "a size (a number, `_`, or a name)"),
    (Rule::int, "a whole number"),
    (Rule::wild, "`_`"),
    (
        Rule::type_expr,
        "a type such as real, int, complex or real[3]",
    ),
    (
        Rule::use_list,
        "a list of names in braces, e.g. {structure_factor, bragg_spot}",
    ),
    (Rule::string, "a quoted file name"),
    (Rule::column, "a column such as `y: real`"),
    (Rule::size_arg, "a data size such as `n_channels = 100`"),
    (Rule::param_decl, "a parameter such as `x: real`"),
    (
        Rule::fn_body,
        "`=` and the function's value, or a block in braces",
    ),
    (Rule::setting, "a setting such as `layers = 2`"),
    (
        Rule::plate_in,
        "`in` and the collection the plate runs over",
    ),
    (
        Rule::plate_sized,
        "a plate size in brackets, e.g. [n_domains]",
    ),
    (Rule::subsample, "`subsample` and a batch size"),
    (Rule::shape, "a shape in brackets, e.g. [3]"),
    (Rule::dist_call, "a distribution such as Normal(0.0, 1.0)"),
    (
        Rule::guide,
        "`guide` and its kind (mean_field, map, or an encoder)",
    ),
    (Rule::correction, "`corrected by` a flow and its penalty"),
    (
        Rule::expr,
        "a value (a number, a name, a call, or an expression in parentheses)",
    ),
    (
        Rule::unary,
        "a value (a number, a name, a call, or an expression in parentheses)",
    ),
    (
        Rule::postfix,
        "a value (a number, a name, a call, or an expression in parentheses)",
    ),
    (
        Rule::prefix_op,
        "a value (a number, a name, a call, or an expression in parentheses)",
    ),
    (
        Rule::reduction,
        "a value (a number, a name, a call, or an expression in parentheses)",
    ),
    (
        Rule::match_expr,
        "a value (a number, a name, a call, or an expression in parentheses)",
    ),
    (
        Rule::call,
        "a value (a number, a name, a call, or an expression in parentheses)",
    ),
    (
        Rule::set_comp,
        "a value (a number, a name, a call, or an expression in parentheses)",
    ),
    (
        Rule::vector,
        "a value (a number, a name, a call, or an expression in parentheses)",
    ),
    (
        Rule::paren,
        "a value (a number, a name, a call, or an expression in parentheses)",
    ),
    (
        Rule::imag,
        "a value (a number, a name, a call, or an expression in parentheses)",
    ),
    (
        Rule::float,
        "a value (a number, a name, a call, or an expression in parentheses)",
    ),
    (
        Rule::boolean,
        "a value (a number, a name, a call, or an expression in parentheses)",
    ),
    (
        Rule::reduce_op,
        "a value (a number, a name, a call, or an expression in parentheses)",
    ),
    (
        Rule::bin_op,
        "an operator (+ - * / ^ == != < <= > >= && ||)",
    ),
    (Rule::method, "`.` and a field or method name"),
    (Rule::field, "`.` and a field or method name"),
    (Rule::index, "an index in brackets"),
    (Rule::args, "arguments"),
    (Rule::arg, "an argument"),
    (Rule::match_arm, "a match arm such as `gauss => 1.0`"),
    (
        Rule::use_dot,
        "`.` and the items to import, e.g. physics.{bragg_spot}",
    ),
    (Rule::EOI, "the end of the file"),
];

/// Converts a pest error into an E0100 diagnostic.
pub fn translate(file: FileId, source: &str, error: &Error<Rule>) -> Diagnostic {
    let at = match error.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let found = found_at(source, at);
    let expected = match &error.variant {
        ErrorVariant::ParsingError { positives, .. } => phrases(positives),
        ErrorVariant::CustomError { message } => vec![message.clone()],
    };
    let (message, label) = if expected.is_empty() {
        (
            format!("unexpected {found}"),
            "not expected here".to_string(),
        )
    } else {
        (
            format!("expected {}, found {found}", join_or(&expected)),
            format!("expected {}", join_or(&expected)),
        )
    };
    let end = (at + found_len(source, at)).min(source.len());
    let mut d = Diagnostic::error(Code::E0100, message, Span::new(file, at, end), label);
    let expects_name = matches!(&error.variant, ErrorVariant::ParsingError { positives, .. } if positives.contains(&Rule::ident));
    if let Some(help) = unclosed(source, at) {
        d = d.with_help(help);
    } else if let Some(help) = hint(source, at, expects_name) {
        d = d.with_help(help);
    }
    d
}

/// Words for each expected rule, in the table's order, without repeats.
fn phrases(rules: &[Rule]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (rule, text) in DESCRIBE {
        if rules.contains(rule) && !out.iter().any(|t| t == text) {
            out.push((*text).to_string());
        }
    }
    for rule in rules {
        if !DESCRIBE.iter().any(|(r, _)| r == rule) {
            let text = format!("{rule:?}").replace('_', " ");
            if !out.contains(&text) {
                out.push(text);
            }
        }
    }
    out
}

fn join_or(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// "`)`" or "the end of the file" for what sits at a byte offset.
fn found_at(source: &str, at: usize) -> String {
    let rest = source.get(at..).unwrap_or("");
    match rest.chars().next() {
        None => "the end of the file".to_string(),
        Some('\n') => "the end of the line".to_string(),
        Some(_) => format!("`{}`", &rest[..found_len(source, at)]),
    }
}

/// Length of the word or symbol at `at`, capped so a huge token gives a short message.
fn found_len(source: &str, at: usize) -> usize {
    let rest = source.get(at..).unwrap_or("");
    let word: usize = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .take(40)
        .map(char::len_utf8)
        .sum();
    if word > 0 {
        word
    } else {
        rest.chars().next().map(char::len_utf8).unwrap_or(0)
    }
}

/// "a `(` opened on line N is not closed" when the error follows an unbalanced bracket.
fn unclosed(source: &str, at: usize) -> Option<String> {
    let mut open: Vec<(char, usize)> = Vec::new();
    let mut chars = source[..at.min(source.len())].char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '/' if chars.peek().is_some_and(|(_, n)| *n == '/') => {
                for (_, n) in chars.by_ref() {
                    if n == '\n' {
                        break;
                    }
                }
            }
            '"' => {
                for (_, n) in chars.by_ref() {
                    if n == '"' || n == '\n' {
                        break;
                    }
                }
            }
            '(' | '[' | '{' => open.push((c, i)),
            ')' | ']' | '}' => {
                open.pop();
            }
            _ => {}
        }
    }
    let (c, i) = *open.last()?;
    let line = source[..i].matches('\n').count() + 1;
    let rest = source.get(at..).unwrap_or("");
    let at_statement = rest.is_empty()
        || [
            "latent", "let", "observe", "param", "plate", "const", "data", "use", "fn",
        ]
        .iter()
        .any(|k| rest.starts_with(k));
    at_statement.then(|| format!("the `{c}` opened on line {line} is not closed"))
}

/// Extra advice for common slips.
fn hint(source: &str, at: usize, expects_name: bool) -> Option<&'static str> {
    let rest = source.get(at..).unwrap_or("");
    if rest.starts_with(';') {
        return Some("statements need no `;`: each starts with its keyword");
    }
    if rest.starts_with('=')
        && source[..at]
            .trim_end()
            .ends_with(|c: char| c.is_alphanumeric())
    {
        return Some(
            "inside an expression, compare with `==`; declare a value with `let name = ...`",
        );
    }
    let word: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if expects_name && KEYWORDS.contains(&word.as_str()) {
        return Some("this word is a keyword of the language and cannot be used as a name");
    }
    None
}
