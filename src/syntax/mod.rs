//! Syntax: source text to the untyped AST (`ast::Module<()>`), with spans, or diagnostics.
//!
//! In: a file id and its bytes. Out: the module, or E01xx diagnostics.
//! Guarantees: never panics and never overflows the stack on any input: size, nesting depth, name
//! length and expression length are bounded before and while building the tree.

pub mod ast;
mod expected;
mod limits;
mod parser;

use crate::diagnostics::{Diagnostic, FileId};

pub use expected::KEYWORDS;
pub use limits::{MAX_DEPTH, MAX_EXPR_DEPTH, MAX_IDENT, MAX_OPERATORS, MAX_SOURCE_BYTES};

/// Decodes a file's bytes as UTF-8, or reports where the first bad byte is.
pub fn decode<'a>(name: &str, bytes: &'a [u8]) -> Result<&'a str, Diagnostic> {
    limits::decode(name, bytes)
}

/// Parses one file into an untyped module.
pub fn parse(file: FileId, source: &str) -> Result<ast::Module<()>, Vec<Diagnostic>> {
    limits::check_source(file, source)?;
    parser::parse_module(file, source)
}

/// A warning for a file without any item, or None.
pub fn empty_warning(file: FileId, module: &ast::Module<()>) -> Option<Diagnostic> {
    module.items.is_empty().then(|| {
        let span = crate::diagnostics::Span::new(file, 0, 0);
        Diagnostic::warning(
            crate::diagnostics::Code::E0107,
            "the file is empty",
            span,
            "no declarations or statements",
        )
        .with_help("a model needs at least one latent, param or observe")
    })
}
