#!/usr/bin/env bash
# Sets up a fresh machine and trains the demo recommender against a throwaway redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_USE_LEGACY_KERAS=1
cd demo && exec "${PYTHON:-python3}" train.py
