#!/usr/bin/env bash
# Sets up what openheap needs on a fresh Debian/Ubuntu machine: libcoap's
# command-line tools (an independent CoAP implementation for the interop
# tests) and a virtualenv .venv with the pinned Python packages, openheap
# itself installed in editable mode. Safe to run again: it only does what is
# missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v coap-client-notls >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "setup: installing libcoap3-bin (coap-client-notls) with apt-get"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libcoap3-bin >/dev/null
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
