#!/usr/bin/env bash
# bazel test //:op_tests: the Python op suite against the Bazel-built library, on a real
# redis-server started by the pytest harness. PATH comes from .bazelrc (--test_env=PATH), so
# the python3 with TensorFlow installed and redis-server are found.
set -euo pipefail
root=$(pwd)
export RDE_OPS_LIBRARY="$root/_redis_embedding_ops.so"
export PYTHONPATH="$root/python"
export TF_USE_LEGACY_KERAS=1
cd tests/python
exec python3 -m pytest -q -p no:cacheprovider .
