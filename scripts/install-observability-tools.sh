#!/usr/bin/env bash
# Installs what scripts/test-observability.sh needs, idempotently (fast when already there):
#   - Prometheus and promtool: Debian package `prometheus` (started by hand, never as a service);
#   - node and npm (Debian packages nodejs, npm) when npm is missing;
#   - @grafana/schema and typescript from npm into .tools/node (gitignored), to type-check the
#     dashboards with tsc.
# Prints nothing on the fast path except one line per tool.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
# Bounded: a stuck mirror or lock must fail the run, not hang it until CI's own limit.
APT_TIMEOUT=900
NPM_TIMEOUT=600
apt_updated=""

apt_install() {
  if [ -z "$apt_updated" ]; then
    $SUDO timeout "$APT_TIMEOUT" apt-get update -qq
    apt_updated=1
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive timeout "$APT_TIMEOUT" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Is anything listening on TCP port $1 (any address)?
listening() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  echo "install-observability-tools: installing the Debian package prometheus"
  # The package's postinst starts its service (a Prometheus on :9090) through invoke-rc.d, which
  # asks /usr/sbin/policy-rc.d first: exit code 101 forbids it. Write one for the install when
  # none is there (a machine's own is left as it is), and remove ours afterwards.
  policy=/usr/sbin/policy-rc.d
  ours=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# scripts/install-observability-tools.sh: no service starts during its install\nexit 101\n' |
      $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    ours=1
  fi
  busy_before=""
  if listening 9090; then busy_before=1; fi
  status=0
  apt_install prometheus || status=$?
  if [ -n "$ours" ]; then $SUDO rm -f "$policy"; fi
  [ "$status" -eq 0 ] || { echo "install-observability-tools: apt-get install prometheus failed ($status)" >&2; exit "$status"; }
  # Where systemd runs, it may have started the service regardless: stop it, so nothing of this
  # install keeps listening on 9090 (the port of a PS started by hand, and of other tools).
  if [ -z "$busy_before" ] && listening 9090; then
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
      $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
    for pid in $(ss -Hltnp "sport = :9090" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
      if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = prometheus ]; then $SUDO kill "$pid" || true; fi
    done
  fi
  if [ -z "$busy_before" ] && listening 9090; then
    echo "install-observability-tools: something still listens on :9090 after installing prometheus" >&2
    exit 1
  fi
fi
command -v promtool >/dev/null || { echo "install-observability-tools: promtool still missing" >&2; exit 1; }
echo "install-observability-tools: $(prometheus --version 2>&1 | head -1)"

# Exact versions: a schema update must not turn CI red (or green) behind our backs.
GRAFANA_SCHEMA_VERSION=13.2.3
TYPESCRIPT_VERSION=5.9.3
NODE_DIR=.tools/node
want="@grafana/schema@$GRAFANA_SCHEMA_VERSION typescript@$TYPESCRIPT_VERSION"
if [ "$(cat "$NODE_DIR/.installed" 2>/dev/null)" != "$want" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "install-observability-tools: installing the Debian packages nodejs and npm"
    apt_install nodejs npm
  fi
  command -v npm >/dev/null || { echo "install-observability-tools: npm still missing" >&2; exit 1; }
  echo "install-observability-tools: npm install $want into $NODE_DIR"
  mkdir -p "$NODE_DIR"
  [ -f "$NODE_DIR/package.json" ] || echo '{"name": "draco-tools", "private": true}' >"$NODE_DIR/package.json"
  # shellcheck disable=SC2086
  timeout "$NPM_TIMEOUT" npm install --prefix "$NODE_DIR" --no-audit --no-fund --silent --save-exact \
    --fetch-timeout=120000 --fetch-retries=3 $want
  echo "$want" >"$NODE_DIR/.installed"
fi
echo "install-observability-tools: node $(node --version), $("$NODE_DIR/node_modules/.bin/tsc" --version), @grafana/schema $GRAFANA_SCHEMA_VERSION"
