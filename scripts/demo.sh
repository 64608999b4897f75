#!/usr/bin/env bash
# Sets up a machine (redis-server, a TF 2.16.2 + TFRA 0.8.1 venv at .venv/tf2.16, the package
# built into it) and trains the demo recommender against a throwaway redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh tf2.16
export TF_USE_LEGACY_KERAS=1
cd demo && exec "${RDE_VENV_ROOT:-$PWD/../.venv}/tf2.16/bin/python" train.py
