//! Keeps the README truthful: every command-line flag of every subcommand is documented in it.

use clap::CommandFactory;
use smart_autoscaler::config::Cli;

#[test]
fn readme_documents_every_flag() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let cli = Cli::command();
    let mut missing = Vec::new();
    let mut seen = 0;
    for command in std::iter::once(&cli).chain(cli.get_subcommands()) {
        for arg in command.get_arguments() {
            if let Some(long) = arg.get_long() {
                if matches!(long, "help" | "version") {
                    continue;
                }
                seen += 1;
                if !readme.contains(&format!("--{long}")) {
                    missing.push(format!("{} --{long}", command.get_name()));
                }
            }
        }
    }
    assert!(seen > 30, "expected the full flag set, saw {seen}");
    assert!(
        missing.is_empty(),
        "flags missing from README.md: {missing:?}"
    );
}

#[test]
fn readme_has_the_two_fresh_machine_commands() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(readme.contains("cargo run --release -- demo"));
    assert!(readme.contains("hack/test.sh"));
}
