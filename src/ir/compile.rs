//! The front-end pipeline in one call: bytes -> parse -> resolve -> check -> lower.

use super::{Program, lower};
use crate::diagnostics::{Diagnostic, SourceMap};
use crate::syntax::{self, ast};
use crate::{check, resolve};
use std::path::{Path, PathBuf};

/// Settings of one compilation.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Folders searched for user modules (the model's own folder is added by `compile_file`).
    pub search_path: Vec<PathBuf>,
    /// `--set name=value` overrides of consts and variants.
    pub sets: Vec<(String, String)>,
}

/// What a compilation produced: sources for rendering, the root AST, the IR, and diagnostics.
#[derive(Debug, Clone, Default)]
pub struct Compiled {
    /// Every file read (the root first).
    pub sources: SourceMap,
    /// The root module's untyped AST, if it parsed.
    pub ast: Option<ast::Module<()>>,
    /// The IR, if there were no errors.
    pub program: Option<Program>,
    /// Errors and warnings, in the order found.
    pub diagnostics: Vec<Diagnostic>,
}

impl Compiled {
    /// True if any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Compiles a model file from disk; its folder joins the module search path.
pub fn compile_file(path: &Path, opts: &Options) -> std::io::Result<Compiled> {
    let bytes = std::fs::read(path)?;
    let mut opts = opts.clone();
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    opts.search_path.insert(0, if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir });
    Ok(compile(&path.display().to_string(), &bytes, &opts))
}

/// Compiles a model given as bytes named `name`.
pub fn compile(name: &str, bytes: &[u8], opts: &Options) -> Compiled {
    let mut out = Compiled::default();
    let text = match syntax::decode(name, bytes) {
        Ok(t) => t,
        Err(d) => {
            out.diagnostics.push(d);
            return out;
        }
    };
    let resolve_opts = resolve::Options { search_path: opts.search_path.clone() };
    let units = match resolve::load(name, text, &resolve_opts, &mut out.sources) {
        Ok(units) => units,
        Err(diags) => {
            out.diagnostics = diags;
            return out;
        }
    };
    out.ast = units.last().map(|u| u.ast.clone());
    let empty = units.last().and_then(|u| syntax::empty_warning(u.file, &u.ast));
    match check::check(&units, &opts.sets) {
        Ok((program, warnings)) => {
            out.diagnostics = warnings;
            out.diagnostics.extend(empty);
            out.program = Some(lower(&program));
        }
        Err(diags) => out.diagnostics = diags,
    }
    out
}
