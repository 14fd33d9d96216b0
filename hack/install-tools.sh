#!/usr/bin/env bash
# Installs the external tools the tests use, if missing: kubectl (real Kubernetes client), prometheus and
# promtool (Debian package `prometheus`), umoci (builds and unpacks the OCI image in tests/image.rs),
# prometheus-alertmanager (tests/alerting.rs starts a real one), rsvg-convert (package librsvg2-bin: renders
# simulate's --plot SVG in a test, as a real SVG consumer), chromium (tests/dashboard.rs loads the dashboard in
# headless Chromium), unshare and mount (util-linux and mount: tests/crash.rs puts serve's data directory on a
# full tmpfs in a private mount namespace; that test needs root).
# Idempotent; needs root (or sudo) for apt-get.
set -euo pipefail

need=()
command -v kubectl >/dev/null 2>&1 || need+=(kubectl)
{ command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; } || need+=(prometheus)
command -v umoci >/dev/null 2>&1 || need+=(umoci)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v rsvg-convert >/dev/null 2>&1 || need+=(librsvg2-bin)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
command -v mount >/dev/null 2>&1 || need+=(mount)
[ "${#need[@]}" -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "hack/install-tools.sh: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
for tool in kubectl promtool prometheus umoci prometheus-alertmanager rsvg-convert chromium unshare mount; do
  command -v "$tool" >/dev/null 2>&1 || { echo "hack/install-tools.sh: $tool still missing after install" >&2; exit 1; }
done
