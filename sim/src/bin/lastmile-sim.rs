//! `lastmile-sim`: run scenario files inside the deterministic simulation. The commands are
//! described, and carried out, in `lastmile_sim::cli`.

use clap::Parser;
use lastmile_sim::cli::{dispatch, Args};
use std::process::ExitCode;

fn main() -> ExitCode {
    dispatch(Args::parse())
}
