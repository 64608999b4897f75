#!/usr/bin/env bash
# Sets up a machine, then runs every test: lint, the Rust core (no TensorFlow), the C++ shim
# under AddressSanitizer, the Bazel build, and the Python op suite against real redis-server
# processes in two environments (TF 2.16.2 + TFRA 0.8.1, and TF 2.21 with Keras 3, no TFRA).
set -euo pipefail
cd "$(dirname "$0")/.."
venvs="${RDE_VENV_ROOT:-$PWD/.venv}"
# CI makes its venvs anew (pip's download cache still applies); a developer's are reused.
fresh=""; [ "${CI:-}" = true ] && fresh=--fresh

echo "== setup: TF 2.16.2 + TFRA 0.8.1 venv, package built into it"
bash scripts/setup.sh tf2.16 $fresh
py16="$venvs/tf2.16/bin/python"
# asan.sh, bazel_test.sh and direct cargo builds with the tf feature use this interpreter.
export PYTHON="$py16"

echo "== cargo fmt / clippy (no features; bridge + failpoints + cli; tf)"
cargo fmt --check
cargo clippy --all-targets -q -- -D warnings
cargo clippy --all-targets -q --features bridge,failpoints,cli -- -D warnings
cargo clippy --lib -q --features tf -- -D warnings

echo "== cargo test (Redis core and the admin CLI, no TensorFlow; with the bridge and the test-only failpoints)"
cargo test -q --features bridge,failpoints,cli

echo "== AddressSanitizer (C++ shim instrumented, op tests and the panic test under libasan)"
bash scripts/asan.sh

echo "== bazel build + bazel test (the same op suite against the Bazel-built library)"
bash scripts/bazel_test.sh

echo "== pytest, TF 2.16.2 + TFRA 0.8.1 (drop-in and byte compatibility included)"
(cd tests/python && RDE_REQUIRE_TFRA=1 TF_USE_LEGACY_KERAS=1 "$py16" -m pytest -q \
  -p no:cacheprovider .)

echo "== the TFRA drop-in demo (reuses the venv made above, new in this CI run)"
bash scripts/demo.sh --tfra

echo "== setup: TF 2.21 venv, built with its pip (not activated) while TF 2.16's python3 is first on PATH"
PATH="$venvs/tf2.16/bin:$PATH" bash scripts/setup.sh tf2.21 $fresh
py21="$venvs/tf2.21/bin/python"
lib16=$(ls "$venvs"/tf2.16/lib/python3*/site-packages/redis_embedding/_redis_embedding_ops*.so)

echo "== pytest, TF 2.21 + Keras 3 (every test that does not need TFRA)"
(cd tests/python && env -u PYTHON RDE_OTHER_TF_LIBRARY="$lib16" RDE_TFRA_PYTHON="$py16" "$py21" -m pytest -q \
  -p no:cacheprovider .)

echo "== the README demo: Keras 3 model.fit on TF 2.21 (reuses the TF 2.21 venv made above)"
bash scripts/demo.sh
