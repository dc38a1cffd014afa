//! `spreadc explain CODE`: the long explanation of a diagnostic code.

use clap::Args as ClapArgs;
use spread::diagnostics::Code;
use std::process::ExitCode;

/// Arguments of `spreadc explain`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// A diagnostic code such as E0401, or `all` to list every code.
    pub code: String,
}

/// Prints the explanation; exit 2 for an unknown code.
pub fn run(args: &Args) -> ExitCode {
    if args.code.eq_ignore_ascii_case("all") {
        for code in Code::ALL {
            println!("{}  {}", code.as_str(), code.title());
        }
        return ExitCode::SUCCESS;
    }
    match Code::parse(&args.code) {
        Some(code) => {
            println!("{}: {}\n\n{}", code.as_str(), code.title(), code.explanation());
            ExitCode::SUCCESS
        }
        None => {
            eprintln!("error: unknown code `{}`; `spreadc explain all` lists them", args.code);
            ExitCode::from(2)
        }
    }
}
