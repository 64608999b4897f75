#!/usr/bin/env bash
# Runs the op tests with the C++ shim (kernels + cxx bridge) built with AddressSanitizer.
# The Rust side is not instrumented (that needs a nightly toolchain); Python and TensorFlow
# are not either, so libasan is preloaded and leak checking is off (TF's own allocations at
# exit are not ours). Any invalid access in cc/ fails the run with an ASan report.
# The library is also built with the test-only `failpoints` feature, for the panic test.
# Usage: bash scripts/asan.sh [pytest args]   (after scripts/setup.sh; PYTHON picks the venv)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHON="${PYTHON:-$PWD/.venv/tf2.16/bin/python}"
export CARGO_TARGET_DIR="$PWD/target/asan"
RDE_ASAN=1 cargo build --release --features tf,failpoints -q
lib="$CARGO_TARGET_DIR/release/libredis_embedding.so"
asan="$(gcc -print-file-name=libasan.so)"
[ -f "$asan" ] || { echo "libasan not found (apt-get install gcc)"; exit 1; }
# libstdc++ is preloaded too: python does not link it, and ASan's __cxa_throw interceptor
# must find the real one when TensorFlow's pybind11 code throws.
stdcxx="$(gcc -print-file-name=libstdc++.so)"
export RDE_OPS_LIBRARY="$lib" TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=3 RDE_FAILPOINTS=1
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1"
cd tests/python
if [ $# -eq 0 ]; then set -- test_ops.py test_files.py test_checkpoint.py test_panic.py; fi
LD_PRELOAD="$asan:$stdcxx" "$PYTHON" -m pytest -q -p no:cacheprovider "$@"
