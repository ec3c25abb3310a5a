//! `lastmile`: LastMile's command line for real deployments and scenario files. The commands
//! are described, and carried out, in `lastmile_chaos::cli`.

use clap::Parser;
use lastmile_chaos::cli::{dispatch, Cli};
use std::process::ExitCode;

fn main() -> ExitCode {
    dispatch(Cli::parse())
}
