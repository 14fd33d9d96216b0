#!/usr/bin/env bash
# Serving benchmark of a PromQL-backed external metric (--external-rules) against the built-in one, same release
# binary, same TLS stack, same load: oha, CONNECTIONS connections for DURATION seconds each.
#
# - rule-backed: `serve --external-rules` on a real Prometheus backfilled by promtool with a `queue_depth` gauge
#   (3 series in namespace demo), a selector picking one series. No Kubernetes API exists on this machine, so serve's
#   kubeconfig points at a closed port: the built-in metric is not served by that process, the rule-backed one is
#   (rules are evaluated on every tick whatever the Kubernetes state).
# - built-in: `demo`'s smart_cpu_utilization for one deployment, the read hack/bench-serve.sh measures.
#
# Prints req/s, p50 and p99 for both. Neither read touches Prometheus: the rule-backed one answers from the table
# the last tick filled (prometheus-adapter would send one PromQL query per read).
#
#   hack/bench-rules.sh               # 20 s per target
#   DURATION=5 hack/bench-rules.sh    # quicker, noisier
#   BIN=/tmp/smart-autoscaler hack/bench-rules.sh   # that binary, no build
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-20}
CONNECTIONS=${CONNECTIONS:-64}

command -v oha >/dev/null || cargo install oha --locked
command -v promtool >/dev/null && command -v prometheus >/dev/null || hack/install-tools.sh
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }

# BIN=path/to/smart-autoscaler uses that release binary instead of building one.
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked -q
  BIN=${CARGO_TARGET_DIR:-target}/release/smart-autoscaler
fi
"$BIN" serve --help | grep -q -- --external-rules || { echo "$BIN has no --external-rules" >&2; exit 1; }
work=$(mktemp -d)
cleanup() { kill "${demo_pid:-}" "${serve_pid:-}" "${prom_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Prometheus: queue_depth gauges for the last 40 minutes and the next 10, every 15 s.
now=$(date +%s)
{
  echo '# TYPE queue_depth gauge'
  for q in orders:42 returns:5.5 invoices:17; do
    for ((t = now - 2400; t <= now + 600; t += 15)); do
      echo "queue_depth{namespace=\"demo\",queue=\"${q%%:*}\",job=\"mq\"} ${q##*:} $t"
    done
  done
  echo '# EOF'
} >"$work/data.om"
promtool tsdb create-blocks-from openmetrics "$work/data.om" "$work/tsdb" >/dev/null
printf 'global:\n  scrape_interval: 1h\n' >"$work/prometheus.yml"
prom_port=$(free_port)
prometheus --storage.tsdb.path="$work/tsdb" --web.listen-address="127.0.0.1:$prom_port" \
  --config.file="$work/prometheus.yml" --storage.tsdb.retention.time=10y >/dev/null 2>"$work/prometheus.log" &
prom_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$prom_port/-/ready" >/dev/null && break; sleep 0.2; done

cat >"$work/rules.yaml" <<'RULES'
externalRules:
- seriesQuery: 'queue_depth{job="mq"}'
  metricsQuery: sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)
  selectorLabels: [queue]
  resources:
    overrides:
      namespace: {resource: namespace}
RULES
"$BIN" certs --san 127.0.0.1 --out-dir "$work/certs" >/dev/null
cat >"$work/kubeconfig" <<KUBE
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: none, user: {token: none}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
KUBE
"$BIN" serve --bind-address 127.0.0.1 --secure-port 0 --metrics-port 0 --interval 5s \
  --prometheus-url "http://127.0.0.1:$prom_port" --kubeconfig "$work/kubeconfig" \
  --tls-cert-file "$work/certs/tls.crt" --tls-key-file "$work/certs/tls.key" --data-dir "$work/serve" \
  --external-rules "$work/rules.yaml" --log warn >"$work/serve.out" 2>"$work/serve.err" &
serve_pid=$!
"$BIN" demo --bind-address 127.0.0.1 --secure-port 0 --metrics-port 0 --data-dir "$work/demo" --log warn \
  >"$work/demo.out" 2>"$work/demo.err" &
demo_pid=$!
for _ in $(seq 100); do grep -q '^listening' "$work/serve.out" "$work/demo.out" 2>/dev/null && break; sleep 0.1; done
for _ in $(seq 100); do grep -q '^listening' "$work/demo.out" 2>/dev/null && grep -q '^listening' "$work/serve.out" && break; sleep 0.1; done
serve_secure=$(grep -o 'secure=[0-9.:]*' "$work/serve.out" | cut -d= -f2)
demo_secure=$(grep -o 'secure=[0-9.:]*' "$work/demo.out" | cut -d= -f2)
demo_metrics=$(grep -o 'metrics=[0-9.:]*' "$work/demo.out" | cut -d= -f2)

rule_url="https://$serve_secure/apis/external.metrics.k8s.io/v1beta1/namespaces/demo/queue_depth?labelSelector=queue%3Dorders"
builtin_url="https://$demo_secure/apis/external.metrics.k8s.io/v1beta1/namespaces/demo/smart_cpu_utilization?labelSelector=deployment%3Dapi-service"
for _ in $(seq 150); do curl -sf --cacert "$work/certs/ca.crt" "$rule_url" >/dev/null && break; sleep 0.2; done
for _ in $(seq 150); do curl -sf "http://$demo_metrics/readyz" >/dev/null && break; sleep 0.2; done
echo "rule-backed: $(curl -sf --cacert "$work/certs/ca.crt" "$rule_url")"
echo "built-in:    $(curl -sf --cacert "$work/demo/certs/ca.crt" "$builtin_url")"

run() {
  local url=$1 ca=$2 json
  json=$(oha --no-tui --output-format json -z "${DURATION}s" -c "$CONNECTIONS" --cacert "$ca" "$url")
  python3 -c '
import json, sys
r = json.load(sys.stdin)
codes = r.get("statusCodeDistribution", {})
non2xx = sum(n for c, n in codes.items() if not c.startswith("2"))
p = r["latencyPercentiles"]
print("%.0f %.3f %.3f %d" % (r["summary"]["requestsPerSec"], p["p50"] * 1000, p["p99"] * 1000, non2xx))
' <<<"$json"
}
# Instant queries Prometheus has answered: the ticks' rule evaluations only, however many reads are made.
queries() { curl -sf "http://127.0.0.1:$prom_port/metrics" | awk '/^prometheus_http_requests_total\{.*handler="\/api\/v1\/query"/ {n += $2} END {print n + 0}'; }
q_before=$(queries); t_before=$(date +%s)
read -r r_rps r_p50 r_p99 r_err < <(run "$rule_url" "$work/certs/ca.crt")
q_after=$(queries); t_after=$(date +%s)
read -r b_rps b_p50 b_p99 b_err < <(run "$builtin_url" "$work/demo/certs/ca.crt")

echo
echo "external metric read over TLS: $CONNECTIONS connections, ${DURATION}s each, oha $(oha --version | awk '{print $2}'), $(nproc) cores, $(date -u +%F)"
printf '%-24s %12s %10s %10s %8s\n' metric "req/s" "p50 ms" "p99 ms" non2xx
printf '%-24s %12.0f %10.3f %10.3f %8s\n' "rule-backed (serve)" "$r_rps" "$r_p50" "$r_p99" "$r_err"
printf '%-24s %12.0f %10.3f %10.3f %8s\n' "built-in (demo)" "$b_rps" "$b_p50" "$b_p99" "$b_err"
echo "Prometheus instant queries during the ${DURATION}s rule-backed run: $((q_after - q_before)) in $((t_after - t_before))s (5s interval; $(awk -v r="$r_rps" -v d="$DURATION" 'BEGIN {printf "%.0f", r * d}') reads)"
awk -v a="$r_rps" -v b="$b_rps" -v c="$r_p99" -v d="$b_p99" 'BEGIN { printf "ratio                    throughput %.2fx built-in, p99 %.2fx built-in\n", a/b, c/d }'
