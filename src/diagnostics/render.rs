//! Rendering of diagnostics with ariadne: the only module that formats a `Diagnostic` as text.
//!
//! In: diagnostics and the `SourceMap` they point into. Out: a string, coloured or plain.
//! Guarantees: plain output is deterministic (snapshot-stable); colour is used only when asked,
//! and `use_colour` says no when stderr is not a terminal or NO_COLOR is set.

use super::{Diagnostic, Severity, SourceMap};
use ariadne::{CharSet, Color, Config, IndexType, Label, Report, ReportKind};
use std::io::IsTerminal;

/// Whether the terminal wants colour: stderr is a terminal and NO_COLOR is unset or empty.
pub fn use_colour() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

/// Renders several diagnostics, one after another, followed by a count line.
pub fn render_all(diags: &[Diagnostic], sources: &SourceMap, colour: bool) -> String {
    let mut out = String::new();
    for d in diags {
        out.push_str(&render(d, sources, colour));
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let warnings = diags.len() - errors;
    if errors > 0 || warnings > 0 {
        out.push_str(&format!("{errors} error(s), {warnings} warning(s)\n"));
    }
    out
}

/// Renders one diagnostic as text; lines are stripped of trailing spaces.
pub fn render(diag: &Diagnostic, sources: &SourceMap, colour: bool) -> String {
    let Some(primary) = &diag.primary else {
        return render_global(diag);
    };
    let kind = match diag.severity {
        Severity::Error => ReportKind::Error,
        Severity::Warning => ReportKind::Warning,
    };
    let name = |file: u32| sources.get(file).map(|f| f.name.clone()).unwrap_or_default();
    let span = (name(primary.span.file), clamp(primary.span, sources));
    let config = Config::default()
        .with_color(colour)
        .with_index_type(IndexType::Byte)
        .with_char_set(if colour { CharSet::Unicode } else { CharSet::Ascii });
    let main_colour = if diag.is_error() { Color::Red } else { Color::Yellow };
    let mut report = Report::build(kind, span.clone())
        .with_config(config)
        .with_code(diag.code.as_str())
        .with_message(&diag.message)
        .with_label(Label::new(span).with_message(&primary.message).with_color(main_colour));
    for label in &diag.labels {
        let s = (name(label.span.file), clamp(label.span, sources));
        report = report.with_label(Label::new(s).with_message(&label.message).with_color(Color::Blue));
    }
    for note in &diag.notes {
        report = report.with_note(note);
    }
    if let Some(help) = &diag.help {
        report = report.with_help(help);
    }
    let cache = ariadne::sources(sources.files().iter().map(|f| (f.name.clone(), f.text.clone())));
    let mut buf = Vec::new();
    if report.finish().write(cache, &mut buf).is_err() {
        return render_global(diag);
    }
    strip_trailing(&String::from_utf8_lossy(&buf))
}

/// A diagnostic without a place in a file: code, message, notes and help as plain lines.
fn render_global(diag: &Diagnostic) -> String {
    let kind = if diag.is_error() { "Error" } else { "Warning" };
    let mut out = format!("[{}] {kind}: {}\n", diag.code.as_str(), diag.message);
    for note in &diag.notes {
        out.push_str(&format!("  note: {note}\n"));
    }
    if let Some(help) = &diag.help {
        out.push_str(&format!("  help: {help}\n"));
    }
    out
}

/// Keeps a span inside its file and on character boundaries, so ariadne never sees a bad range.
fn clamp(span: super::Span, sources: &SourceMap) -> std::ops::Range<usize> {
    let text = sources.get(span.file).map(|f| f.text.as_str()).unwrap_or("");
    let mut start = span.start.min(text.len());
    let mut end = span.end.clamp(start, text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    while !text.is_char_boundary(end) {
        end += 1;
    }
    start..end
}

fn strip_trailing(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
