#!/usr/bin/env bash
# Numenta Anomaly Benchmark: runs the learned detector, NAB's windowed Gaussian (reproduced), a random, the null
# and a perfect detector over every series of the NAB copy in ../shared/traces/nab (see SOURCE.md there) and
# prints the three NAB scores of each beside NAB's published board, plus the learned detector's cost per point
# and state size. Scoring follows NAB's rules (crates/domain/src/anomaly/nab.rs, docs/anomaly-benchmark.md).
#
#   hack/bench-nab.sh
#   NAB=/path/to/nab hack/bench-nab.sh                      # another copy (labels/ and data/ as in NAB)
#   NAB_CHECKOUT=/path/to/NAB hack/bench-nab.sh             # also re-score NAB's published results/ files
set -euo pipefail
cd "$(dirname "$0")/.."
args=()
if [[ -n "${NAB:-}" ]]; then args+=(--nab "$NAB"); fi
if [[ -n "${NAB_CHECKOUT:-}" ]]; then args+=(--published "$NAB_CHECKOUT"); fi
cargo run --quiet --release -p smart-autoscaler-domain --example nab -- "${args[@]}"
