//! Every `lastmile …` command the documentation quotes parses with the real command line, and
//! every scenario file it names exists: a renamed flag or a moved file fails here, not in a
//! reader's terminal. (`lastmile_sim::cli`'s test does the same for `cargo sim …`.)

use clap::error::ErrorKind;
use clap::Parser;
use lastmile_chaos::cli::Cli;
use lastmile_harness::docs::assert_documented_commands;
use std::path::Path;

/// A command named without its arguments (`lastmile dlq`, `lastmile scale`) is prose naming it:
/// its words are real subcommands, only the rest is missing.
fn named_only(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::MissingSubcommand
            | ErrorKind::MissingRequiredArgument
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    )
}

fn parses(args: &[String]) -> Result<(), String> {
    let argv = std::iter::once("lastmile".to_string()).chain(args.iter().cloned());
    match Cli::try_parse_from(argv) {
        Ok(_) => Ok(()),
        Err(e) if named_only(e.kind()) => Ok(()),
        Err(e) => Err(e.to_string().lines().next().unwrap_or_default().to_string()),
    }
}

#[test]
fn every_documented_lastmile_command_parses_and_names_existing_scenarios() {
    let words = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    assert!(parses(&words("chaos run scenarios/demo.toml --no-such-flag")).is_err(), "the check can fail");
    assert!(parses(&words("dlq replay")).is_ok() && parses(&words("dlqs")).is_err());

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    assert_documented_commands(&root, &["cargo lastmile", "lastmile"], parses);
}
