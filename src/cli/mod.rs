//! One module per `spreadc` subcommand: each parses nothing (clap does), calls the library,
//! prints, and returns the exit code.

pub mod check;
pub mod explain;
pub mod fcalc;
pub mod inspect;
pub mod nanobragg;
pub mod run;
pub mod simulate;
