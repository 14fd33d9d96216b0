#!/usr/bin/env bash
# Scaling backtest: runs `smart-autoscaler simulate` on every workload trace in ../shared/traces/ and on every
# built-in scenario, and prints one table of plain HPA vs smart-autoscaler vs oracle.
#   hack/bench-scaling.sh [extra simulate flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
TRACES=${TRACES:-../shared/traces}
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked -q
  BIN=${CARGO_TARGET_DIR:-target}/release/smart-autoscaler
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT

run() { # label, simulate args...
  local label=$1; shift
  if json=$("$BIN" simulate --json "$@" 2>&1); then
    printf '%s\t%s\n' "$label" "$(tr -d '\n' <<<"$json")" >>"$out"
  else
    printf '%s\tERROR %s\n' "$label" "$(tr '\n' ' ' <<<"$json")" >>"$out"
  fi
}

for s in normal_load high_load_spike gradual_load_increase memory_constrained over_provisioned \
         daily_peak_pattern weekend_low_traffic flash_sale_event jvm_startup tiny_requests; do
  run "scenario:$s" --scenario "$s" "$@"
done
if [ -d "$TRACES" ]; then
  run "azure2019:cpu_usage" --trace "$TRACES/datacenter/azure_v2/vm_cpu_readings_month_aggregated_cpu_mem.csv" --column cpu_usage "$@"
  run "google2019:avg_cpu" --trace "$TRACES/datacenter/google2019/instance_usage_grouped_300_seconds_month.csv" --column avg_cpu --step 5m "$@"
  for f in "$TRACES"/nab/data/*/*.csv; do
    run "nab:$(basename "$(dirname "$f")")/$(basename "$f" .csv)" --trace "$f" "$@"
  done
else
  echo "note: $TRACES not found; scenarios only" >&2
fi

python3 - "$out" <<'PY'
import json, sys
rows = [l.rstrip("\n").split("\t", 1) for l in open(sys.argv[1])]
hdr = f"{'trace':<52} {'saturated pod-min (plain/smart/oracle)':>40} {'pod-hours (plain/smart/oracle)':>34} {'scale events p/s':>17}  verdict"
print(hdr); print("-" * len(hdr))
better = worse = 0
for label, body in rows:
    if body.startswith("ERROR"):
        print(f"{label:<52} {body}"); continue
    d = json.loads(body); p, s, o = d["plain"], d["smart"], d["oracle"]
    sat = f"{p['saturated_pod_minutes']:.1f} / {s['saturated_pod_minutes']:.1f} / {o['saturated_pod_minutes']:.1f}"
    ph = f"{p['pod_hours']:.1f} / {s['pod_hours']:.1f} / {o['pod_hours']:.1f}"
    ev = f"{p['scale_events']} / {s['scale_events']}"
    extra = (s['pod_hours'] / p['pod_hours'] - 1) * 100 if p['pod_hours'] else 0.0
    ok_sat = s['saturated_pod_minutes'] <= p['saturated_pod_minutes'] + 1e-6
    verdict = ("ok" if ok_sat and extra <= 5 else "WORSE") + f" (pod-hours {extra:+.1f}%)"
    better += verdict.startswith("ok"); worse += not verdict.startswith("ok")
    print(f"{label:<52} {sat:>40} {ph:>34} {ev:>17}  {verdict}")
print(f"\n{better} runs met 'saturation <= plain at <= 5% extra pod-hours', {worse} did not")
PY
