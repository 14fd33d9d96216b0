#!/usr/bin/env bash
# Fault suite at full size (issue 19, item 4): runs the fault tests against the real `serve` binary with the big
# counts and prints one table of their figures (fault | what was measured | figure | bound | pass), then how
# long each part took.
#   - tests/faults.rs: Prometheus answering 5xx, garbage, hanging 30 s, killed and restarted (the fail-safe
#     and the recovery), the stand-in Kubernetes API killed and restarted mid-watch, and the earlier source
#     faults;
#   - tests/crash.rs: `kill -9` of serve under load FAULTS_KILLS times (default here 100), the data directory
#     on a full tmpfs (needs root: `unshare -m` and `mount`), and a soak of FAULTS_SOAK_SECS (default here 600)
#     at FAULTS_SOAK_RATE external-metric reads a second (200) plus /metrics scrapes;
#   - tests/fuzz.rs, when it exists: malformed input on every surface, FUZZ_CASES cases each (100000).
# Every test prints `FIGURE|<fault>|<measure>|<value>|<bound>|<ok|FAIL>` lines with --nocapture; the full logs
# are kept in $FAULTS_LOG_DIR (default: a temporary directory, named at the end).
#
#   hack/bench-faults.sh                          # release build, 100 kills, 600 s soak
#   FAULTS_PROFILE=debug hack/bench-faults.sh     # the debug build (faster to build, slower to run)
#   FAULTS_KILLS=20 FAULTS_SOAK_SECS=120 hack/bench-faults.sh
set -euo pipefail
cd "$(dirname "$0")/.."

export FAULTS_KILLS="${FAULTS_KILLS:-100}"
export FAULTS_SOAK_SECS="${FAULTS_SOAK_SECS:-600}"
export FAULTS_SOAK_RATE="${FAULTS_SOAK_RATE:-200}"
export FUZZ_CASES="${FUZZ_CASES:-100000}"
profile="${FAULTS_PROFILE:-release}"
log_dir="${FAULTS_LOG_DIR:-$(mktemp -d -t bench-faults.XXXXXX)}"
mkdir -p "$log_dir"

case "$profile" in
  release) profile_flag=(--release) ;;
  debug) profile_flag=() ;;
  *) echo "FAULTS_PROFILE must be release or debug, not $profile" >&2; exit 2 ;;
esac

for tool in prometheus promtool unshare mount; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (hack/install-tools.sh installs the tools)" >&2; exit 1; }
done

tests=(faults crash)
[[ -f tests/fuzz.rs ]] && tests+=(fuzz)

timings=()
status=0
start=$SECONDS
echo "building the fault tests ($profile) ..."
cargo test --locked "${profile_flag[@]}" --no-run $(printf -- '--test %s ' "${tests[@]}") >"$log_dir/build.log" 2>&1 \
  || { cat "$log_dir/build.log" >&2; exit 1; }
timings+=("build ($profile)|$((SECONDS - start))")

for t in "${tests[@]}"; do
  echo "running tests/$t.rs (log: $log_dir/$t.log) ..."
  start=$SECONDS
  if ! cargo test --locked "${profile_flag[@]}" --test "$t" -- --nocapture >"$log_dir/$t.log" 2>&1; then
    status=1
    echo "tests/$t.rs FAILED (see $log_dir/$t.log)" >&2
  fi
  timings+=("tests/$t.rs|$((SECONDS - start))")
done

echo
echo "Fault suite: $profile build, FAULTS_KILLS=$FAULTS_KILLS, FAULTS_SOAK_SECS=$FAULTS_SOAK_SECS, FAULTS_SOAK_RATE=$FAULTS_SOAK_RATE, FUZZ_CASES=$FUZZ_CASES"
echo
echo "| fault | what was measured | figure | bound | pass |"
echo "|---|---|---|---|---|"
for t in "${tests[@]}"; do
  grep -h '^FIGURE|' "$log_dir/$t.log" | sed 's/^FIGURE|//' | awk -F'|' '{ printf "| %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5 }'
done
if grep -hq '^FIGURE|.*|FAIL$' "$log_dir"/*.log; then status=1; fi
echo
echo "| part | seconds |"
echo "|---|---|"
for row in "${timings[@]}"; do
  echo "| ${row%%|*} | ${row##*|} |"
done
echo
echo "logs: $log_dir"
exit "$status"
