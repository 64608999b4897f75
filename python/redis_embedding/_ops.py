"""Loads the op library once: $RDE_OPS_LIBRARY if set, else the library next to this file (the
installed package), else a cargo build in the source checkout. Fails naming every path tried.

Before loading, the TensorFlow version the library was compiled for (a marker string that
`cc/ops.cc` puts in the file) is compared with the running one: a library built for another
TensorFlow would otherwise fail with an undefined symbol that names neither version."""

from __future__ import annotations

import glob
import mmap
import os
import sys
from typing import Iterator, Optional

import tensorflow as tf

_HERE = os.path.dirname(os.path.abspath(__file__))
_MARKER = b"redis-embedding:built-for-tensorflow="


def _candidates() -> Iterator[str]:
    env = os.environ.get("RDE_OPS_LIBRARY")
    if env:
        yield env
        return
    yield from sorted(glob.glob(os.path.join(_HERE, "_redis_embedding_ops*.so")))
    root = os.path.dirname(os.path.dirname(_HERE))
    yield os.path.join(root, "target", "release", "libredis_embedding.so")


def built_for(path: str) -> Optional[str]:
    """The TensorFlow version the library at `path` was compiled against, or None if the
    file carries no marker (a library from before the marker existed)."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        start = m.find(_MARKER)
        if start < 0:
            return None
        start += len(_MARKER)
        end = m.find(b";", start, start + 64)
        return m[start:end].decode("ascii", "replace") if end > 0 else None


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


class TensorFlowMismatchError(ImportError):
    """The op library was compiled for another TensorFlow than the one running."""


def check_built_for(path: str, running: str = tf.__version__) -> None:
    """Raises `TensorFlowMismatchError` naming both versions and the reinstall command when
    the library at `path` was built for another TensorFlow major.minor than `running`."""
    built = built_for(path)
    if built is None or _major_minor(built) == _major_minor(running):
        return
    raise TensorFlowMismatchError(
        f"redis_embedding's op library {path} was built for TensorFlow {built}, but this "
        f"interpreter ({sys.executable}) runs TensorFlow {running}. Rebuild it for this "
        f"TensorFlow: in the redis-embedding checkout run `{sys.executable} -m pip install "
        f"--no-build-isolation --force-reinstall --no-deps .`"
    )


def _load() -> object:
    errors = []
    for path in _candidates():
        if not os.path.exists(path):
            errors.append(f"{path}: not found")
            continue
        check_built_for(path)
        try:
            return tf.load_op_library(path)
        except Exception as e:  # pylint: disable=broad-except
            errors.append(f"{path}: {e}")
    raise ImportError(
        "redis_embedding could not load its op library; tried:\n  " + "\n  ".join(errors)
        + "\nInstall with `pip install --no-build-isolation .` or set RDE_OPS_LIBRARY."
    )


ops = _load()
