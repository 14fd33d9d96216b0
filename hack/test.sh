#!/usr/bin/env bash
# The project's test command (what CI runs): formatting, lints with warnings as errors, then every test.
# Installs the tools the tests drive (kubectl, prometheus, promtool) first, so a fresh machine works.
set -euo pipefail
cd "$(dirname "$0")/.."

hack/install-tools.sh
# Every crate of Cargo.lock, for every target platform: tests/image.rs checks the Dockerfile's dependency layer
# with `cargo fetch --offline`, which needs crates no build on this platform downloads (windows-sys, valuable).
cargo fetch --locked

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test --workspace"
cargo test --workspace --all-targets --locked
