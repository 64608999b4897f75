"""Loads the op library once: $RDE_OPS_LIBRARY if set, else the library next to this file (the
installed package), else a cargo build in the source checkout. Fails naming every path tried."""

import glob
import os

import tensorflow as tf

_HERE = os.path.dirname(os.path.abspath(__file__))


def _candidates():
    env = os.environ.get("RDE_OPS_LIBRARY")
    if env:
        yield env
        return
    yield from sorted(glob.glob(os.path.join(_HERE, "_redis_embedding_ops*.so")))
    root = os.path.dirname(os.path.dirname(_HERE))
    yield os.path.join(root, "target", "release", "libredis_embedding.so")


def _load():
    errors = []
    for path in _candidates():
        if not os.path.exists(path):
            errors.append(f"{path}: not found")
            continue
        try:
            return tf.load_op_library(path)
        except Exception as e:  # pylint: disable=broad-except
            errors.append(f"{path}: {e}")
    raise ImportError(
        "redis_embedding could not load its op library; tried:\n  " + "\n  ".join(errors)
        + "\nInstall with `pip install --no-build-isolation .` or set RDE_OPS_LIBRARY."
    )


ops = _load()
