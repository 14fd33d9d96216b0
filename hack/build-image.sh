#!/usr/bin/env bash
# Builds the smart-autoscaler OCI image on a machine with no container engine and no registry access: the image
# is assembled from scratch with umoci (Debian package) from the release binary, exactly the shared libraries
# it links (from ldd, with the ELF interpreter), CA certificates, and a non-root user. The result is the same
# image the Dockerfile describes (binary at /usr/local/bin, user 65532, entrypoint the binary, `serve` its
# default command, ports 6443 and 8080).
#   hack/build-image.sh                  # release build; writes target/image/
#   BIN=path/to/binary hack/build-image.sh   # package this binary instead (tests/image.rs does)
#   OUT=dir TAG=0.1.0 hack/build-image.sh
# Writes OUT/oci (an OCI image layout, tag TAG) and OUT/smart-autoscaler-TAG.oci.tar (the same as an
# oci-archive: `skopeo copy oci-archive:OUT/smart-autoscaler-TAG.oci.tar docker://REGISTRY/smart-autoscaler:TAG`,
# or `podman load -i`).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-target/image}
TAG=${TAG:-$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)}

if ! command -v umoci >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "hack/build-image.sh: installing umoci" >&2
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends umoci >/dev/null
fi
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked --bin smart-autoscaler
  BIN=${CARGO_TARGET_DIR:-target}/release/smart-autoscaler
fi
[ -x "$BIN" ] || { echo "hack/build-image.sh: no executable at $BIN" >&2; exit 1; }

rm -rf "$OUT"; mkdir -p "$OUT"
layout="$OUT/oci"; bundle="$OUT/bundle"
rootless=(); [ "$(id -u)" -eq 0 ] || rootless=(--rootless)
umoci init --layout "$layout"
umoci new --image "$layout:$TAG"
umoci unpack "${rootless[@]}" --image "$layout:$TAG" "$bundle"
root="$bundle/rootfs"

install -d -m 0755 "$root/usr/local/bin" "$root/etc/ssl/certs"
install -d -m 1777 "$root/tmp"
install -m 0755 "$BIN" "$root/usr/local/bin/smart-autoscaler"
strip "$root/usr/local/bin/smart-autoscaler" 2>/dev/null || true
# Every shared library the binary loads, at the path the dynamic loader looks for it, and the loader itself.
ldd "$BIN" | awk '$2 == "=>" && $3 ~ /^\//{print $3} $1 ~ /^\//{print $1}' | while read -r lib; do
  install -d "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
# Outbound TLS (Prometheus, alert receivers) verifies against these; in-cluster CAs come from mounted files.
[ -f /etc/ssl/certs/ca-certificates.crt ] && cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
install -d -m 0700 -o 65532 -g 65532 "$root/home/nonroot" 2>/dev/null || install -d -m 0700 "$root/home/nonroot"

umoci repack --image "$layout:$TAG" "$bundle"
umoci config --image "$layout:$TAG" \
  --author "smart-autoscaler" \
  --config.user 65532:65532 \
  --config.workingdir /home/nonroot \
  --config.entrypoint /usr/local/bin/smart-autoscaler \
  --config.cmd serve \
  --config.exposedports 6443/tcp --config.exposedports 8080/tcp \
  --config.label "org.opencontainers.image.title=smart-autoscaler" \
  --config.label "org.opencontainers.image.version=$TAG" \
  --config.label "org.opencontainers.image.licenses=Apache-2.0"
umoci gc --layout "$layout"
rm -rf "$bundle"
tar -C "$layout" -cf "$OUT/smart-autoscaler-$TAG.oci.tar" .
size=$(du -sh "$OUT/smart-autoscaler-$TAG.oci.tar" | cut -f1)
echo "image $layout:$TAG ($size as $OUT/smart-autoscaler-$TAG.oci.tar)"
