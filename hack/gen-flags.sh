#!/usr/bin/env bash
# Prints docs/flags.md, the flag reference, from the binary's own --help. Regenerate it after adding or changing a
# flag (tests/readme.rs runs this script on the test build and fails while the file differs):
#
#   hack/gen-flags.sh > docs/flags.md                 # builds the debug binary first
#   hack/gen-flags.sh path/to/smart-autoscaler        # or renders that binary's help
#
# The help is rendered in an empty environment at 120 columns, so a SMART_AUTOSCALER_* variable set in your shell
# (clap would print its value) or your terminal's width cannot change the file.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ge 1 ]; then
  BIN=$1
else
  cargo build --locked -q >&2
  BIN=${CARGO_TARGET_DIR:-target}/debug/smart-autoscaler
fi
help() { env -i COLUMNS=120 "$BIN" "$@" -h; }
cat <<'HEADER'
# Flags

Every flag also reads an environment variable `SMART_AUTOSCALER_<FLAG_IN_CAPS>`; `smart-autoscaler <command>
--help` prints them with their defaults. This page is generated: run `hack/gen-flags.sh > docs/flags.md` after a
flag changes; `tests/readme.rs` fails while it differs from the binary's help.

HEADER
# The subcommands, in the order `-h` lists them (clap's own `help` aside).
commands=$(help | sed -n '/^Commands:/,/^$/p' | awk 'NR > 1 && NF { print $1 }' | grep -vx help)
for cmd in "" $commands; do
  if [ -z "$cmd" ]; then echo "## Global"; else echo "## \`$cmd\`"; fi
  echo
  echo '```text'
  # shellcheck disable=SC2086
  help $cmd | sed -n '/^Options:/,$p'
  echo '```'
  echo
done | sed '$d'
