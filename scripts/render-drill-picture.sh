#!/usr/bin/env bash
# Renders docs/images/drill.png: the README's Fashion-MNIST drill (one liar per step) as a real
# Prometheus recorded it, scraping `draco run --prometheus-sd` every second: test accuracy and
# step over time, and every worker's suspect detections next to the lies forged. It runs the
# same live checks as scripts/test-observability.sh on the way. matplotlib comes from PyPI into
# .tools/venv (gitignored); nothing of it enters the Rust crates. Takes about 2-3 minutes.
#   scripts/render-drill-picture.sh [JOB.yaml] [OUT.png]
set -euo pipefail
cd "$(dirname "$0")/.."
job="${1:-manifests/examples/fashion-mnist.yaml}"
out="${2:-docs/images/drill.png}"

scripts/install-observability-tools.sh
if [ ! -x .tools/venv/bin/python ] || ! .tools/venv/bin/python -c "import matplotlib" 2>/dev/null; then
  python3 -m venv .tools/venv
  .tools/venv/bin/pip install --quiet matplotlib==3.10.7
fi
if grep -q "/usr/share/datasets/fashion-mnist" "$job" && [ ! -d /usr/share/datasets/fashion-mnist ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist
fi
cargo build --workspace --all-targets --locked
mkdir -p "$(dirname "$out")"
.tools/venv/bin/python scripts/observability/check.py live --draco "${CARGO_TARGET_DIR:-target}/debug/draco" \
  --job "$job" --timeout 600 --render "$out"
