//! The commands the project's documentation quotes, so tests can hold the docs to the command
//! lines: each `lastmile …` and `cargo sim …` a reader may copy must parse, and the scenario
//! files it names must exist.
//!
//! A command is taken from a fenced code block (a line, after an optional `$ ` prompt and
//! `VAR=value` settings) or from an inline code span, when it starts with one of the programs
//! asked for. Templates are left out: anything with `<…>`, `[…]`, `|`, `...`, a glob, quotes, a
//! shell substitution or a word in capitals (`FILE`, `N`) is a pattern for the reader.

use std::path::{Path, PathBuf};

/// One quoted command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocCommand {
    /// Where it is quoted: `README.md:42`.
    pub at: String,
    /// The program as quoted (`cargo sim`, `lastmile`, ...).
    pub program: String,
    /// The arguments after the program.
    pub args: Vec<String>,
}

/// The documentation files of the repository at `root`: README.md, the top-level `*.md` files
/// and docs/*.md, in name order.
pub fn doc_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in [root.to_path_buf(), root.join("docs")] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Every command starting with one of `programs` (e.g. `["cargo sim", "lastmile"]`; the longest
/// that matches wins) quoted in `text`, which is the file `name`.
pub fn commands_in(name: &str, text: &str, programs: &[&str]) -> Vec<DocCommand> {
    let mut found = Vec::new();
    let mut fenced = false;
    for (i, line) in text.lines().enumerate() {
        let at = format!("{name}:{}", i + 1);
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let candidates: Vec<&str> = if fenced {
            vec![line.split(" #").next().unwrap_or("")]
        } else {
            line.split('`').skip(1).step_by(2).collect()
        };
        for candidate in candidates {
            if let Some(command) = command(candidate, programs) {
                found.push(DocCommand { at: at.clone(), program: command.0, args: command.1 });
            }
        }
    }
    found
}

/// `text` as (program, arguments), if it is a command of one of `programs` and not a template.
fn command(text: &str, programs: &[&str]) -> Option<(String, Vec<String>)> {
    let text = text.trim().trim_start_matches("$ ");
    if text.ends_with('\\') || ["<", "[", "|", "...", "…", "*", "\"", "'", "$("].iter().any(|t| text.contains(t)) {
        return None;
    }
    let mut words: Vec<&str> = text.split_whitespace().collect();
    // Leading `VAR=value` settings are the shell's, not the program's.
    while words.first().is_some_and(|w| w.contains('=') && !w.starts_with('-')) {
        words.remove(0);
    }
    // A word in capitals (`FILE`, `N`, `A..B`) is a placeholder.
    let placeholder = |w: &&str| {
        !w.starts_with('-') && w.chars().any(|c| c.is_ascii_alphabetic()) && !w.chars().any(|c| c.is_ascii_lowercase())
    };
    if words.iter().any(placeholder) {
        return None;
    }
    let joined = words.join(" ");
    let program =
        programs.iter().filter(|p| joined == **p || joined.starts_with(&format!("{p} "))).max_by_key(|p| p.len())?;
    let args: Vec<String> = joined[program.len()..].split_whitespace().map(String::from).collect();
    // The program named alone is prose (or its own help), not a command to check.
    (!args.is_empty()).then(|| (program.to_string(), args))
}

/// Every command of `programs` quoted in the documentation of the repository at `root`.
pub fn documented_commands(root: &Path, programs: &[&str]) -> Vec<DocCommand> {
    let mut all = Vec::new();
    for file in doc_files(root) {
        let name = file.strip_prefix(root).unwrap_or(&file).display().to_string();
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        all.extend(commands_in(&name, &text, programs));
    }
    all
}

/// Hold the documentation of the repository at `root` to a command line: every command of
/// `programs` it quotes must satisfy `parses` (the real CLI's parser, its error on failure) and
/// name only scenario files that exist. Panics listing every wrong command; answers how many
/// were checked.
pub fn assert_documented_commands(
    root: &Path,
    programs: &[&str],
    parses: impl Fn(&[String]) -> Result<(), String>,
) -> usize {
    let commands = documented_commands(root, programs);
    assert!(commands.len() >= 10, "only {} commands found: is the extraction broken?", commands.len());
    let mut problems = Vec::new();
    for command in &commands {
        let quoted = format!("`{} {}`", command.program, command.args.join(" "));
        if let Err(e) = parses(&command.args) {
            problems.push(format!("{}: {quoted}: {e}", command.at));
        }
        for file in missing_scenarios(root, command) {
            problems.push(format!("{}: {quoted} names {file}, which does not exist", command.at));
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} documented commands are wrong:\n{}",
        problems.len(),
        commands.len(),
        problems.join("\n")
    );
    commands.len()
}

/// The scenario files (`*.toml` under `scenarios/`) `command` reads that do not exist under
/// `root`. Files it writes (after `--out`, `--emit-scenario`) are not its inputs.
pub fn missing_scenarios(root: &Path, command: &DocCommand) -> Vec<String> {
    let mut missing = Vec::new();
    let mut previous = "";
    for arg in &command.args {
        let written = matches!(previous, "--out" | "--emit-scenario" | "--json" | "--html" | "--junit");
        if !written && arg.starts_with("scenarios/") && arg.ends_with(".toml") && !root.join(arg).exists() {
            missing.push(arg.clone());
        }
        previous = arg;
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_come_from_code_blocks_and_spans_and_templates_are_left_out() {
        let text = "Run `cargo sim run scenarios/a.toml --seed 1` or `cargo simr run x.toml` (`cargo sim run FILE --seed N`).\n\
                    A pattern: `cargo sim run scenarios/<name>.toml`, `lastmile dlq replay Q [--max N]`.\n\
                    ```sh\n\
                    $ lastmile scenario check scenarios/a.toml   # a comment\n\
                    RUST_LOG=debug cargo sim run scenarios/b.toml --seed 2\n\
                    lastmile scale matching-service --sequence 1,2 \\\n\
                    echo lastmile\n\
                    ```\n\
                    Not a command: `lastmile-service` alone is one word of `lastmile`-ish prose.\n";
        let found = commands_in("X.md", text, &["cargo sim", "cargo simr", "lastmile"]);
        let shown: Vec<String> = found.iter().map(|c| format!("{} {} {}", c.at, c.program, c.args.join(" "))).collect();
        assert_eq!(
            shown,
            [
                "X.md:1 cargo sim run scenarios/a.toml --seed 1",
                "X.md:1 cargo simr run x.toml",
                "X.md:4 lastmile scenario check scenarios/a.toml",
                "X.md:5 cargo sim run scenarios/b.toml --seed 2",
            ]
        );
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let c = DocCommand {
            at: String::new(),
            program: "cargo sim".into(),
            args: ["run", "scenarios/demo.toml", "scenarios/gone.toml", "--out", "scenarios/new.toml"]
                .map(String::from)
                .to_vec(),
        };
        assert_eq!(missing_scenarios(&root, &c), ["scenarios/gone.toml"]);
    }
}
