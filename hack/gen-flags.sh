#!/usr/bin/env bash
# Prints the README's flag reference from the binary's own --help (run after adding a flag; a test checks it).
set -euo pipefail
BIN=${1:-target/debug/smart-autoscaler}
for cmd in "" serve demo certs simulate; do
  if [ -z "$cmd" ]; then echo "### Global"; else echo "### \`$cmd\`"; fi
  echo
  echo '```text'
  # shellcheck disable=SC2086
  COLUMNS=120 "$BIN" $cmd -h | sed -n '/^Options:/,$p'
  echo '```'
  echo
done
