#!/usr/bin/env bash
# Renders the versioned install manifest: the kustomize base (manifests/, no components) with the image tag set to
# the crate's version, as one file a user can `kubectl apply -f`.
#   hack/render-install.sh             # writes manifests/install/smart-autoscaler-VERSION.yaml
#   hack/render-install.sh --stdout    # prints it instead (tests/tools.rs compares the two)
#   IMAGE=REGISTRY/smart-autoscaler VERSION=0.1.0 hack/render-install.sh
# Commit the file after changing anything under manifests/ or apiservice/: tests/tools.rs fails while it is stale.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${VERSION:-$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)}
IMAGE=${IMAGE:-ghcr.io/smart-autoscaler/smart-autoscaler}
command -v kubectl >/dev/null || { echo "hack/render-install.sh: kubectl is needed (hack/install-tools.sh)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# kustomize refuses absolute paths to resources: the overlay names the base relative to itself.
base=$(realpath --relative-to="$tmp" manifests)
cat > "$tmp/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $base
images:
  - name: ghcr.io/smart-autoscaler/smart-autoscaler
    newName: $IMAGE
    newTag: "$VERSION"
YAML

render() {
  cat <<HEADER
# smart-autoscaler $VERSION: every object of the kustomize base (manifests/), rendered by hack/render-install.sh.
# Before \`kubectl apply -f\` this file, see docs/install.md: create the serving Secret and fill the two empty
# caBundle fields (\`smart-autoscaler certs\`), and set SMART_AUTOSCALER_PROMETHEUS_URL in the ConfigMap
# smart-autoscaler-config-* below. For cert-manager, the Prometheus Operator, a NetworkPolicy or a PriorityClass,
# use manifests/ with its components instead.
HEADER
  kubectl kustomize "$tmp"
}

if [ "${1:-}" = "--stdout" ]; then
  render
else
  out=manifests/install/smart-autoscaler-$VERSION.yaml
  mkdir -p manifests/install
  render > "$out"
  echo "wrote $out"
fi
