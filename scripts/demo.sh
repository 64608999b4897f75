#!/usr/bin/env bash
# Sets up a machine (redis-server, a venv, the package built into it) and trains the demo
# two-tower recommender against a throwaway redis-server (or, with --embedded, none).
#   bash scripts/demo.sh          the newest TF (.venv/tf2.21), Keras 3's model.fit with
#                                 redis_embedding.keras (demo/train_keras.py)
#   bash scripts/demo.sh --embedded  the same with no redis-server: the rows live in the
#                                 training process ("rde_backend": "memory")
#   bash scripts/demo.sh --tfra   the TFRA drop-in: TF 2.16.2 + TFRA 0.8.1 (.venv/tf2.16) with
#                                 our RedisTableCreator (demo/train.py)
set -euo pipefail
cd "$(dirname "$0")/.."
venvs="${RDE_VENV_ROOT:-$PWD/.venv}"
if [ "${1:-}" = --tfra ]; then
  bash scripts/setup.sh tf2.16
  export TF_USE_LEGACY_KERAS=1
  cd demo && exec "$venvs/tf2.16/bin/python" train.py
fi
bash scripts/setup.sh tf2.21
cd demo && exec "$venvs/tf2.21/bin/python" train_keras.py ${1:+"$1"}
