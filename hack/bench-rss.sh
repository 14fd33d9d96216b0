#!/usr/bin/env bash
# Memory benchmark: peak RSS (VmHWM) of the release `serve` at cluster scale, against the aim of < 300 MB
# (issue #3). `cargo bench --bench rss` (benches/rss/; `cargo test` only smoke-tests its generator) generates a
# cluster shaped like tests/fixtures/k8s (2,000 deployments each with an HPA on smart_cpu_utilization, 20,000
# pods, 500 nodes, 4,000 ReplicaSets), serves it from a fake kube-apiserver (paged lists, 500 a page, and
# watches), backfills a real Prometheus with promtool (HOURS of 1-minute history for every pod and node), runs
# `serve` until its Prometheus bootstrap is done and TICKS more ticks have passed (an HPA-like client reads every
# deployment's metric over TLS once per tick meanwhile), and prints a table of VmRSS/VmHWM per phase read from
# /proc/<pid>/status, with tick times.
#
#   hack/bench-rss.sh                          # 2,000 deployments, 6 h of history in Prometheus, 30 days in the
#                                              # store (SEED_DAYS), --interval 15s, 8 ticks once every forecaster is fitted
#   SEED_DAYS=0 hack/bench-rss.sh              # a new server: no stored history, so no forecaster fits
#   RUNS=2 hack/bench-rss.sh                   # repeat the whole run
#   HOURS=24 TICKS=4 hack/bench-rss.sh         # longer history: a bigger bootstrap (~4x the backfill time)
#   DEPLOYMENTS=200 NODES=50 hack/bench-rss.sh # a quick smaller run
#   SERVE_ARGS="--prometheus-timeout 120s" hack/bench-rss.sh
#
# At the default size, the bootstrap's two range queries (every deployment at once, 30 days at 5 minutes) take
# Prometheus longer than serve's default --prometheus-timeout (10 s) on 2 cores, so the bootstrap fails and the
# table says so; the SERVE_ARGS line above lets it finish, to measure its memory.
#
# Needs prometheus and promtool (hack/install-tools.sh) and ~2 GB free under TMPDIR for the OpenMetrics file
# and the TSDB at the default size.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-1}
# A month of five-minute history per deployment written into serve's store before it starts (through the store's
# own import): what a server finds after running for a month, so every deployment's forecaster warms up on it.
export SEED_DAYS=${SEED_DAYS:-30}
for tool in prometheus promtool; do
  command -v "$tool" >/dev/null || { echo "$tool is required (hack/install-tools.sh installs it)" >&2; exit 1; }
done

cargo build --release --locked -q --bin smart-autoscaler
BIN=$(realpath "${CARGO_TARGET_DIR:-target}/release/smart-autoscaler")
export BIN
cargo bench --locked -q --bench rss --no-run
out=$(mktemp)
err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT
for run in $(seq "$RUNS"); do
  [ "$RUNS" -gt 1 ] && echo "run $run of $RUNS"
  status=0
  # Progress goes to stderr, shown only if the run fails.
  cargo bench --locked -q --bench rss >"$out" 2>"$err" || status=$?
  if [ "$status" -ne 0 ]; then
    cat "$out" "$err"
    exit "$status"
  fi
  cat "$out"
done
