//! Keeps the README and `docs/` truthful: the flag reference is exactly what the binary's `--help` prints, the
//! README keeps its two fresh-machine commands and stays a front door, and every link and repository path the
//! pages mention exists.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;
use smart_autoscaler::config::Cli;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const FLAGS_DOC: &str = "docs/flags.md";
const REGENERATE: &str = "hack/gen-flags.sh > docs/flags.md";

fn read(path: impl AsRef<Path>) -> String {
    let path = Path::new(ROOT).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The flag reference as `hack/gen-flags.sh` renders it from the binary this test run built: the script is the
/// one implementation, so the file and the check cannot disagree on the format.
fn rendered_flags() -> String {
    let output = Command::new("bash")
        .arg("hack/gen-flags.sh")
        .arg(env!("CARGO_BIN_EXE_smart-autoscaler"))
        .current_dir(ROOT)
        .output()
        .expect("running hack/gen-flags.sh with bash");
    assert!(
        output.status.success(),
        "hack/gen-flags.sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("gen-flags output is UTF-8")
}

#[test]
fn flags_doc_is_the_binarys_help() {
    let expected = rendered_flags();
    let actual = read(FLAGS_DOC);
    if actual == expected {
        return;
    }
    let first_difference = expected
        .lines()
        .zip(actual.lines())
        .enumerate()
        .find(|(_, (e, a))| e != a)
        .map(|(i, (e, a))| format!("line {}:\n  help says: {e}\n  file says: {a}", i + 1))
        .unwrap_or_else(|| {
            format!(
                "the help has {} lines, the file {}",
                expected.lines().count(),
                actual.lines().count()
            )
        });
    panic!(
        "{FLAGS_DOC} is not the binary's --help; regenerate it with `{REGENERATE}`\n{first_difference}"
    );
}

#[test]
fn flags_doc_documents_every_flag() {
    let doc = read(FLAGS_DOC);
    let cli = Cli::command();
    let mut missing = Vec::new();
    let mut seen = 0;
    for command in std::iter::once(&cli).chain(cli.get_subcommands()) {
        if command.get_name() != cli.get_name()
            && !doc.contains(&format!("## `{}`", command.get_name()))
        {
            missing.push(format!("section for {}", command.get_name()));
        }
        for arg in command.get_arguments() {
            if let Some(long) = arg.get_long() {
                if matches!(long, "help" | "version") {
                    continue;
                }
                seen += 1;
                if !doc.contains(&format!("--{long}")) {
                    missing.push(format!("{} --{long}", command.get_name()));
                }
            }
        }
    }
    assert!(seen > 30, "expected the full flag set, saw {seen}");
    assert!(
        missing.is_empty(),
        "missing from {FLAGS_DOC}: {missing:?}; regenerate it with `{REGENERATE}`"
    );
}

#[test]
fn readme_has_the_two_fresh_machine_commands() {
    let readme = read("README.md");
    assert!(readme.contains("cargo run --release -- demo"));
    assert!(readme.contains("hack/test.sh"));
}

#[test]
fn readme_is_a_front_door() {
    let lines = read("README.md").lines().count();
    assert!(
        lines <= 300,
        "README.md has {lines} lines; move detail into docs/ and link it (the README is the front door)"
    );
}

/// A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown page's headings (outside code blocks).
fn anchors(markdown: &str) -> Vec<String> {
    let mut in_code = false;
    let mut out = Vec::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            out.push(anchor(line.trim_start_matches('#')));
        }
    }
    out
}

/// The pages checked: the README and everything in `docs/`.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![PathBuf::from("README.md")];
    let docs = Path::new(ROOT).join("docs");
    for entry in std::fs::read_dir(&docs).expect("reading docs/") {
        let path = entry.expect("docs/ entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(
                path.strip_prefix(ROOT)
                    .expect("under the root")
                    .to_path_buf(),
            );
        }
    }
    pages.sort();
    pages
}

/// Top-level directories whose paths the pages mention in backticks, e.g. `crates/domain/src/decision.rs`.
const REPO_DIRS: [&str; 10] = [
    "src/",
    "crates/",
    "tests/",
    "benches/",
    "hack/",
    "docs/",
    "manifests/",
    "certs/",
    "apiservice/",
    ".ci/",
];

#[test]
fn links_and_paths_in_readme_and_docs_exist() {
    let mut broken = Vec::new();
    for page in pages() {
        let text = read(&page);
        let dir = page.parent().unwrap_or(Path::new("")).to_path_buf();
        // Markdown links: [text](target) with a relative target, optionally with an #anchor.
        for (start, _) in text.match_indices("](") {
            let rest = &text[start + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = &rest[..end];
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, fragment) = target.split_once('#').unwrap_or((target, ""));
            let linked = if file.is_empty() {
                page.clone()
            } else {
                dir.join(file)
            };
            let full = Path::new(ROOT).join(&linked);
            if !full.exists() {
                broken.push(format!(
                    "{}: link to {target}: no such file",
                    page.display()
                ));
            } else if !fragment.is_empty() && !anchors(&read(&linked)).iter().any(|a| a == fragment)
            {
                broken.push(format!(
                    "{}: link to {target}: no such heading",
                    page.display()
                ));
            }
        }
        // Paths in backticks that name a file or directory of this repository (outside code blocks, whose
        // commands may name files they create).
        let mut in_code = false;
        let prose: String = text
            .lines()
            .filter(|line| {
                if line.trim_start().starts_with("```") {
                    in_code = !in_code;
                    return false;
                }
                !in_code
            })
            .collect::<Vec<_>>()
            .join("\n");
        for (i, quoted) in prose.split('`').enumerate() {
            if i % 2 == 0 || !REPO_DIRS.iter().any(|d| quoted.starts_with(d)) {
                continue;
            }
            if quoted.contains(|c: char| c.is_whitespace() || "*{}<>$".contains(c)) {
                continue;
            }
            // `tests/webhook.rs::some_test` names a test in a file.
            let path = quoted.split("::").next().unwrap_or(quoted);
            if !Path::new(ROOT).join(path).exists() {
                broken.push(format!("{}: `{quoted}`: no such path", page.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "broken references:\n{}",
        broken.join("\n")
    );
}

/// The domain is its own crate so that the compiler keeps IO out of it; this keeps IO crates out of its manifest.
#[test]
fn domain_crate_depends_on_no_io_crate() {
    let manifest = read(Path::new("crates/domain/Cargo.toml"));
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .expect("crates/domain/Cargo.toml has [dependencies]")
        .split("\n[")
        .next()
        .unwrap_or_default();
    let names: Vec<&str> = deps
        .lines()
        .filter_map(|l| l.split_once('=').map(|(name, _)| name.trim()))
        .filter(|name| !name.is_empty() && !name.starts_with('#'))
        .collect();
    assert!(
        names.contains(&"serde"),
        "parsed the dependency list: {names:?}"
    );
    let io = [
        "tokio",
        "kube",
        "k8s-openapi",
        "axum",
        "hyper",
        "clap",
        "sled",
        "reqwest",
        "tracing",
        "prometheus-client",
        "prometheus-http-query",
        "rustls",
        "jiff",
    ];
    let found: Vec<&&str> = names.iter().filter(|n| io.contains(n)).collect();
    assert!(
        found.is_empty(),
        "the pure core must not depend on IO crates: {found:?}"
    );
}
