"""The model and data both sides of the TFRA continuation tests train: ids pairs whose label
is learnable only through the embedding rows."""

from typing import Tuple

import numpy as np

DIM = 8
LR = 0.05
STEPS = 8


def data() -> Tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.integers(0, 40, size=(1024, 2)).astype(np.int64)
    y = ((x[:, 0] % 3 == 0) ^ (x[:, 1] % 2 == 0)).astype(np.float32)[:, None]
    return x, y
