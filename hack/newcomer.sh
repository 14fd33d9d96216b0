#!/usr/bin/env bash
# First contact, as a newcomer would make it: clones this repository into a fresh directory, runs the README's
# first command there verbatim (`cargo run --release -- demo`, taken from the README, not from this script),
# then runs every command the demo prints and every example command of the README's "Try it" section, checks
# each exits 0 with a non-empty answer (JSON where the answer is JSON), and stops the demo with SIGINT, which
# must end it within 10 s with status 0. The README's second command (hack/test.sh) is what CI runs; FULL=1 runs
# it in the clone too.
#   hack/newcomer.sh            # reuses ${CARGO_TARGET_DIR:-target} of this checkout for the build, if set
#   FULL=1 hack/newcomer.sh
# Needs the default ports 6443 and 8080 free (the README's commands use them). Prints one line per check.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
hack_dir=$repo/hack
"$hack_dir/install-tools.sh"
work=$(mktemp -d)
demo_pid=""
cleanup() { [ -n "$demo_pid" ] && kill "$demo_pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
git clone -q "$repo" "$work/clone"
cd "$work/clone"

# The README's fenced block under "Try it": its first line starts the demo, its second runs the tests.
block=$(awk '/^## Try it/{s=1} s && /^```sh/{b=1; next} b && /^```/{exit} b{print}' README.md)
demo_cmd=$(sed -n 1p <<<"$block" | sed 's/ *#.*//')
test_cmd=$(sed -n 2p <<<"$block" | sed 's/ *#.*//')
[ "$demo_cmd" = "cargo run --release -- demo" ] || { echo "README's first command changed: $demo_cmd" >&2; exit 1; }
echo "== $demo_cmd   (in a fresh clone: $work/clone)"
fails=0
check() { # description, command...
  local desc=$1; shift
  local out
  if out=$("$@" 2>&1) && [ -n "$out" ]; then
    echo "ok    $desc"
  else
    echo "FAIL  $desc: $out" | head -c 600; echo
    fails=$((fails + 1))
  fi
}
bash -c "$demo_cmd" >"$work/demo.out" 2>"$work/demo.err" &
demo_pid=$!
for _ in $(seq 1200); do grep -q '^Try:' "$work/demo.out" 2>/dev/null && break; sleep 1; done
grep -q '^Try:' "$work/demo.out" || { echo "demo printed no 'Try:' block:" >&2; tail -20 "$work/demo.err" >&2; exit 1; }
for _ in $(seq 100); do curl -sf http://127.0.0.1:8080/readyz >/dev/null && break; sleep 0.2; done

# Every command the demo printed.
while IFS= read -r line; do
  cmd=$(sed 's/^ *//' <<<"$line")
  case "$cmd" in
    kubectl*get\ --raw*) check "demo printed: $cmd" bash -c "$cmd | jq -e . >/dev/null && echo json" ;;
    kubectl*|curl*) check "demo printed: $cmd" bash -c "$cmd" ;;
  esac
done < <(sed -n '/^Try:/,$p' "$work/demo.out")

# The README's example block after "prints ready-to-paste commands" (continuation lines joined).
examples=$(awk '/ready-to-paste commands/{s=1} s && /^```sh/{b=1; next} b && /^```/{exit} b{print}' README.md |
  sed ':a;/\\$/{N;s/\\\n *//;ba}' | sed 's/ *# .*//')
while IFS= read -r cmd; do
  [ -n "$cmd" ] || continue
  check "README: $cmd" bash -c "$cmd"
done <<<"$examples"

# Clean shutdown on SIGINT (Ctrl-C).
kill -INT "$demo_pid"
status=0
for _ in $(seq 100); do kill -0 "$demo_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$demo_pid" 2>/dev/null; then
  echo "FAIL  demo still running 10 s after SIGINT"; fails=$((fails + 1))
else
  wait "$demo_pid" || status=$?
  # cargo run forwards the signal; the demo exits 0 on a clean shutdown.
  if [ "$status" -eq 0 ]; then echo "ok    demo stopped on SIGINT (status 0)"; else echo "FAIL  demo exit status $status after SIGINT"; fails=$((fails + 1)); fi
fi
demo_pid=""

if [ "${FULL:-0}" = 1 ]; then
  echo "== $test_cmd"
  bash -c "$test_cmd" && echo "ok    $test_cmd" || { echo "FAIL  $test_cmd"; fails=$((fails + 1)); }
fi
echo "newcomer: $fails failed"
[ "$fails" -eq 0 ]
