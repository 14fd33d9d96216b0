#!/usr/bin/env bash
# Scaling backtest: runs `smart-autoscaler simulate --predict` on every workload trace in ../shared/traces/ and on
# every built-in scenario (two at a time), and prints one table of plain HPA vs smart-autoscaler (reactive) vs
# smart-autoscaler with forecasts (predictive, learned online as the trace replays) vs smart-autoscaler with
# auto-tuned targets (tuned: re-tuned daily on the trace so far after the warm-up, applied when confident; set
# TUNE=0 to leave it out, it replays the history at every candidate target each day) vs the predictive run with
# the same tuned targets (pred+tuned: what serve does for an opted-in deployment with forecasting on) vs oracle.
# Under the table, the daily-seasonal traces summed, against issue 17's aim (<= 0.25x plain's saturated pod-minutes
# at no more pod-hours than plain).
# Traces are scored after a warm-up of WARMUP (default 2d) that every run replays but no run's metrics count:
# the forecasters' training period (a train/test split). Scenarios (about two days long) are scored whole.
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

jobs_file=$(mktemp)
trap 'rm -f "$out" "$jobs_file"' EXIT
run() { # label, simulate args... (queued; run two at a time below)
  printf '%q ' "$@" >>"$jobs_file"
  printf '\n' >>"$jobs_file"
}
one() { # label, simulate args...
  local label=$1; shift
  local json err
  err=$(mktemp)
  # stderr apart: notes such as "read N negative values as 0" must not end up inside the JSON.
  local tune=()
  [ "${TUNE:-1}" = 0 ] || tune=(--tune)
  if json=$("$BIN" simulate --predict "${tune[@]}" --json "$@" 2>"$err"); then
    printf '%s\t%s\n' "$label" "$(tr -d '\n' <<<"$json")"
  else
    printf '%s\tERROR %s\n' "$label" "$(tr '\n' ' ' <"$err")"
  fi
  rm -f "$err"
}
export -f one
export BIN TUNE

for s in normal_load high_load_spike gradual_load_increase memory_constrained over_provisioned \
         daily_peak_pattern weekend_low_traffic flash_sale_event jvm_startup tiny_requests; do
  run "scenario:$s" --scenario "$s" "$@"
done
if [ -d "$TRACES" ]; then
  w=(--warmup "${WARMUP:-2d}")
  run "azure2019:cpu_usage" --trace "$TRACES/datacenter/azure_v2/vm_cpu_readings_month_aggregated_cpu_mem.csv" --column cpu_usage "${w[@]}" "$@"
  run "google2019:avg_cpu" --trace "$TRACES/datacenter/google2019/instance_usage_grouped_300_seconds_month.csv" --column avg_cpu --step 5m "${w[@]}" "$@"
  for f in "$TRACES"/nab/data/*/*.csv; do
    run "nab:$(basename "$(dirname "$f")")/$(basename "$f" .csv)" --trace "$f" "${w[@]}" "$@"
  done
else
  echo "note: $TRACES not found; scenarios only" >&2
fi

# Each line of $jobs_file is one shell-quoted argument list; results come back in any order.
xargs -P "${JOBS:-2}" -d '\n' -I{} bash -c 'eval "one {}"' <"$jobs_file" >"$out"
sort -o "$out" "$out"

python3 - "$out" <<'PY'
import json, sys
rows = [l.rstrip("\n").split("\t", 1) for l in open(sys.argv[1])]
hdr = (f"{'trace':<48} {'acf1d':>5} {'saturated pod-min plain/smart/pred/tuned/pred+tuned/oracle':>60} "
       f"{'pod-hours plain/smart/pred/tuned/pred+tuned/oracle':>60} {'events p/s/pred':>16}  verdict (reactive | predictive)")
print(hdr); print("-" * len(hdr))
better = worse = 0
pred_rows = pred_ok = 0
seasonal_sum = {}
for label, body in rows:
    if body.startswith("ERROR"):
        print(f"{label:<48} {body}"); continue
    d = json.loads(body); p, s, o, q = d["plain"], d["smart"], d["oracle"], d["predictive"]
    t, pt = d.get("tuned"), d.get("predictive_tuned")
    acf = d["config"].get("daily_autocorrelation")
    cell = lambda k, fmt: " / ".join(fmt.format(r[k]) if r else "-" for r in (p, s, q, t, pt, o))
    sat = cell("saturated_pod_minutes", "{:.1f}")
    ph = cell("pod_hours", "{:.1f}")
    if acf is not None and acf >= 0.5:
        for name, r in (("plain", p), ("smart", s), ("predictive", q), ("tuned", t), ("pred+tuned", pt), ("oracle", o)):
            if r:
                seasonal_sum.setdefault(name, [0.0, 0.0])
                seasonal_sum[name][0] += r["saturated_pod_minutes"]; seasonal_sum[name][1] += r["pod_hours"]
    ev = f"{p['scale_events']} / {s['scale_events']} / {q['scale_events']}"
    extra = (s['pod_hours'] / p['pod_hours'] - 1) * 100 if p['pod_hours'] else 0.0
    ok_sat = s['saturated_pod_minutes'] <= p['saturated_pod_minutes'] + 1e-6
    verdict = ("ok" if ok_sat and extra <= 5 else "WORSE") + f" ({extra:+.1f}% ph)"
    better += verdict.startswith("ok"); worse += not verdict.startswith("ok")
    # Issue 5's aim, on traces with daily seasonality (autocorrelation at one day >= 0.5): predictive saturation
    # at most half of plain's, at most 10% extra pod-hours, closing at least half the plain-oracle gap.
    pextra = (q['pod_hours'] / p['pod_hours'] - 1) * 100 if p['pod_hours'] else 0.0
    ps, qs, os_ = p['saturated_pod_minutes'], q['saturated_pod_minutes'], o['saturated_pod_minutes']
    if acf is not None and acf >= 0.5:
        pred_rows += 1
        gap = ps - os_
        closed = (ps - qs) / gap if gap > 1e-9 else 1.0
        ok = qs <= ps / 2 + 1e-6 and pextra <= 10 and closed >= 0.5
        pred_ok += ok
        pv = ("AIM MET" if ok else "aim missed") + f" ({pextra:+.1f}% ph, gap closed {closed*100:.0f}%)"
    else:
        pv = f"not seasonal ({pextra:+.1f}% ph)"
    acfs = f"{acf:.2f}" if acf is not None else "n/a"
    print(f"{label:<48} {acfs:>5} {sat:>60} {ph:>60} {ev:>16}  {verdict} | {pv}")
if seasonal_sum:
    print("\ndaily-seasonal traces (acf1d >= 0.5), summed after the warm-up:")
    plain_sat, plain_ph = seasonal_sum["plain"]
    for name, (sat_sum, ph_sum) in seasonal_sum.items():
        ratio = f"{sat_sum / plain_sat:.2f}x plain" if plain_sat > 0 else "-"
        dph = (ph_sum / plain_ph - 1) * 100 if plain_ph else 0.0
        # Issue 17's aim, summed: saturated pod-minutes <= 0.25x plain HPA's at no more pod-hours than plain's.
        aim = ""
        if name not in ("plain", "oracle"):
            met = sat_sum <= 0.25 * plain_sat + 1e-6 and ph_sum <= plain_ph + 1e-6
            aim = "  AIM MET (<= 0.25x plain, <= plain pod-hours)" if met else "  aim missed"
        print(f"  {name:<11} saturated pod-min {sat_sum:10.1f} ({ratio:>11})   pod-hours {ph_sum:10.1f} ({dph:+.1f}%){aim}")
print(f"\nreactive: {better} runs met 'saturation <= plain at <= 5% extra pod-hours', {worse} did not")
print(f"predictive: {pred_ok} of {pred_rows} daily-seasonal runs met 'saturation <= half of plain, <= 10% extra pod-hours, "
      f">= half of the plain-oracle gap closed'")
PY
