#!/usr/bin/env bash
# Forecast benchmark. Two tables:
#   1. accuracy: for every workload trace in ../shared/traces/, `simulate --predict` replays the trace and learns
#      online (no peeking ahead); MASE (mean absolute error over the seasonal-naive forecast's, below 1 beats it)
#      of each model's and the ensemble's point forecasts at 15, 30 and 60 minutes;
#   2. cost: `cargo bench --bench forecast`: fit time per deployment for 30 days of 1-minute data, and the refit
#      of 1,000 deployments, on one core.
#   hack/bench-forecast.sh            # TRACES=... BIN=... to override; ACCURACY_ONLY=1 skips the cost table
set -euo pipefail
cd "$(dirname "$0")/.."
TRACES=${TRACES:-../shared/traces}
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked -q
  BIN=${CARGO_TARGET_DIR:-target}/release/smart-autoscaler
fi
[ -d "$TRACES" ] || { echo "error: $TRACES not found" >&2; exit 1; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT

run() { # label, simulate args...
  local label=$1; shift
  if json=$("$BIN" simulate --predict --json "$@" 2>&1); then
    printf '%s\t%s\n' "$label" "$(tr -d '\n' <<<"$json")" >>"$out"
  else
    printf '%s\tERROR %s\n' "$label" "$(tr '\n' ' ' <<<"$json")" >>"$out"
  fi
}

run "azure2019:cpu_usage" --trace "$TRACES/datacenter/azure_v2/vm_cpu_readings_month_aggregated_cpu_mem.csv" --column cpu_usage
run "google2019:avg_cpu" --trace "$TRACES/datacenter/google2019/instance_usage_grouped_300_seconds_month.csv" --column avg_cpu --step 5m
for f in "$TRACES"/nab/data/*/*.csv; do
  run "nab:$(basename "$(dirname "$f")")/$(basename "$f" .csv)" --trace "$f"
done

python3 - "$out" <<'PY'
import json, sys
rows = [l.rstrip("\n").split("\t", 1) for l in open(sys.argv[1])]
models = ["profile", "mstl", "seasonal_naive", "ensemble"]
hz = ["15m", "30m", "60m"]
hdr = f"{'trace':<52} " + " ".join(f"{m + ' ' + h:>10}" for h in hz for m in ["prof", "mstl", "ens"]) + f" {'lead MAPE':>9} {'FP':>5} {'FP tr':>5} {'n tr':>5} {'FN':>5} {'trusted':>7}"
print("MASE vs seasonal-naive (below 1 beats it); prof = seasonal profile, ens = weighted ensemble")
print(hdr); print("-" * len(hdr))
wins = total = 0
for label, body in rows:
    if body.startswith("ERROR"):
        print(f"{label:<52} {body}"); continue
    f = json.loads(body)["forecast"]
    cells = []
    for h in hz:
        s = f["horizons"].get(h, {})
        for m in ["profile", "mstl", "ensemble"]:
            v = s.get(m, {}).get("mase")
            cells.append(f"{v:>10.2f}" if v is not None else f"{'n/a':>10}")
        e = s.get("ensemble", {}).get("mase")
        if e is not None:
            total += 1; wins += e < 1.0
    pct = lambda v: f"{v*100:>4.0f}%" if v is not None else "  n/a"
    lm = f["lead_window"]["mape"]
    print(f"{label:<52} " + " ".join(cells) + f" {pct(lm):>9} {pct(f['false_positive_rate'])} {pct(f.get('trusted_false_positive_rate'))} {f.get('trusted_forecast_rises', 0):>5} {pct(f['false_negative_rate'])} {f['trusted_share']*100:>6.0f}%")
print(f"\nensemble beat seasonal-naive (MASE < 1) in {wins} of {total} trace x horizon cells")
PY
[ "${ACCURACY_ONLY:-0}" = 1 ] && exit 0
echo
cargo bench --locked --bench forecast -q
