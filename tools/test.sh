#!/usr/bin/env bash
# Sets everything up, then runs the whole test suite (host unit tests,
# firmware tests under MicroPython, interop with aiocoap and libcoap, faults,
# end-to-end on virtual boards). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec .venv/bin/python -m pytest "$@"
