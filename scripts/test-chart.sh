#!/usr/bin/env bash
# Checks the Helm chart with the real tools (scripts/install-k8s-tools.sh puts them in .tools/):
#   helm lint --strict and helm template, with the default values and with
#   charts/draco/ci/namespaced-values.yaml (namespaced mode, every optional template on);
#   kubernetes-validate --strict against Kubernetes 1.33 for every rendered document; the
#   Prometheus Operator resources (no schema there) get a shape check by name instead;
#   RBAC is exactly the operator's access (no wildcard, no read on Secrets) in both modes;
#   the operator Deployment's hardening; values.schema.json rejects bad values;
#   charts/draco/crds/ matches crds/, manifests/install.yaml matches a fresh render, and the
#   dashboards/alerts the chart ships through symlinks render unchanged; hadolint on the
#   Dockerfile.
# Before trusting them, it shows each checker rejecting a known-bad input.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS_BIN="$(scripts/install-k8s-tools.sh)"
HELM="$TOOLS_BIN/helm"
KV="$TOOLS_BIN/kubernetes-validate"
PY="$TOOLS_BIN/k8s-python"
CHECKS="scripts/chart_checks.py"
CHART=charts/draco
NS_VALUES=$CHART/ci/namespaced-values.yaml
NS_WATCHED=team-a # watchNamespace in $NS_VALUES
RELEASE_NS=draco-system

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "ok: $*"; }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }
# run NAME CMD...: runs CMD, shows its output indented, counts it.
run() {
  local name="$1"; shift
  if "$@" >"$WORK/out" 2>&1; then
    sed 's/^/    /' "$WORK/out"; pass "$name"
  else
    sed 's/^/    /' "$WORK/out"; fail "$name"
  fi
}
# must_fail NAME REASON CMD...: CMD has to fail (a checker rejecting a known-bad input), and
# its output has to contain REASON, so it failed for that reason and not another.
must_fail() {
  local name="$1" reason="$2"; shift 2
  if "$@" >"$WORK/out" 2>&1; then
    sed 's/^/    /' "$WORK/out"; fail "$name (it accepted a known-bad input)"
  elif ! grep -qF -- "$reason" "$WORK/out"; then
    sed 's/^/    /' "$WORK/out"; fail "$name (it failed, but not with: $reason)"
  else
    pass "$name"
  fi
}
# helm without its notice about each followed symlink (dashboards/, alerts/): expected here.
helm_quiet() {
  local rc=0
  "$HELM" "$@" 2>"$WORK/helm.err" || rc=$?
  grep -v 'found symbolic link in path' "$WORK/helm.err" >&2 || true
  return "$rc"
}

echo "helm $("$HELM" version --template '{{.Version}}'), kubernetes-validate $("$KV" --version), $("$TOOLS_BIN/hadolint" --version)"

# The chart reaches the repository's dashboards and alert rules through symlinks; helm refuses
# to load a chart with a dangling one, so say clearly what is missing.
missing=""
compgen -G "dashboards/*.json" >/dev/null || missing="$missing dashboards/*.json"
[ -f alerts/draco.rules.yaml ] || missing="$missing alerts/draco.rules.yaml"
compgen -G "crds/*.yaml" >/dev/null || missing="$missing crds/*.yaml"
if [ -n "$missing" ]; then
  echo "FAIL: missing at the repository root:$missing (the chart ships these; nothing else can be checked)"
  exit 1
fi

# --- lint -------------------------------------------------------------------------------------
run "helm lint --strict (default values)" helm_quiet lint --strict "$CHART"
run "helm lint --strict ($NS_VALUES)" helm_quiet lint --strict "$CHART" -f "$NS_VALUES"

# --- render and validate ---------------------------------------------------------------------
helm_quiet template draco "$CHART" -n "$RELEASE_NS" >"$WORK/default.yaml"
helm_quiet template draco "$CHART" -n "$RELEASE_NS" -f "$NS_VALUES" >"$WORK/namespaced.yaml"
for r in default namespaced; do
  run "kubernetes-validate --strict -k 1.33.0 ($r render)" \
    "$KV" --strict -k 1.33.0 --quiet "$WORK/$r.yaml"
  run "every document validated or shape-checked ($r render)" \
    "$PY" "$CHECKS" validate "$WORK/$r.yaml"
done
run "RBAC exact, no wildcard, no read on Secrets (default: cluster-wide)" \
  "$PY" "$CHECKS" rbac "$WORK/default.yaml" cluster
run "RBAC exact, no wildcard, no read on Secrets (namespaced)" \
  "$PY" "$CHECKS" rbac "$WORK/namespaced.yaml" namespaced "$NS_WATCHED"
run "operator Deployment hardened and wired (default)" \
  "$PY" "$CHECKS" operator "$WORK/default.yaml" cluster
run "operator Deployment hardened and wired (namespaced)" \
  "$PY" "$CHECKS" operator "$WORK/namespaced.yaml" namespaced "$NS_WATCHED"
if grep -q 'kind: \(ServiceMonitor\|PodMonitor\|PrometheusRule\)' "$WORK/default.yaml"; then
  fail "default values render monitoring resources (they must be off by default)"
else
  pass "ServiceMonitor, PodMonitor, PrometheusRule and dashboards are off by default"
fi

# The shipped files arrive unchanged: one ConfigMap key per dashboards/*.json with the same
# JSON, and the PrometheusRule's groups equal the rule file's.
shipped() {
  "$PY" - "$WORK/namespaced.yaml" <<'EOF'
import glob, json, os, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
(cm,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboards")]
files = sorted(glob.glob("dashboards/*.json"))
assert sorted(cm["data"]) == [os.path.basename(f) for f in files], (sorted(cm["data"]), files)
for f in files:
    assert json.loads(cm["data"][os.path.basename(f)]) == json.load(open(f)), f
assert cm["metadata"]["labels"].get("grafana_dashboard") == "1", cm["metadata"]["labels"]
(rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
assert rule["spec"]["groups"] == yaml.safe_load(open("alerts/draco.rules.yaml"))["groups"]
print(f"  {len(files)} dashboards in ConfigMap {cm['metadata']['name']}, "
      f"{len(rule['spec']['groups'])} rule groups in the PrometheusRule")
EOF
}
run "dashboards and alert rules shipped unchanged through the symlinks" shipped
if command -v promtool >/dev/null; then
  "$PY" -c 'import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "PrometheusRule"]
yaml.safe_dump({"groups": docs[0]["spec"]["groups"]}, open(sys.argv[2], "w"))' \
    "$WORK/namespaced.yaml" "$WORK/rendered.rules.yaml"
  run "promtool check rules on the rendered PrometheusRule" promtool check rules "$WORK/rendered.rules.yaml"
else
  echo "note: promtool not installed (Debian package prometheus): rendered rules not compiled"
fi

# `helm package` follows the symlinks too: the archive a user installs renders the same.
packaged() {
  helm_quiet package "$CHART" -d "$WORK/pkg" >/dev/null &&
    helm_quiet template draco "$WORK"/pkg/draco-*.tgz -n "$RELEASE_NS" -f "$NS_VALUES" >"$WORK/pkg.yaml" &&
    diff -u "$WORK/namespaced.yaml" "$WORK/pkg.yaml" &&
    echo "  $(tar tzf "$WORK"/pkg/draco-*.tgz | grep -cE '/(dashboards|alerts|crds)/') dashboard, rule and CRD files in the archive"
}
run "the packaged chart carries dashboards/, alerts/ and crds/ and renders the same" packaged

# NOTES.txt is not rendered by `helm template`, and `helm install --dry-run` needs a cluster:
# render it as an ordinary template from a copy of the chart.
notes() {
  local mode="$1"; shift
  rm -rf "$WORK/notes" && cp -rL "$CHART" "$WORK/notes" &&
    mv "$WORK/notes/templates/NOTES.txt" "$WORK/notes/notes-source.txt" &&
    printf '%s\n' 'apiVersion: v1' 'kind: ConfigMap' 'metadata: {name: notes}' 'data:' \
      '  notes: {{ tpl (.Files.Get "notes-source.txt") . | toJson }}' >"$WORK/notes/templates/notes.yaml" &&
    "$HELM" template draco "$WORK/notes" -n "$RELEASE_NS" --show-only templates/notes.yaml "$@" |
    "$PY" -c 'import sys, yaml; print(yaml.safe_load(sys.stdin)["data"]["notes"])' >"$WORK/notes.txt" || return 1
  for want in "kubectl get dj" ".status.byzantine.suspects" "kubectl apply --server-side -f charts/draco/crds/" "$mode"; do
    grep -qF -- "$want" "$WORK/notes.txt" || { echo "NOTES.txt lacks: $want"; cat "$WORK/notes.txt"; return 1; }
  done
}
run "NOTES.txt renders (cluster-wide)" notes "in every namespace"
run "NOTES.txt renders (namespaced)" notes "in namespace $NS_WATCHED only" -f "$NS_VALUES"

# --- values.schema.json ----------------------------------------------------------------------
SCHEMA_ERROR="values don't meet the specifications of the schema"
must_fail "schema rejects replicaCount=abc" "$SCHEMA_ERROR" helm_quiet template t "$CHART" --set replicaCount=abc
must_fail "schema rejects replicaCount=2 (no leader election)" "$SCHEMA_ERROR" helm_quiet template t "$CHART" --set replicaCount=2
must_fail "schema rejects an unknown key" "$SCHEMA_ERROR" helm_quiet template t "$CHART" --set serviceMonitor.enable=true
must_fail "schema rejects image.pullPolicy=Sometimes" "$SCHEMA_ERROR" helm_quiet template t "$CHART" --set image.pullPolicy=Sometimes
must_fail "serviceAccount.create=false needs serviceAccount.name" "serviceAccount.name is required" helm_quiet template t "$CHART" --set serviceAccount.create=false

# --- the checkers themselves reject known-bad input -------------------------------------------
sed 's/^  strategy:$/  strategie:/' "$WORK/default.yaml" >"$WORK/bad-field.yaml"
must_fail "kubernetes-validate rejects an unknown Deployment field" "'strategie' was unexpected" \
  "$KV" --strict -k 1.33.0 --quiet "$WORK/bad-field.yaml"
sed 's/resources: \["secrets"\]/resources: ["secrets", "*"]/' "$WORK/default.yaml" >"$WORK/bad-wild.yaml"
must_fail "RBAC check rejects a wildcard" "wildcard in resources" "$PY" "$CHECKS" rbac "$WORK/bad-wild.yaml" cluster
sed '/resources: \["secrets"\]/{n;s/verbs: \[/verbs: ["list", /}' "$WORK/default.yaml" >"$WORK/bad-secrets.yaml"
must_fail "RBAC check rejects list on secrets" "read verbs ['list'] granted" "$PY" "$CHECKS" rbac "$WORK/bad-secrets.yaml" cluster
sed 's/^      scrapeTimeout:/      scrapeTimout:/' "$WORK/namespaced.yaml" >"$WORK/bad-cr.yaml"
must_fail "custom-resource shape check rejects an unknown field" "unknown fields ['scrapeTimout']" "$PY" "$CHECKS" validate "$WORK/bad-cr.yaml"
sed 's/readOnlyRootFilesystem: true/readOnlyRootFilesystem: false/' "$WORK/default.yaml" >"$WORK/bad-ro.yaml"
must_fail "operator check rejects a writable root filesystem" "readOnlyRootFilesystem is not True" "$PY" "$CHECKS" operator "$WORK/bad-ro.yaml" cluster

# --- the Dockerfile (no image can be built here: lint it) -------------------------------------
run "hadolint Dockerfile" "$TOOLS_BIN/hadolint" --no-color Dockerfile
sed 's/^USER 65532:65532$/USER root/' Dockerfile >"$WORK/Dockerfile.root"
must_fail "hadolint rejects a final USER root" "DL3002" "$TOOLS_BIN/hadolint" --no-color "$WORK/Dockerfile.root"

# --- derived files are current ----------------------------------------------------------------
crd_drift() {
  diff -r crds "$CHART/crds" ||
    { echo "charts/draco/crds/ differs from crds/: run scripts/render-install.sh"; return 1; }
}
run "charts/draco/crds/ is a copy of crds/" crd_drift
scripts/render-install.sh "$WORK/install.yaml" 2>/dev/null
install_drift() {
  diff -u manifests/install.yaml "$WORK/install.yaml" ||
    { echo "manifests/install.yaml is stale: run scripts/render-install.sh"; return 1; }
}
run "manifests/install.yaml matches a fresh render" install_drift
run "kubernetes-validate --strict -k 1.33.0 (manifests/install.yaml, CRD included)" \
  "$KV" --strict -k 1.33.0 --quiet manifests/install.yaml
run "every document validated (manifests/install.yaml)" "$PY" "$CHECKS" validate manifests/install.yaml

# --- the examples against the CRD the chart installs ------------------------------------------
CRD_FILE=$CHART/crds/dracojobs.draco.dev.yaml
run "every example DracoJob validates against $CRD_FILE" \
  "$PY" "$CHECKS" examples "$CRD_FILE" manifests/examples/*.yaml
sed 's/^  redundancy:/  redundancyy:/' manifests/examples/fashion-mnist-k8s.yaml >"$WORK/bad-job.yaml"
must_fail "CRD schema check rejects a misspelt DracoJob field" "'redundancyy' was unexpected" \
  "$PY" "$CHECKS" examples "$CRD_FILE" "$WORK/bad-job.yaml"

echo "chart: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
