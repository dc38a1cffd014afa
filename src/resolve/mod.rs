//! Resolve: finds and parses every module a model uses, in dependency order.
//!
//! In: the root file's name and text, and a search path for user modules. Out: the parsed `Unit`s
//! (files added to the caller's `SourceMap`, modules ordered so each comes after those it uses; root last) or
//! diagnostics: unknown module (E0203), import cycle (E0204), item not in module (E0205), model
//! statements in an imported module (E0207), and any parse errors.
//! Guarantees: stdlib modules are embedded in the binary (include_str!), so `spreadc` needs no
//! files besides the model; a user module shadows nothing in stdlib (stdlib names win).

mod stdlib;

use crate::diagnostics::{Code, Diagnostic, FileId, SourceMap, Span};
use crate::syntax::{self, ast};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use stdlib::STDLIB;

/// Where to look for user modules.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Folders searched for `NAME.spread`, in order, after stdlib.
    pub search_path: Vec<PathBuf>,
}

/// One parsed module.
#[derive(Debug, Clone)]
pub struct Unit {
    /// Module name (`physics`); the root is named after its file stem.
    pub name: String,
    /// Its file.
    pub file: FileId,
    /// Its untyped AST.
    pub ast: ast::Module<()>,
    /// For each `use`d module name, the index of that module in the unit list.
    pub deps: HashMap<String, usize>,
}

/// Loads the root text and everything it uses; `sources` receives every file read.
pub fn load(root_name: &str, root_text: &str, opts: &Options, sources: &mut SourceMap) -> Result<Vec<Unit>, Vec<Diagnostic>> {
    let file = sources.add(root_name, root_text);
    let stem = Path::new(root_name).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let mut loader = Loader { opts, sources, units: Vec::new(), by_name: HashMap::new(), active: Vec::new(), diags: Vec::new() };
    loader.visit(stem, file, true);
    if loader.diags.iter().any(Diagnostic::is_error) { Err(loader.diags) } else { Ok(loader.units) }
}

struct Loader<'a> {
    opts: &'a Options,
    sources: &'a mut SourceMap,
    units: Vec<Unit>,
    by_name: HashMap<String, usize>,
    active: Vec<(String, Span)>,
    diags: Vec<Diagnostic>,
}

impl Loader<'_> {
    /// Parses one file, loads its dependencies depth-first, then appends it.
    fn visit(&mut self, name: String, file: FileId, is_root: bool) -> Option<usize> {
        let text = self.sources.get(file).map(|f| f.text.clone()).unwrap_or_default();
        let module = match syntax::parse(file, &text) {
            Ok(m) => m,
            Err(errors) => {
                self.diags.extend(errors);
                return None;
            }
        };
        if !is_root {
            self.reject_model_statements(&name, &module);
        }
        let mut deps = HashMap::new();
        for item in &module.items {
            if let ast::Item::Use(u) = item
                && let Some(index) = self.dependency(u)
            {
                deps.insert(u.module.name.clone(), index);
            }
        }
        self.units.push(Unit { name: name.clone(), file, ast: module, deps });
        let index = self.units.len() - 1;
        self.by_name.insert(name, index);
        Some(index)
    }

    /// Resolves one `use`: finds, loads and checks the requested items of the module.
    fn dependency(&mut self, u: &ast::UseDecl) -> Option<usize> {
        let name = &u.module.name;
        if let Some(pos) = self.active.iter().position(|(n, _)| n == name) {
            self.report_cycle(pos, u);
            return None;
        }
        let index = match self.by_name.get(name) {
            Some(&i) => i,
            None => {
                let (display, text) = self.find(name, u.module.span)?;
                let file = self.sources.add(display, text);
                self.active.push((name.clone(), u.span));
                let loaded = self.visit(name.clone(), file, false);
                self.active.pop();
                loaded?
            }
        };
        self.check_items(index, u);
        Some(index)
    }

    /// Finds a module's text: stdlib first, then the search path.
    fn find(&mut self, name: &str, span: Span) -> Option<(String, String)> {
        if let Some((_, text)) = STDLIB.iter().find(|(n, _)| *n == name) {
            return Some((format!("stdlib/{name}.spread"), (*text).to_string()));
        }
        for dir in &self.opts.search_path {
            let path = dir.join(format!("{name}.spread"));
            if let Ok(bytes) = std::fs::read(&path) {
                let display = path.display().to_string();
                match syntax::decode(&display, &bytes) {
                    Ok(text) => return Some((display, text.to_string())),
                    Err(d) => {
                        self.diags.push(d);
                        return None;
                    }
                }
            }
        }
        let stdlib: Vec<&str> = STDLIB.iter().map(|(n, _)| *n).collect();
        self.diags.push(
            Diagnostic::error(Code::E0203, format!("no module named `{name}`"), span, "unknown module")
                .with_note(format!("standard modules: {}", stdlib.join(", ")))
                .with_help(format!("put {name}.spread next to the model, or add its folder with --path")),
        );
        None
    }

    fn report_cycle(&mut self, pos: usize, u: &ast::UseDecl) {
        let mut chain: Vec<String> = self.active[pos..].iter().map(|(n, _)| n.clone()).collect();
        chain.push(u.module.name.clone());
        let mut d = Diagnostic::error(
            Code::E0204,
            format!("modules import each other in a cycle: {}", chain.join(" -> ")),
            u.span,
            "this import closes the cycle",
        );
        if let Some((n, span)) = self.active.get(pos) {
            d = d.with_label(*span, format!("`{n}` is first imported here"));
        }
        self.diags.push(d.with_help("move the shared items into a module that both can use"));
    }

    /// Every requested item must be declared (and importable) in the module.
    fn check_items(&mut self, index: usize, u: &ast::UseDecl) {
        let exports = exports(&self.units[index].ast);
        for item in &u.items {
            if !exports.iter().any(|e| e == &item.name) {
                let d = Diagnostic::error(
                    Code::E0205,
                    format!("module `{}` has no item `{}`", u.module.name, item.name),
                    item.span,
                    "not declared there",
                )
                .with_note(format!("`{}` offers: {}", u.module.name, exports.join(", ")));
                self.diags.push(d);
            }
        }
    }

    fn reject_model_statements(&mut self, name: &str, module: &ast::Module<()>) {
        for item in &module.items {
            let span = match item {
                ast::Item::Data(d) => d.span,
                ast::Item::Stmt(s) => s.span,
                _ => continue,
            };
            self.diags.push(
                Diagnostic::error(Code::E0207, format!("module `{name}` declares model statements"), span, "not allowed in an imported module")
                    .with_help("imported modules hold fn, extern fn, const, variant, flow and encoder items only"),
            );
        }
    }
}

/// Names a module offers to `use`.
pub fn exports<M>(module: &ast::Module<M>) -> Vec<String> {
    module
        .items
        .iter()
        .filter_map(|item| match item {
            ast::Item::Const(c) => Some(c.name.name.clone()),
            ast::Item::Variant(v) => Some(v.name.name.clone()),
            ast::Item::Fn(f) => Some(f.name.name.clone()),
            ast::Item::Extern(e) => Some(e.name.name.clone()),
            ast::Item::Flow(n) | ast::Item::Encoder(n) => Some(n.name.name.clone()),
            _ => None,
        })
        .collect()
}
