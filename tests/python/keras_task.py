"""The model, data and arithmetic the Keras-layer tests share (numpy only: imported by the
TF 2.16 + TFRA side of the hand-over tests too).

The model is ids (N, 2) → Embedding(DIM) → Flatten → Dense(1), trained on MSE with Adam
(Keras's defaults beta_1 0.9, beta_2 0.999, epsilon 1e-7). The label is learnable only
through the embedding rows."""

from typing import Any, Dict, Tuple

import numpy as np

DIM = 8
LR = 0.05
STEPS = 8
BATCH = 128
IDS = 40  # ids 0..39
TOUCHED = 30  # the hand-over step's batch holds ids below this only
SEED = 7  # Keras / TF / numpy global seed on both sides
EMB_SEED = 11  # the embedding initializer, RandomNormal(0, 0.1, seed=EMB_SEED)
DENSE_SEED = 13  # the Dense kernel initializer, GlorotUniform(seed=DENSE_SEED)
BETA_1, BETA_2, EPSILON = 0.9, 0.999, 1e-7


# The slot names each optimizer of the hand-over tests keeps, as TFRA names its tables.
TFRA_SLOTS = {"adam": ("m", "v"), "ftrl": ("accumulator", "linear"),
              "rmsprop": ("velocity", "momentum", "average_gradient")}


def tfra_optimizer(module: Any, kind: str) -> Any:
    """The hand-over tests' optimizer `kind` from `module` (tf.keras.optimizers on TFRA's
    side, redis_embedding.keras.optimizers on ours): the same settings on both sides."""
    if kind == "adam":
        return module.Adam(LR)
    if kind == "ftrl":
        return module.Ftrl(LR, l1_regularization_strength=0.001)
    return module.RMSprop(LR / 5, momentum=0.5, centered=True)


def data() -> Tuple[np.ndarray, np.ndarray]:
    """STEPS batches of BATCH id pairs over IDS ids, and their labels."""
    rng = np.random.default_rng(SEED)
    x = rng.integers(0, IDS, size=(STEPS * BATCH, 2)).astype(np.int64)
    y = ((x[:, 0] % 3 == 0) ^ (x[:, 1] % 2 == 0)).astype(np.float32)[:, None]
    return x, y


def step_batch() -> Tuple[np.ndarray, np.ndarray]:
    """The one batch the receiving side trains after a hand-over: BATCH pairs of ids below
    TOUCHED (many repeat, so duplicate gradients must be summed; ids TOUCHED.. stay as
    they were)."""
    x, y = data()
    keep = (x < TOUCHED).all(axis=1)
    return x[keep][:BATCH], y[keep][:BATCH]


def all_ids() -> np.ndarray:
    """The ids the data holds, sorted."""
    return np.unique(data()[0])


def row_gradients(x: np.ndarray, y: np.ndarray, rows: Dict[int, np.ndarray],
                  kernel: np.ndarray, bias: np.ndarray) -> Dict[int, np.ndarray]:
    """d mean((pred - y)^2) / d row, per distinct id of `x` (duplicates summed), in float64,
    for pred = concat(rows[x[:, 0]], rows[x[:, 1]]) @ kernel + bias."""
    dim = kernel.shape[0] // 2
    flat = np.concatenate([np.stack([rows[int(i)] for i in x[:, j]]) for j in (0, 1)], axis=1)
    pred = flat.astype(np.float64) @ kernel.astype(np.float64) + bias.astype(np.float64)
    dpred = 2.0 * (pred - y.astype(np.float64)) / len(x)  # (N, 1)
    grads = {int(i): np.zeros(dim) for i in np.unique(x)}
    for j in (0, 1):
        per = dpred * kernel[j * dim:(j + 1) * dim, 0].astype(np.float64)[None, :]
        for i, g in zip(x[:, j], per):
            grads[int(i)] += g
    return grads


def adam(param: np.ndarray, m: np.ndarray, v: np.ndarray, grad: np.ndarray, step: int,
         lr: float = LR) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One Adam update at 1-based `step` (Keras's form, default betas and epsilon: epsilon
    outside the bias correction). Returns the new (param, m, v), in float64 but for the
    step size, computed in float32 from float32 betas as Keras, TFRA and our op compute it
    (float64 betas would move it by ~6e-6, float32 rounding of `beta ** step` up to ~2e-6)."""
    f = np.float32
    c1, c2, eps = (float(f(c)) for c in (1 - BETA_1, 1 - BETA_2, EPSILON))
    m = m + (grad - m) * c1
    v = v + (grad ** 2 - v) * c2
    alpha = f(lr) * np.sqrt(f(1) - f(BETA_2) ** f(step)) / (f(1) - f(BETA_1) ** f(step))
    return param - float(alpha) * m / (np.sqrt(v) + eps), m, v


Rows = Dict[str, np.ndarray]
"""{"params", "m", "v"}: one row per id of an id array, in its order."""
SLOTS = ("params", "m", "v")


def lazy_adam(before: Rows, ids: np.ndarray, grads: Dict[int, np.ndarray], step: int,
              lr: float = LR) -> Rows:
    """`before` after one lazy Adam step at 1-based `step` given the batch's summed
    gradient per distinct id (`row_gradients`): those ids take Adam, every other id keeps
    its rows."""
    want = {k: before[k].astype(np.float64) for k in SLOTS}
    for n, i in enumerate(ids.tolist()):
        if i in grads:
            want["params"][n], want["m"][n], want["v"][n] = adam(
                want["params"][n], want["m"][n], want["v"][n], grads[i], step, lr)
    return want


def assert_rows_close(got: np.ndarray, want: np.ndarray, rtol: float, what: str) -> None:
    """`got` equals `want` to `rtol` relative to each row's largest magnitude."""
    scale = np.abs(want).max(axis=1, keepdims=True)
    err = np.abs(got - want) / np.where(scale > 0, scale, 1.0)
    assert err.max() <= rtol, (what, float(err.max()))


def assert_lazy_step(got: Rows, want: Rows, before: Rows, ids: np.ndarray, x: np.ndarray,
                     rtol: float) -> None:
    """The rows of the ids in `x` are `want`'s (to `rtol`) and moved; all others are
    exactly `before`'s."""
    touched = np.isin(ids, x)
    assert touched.any()
    for k in SLOTS:
        assert_rows_close(got[k][touched], want[k][touched], rtol, k)
        assert (got[k][touched] != before[k][touched]).any(axis=1).all(), k
        np.testing.assert_array_equal(got[k][~touched], before[k][~touched], err_msg=k)
