#!/usr/bin/env bash
# The Bazel leg: installs Debian's Bazel 4.2.3 (and the rule repositories it would otherwise
# download) if missing, builds the op library with Bazel and runs the Python op suite against
# that library on a real redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v bazel >/dev/null || [ ! -d /usr/share/bazel/rules/java ] || [ ! -d /usr/share/bazel/tools/platforms ]; then
  echo "== installing bazel-bootstrap (apt)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq bazel-bootstrap bazel-rules-java bazel-platforms >/dev/null
fi

export PYTHON_BIN_PATH="${PYTHON:-$PWD/.venv/tf2.16/bin/python}"
# bazel/run_op_tests.sh runs `python3` from PATH (.bazelrc passes PATH to the test).
export PATH="$(dirname "$PYTHON_BIN_PATH"):$PATH"
status=0
bazel build //:_redis_embedding_ops.so && bazel test //:op_tests || status=$?
bazel shutdown >/dev/null 2>&1 || true
exit $status
