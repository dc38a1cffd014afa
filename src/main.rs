//! `spreadc`: the command line of spread. The only place that prints, reads arguments and
//! chooses exit codes (0 ok, 1 errors in the model or data, 2 usage or IO errors).

mod cli;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// spread: fit physics models of SPREAD crystallography with calibrated uncertainty.
#[derive(Parser)]
#[command(name = "spreadc", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// nanoBragg-compatible image simulation (nanoBragg's own single-dash options).
    #[command(disable_help_flag = true)]
    Nanobragg(cli::nanobragg::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Nanobragg(args) => cli::nanobragg::run(&args),
    }
}
