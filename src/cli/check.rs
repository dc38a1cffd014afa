//! `spreadc check FILE`: parse and check a model, print diagnostics, optionally the AST or IR.

use clap::{Args as ClapArgs, ValueEnum};
use spread::diagnostics::{render_all, use_colour};
use spread::ir::{self, Options};
use std::path::PathBuf;
use std::process::ExitCode;

/// What to print after a successful check.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Emit {
    /// The untyped syntax tree of the model file.
    Ast,
    /// The IR in its stable text form.
    Ir,
    /// The IR as JSON (what the runtime interprets).
    Json,
}

/// Arguments of `spreadc check`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The .spread model file.
    pub file: PathBuf,
    /// Print the AST, the IR, or the IR as JSON after checking.
    #[arg(long, value_enum)]
    pub emit: Option<Emit>,
    /// Override a const or select a variant choice: --set n_domains=16 --set shape=square.
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_set)]
    pub sets: Vec<(String, String)>,
    /// Extra folder to search for user modules (repeatable).
    #[arg(long = "path", value_name = "DIR")]
    pub path: Vec<PathBuf>,
}

/// Splits `name=value`.
pub fn parse_set(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("expected NAME=VALUE, got `{text}`")),
    }
}

/// Runs the check; exit 0 when the model is accepted, 1 on model errors, 2 when the file cannot be read.
pub fn run(args: &Args) -> ExitCode {
    let opts = Options { search_path: args.path.clone(), sets: args.sets.clone() };
    let compiled = match ir::compile_file(&args.file, &opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", args.file.display());
            return ExitCode::from(2);
        }
    };
    eprint!("{}", render_all(&compiled.diagnostics, &compiled.sources, use_colour()));
    let Some(program) = compiled.program.as_ref().filter(|_| !compiled.has_errors()) else {
        return ExitCode::from(1);
    };
    match args.emit {
        Some(Emit::Ast) => println!("{:#?}", compiled.ast),
        Some(Emit::Ir) => print!("{}", ir::print(program)),
        Some(Emit::Json) => match serde_json::to_string_pretty(program) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("error: cannot write JSON: {e}");
                return ExitCode::from(2);
            }
        },
        None => eprintln!("{}: ok", args.file.display()),
    }
    ExitCode::SUCCESS
}
