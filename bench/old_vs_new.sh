#!/usr/bin/env bash
# Interleaved runs of bench/loop.py with an older library and this checkout's, to check that a
# change did not move speed (the machine is noisy: compare neighbouring lines).
#   git worktree add /tmp/old <rev>
#   (cd /tmp/old && CARGO_TARGET_DIR=/tmp/old-target PYTHON=$PWD/.venv/tf2.16/bin/python cargo build --release --features tf)
#   CARGO_TARGET_DIR=/tmp/new-target PYTHON=.venv/tf2.16/bin/python cargo build --release --features tf
#   bash bench/old_vs_new.sh
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/tf2.16/bin/python}
for w in lookup zipf upsert zipf_upsert; do
  for r in 1 2; do
    for side in old new; do
      if [ $side = old ]; then dir=/tmp/old; lib=/tmp/old-target/release/libredis_embedding.so
      else dir=$ROOT; lib=/tmp/new-target/release/libredis_embedding.so; fi
      out=$(cd $dir && PYTHONPATH=$dir/python RDE_OPS_LIBRARY=$lib TF_USE_LEGACY_KERAS=1 timeout 300 $PY bench/loop.py ours $w --seconds 8 2>/dev/null | tail -3 | tr '\n' ' ')
      echo "$w round $r $side: $out"
    done
  done
done
