"""TFRA, where the environment has it. The TF 2.16 leg has TFRA 0.8.1 and sets
RDE_REQUIRE_TFRA=1, so a broken TFRA install fails there instead of skipping; the newest-TF
leg has no TFRA and skips the tests marked `requires_tfra`."""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any, Optional

import pytest

tfra: Optional[ModuleType]
try:
    import tensorflow_recommenders_addons as tfra
except ImportError:
    if os.environ.get("RDE_REQUIRE_TFRA") == "1":
        raise
    tfra = None

de: Any = tfra.dynamic_embedding if tfra is not None else None

requires_tfra = pytest.mark.skipif(tfra is None, reason="needs TFRA 0.8.1 (the TF 2.16 leg)")
