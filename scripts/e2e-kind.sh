#!/usr/bin/env bash
# End to end on a real cluster (not run in CI: it needs docker and a kind or k3d cluster).
#   1. builds the image (draco:0.1.0) and its Fashion-MNIST variant (draco:0.1.0-fmnist),
#   2. loads both into the cluster (kind load / k3d image import),
#   3. applies the CRD server-side (the upgrade path: Helm never upgrades crds/) and
#      `helm upgrade --install`s the chart,
#   4. applies manifests/examples/fashion-mnist-k8s.yaml and waits for Succeeded (or Failed),
#   5. shows `kubectl get dj`, the suspects in .status.byzantine and the job's events.
# Usage: scripts/e2e-kind.sh            kind cluster "draco" (created when missing)
#        CLUSTER_TOOL=k3d scripts/e2e-kind.sh
# Environment: CLUSTER_NAME (draco), CLUSTER_TOOL (kind|k3d), JOB_NAMESPACE (default),
#   RELEASE_NAMESPACE (draco-system), TIMEOUT_SECONDS (1800), SKIP_BUILD=1 to reuse the images.
# The cluster is left running for inspection; delete it with `kind delete cluster --name draco`.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER_NAME="${CLUSTER_NAME:-draco}"
CLUSTER_TOOL="${CLUSTER_TOOL:-kind}"
JOB_NAMESPACE="${JOB_NAMESPACE:-default}"
RELEASE_NAMESPACE="${RELEASE_NAMESPACE:-draco-system}"
TIMEOUT_SECONDS="${TIMEOUT_SECONDS:-1800}"
IMAGE=draco:0.1.0
DATA_IMAGE=draco:0.1.0-fmnist
JOB_FILE=manifests/examples/fashion-mnist-k8s.yaml
JOB=fashion-mnist

step() { printf '\n=== %s\n' "$*"; }
need() { command -v "$1" >/dev/null || { echo "e2e-kind: $1 is required ($2)" >&2; exit 1; }; }

need docker "https://docs.docker.com/engine/install/"
need kubectl "https://kubernetes.io/docs/tasks/tools/"
need "$CLUSTER_TOOL" "https://kind.sigs.k8s.io or https://k3d.io"
# A helm on PATH wins; otherwise the project's pinned one.
if command -v helm >/dev/null; then HELM=helm; else HELM="$(scripts/install-k8s-tools.sh)/helm"; fi

step "cluster $CLUSTER_NAME ($CLUSTER_TOOL)"
case "$CLUSTER_TOOL" in
  kind)
    kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME" || kind create cluster --name "$CLUSTER_NAME"
    kubectl config use-context "kind-$CLUSTER_NAME"
    ;;
  k3d)
    k3d cluster list "$CLUSTER_NAME" >/dev/null 2>&1 || k3d cluster create "$CLUSTER_NAME"
    kubectl config use-context "k3d-$CLUSTER_NAME"
    ;;
  *) echo "e2e-kind: CLUSTER_TOOL must be kind or k3d" >&2; exit 1 ;;
esac

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  step "docker build $IMAGE and $DATA_IMAGE"
  docker build -t "$IMAGE" .
  docker build --target fmnist -t "$DATA_IMAGE" .
fi

step "load the images into the cluster"
if [ "$CLUSTER_TOOL" = kind ]; then
  kind load docker-image --name "$CLUSTER_NAME" "$IMAGE" "$DATA_IMAGE"
else
  k3d image import --cluster "$CLUSTER_NAME" "$IMAGE" "$DATA_IMAGE"
fi

step "CRD (server-side apply: also upgrades it on a re-run) and the chart"
kubectl apply --server-side -f charts/draco/crds/
kubectl wait --for=condition=Established crd/dracojobs.draco.dev --timeout=60s
"$HELM" upgrade --install draco charts/draco \
  --namespace "$RELEASE_NAMESPACE" --create-namespace \
  --set image.repository=draco --set image.tag=0.1.0 --set image.pullPolicy=IfNotPresent \
  --set jobImagePullPolicy=IfNotPresent \
  --wait --timeout 3m # the images were loaded into the nodes: never pull them
kubectl -n "$RELEASE_NAMESPACE" rollout status deployment/draco --timeout=120s

diagnose() {
  echo "--- kubectl describe dj $JOB" >&2
  kubectl -n "$JOB_NAMESPACE" describe dj "$JOB" >&2 || true
  echo "--- pods" >&2
  kubectl -n "$JOB_NAMESPACE" get pods -l "draco.dev/job-name=$JOB" -o wide >&2 || true
  echo "--- operator log (last 100 lines)" >&2
  kubectl -n "$RELEASE_NAMESPACE" logs deployment/draco --tail=100 >&2 || true
  echo "--- PS log (last 50 lines)" >&2
  kubectl -n "$JOB_NAMESPACE" logs "$JOB-ps" --tail=50 >&2 || true
}

step "the job: $JOB_FILE"
# A fresh run each time: the old job and (through ownerReferences) its pods go first.
kubectl -n "$JOB_NAMESPACE" delete dj "$JOB" --ignore-not-found --wait=true
kubectl -n "$JOB_NAMESPACE" apply -f "$JOB_FILE"

condition() {
  kubectl -n "$JOB_NAMESPACE" get dj "$JOB" \
    -o jsonpath="{.status.conditions[?(@.type==\"$1\")].status}" 2>/dev/null || true
}
deadline=$((SECONDS + TIMEOUT_SECONDS))
result=""
while [ -z "$result" ]; do
  kubectl -n "$JOB_NAMESPACE" get dj "$JOB" --no-headers 2>/dev/null || true
  if [ "$(condition Succeeded)" = True ]; then result=Succeeded
  elif [ "$(condition Failed)" = True ]; then result=Failed
  elif [ "$SECONDS" -ge "$deadline" ]; then result=Timeout
  else sleep 15
  fi
done

step "kubectl get dj"
kubectl -n "$JOB_NAMESPACE" get dj "$JOB" -o wide
step "suspects (.status.byzantine)"
kubectl -n "$JOB_NAMESPACE" get dj "$JOB" -o jsonpath='detections: {.status.byzantine.detectionsTotal}{"\n"}{range .status.byzantine.suspects[*]}worker {.worker}: {.count} lies, steps {.firstStep}-{.lastStep}, {.reason}{"\n"}{end}'
step "events of the job"
kubectl -n "$JOB_NAMESPACE" get events --field-selector "involvedObject.name=$JOB" --sort-by=.lastTimestamp || true

if [ "$result" != Succeeded ]; then
  echo "e2e-kind: the job did not succeed ($result)" >&2
  diagnose
  exit 1
fi
echo
echo "e2e-kind: $JOB Succeeded. Inspect with: kubectl get dj -A; delete the cluster with:"
if [ "$CLUSTER_TOOL" = kind ]; then
  echo "  kind delete cluster --name $CLUSTER_NAME"
else
  echo "  k3d cluster delete $CLUSTER_NAME"
fi
