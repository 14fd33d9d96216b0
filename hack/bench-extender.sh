#!/usr/bin/env bash
# Scheduler extender benchmark: filter and prioritize latency and request/response sizes for 5,000 candidate
# nodes, in both node-cache modes.
#
# 1. End to end: the release binary in demo mode, driven by oha over TLS (HTTP/2, like kube-scheduler's Go
#    client), one connection and one request at a time, because kube-scheduler calls the extender serially from
#    its scheduling cycle. The demo knows only its 5 nodes, so the other 4,995 names are unknown and pass through
#    fail-open: this measures TLS, HTTP, body reading, JSON decoding, the per-node lookup and JSON encoding at
#    full size, but scores 4,995 nodes with the neutral rule instead of the measured one.
# 2. The pure core in-process (`cargo bench --bench extender`, benches/extender.rs): decode, decide and
#    encode with all 5,000 nodes known, so every node goes through the real filter and scoring arithmetic.
#
#   hack/bench-extender.sh                            # 1,000 requests per names-mode row, 40 per objects-mode row
#   REQUESTS=300 OBJECT_REQUESTS=20 hack/bench-extender.sh
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${NODES:-5000}
REQUESTS=${REQUESTS:-1000}
OBJECT_REQUESTS=${OBJECT_REQUESTS:-40}

command -v oha >/dev/null || cargo install oha --locked
for tool in python3 curl; do command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }; done

cargo build --release -q --bin smart-autoscaler
BIN=${CARGO_TARGET_DIR:-target}/release/smart-autoscaler
work=$(mktemp -d)
cleanup() { [ -n "${demo_pid:-}" ] && kill "$demo_pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# Node objects as kube-scheduler sends them with nodeCacheCapable: false are ~6 KB each, so 5,000 of them need a
# larger body limit than the 3 MiB default. `--interval 1h` keeps the snapshot fresh and fixed during the run.
"$BIN" demo --bind-address 127.0.0.1 --secure-port 0 --metrics-port 0 --data-dir "$work/demo" \
  --interval 1h --speed 1 --max-body-bytes $((64 * 1024 * 1024)) >"$work/demo.out" 2>"$work/demo.err" &
demo_pid=$!
for _ in $(seq 100); do grep -q '^listening' "$work/demo.out" 2>/dev/null && break; sleep 0.1; done
secure=$(grep -o 'secure=[0-9.:]*' "$work/demo.out" | cut -d= -f2)
metrics=$(grep -o 'metrics=[0-9.:]*' "$work/demo.out" | cut -d= -f2)
for _ in $(seq 100); do curl -sf "http://$metrics/readyz" >/dev/null && break; sleep 0.1; done
ca="$work/demo/certs/ca.crt"

# Request bodies from the test fixtures: the demo's 5 nodes first, then node-00005.. up to $NODES.
python3 - "$NODES" "$work" <<'PY'
import copy, json, sys
n, out = int(sys.argv[1]), sys.argv[2]
fx = "tests/fixtures/extender/"
names_args = json.load(open(fx + "args-node-names.json"))
objects_args = json.load(open(fx + "args-node-objects.json"))
known = names_args["NodeNames"]
names = known + ["node-%05d" % i for i in range(len(known), n)]
template = objects_args["Nodes"]["items"][0]
items = list(objects_args["Nodes"]["items"])
for name in names[len(items):]:
    node = copy.deepcopy(template)
    node["metadata"]["name"] = name
    node["metadata"]["labels"]["kubernetes.io/hostname"] = name
    items.append(node)
# Compact, like Go's json.Marshal.
sep = (",", ":")
json.dump({"Pod": names_args["Pod"], "Nodes": None, "NodeNames": names}, open(out + "/names.json", "w"), separators=sep)
json.dump({"Pod": names_args["Pod"], "Nodes": {"metadata": {}, "items": items}, "NodeNames": None},
          open(out + "/objects.json", "w"), separators=sep)
PY

rows=()
for mode in names objects; do
  body="$work/$mode.json"
  requests=$REQUESTS; [ "$mode" = objects ] && requests=$OBJECT_REQUESTS
  for verb in filter prioritize; do
    url="https://$secure/scheduler/$verb"
    # One checked call: the answer must cover every node, and gives the response size.
    curl -sf --http2 --cacert "$ca" -H 'Content-Type: application/json' --data-binary "@$body" "$url" -o "$work/answer.json"
    python3 - "$work/answer.json" "$verb" "$mode" "$NODES" <<'PY'
import json, sys
answer, verb, mode, n = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], int(sys.argv[4])
if verb == "prioritize":
    count = len(answer)
    assert all(0 <= p["Score"] <= 10 for p in answer)
else:
    assert answer["Error"] == "", answer["Error"]
    count = len(answer["NodeNames"]) if mode == "names" else len(answer["Nodes"]["items"])
    count += len(answer["FailedNodes"])
assert count == n, (verb, mode, count)
PY
    response_bytes=$(stat -c %s "$work/answer.json")
    oha --no-tui --http2 -c 1 -n "$requests" -m POST -T application/json -D "$body" --cacert "$ca" \
      --output-format json "$url" >"$work/oha.json"
    rows+=("$(python3 - "$work/oha.json" "$mode" "$verb" "$(stat -c %s "$body")" "$response_bytes" "$requests" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
mode = {"names": "nodeCacheCapable=true", "objects": "nodeCacheCapable=false"}[sys.argv[2]]
codes = r.get("statusCodeDistribution", {})
ok = codes.get("200", 0)
p = r["latencyPercentiles"]
print("%-22s %-10s %13s %14s %6d/%-6s %8.3f %8.3f %8.3f %8.0f" % (
    mode, sys.argv[3], sys.argv[4], sys.argv[5], ok, sys.argv[6],
    p["p50"] * 1000, p["p99"] * 1000, r["summary"]["slowest"] * 1000, r["summary"]["requestsPerSec"]))
PY
)")
  done
done
kill "$demo_pid"; wait "$demo_pid" 2>/dev/null || true; demo_pid=

echo
echo "extender benchmark: $NODES candidate nodes (5 known to the demo, the rest unknown: fail-open pass-through),"
echo "oha over TLS + HTTP/2, 1 connection, 1 request in flight, release build, $(nproc) cores, $(date -u +%F)"
printf '%-22s %-10s %13s %14s %13s %8s %8s %8s %8s\n' mode verb "request bytes" "response bytes" "200/requests" "p50 ms" "p99 ms" "max ms" "req/s"
printf '%s\n' "${rows[@]}"
echo
cargo bench -q --bench extender
echo "aim: p99 < 5 ms with nodeCacheCapable=true"
