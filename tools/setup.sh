#!/usr/bin/env bash
# Sets up what openheap needs on a fresh Debian/Ubuntu machine: libcoap's
# command-line tools (an independent CoAP implementation for the interop
# tests) and a virtualenv .venv with the pinned Python packages, openheap
# itself installed in editable mode. Safe to run again: it only does what is
# missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages, by the command each brings: libcoap's client; and, for
# the tests that put a grid in a network namespace of its own (packet loss,
# a LAN's packet size: tests/e2e/test_netns_grid.py, run as root only) and
# for the benchmarks, ip, nft and ethtool.
missing=""
for pair in coap-client-notls:libcoap3-bin ip:iproute2 nft:nftables ethtool:ethtool; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "${pair%%:*}" >/dev/null 2>&1 \
    || missing="$missing ${pair#*:}"
done
if [ -n "$missing" ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "setup: installing$missing with apt-get"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi

stamp=.venv/.openheap-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing Python packages (pinned in pyproject.toml)"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
  touch "$stamp"
fi
