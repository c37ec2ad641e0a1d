#!/usr/bin/env bash
# Static checks of the Helm chart and the image (run by .ci/run; needs deploy/ci/chart-tools.sh):
# - hadolint on deploy/docker/Dockerfile,
# - `helm lint --strict` with each values file,
# - `helm template` of the default values and of each values file, every rendered document
#   validated against the Kubernetes schemas (`kubernetes-validate --strict`) of the oldest
#   supported Kubernetes (the chart's kubeVersion, 1.28) and of the newest the validator knows.
# The chart's invariants and the rendered-cluster test are Rust tests (tests/tests/helm.rs).
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/ci/chart-tools.sh
chart=deploy/helm/comet
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

"$COMET_CI_VENV/bin/hadolint" deploy/docker/Dockerfile
echo "hadolint: deploy/docker/Dockerfile clean"

for values in "" "$chart"/values-*.yaml; do
  name="${values:+$(basename "$values" .yaml)}"
  name="${name:-default}"
  "$COMET_HELM" lint --strict "$chart" ${values:+-f "$values"} >"$out/lint-$name.txt" \
    || { cat "$out/lint-$name.txt"; echo "helm lint --strict failed for $name" >&2; exit 1; }
  for kube in 1.28.0 1.37.0; do
    "$COMET_HELM" template comet "$chart" --namespace comet --kube-version "$kube" \
      ${values:+-f "$values"} >"$out/$name-$kube.yaml"
    "$COMET_CI_VENV/bin/kubernetes-validate" --strict --quiet -k "$kube" "$out/$name-$kube.yaml"
  done
  echo "chart $name: lint --strict ok, $(grep -c '^kind:' "$out/$name-1.37.0.yaml") documents valid for Kubernetes 1.28 and 1.37"
done
