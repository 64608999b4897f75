#!/usr/bin/env bash
# Sets up a fresh machine, then runs every test: lint, the Rust core (no TensorFlow), and the
# Python op suite against real redis-server processes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "== cargo fmt / clippy"
cargo fmt --check
cargo clippy --all-targets -q -- -D warnings

echo "== cargo test (Redis core, no TensorFlow)"
cargo test -q

echo "== AddressSanitizer (C++ shim instrumented, op tests under libasan)"
bash scripts/asan.sh

echo "== bazel build + bazel test (the same op suite against the Bazel-built library)"
bash scripts/bazel_test.sh

echo "== pytest (TF ops on real redis-server processes)"
export TF_USE_LEGACY_KERAS=1
# Run from the tests directory so the installed package (not ./python) is imported.
cd tests/python && exec "${PYTHON:-python3}" -m pytest -q -p no:cacheprovider .
