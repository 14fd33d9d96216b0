#!/usr/bin/env bash
# Writes an empty stand-in source for every target the workspace's manifests declare or imply (the binary, the
# libraries, each [[bench]]), so `cargo build` can compile only the dependencies: the Dockerfile's cached
# dependency layer. Cargo refuses a manifest whose declared targets are missing, so the list comes from the
# manifests themselves, not from a copy that could drift. tests/image.rs runs it and checks cargo accepts the
# result.
#   hack/stand-in-sources.sh [DIR]   # DIR holds Cargo.toml, Cargo.lock and crates/*/Cargo.toml (default: .)
set -euo pipefail
cd "${1:-.}"
mkdir -p src benches
echo 'fn main() {}' > src/main.rs
: > src/lib.rs
# Bench targets: `name = "x"` lines inside [[bench]] tables (harness = false, so each needs a main).
awk '/^\[\[bench\]\]/{b=1; next} /^\[/{b=0} b && /^name *=/{gsub(/.*= *"|".*/, ""); print}' Cargo.toml |
  while read -r bench; do echo 'fn main() {}' > "benches/$bench.rs"; done
for manifest in crates/*/Cargo.toml; do
  [ -e "$manifest" ] || continue
  crate=$(dirname "$manifest")
  mkdir -p "$crate/src"
  : > "$crate/src/lib.rs"
done
