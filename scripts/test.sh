#!/usr/bin/env bash
# The project's one test command (README "Run the tests"; .ci/run calls exactly this).
# Format check, clippy with warnings denied, every test of the workspace, then the
# observability checks (real Prometheus, promtool, dashboards type-checked; needs the build)
# and the Helm chart checks (real helm + kubernetes-validate, installed into .tools/).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
scripts/test-observability.sh
scripts/test-chart.sh
