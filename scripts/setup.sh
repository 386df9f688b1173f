#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian 12 machine: system packages, then a virtualenv in .venv
# with Atoll and its test tools. Used by scripts/up.sh, scripts/test.sh and CI.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(python3 python3-venv python3-dev ca-certificates
              runc containernetworking-plugins busybox-static iproute2 iptables nftables
              qemu-system-x86 qemu-utils debootstrap etcd-server etcd-client
              docker-registry skopeo apache2-utils conntrack
              gcc libc6-dev   # gcc, libc6-dev: the static pod-VM guest agent (podvm/image.py)
              chromium)       # the web console's browser tests (Playwright drives it)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm fetches the web console's xterm.js; a Node.js from elsewhere (nodesource) brings its own
command -v npm >/dev/null || missing+=(nodejs npm)
if ((${#missing[@]})) && command -v apt-get >/dev/null; then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=$(command -v python3.11 || command -v python3)
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [[ ! -f $stamp ]]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[test]"
  touch "$stamp"
fi

# The web console's terminal (xterm.js), pinned by src/atoll/webui/package-lock.json, installed
# next to the package (node_modules is not in git) and served by the API server under /ui/vendor/
ui=src/atoll/webui
ui_stamp=$ui/node_modules/.installed-$(sha1sum $ui/package-lock.json | cut -c1-12)
if [[ ! -f $ui_stamp ]] && command -v npm >/dev/null; then
  npm ci --prefix "$ui" --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null
  touch "$ui_stamp"
fi
