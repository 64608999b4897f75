#!/usr/bin/env bash
# Installs what redis-embedding needs on a fresh Debian machine, then builds and installs the
# package into the current Python. Idempotent: already-installed pieces are skipped quickly.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  echo "== installing redis-server (apt)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server redis-tools >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "cargo (Rust) is required: install it with rustup" >&2
  exit 1
fi

# The pinned stack TFRA 0.8.1 supports. pip's cache (~/.cache/pip) makes reruns fast.
if ! $PY - <<'PYEOF' 2>/dev/null
import importlib.metadata as m
want = {"tensorflow-cpu": "2.16.2", "tensorflow-recommenders-addons": "0.8.1",
        "tf-keras": "2.16.0"}
assert all(m.version(k) == v for k, v in want.items())
import pytest, setuptools_rust  # noqa: F401
PYEOF
then
  echo "== installing the pinned Python stack (pip)"
  $PY -m pip install -q "tensorflow-cpu==2.16.2" "tensorflow-recommenders-addons==0.8.1" \
    "tf-keras==2.16.0" "setuptools>=68" "setuptools-rust>=1.9" wheel pytest
fi

echo "== building and installing redis_embedding (cargo via setuptools-rust)"
$PY -m pip install -q --no-build-isolation --no-deps .
