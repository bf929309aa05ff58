#!/usr/bin/env bash
# Observability checks (issue 5), called by scripts/test.sh after the Rust tests:
#   1. alert rules: promtool check rules, promtool test rules (every alert firing and not);
#   2. dashboards: type-checked as @grafana/schema `Dashboard`s with tsc --strict; datasource
#      only through the ${datasource} variable;
#   3. live: a real Prometheus (127.0.0.1, 1 s scrapes, file SD from `draco run --prometheus-sd`)
#      scrapes a short local drill; every panel query must parse and return data, dashboards may
#      only use exported metrics, `promtool check metrics` must pass on live PS and worker
#      scrapes, the rules must evaluate and the Byzantine alert must fire.
# Needs the workspace built (uses ${CARGO_TARGET_DIR:-target}/debug/draco).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

scripts/install-observability-tools.sh

echo "== alert rules"
promtool check rules alerts/draco.rules.yaml
promtool test rules alerts/draco.rules.test.yaml
# Every alert links to an existing runbook section (GitHub anchors: lower-case heading).
python3 - <<'PY'
import re, sys
rules = open("alerts/draco.rules.yaml").read()
anchors = {h.strip().lower() for h in re.findall(r"^## (.+)$", open("docs/runbook.md").read(), re.M)}
alerts = re.findall(r"^\s*- alert: (\S+)", rules, re.M)
links = re.findall(r"runbook_url: docs/runbook.md#(\S+)", rules)
bad = [l for l in links if l not in anchors]
if len(links) != len(alerts) or bad or not alerts:
    sys.exit(f"FAIL: {len(alerts)} alerts, {len(links)} runbook links; links without a docs/runbook.md section: {bad}")
print(f"runbook: {len(alerts)} alerts, each linked to its docs/runbook.md section")
PY

echo "== dashboards"
python3 scripts/observability/check.py static
# An object literal typed as Dashboard: excess-property checks catch unknown fields, and literal
# types catch wrong enum strings (a JSON import would widen them to string).
check_dir=.tools/node/dashboard-check
rm -rf "$check_dir" && mkdir -p "$check_dir"
for f in dashboards/*.json; do
  {
    echo "import type { Dashboard } from '@grafana/schema';"
    printf 'const dashboard: Dashboard = '
    cat "$f"
    echo ';'
    echo 'export default dashboard;'
  } >"$check_dir/$(basename "$f" .json).ts"
done
.tools/node/node_modules/.bin/tsc --strict --noEmit --skipLibCheck --module esnext --moduleResolution bundler \
  --target es2022 "$check_dir"/*.ts
echo "tsc --strict: $(ls dashboards/*.json | wc -l) dashboards are valid @grafana/schema Dashboards"

echo "== live Prometheus"
draco="${CARGO_TARGET_DIR:-target}/debug/draco"
# The PS is killed once mid-run and a worker once later: restarts and reconnects must show where
# the dashboard looks. check.py also runs `draco operator` against a fake Kubernetes API server
# (scripts/observability/fake_kube_api.py) for the operator dashboard.
# check.py stops Prometheus and the job itself (also on SIGTERM); the trap forwards our own
# interruption to it, which a foreground child would not get in time.
python3 scripts/observability/check.py live --draco "$draco" --job scripts/observability/drill-job.yaml \
  --kill-ps-at 300 --kill-worker-at 700 &
live=$!
trap 'kill -TERM "$live" 2>/dev/null; wait "$live" 2>/dev/null' EXIT INT TERM
wait "$live"
trap - EXIT INT TERM

echo "observability checks passed in $((SECONDS - started)) s"
