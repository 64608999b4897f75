"""The installed op library matches the running TensorFlow, and a library built for another
TensorFlow is refused at import with an error naming both versions and the fix."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
import tensorflow as tf

import redis_embedding as rde
from redis_embedding import _ops


def test_the_loaded_library_was_built_for_this_tensorflow() -> None:
    path = os.environ.get("RDE_OPS_LIBRARY") or pathlib.Path(rde.__file__).parent
    libs = [str(path)] if os.path.isfile(path) else \
        [str(p) for p in pathlib.Path(path).glob("_redis_embedding_ops*.so")]
    assert libs, f"no op library under {path}"
    for lib in libs:
        assert _ops.built_for(lib) == tf.__version__, lib


def test_a_library_for_another_tensorflow_is_refused_naming_both(tmp_path: pathlib.Path) -> None:
    fake = tmp_path / "lib.so"
    fake.write_bytes(b"\x7fELF" + b"\0" * 4096 + b"redis-embedding:built-for-tensorflow=2.9.1;")
    with pytest.raises(_ops.TensorFlowMismatchError) as e:
        _ops.check_built_for(str(fake), running="2.21.0")
    msg = str(e.value)
    assert "TensorFlow 2.9.1" in msg and "TensorFlow 2.21.0" in msg, msg
    assert "--no-build-isolation --force-reinstall" in msg, msg
    _ops.check_built_for(str(fake), running="2.9.4")  # same major.minor: accepted
    unmarked = tmp_path / "old.so"
    unmarked.write_bytes(b"\x7fELF" + b"\0" * 64)
    assert _ops.built_for(str(unmarked)) is None
    _ops.check_built_for(str(unmarked), running="2.21.0")  # nothing to compare: load decides


@pytest.mark.skipif(not os.environ.get("RDE_OTHER_TF_LIBRARY"),
                    reason="needs RDE_OTHER_TF_LIBRARY: a library built for another TensorFlow")
def test_importing_with_the_other_legs_library_names_both_versions() -> None:
    other = os.environ["RDE_OTHER_TF_LIBRARY"]
    built = _ops.built_for(other)
    assert built is not None and built.split(".")[:2] != tf.__version__.split(".")[:2]
    out = subprocess.run([sys.executable, "-c", "import redis_embedding"],
                         env=dict(os.environ, RDE_OPS_LIBRARY=other, TF_CPP_MIN_LOG_LEVEL="3"),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "TensorFlowMismatchError" in out.stderr, out.stderr[-2000:]
    assert f"built for TensorFlow {built}" in out.stderr, out.stderr[-2000:]
    assert f"runs TensorFlow {tf.__version__}" in out.stderr, out.stderr[-2000:]
