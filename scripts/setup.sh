#!/usr/bin/env bash
# Sets up a machine for redis-embedding and builds the package into a virtual environment of
# its own, so nothing depends on what the machine's Python already has.
#
#   bash scripts/setup.sh [STACK] [--fresh]     STACK: tf2.16 (default) or tf2.21
#
#   tf2.16  tensorflow-cpu 2.16.2 + TFRA 0.8.1 + tf-keras 2.16.0: the drop-in stack. TFRA
#           imports pkg_resources, which setuptools 81 removed, hence setuptools<81.
#   tf2.21  tensorflow-cpu 2.21.0 with Keras 3, no TFRA.
#
# The venv is .venv/STACK in the checkout (RDE_VENV_ROOT puts it elsewhere). It is created
# when missing, and anew with --fresh (scripts/test.sh passes it under CI=true, so CI resolves
# packages as a new machine does); pip's download cache is used either way. The package is then built with that
# venv's pip, not activated, which is what `build.rs` must get right.
set -euo pipefail
cd "$(dirname "$0")/.."

stack=${1:-tf2.16}
fresh=${2:-}
case "$stack" in
  tf2.16) packages=("tensorflow-cpu==2.16.2" "tensorflow-recommenders-addons==0.8.1"
                    "tf-keras==2.16.0" "setuptools>=68,<81") ;;
  tf2.21) packages=("tensorflow-cpu==2.21.0" "setuptools>=68") ;;
  *) echo "unknown stack '$stack': use tf2.16 or tf2.21" >&2; exit 2 ;;
esac
packages+=("setuptools-rust>=1.9" wheel pytest prometheus_client)
export PIP_DISABLE_PIP_VERSION_CHECK=1

SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  echo "== installing redis-server (apt)" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server redis-tools >/dev/null
fi
if ! command -v cargo >/dev/null; then
  echo "cargo (Rust) is required: install it with rustup" >&2
  exit 1
fi
base_python=${RDE_BASE_PYTHON:-python3}
if ! "$base_python" -c "import venv, ensurepip" 2>/dev/null; then
  echo "== installing python3-venv (apt)" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
fi

venv="${RDE_VENV_ROOT:-$PWD/.venv}/$stack"
if [ "$fresh" = --fresh ]; then rm -rf "$venv"; fi
if [ ! -x "$venv/bin/python" ]; then
  echo "== creating $venv" >&2
  "$base_python" -m venv "$venv"
fi
echo "== pip install into $venv: ${packages[*]}" >&2
"$venv/bin/python" -m pip install -q "${packages[@]}"

echo "== building and installing redis_embedding into $venv (cargo via setuptools-rust)" >&2
"$venv/bin/python" -m pip install -q --no-build-isolation --no-deps --force-reinstall .
