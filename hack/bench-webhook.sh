#!/usr/bin/env bash
# Admission webhook benchmark: AdmissionReview POSTs over TLS to the release binary in demo mode, and, in the
# same run, nginx answering the very same response bytes (`return 200 '...'`) over TLS with the same certificate.
# Load generator: oha, CONNECTIONS connections for DURATION each, after a short warm-up, in two phases:
#   saturation  closed loop, as fast as each target answers: throughput. Latency here is mostly queueing
#               (about CONNECTIONS / throughput), so p99 says more about the machine than the handler.
#   fixed rate  RATE reviews/s over the same connections, with oha's coordinated-omission correction: latency
#               at a load far above any apiserver's admission rate (Deployment writes are a few per second).
# Prints reviews per second, p50, p99 and our/nginx ratios. Aim: p99 under 5 ms.
#
#   hack/bench-webhook.sh                                   # 15 s per target and phase, 32 connections
#   DURATION=5s hack/bench-webhook.sh                       # quicker, noisier
#   RATE=5000 hack/bench-webhook.sh                         # another fixed rate
#   FIXTURE=small-request-create.json hack/bench-webhook.sh # another review from tests/fixtures/admission
#   BIN=/path/to/baseline/smart-autoscaler hack/bench-webhook.sh   # measure another build, e.g. a baseline
#
# Run it on an otherwise idle machine: the server, nginx and oha share its cores.
# Everything listens on 127.0.0.1 only; every process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-15s}
WARMUP=${WARMUP:-2s}
CONNECTIONS=${CONNECTIONS:-32}
RATE=${RATE:-2000}
FIXTURE=${FIXTURE:-java-create.json}
P99_AIM_MS=5

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
missing=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v curl >/dev/null || missing+=(curl)
command -v jq >/dev/null || missing+=(jq)
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if ! command -v oha >/dev/null; then
  echo "installing oha (cargo install oha --locked; takes a few minutes)" >&2
  cargo install oha --locked -q
fi

if [ -z "${BIN:-}" ]; then   # BIN=path/to/smart-autoscaler measures that build (e.g. a baseline) instead
  cargo build --release --locked -q
  BIN=${CARGO_TARGET_DIR:-target}/release/smart-autoscaler
fi
work=$(mktemp -d)
cleanup() { kill "${demo_pid:-}" "${nginx_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$BIN" demo --bind-address 127.0.0.1 --secure-port 0 --metrics-port 0 --data-dir "$work/demo" --log warn >"$work/demo.out" 2>"$work/demo.err" &
demo_pid=$!
for _ in $(seq 100); do grep -q '^listening' "$work/demo.out" 2>/dev/null && break; sleep 0.1; done
secure=$(grep -o 'secure=[0-9.:]*' "$work/demo.out" | cut -d= -f2)
metrics=$(grep -o 'metrics=[0-9.:]*' "$work/demo.out" | cut -d= -f2)
[ -n "$secure" ] || { echo "demo did not start:" >&2; cat "$work/demo.err" >&2; exit 1; }
for _ in $(seq 100); do curl -sf "http://$metrics/readyz" >/dev/null && break; sleep 0.1; done

# The request: a realistic AdmissionReview, compacted as the apiserver sends it.
path='/mutate/deployments?timeout=5s'
ca="$work/demo/certs/ca.crt"
jq -c . "tests/fixtures/admission/$FIXTURE" > "$work/review.json"
curl -sf --cacert "$ca" -H 'Content-Type: application/json' --data-binary "@$work/review.json" \
  "https://$secure$path" -o "$work/response.json"
jq -e '.response.allowed == true' "$work/response.json" >/dev/null || { echo "unexpected webhook answer" >&2; cat "$work/response.json" >&2; exit 1; }
patched=$(jq -r 'if .response.patch then "patched" else "no patch" end' "$work/response.json")

# nginx returns the same bytes from a quoted string; refuse characters that would need nginx escaping.
if grep -q "['\\\$]" "$work/response.json"; then echo "response contains ' \\ or \$; cannot embed it in nginx.conf" >&2; exit 1; fi
nginx_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<CONF
worker_processes $(nproc);
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  client_max_body_size 4m;
  server {
    listen 127.0.0.1:$nginx_port ssl;
    ssl_certificate $work/demo/certs/tls.crt;
    ssl_certificate_key $work/demo/certs/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    keepalive_requests 1000000;
    location / {
      default_type application/json;
      return 200 '$(cat "$work/response.json")';
    }
  }
}
CONF
"$NGINX" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" &
nginx_pid=$!
for _ in $(seq 100); do curl -sf --cacert "$ca" -o /dev/null -X POST --data-binary "@$work/review.json" "https://127.0.0.1:$nginx_port$path" && break; sleep 0.1; done
curl -sf --cacert "$ca" -X POST -H 'Content-Type: application/json' --data-binary "@$work/review.json" \
  "https://127.0.0.1:$nginx_port$path" -o "$work/nginx-response.json"
cmp -s "$work/response.json" "$work/nginx-response.json" || { echo "nginx does not answer the same bytes" >&2; exit 1; }

# oha's JSON report: requests/s, p50/p99 in ms, and everything that was not a 200 (requests still in flight
# when the duration ends are reported as "aborted due to deadline" and are not failures).
run() {
  local url=$1 out="$work/oha.json"; shift
  oha --no-tui --cacert "$ca" -c "$CONNECTIONS" -z "$WARMUP" -m POST -H 'Content-Type: application/json' \
    -D "$work/review.json" --output-format quiet "$@" "$url" >/dev/null
  oha --no-tui --cacert "$ca" -c "$CONNECTIONS" -z "$DURATION" -m POST -H 'Content-Type: application/json' \
    -D "$work/review.json" --output-format json "$@" "$url" > "$out"
  jq -r '[.summary.requestsPerSec, .metrics.latency_ms.p50, .metrics.latency_ms.p99,
          (([.statusCodeDistribution | to_entries[] | select(.key != "200") | .value] | add // 0)
           + ([.errorDistribution | to_entries[] | select(.key | test("aborted due to deadline") | not) | .value] | add // 0))]
         | @tsv' "$out"
}
ours="https://$secure$path"
theirs="https://127.0.0.1:$nginx_port$path"
read -r s_rps s_p50 s_p99 s_err < <(run "$ours")
read -r n_rps n_p50 n_p99 n_err < <(run "$theirs")
read -r rs_rps rs_p50 rs_p99 rs_err < <(run "$ours" -q "$RATE" --latency-correction)
read -r rn_rps rn_p50 rn_p99 rn_err < <(run "$theirs" -q "$RATE" --latency-correction)

echo
echo "webhook benchmark: POST $FIXTURE ($(wc -c <"$work/review.json") B, $patched) over TLS, $CONNECTIONS connections, $DURATION per run, oha $(oha --version | cut -d' ' -f2), $(nproc) cores, load average $(cut -d' ' -f1 /proc/loadavg) at end, $(date -u +%F)"
row() { printf '%-12s %-18s %12.0f %10.3f %10.3f %8s\n' "$@"; }
printf '%-12s %-18s %12s %10s %10s %8s\n' phase target "reviews/s" "p50 ms" "p99 ms" non200
row saturation smart-autoscaler "$s_rps" "$s_p50" "$s_p99" "$s_err"
row saturation nginx "$n_rps" "$n_p50" "$n_p99" "$n_err"
row "$RATE/s" smart-autoscaler "$rs_rps" "$rs_p50" "$rs_p99" "$rs_err"
row "$RATE/s" nginx "$rn_rps" "$rn_p50" "$rn_p99" "$rn_err"
awk -v a="$s_rps" -v b="$n_rps" -v c="$s_p99" -v d="$n_p99" -v e="$rs_p99" -v f="$rn_p99" -v aim="$P99_AIM_MS" -v rate="$RATE" 'BEGIN {
  printf "ratio        saturation: throughput %.2fx nginx, p99 %.2fx nginx; at %d/s: p99 %.2fx nginx\n", a/b, c/d, rate, e/f
  printf "aim          p99 < %d ms: saturation %s (%.3f ms), at %d/s %s (%.3f ms)\n", aim, (c < aim ? "met" : "MISSED"), c, rate, (e < aim ? "met" : "MISSED"), e
}'
