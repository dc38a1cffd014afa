//! Input bounds checked before pest sees the text, so that hostile input gives a diagnostic and
//! never a stack overflow (pest descends recursively into brackets).

use crate::diagnostics::{Code, Diagnostic, FileId, Span};

/// Largest accepted source file.
pub const MAX_SOURCE_BYTES: usize = 4 << 20;
/// Deepest accepted bracket nesting.
pub const MAX_DEPTH: usize = 64;
/// Longest accepted name.
pub const MAX_IDENT: usize = 128;
/// Deepest accepted expression tree (operators and calls, brackets included).
pub const MAX_EXPR_DEPTH: usize = 100;
/// Most binary operators in one expression.
pub const MAX_OPERATORS: usize = 1000;

/// Decodes UTF-8 or reports the first bad byte.
pub fn decode<'a>(name: &str, bytes: &'a [u8]) -> Result<&'a str, Diagnostic> {
    std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        Diagnostic::global(
            Code::E0101,
            format!("{name} is not UTF-8 text: byte {at} (0x{:02x}, line {line}) is invalid", bytes[at]),
        )
        .with_help("re-save the file as UTF-8")
    })
}

/// Rejects oversized files and too-deep nesting.
pub fn check_source(file: FileId, source: &str) -> Result<(), Vec<Diagnostic>> {
    if source.len() > MAX_SOURCE_BYTES {
        let d = Diagnostic::error(
            Code::E0106,
            format!("the file has {} bytes; the limit is {MAX_SOURCE_BYTES}", source.len()),
            Span::new(file, 0, 0),
            "this file is too large for a model",
        );
        return Err(vec![d]);
    }
    check_depth(file, source).map_err(|d| vec![d])
}

/// Scans brackets outside comments and strings and stops at the first one nested too deep.
fn check_depth(file: FileId, source: &str) -> Result<(), Diagnostic> {
    let bytes = source.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => i = skip_until(bytes, i, b"\n"),
            b'/' if bytes.get(i + 1) == Some(&b'*') => i = skip_until(bytes, i + 2, b"*/"),
            b'"' => i = skip_string(bytes, i),
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(Diagnostic::error(
                        Code::E0102,
                        format!("brackets nest deeper than {MAX_DEPTH} levels"),
                        Span::new(file, i, i + 1),
                        format!("level {depth} opens here"),
                    )
                    .with_help("split the expression into several `let` statements"));
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

fn skip_until(bytes: &[u8], from: usize, end: &[u8]) -> usize {
    let mut i = from;
    while i < bytes.len() && !bytes[i..].starts_with(end) {
        i += 1;
    }
    i + end.len() - 1
}

fn skip_string(bytes: &[u8], from: usize) -> usize {
    let mut i = from + 1;
    while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
        i += 1;
    }
    i
}
