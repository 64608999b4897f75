"""The skip shared by the Keras 3 layer's test modules: they need Keras 3, and they cannot
run in a process that can import TFRA (its import replaces Keras 3's; see test_keras.py)."""

import importlib.util
from types import ModuleType

import pytest


def require_keras3_without_tfra() -> ModuleType:
    """Skips the calling module unless Keras 3 is importable and TFRA is not; returns keras."""
    keras = pytest.importorskip("keras")
    if int(keras.__version__.split(".")[0]) < 3:
        pytest.skip("the layer needs Keras 3", allow_module_level=True)
    if importlib.util.find_spec("tensorflow_recommenders_addons") is not None:
        pytest.skip("Keras 3 models cannot be built after TFRA's import (see test_keras.py)",
                    allow_module_level=True)
    return keras
