#!/usr/bin/env bash
# Store benchmark (benches/store.rs, optimized build). Prints a table of:
#   - the write time of one tick (record_tick) for 2,000 deployments;
#   - sled's bytes on disk per sample on the tick path (samples written tick by tick, then a retention pass
#     rolls them all up to five-minute aggregates), before and after the rollup;
#   - sled's bytes on disk per sample for 28 days of imported history stored as rollups only (the 30 d rollup
#     retention less the 48 h kept as samples: what the rollup tree holds in steady state);
#   - a month of five-minute history for 2,000 deployments: the time to open it, to count its records, and to
#     open it after a crash at each point of a compaction (the recovery at open).
# The store lives in a temporary directory under TMPDIR.
#
#   hack/bench-store.sh
#   STORE_BENCH_ROLLUP=500,12 hack/bench-store.sh   # tick-path data set: deployments,hours
#   STORE_BENCH_MONTH_ONLY=1 hack/bench-store.sh     # only the month of history and its recovery times
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --locked --bench store -q
