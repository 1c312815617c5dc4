#!/usr/bin/env bash
# Sets everything up, then runs the main job: starts virtual boards, stores a
# blob on them, reads it back and prints what happened. Extra arguments go to
# `openheap demo` (see `openheap demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec .venv/bin/openheap demo "$@"
