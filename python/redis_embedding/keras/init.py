"""Keras initializers as the deterministic per-key starts the op computes in Rust."""

from __future__ import annotations

import math
from typing import Any, Tuple

import keras

InitSpec = Tuple[str, Tuple[float, float], int]
"""(kind, (a, b), seed): `constant` (value), `uniform` (low, high), `normal` and
`truncated_normal` (mean, stddev)."""

SUPPORTED = ("Zeros, Ones, Constant, RandomUniform, RandomNormal, TruncatedNormal and the "
             "VarianceScaling family (GlorotUniform/Normal, HeUniform/Normal, "
             "LecunUniform/Normal)")


def _seed(init: Any) -> int:
    """The seed the user gave (Keras draws a random one when none is given; rows would then
    differ between processes, so that case is seed 0)."""
    seed = getattr(init, "_init_seed", getattr(init, "seed", None))
    return seed if isinstance(seed, int) else 0


def init_spec(initializer: Any, dim: int) -> InitSpec:
    """The op's `init`, `init_params` and `seed` for a Keras initializer (an instance, a name
    or a config). Rows start deterministically from (key, seed), so every worker and every
    rerun sees the same initial row. VarianceScaling initializers take fan_in = fan_out = dim.
    Raises `ValueError` for initializers that cannot be drawn per key."""
    init = keras.initializers.get(initializer)
    I = keras.initializers
    if isinstance(init, I.Zeros):
        return "constant", (0.0, 0.0), 0
    if isinstance(init, I.Ones):
        return "constant", (1.0, 0.0), 0
    if isinstance(init, I.Constant):
        value = init.value
        try:
            return "constant", (float(value), 0.0), 0
        except TypeError:
            raise ValueError(f"Embedding initializer Constant({value!r}): only a scalar "
                             "constant can start a row") from None
    if isinstance(init, I.RandomUniform):
        return "uniform", (float(init.minval), float(init.maxval)), _seed(init)
    if isinstance(init, I.TruncatedNormal):
        return "truncated_normal", (float(init.mean), float(init.stddev)), _seed(init)
    if isinstance(init, I.RandomNormal):
        return "normal", (float(init.mean), float(init.stddev)), _seed(init)
    if isinstance(init, I.VarianceScaling):
        scale = init.scale / max(1.0, float(dim))
        if init.distribution == "truncated_normal":
            return "truncated_normal", (0.0, math.sqrt(scale) / 0.87962566103423978), _seed(init)
        if init.distribution == "untruncated_normal":
            return "normal", (0.0, math.sqrt(scale)), _seed(init)
        limit = math.sqrt(3.0 * scale)
        return "uniform", (-limit, limit), _seed(init)
    raise ValueError(f"Embedding initializer {type(init).__name__} cannot start rows per key; "
                     f"use one of {SUPPORTED}")
