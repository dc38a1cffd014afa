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
    /// Parse and check a model; print diagnostics, and optionally its AST or IR.
    Check(cli::check::Args),
    /// Explain a diagnostic code (e.g. `spreadc explain E0401`).
    Explain(cli::explain::Args),
    /// Show what DIALS .expt/.refl files and .lam spectra contain.
    Inspect(cli::inspect::Args),
    /// Structure factors of an atomic model as CSV (h,k,l,energy_ev,d_spacing_A,ReF,ImF,absF).
    Fcalc(cli::fcalc::Args),
    /// nanoBragg-compatible image simulation (nanoBragg's own single-dash options).
    #[command(disable_help_flag = true)]
    Nanobragg(cli::nanobragg::Args),
    /// Fit a model to data by variational inference and write the posterior.
    Run(Box<cli::run::Args>),
    /// Draw a synthetic dataset (DIALS .expt/.refl, spectra, truth.json) from a model.
    Simulate(cli::simulate::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => cli::check::run(&args),
        Command::Explain(args) => cli::explain::run(&args),
        Command::Inspect(args) => cli::inspect::run(&args),
        Command::Fcalc(args) => cli::fcalc::run(&args),
        Command::Nanobragg(args) => cli::nanobragg::run(&args),
        Command::Run(args) => cli::run::run(&args),
        Command::Simulate(args) => cli::simulate::run(&args),
    }
}
