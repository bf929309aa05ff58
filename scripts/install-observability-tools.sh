#!/usr/bin/env bash
# Installs what scripts/test-observability.sh needs, idempotently (fast when already there):
#   - Prometheus and promtool: Debian package `prometheus` (started by hand, never via systemd);
#   - @grafana/schema and typescript from npm into .tools/node (gitignored), to type-check the
#     dashboards with tsc.
# Prints nothing on the fast path except one line per tool.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi

if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  echo "install-observability-tools: installing the Debian package prometheus"
  $SUDO apt-get update -qq
  # The package's postinst tries to start a service; without systemd that is harmless, but keep
  # it from starting anything where policy-rc.d is honoured.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
command -v promtool >/dev/null || { echo "install-observability-tools: promtool still missing" >&2; exit 1; }
echo "install-observability-tools: $(prometheus --version 2>&1 | head -1)"

# Exact versions: a schema update must not turn CI red (or green) behind our backs.
GRAFANA_SCHEMA_VERSION=13.2.3
TYPESCRIPT_VERSION=5.9.3
NODE_DIR=.tools/node
want="@grafana/schema@$GRAFANA_SCHEMA_VERSION typescript@$TYPESCRIPT_VERSION"
if [ "$(cat "$NODE_DIR/.installed" 2>/dev/null)" != "$want" ]; then
  command -v npm >/dev/null || { echo "install-observability-tools: npm is required (apt-get install npm)" >&2; exit 1; }
  echo "install-observability-tools: npm install $want into $NODE_DIR"
  mkdir -p "$NODE_DIR"
  [ -f "$NODE_DIR/package.json" ] || echo '{"name": "draco-tools", "private": true}' >"$NODE_DIR/package.json"
  # shellcheck disable=SC2086
  npm install --prefix "$NODE_DIR" --no-audit --no-fund --silent --save-exact $want
  echo "$want" >"$NODE_DIR/.installed"
fi
echo "install-observability-tools: $("$NODE_DIR/node_modules/.bin/tsc" --version), @grafana/schema $GRAFANA_SCHEMA_VERSION"
