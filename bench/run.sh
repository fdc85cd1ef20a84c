#!/usr/bin/env bash
# make bench: a private stack, then bench/harness.py (release build done by the Makefile).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export CELERIAC_RUN_DIR=$ROOT/.run/bench-stack
eval "$(scripts/stack.sh up)"
trap 'scripts/stack.sh down' EXIT
/usr/bin/python3 bench/harness.py
