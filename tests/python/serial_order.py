"""The rows that serial orders of two workers' steps leave, for the serial-order test
(test_exact_updates.py): Keras 3's Adam and Adagrad `update_step`
(keras/src/optimizers/adam.py, adagrad.py) replayed in float32 numpy, operation for operation,
over every interleaving of the two workers' step sequences that keeps each worker's order.

A step is `(number, gradient)`: Adam's bias correction takes the step number of the worker
that applies the step (its `iterations + 1`), not a count of the row's updates."""

from __future__ import annotations

import itertools
from typing import Iterator, List, Sequence, Tuple

import numpy as np

Step = Tuple[int, np.ndarray]
f32 = np.float32
BETA_1, BETA_2, EPSILON = 0.9, 0.999, 1e-7  # Keras's defaults
INITIAL_ACCUMULATOR = 0.1


def adam(row: np.ndarray, step: Step, lr: float) -> np.ndarray:
    """Params, m, v after one Adam step from `row` (params, m, v)."""
    p, m, v = (a.copy() for a in np.split(row.astype(f32), 3))
    number, g = step
    t = f32(number)
    b1_power, b2_power = np.power(f32(BETA_1), t), np.power(f32(BETA_2), t)
    alpha = f32(lr) * np.sqrt(f32(1) - b2_power) / (f32(1) - b1_power)
    m += (g - m) * f32(1 - BETA_1)
    v += (g * g - v) * f32(1 - BETA_2)
    p -= (m * alpha) / (np.sqrt(v) + f32(EPSILON))
    return np.concatenate([p, m, v])


def adagrad(row: np.ndarray, step: Step, lr: float) -> np.ndarray:
    """Params, accumulator after one Adagrad step from `row` (params, accumulator)."""
    p, a = (x.copy() for x in np.split(row.astype(f32), 2))
    g = step[1]
    a += g * g
    p -= (f32(lr) * g) / np.sqrt(a + f32(EPSILON))
    return np.concatenate([p, a])


def start_row(optimizer: str, dim: int, init: float) -> np.ndarray:
    """A new id's params then slots, as the trainer starts them."""
    slots = [0.0, 0.0] if optimizer == "adam" else [INITIAL_ACCUMULATOR]
    return np.concatenate([np.full(dim, init, f32)] + [np.full(dim, s, f32) for s in slots])


def interleavings(a: Sequence[Step], b: Sequence[Step]) -> Iterator[List[Step]]:
    """Every merge of `a` and `b` that keeps the order within each (C(|a|+|b|, |a|) of them)."""
    n = len(a) + len(b)
    for at in itertools.combinations(range(n), len(a)):
        ia, ib = iter(a), iter(b)
        chosen = set(at)
        yield [next(ia) if k in chosen else next(ib) for k in range(n)]


def serial_rows(optimizer: str, lr: float, start: np.ndarray, a: Sequence[Step],
                b: Sequence[Step], numbered_by_row: bool = False) -> List[np.ndarray]:
    """The row each serial order of `a` and `b` leaves, starting from `start`. With
    `numbered_by_row` (a wrong model, to show the check tells them apart), a step's number
    is its place among the row's updates instead of its worker's count."""
    update = adam if optimizer == "adam" else adagrad
    out = []
    for order in interleavings(a, b):
        row = start
        for k, (number, g) in enumerate(order):
            row = update(row, (k + 1 if numbered_by_row else number, g), lr)
        out.append(row)
    return out


def matching_orders(stored: np.ndarray, candidates: Sequence[np.ndarray],
                    rtol: float = 1e-6) -> int:
    """How many of `candidates` equal `stored` to `rtol` in every element."""
    return sum(bool(np.allclose(stored, c, rtol=rtol, atol=0.0)) for c in candidates)
