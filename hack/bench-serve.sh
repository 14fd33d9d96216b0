#!/usr/bin/env bash
# Serving benchmark: the metric GET over TLS against the release binary in demo mode, and, in the same run,
# nginx serving the very same JSON bytes over TLS with the same certificate. Load generator: wrk (Debian),
# 64 connections for DURATION seconds each. Prints req/s, p50 and p99 for both and our/nginx ratios.
#
#   hack/bench-serve.sh            # 20 s per target
#   DURATION=5 hack/bench-serve.sh # quicker, noisier
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-20}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release --locked -q
BIN=target/release/smart-autoscaler
work=$(mktemp -d)
cleanup() { kill "${demo_pid:-}" "${nginx_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$BIN" demo --bind-address 127.0.0.1 --secure-port 0 --metrics-port 0 --data-dir "$work/demo" --log warn >"$work/demo.out" 2>"$work/demo.err" &
demo_pid=$!
for _ in $(seq 100); do grep -q '^listening' "$work/demo.out" 2>/dev/null && break; sleep 0.1; done
secure=$(grep -o 'secure=[0-9.:]*' "$work/demo.out" | cut -d= -f2)
metrics=$(grep -o 'metrics=[0-9.:]*' "$work/demo.out" | cut -d= -f2)
for _ in $(seq 100); do curl -sf "http://$metrics/readyz" >/dev/null && break; sleep 0.1; done

path='/apis/external.metrics.k8s.io/v1beta1/namespaces/demo/smart_cpu_utilization?labelSelector=deployment%3Dapi-service'
ca="$work/demo/certs/ca.crt"
body=$(curl -sf --cacert "$ca" "https://$secure$path")

nginx_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/nginx"
# nginx workers run as an unprivileged user when started as root: let them read the body.
chmod 755 "$work" "$work/nginx"
printf '%s' "$body" > "$work/nginx/body.json"
cat > "$work/nginx/nginx.conf" <<CONF
worker_processes 2;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  server {
    listen 127.0.0.1:$nginx_port ssl;
    ssl_certificate $work/demo/certs/tls.crt;
    ssl_certificate_key $work/demo/certs/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    keepalive_requests 1000000;
    root $work/nginx;
    location / {
      default_type application/json;
      try_files /body.json =404;
    }
  }
}
CONF
"$NGINX" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" &
nginx_pid=$!
for _ in $(seq 100); do curl -sf --cacert "$ca" "https://localhost:$nginx_port$path" -o /dev/null --resolve "localhost:$nginx_port:127.0.0.1" && break; sleep 0.1; done
nbody=$(curl -s --cacert "$ca" "https://127.0.0.1:$nginx_port$path")
[ "$nbody" = "$body" ] || { echo "nginx does not serve the same bytes" >&2; cat "$work/nginx/error.log" >&2; exit 1; }

# wrk --latency prints percentiles; convert them to milliseconds.
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.3f", v}'; }
run() {
  local url=$1 out
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$url")
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out" | to_ms)
  p99=$(awk '$1=="99%" {print $2}' <<<"$out" | to_ms)
  errs=$(awk '/Non-2xx/ {print $4}' <<<"$out"); errs=${errs:-0}
  echo "$rps $p50 $p99 $errs"
}
read -r s_rps s_p50 s_p99 s_err < <(run "https://$secure$path")
read -r n_rps n_p50 n_p99 n_err < <(run "https://127.0.0.1:$nginx_port$path")

echo
echo "serving benchmark: GET metric over TLS, $CONNECTIONS connections, ${DURATION}s each, wrk -t$THREADS, $(nproc) cores, $(date -u +%F)"
printf '%-18s %12s %10s %10s %8s\n' target "req/s" "p50 ms" "p99 ms" non2xx
printf '%-18s %12.0f %10.3f %10.3f %8s\n' smart-autoscaler "$s_rps" "$s_p50" "$s_p99" "$s_err"
printf '%-18s %12.0f %10.3f %10.3f %8s\n' nginx "$n_rps" "$n_p50" "$n_p99" "$n_err"
awk -v a="$s_rps" -v b="$n_rps" -v c="$s_p99" -v d="$n_p99" 'BEGIN { printf "ratio              throughput %.2fx nginx, p99 %.2fx nginx (aim: >= 0.8x, <= 2x)\n", a/b, c/d }'
