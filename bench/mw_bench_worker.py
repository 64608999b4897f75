"""One process of bench/multi_worker.py.

    python bench/mw_bench_worker.py train <config> <index> <workers> [--epochs 3] [--batch 512]
    python bench/mw_bench_worker.py eval <config>

The task: a two-tower dot product, a user and an item `redis_embedding.keras.Embedding` of dim
16 (fused layout, Adam 0.01) and nothing else, so no dense weight needs syncing between
workers. 100 k training examples of Zipf(1.3) user and item ids, labelled by hidden factors;
worker `index` of `workers` trains on every workers-th example, 3 epochs of batch 512. It
traces one step on its first batch, prints "ready", waits for a line on stdin so every worker
starts at once, trains, and prints its timed figures as JSON. `eval` prints the binary
cross-entropy on 20 k held-out examples of the same distribution.

`--global-steps` advances the worker's optimizer step count by `workers` per step instead of 1,
so Adam's bias correction follows the number of steps all workers took together (about what
the shared m and v rows have seen), instead of this worker's own count."""

import argparse
import json
import os
import resource
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

EXAMPLES, HELD_OUT, USERS, ITEMS, FACTORS, DIM = 100_000, 20_000, 200_000, 20_000, 8, 16


def examples(n: int, seed: int) -> tuple:
    """`n` (user, item) id pairs and their labels; the same hidden factors for every seed."""
    rng = np.random.default_rng(seed)
    u = (rng.zipf(1.3, n) % USERS).astype(np.int64)
    i = (rng.zipf(1.3, n) % ITEMS).astype(np.int64)
    u_true = np.random.default_rng(1).normal(size=(USERS, FACTORS))
    i_true = np.random.default_rng(2).normal(size=(ITEMS, FACTORS))
    y = (np.sum(u_true[u] * i_true[i], axis=1) > 0).astype(np.float32)
    return u[:, None], i[:, None], y[:, None]


def model(config: str, train: bool):
    import keras
    from redis_embedding.keras import Embedding, optimizers
    keras.utils.set_random_seed(5)
    init = keras.initializers.RandomNormal(0.0, 0.1, seed=3)
    slots = {} if train else {"fused_slots": 2}  # Adam's m and v, for a model never trained
    user = keras.Input(shape=(1,), dtype="int64")
    item = keras.Input(shape=(1,), dtype="int64")
    u = Embedding(DIM, config=config, name="mw_user", initializer=init, layout="fused",
                  **slots)(user)
    i = Embedding(DIM, config=config, name="mw_item", initializer=init, layout="fused",
                  **slots)(item)
    logits = keras.layers.Dot(axes=1)([keras.layers.Flatten()(u), keras.layers.Flatten()(i)])
    m = keras.Model([user, item], logits)
    m.compile(optimizer=optimizers.Adam(0.01),
              loss=keras.losses.BinaryCrossentropy(from_logits=True))
    return m


def GlobalSteps(optimizer, workers: int):
    """A callback that adds `workers - 1` to the optimizer's step count after each step."""
    import keras

    class Advance(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None) -> None:
            optimizer.iterations.assign_add(workers - 1)

    return Advance()


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def train(a) -> None:
    u, i, y = examples(EXAMPLES, seed=11)
    u, i, y = u[a.index::a.workers], i[a.index::a.workers], y[a.index::a.workers]
    m = model(a.config, train=True)
    b = a.batch
    callbacks = [GlobalSteps(m.optimizer, a.workers)] if a.global_steps else []
    m.fit([u[:b], i[:b]], y[:b], batch_size=b, epochs=1, verbose=0,  # traced, and step 1
          callbacks=callbacks)
    print("ready", flush=True)
    sys.stdin.readline()
    c0, t0 = cpu(), time.perf_counter()
    m.fit([u[b:], i[b:]], y[b:], batch_size=b, epochs=1, verbose=0, shuffle=False,
          callbacks=callbacks)
    if a.epochs > 1:
        m.fit([u, i], y, batch_size=b, epochs=a.epochs - 1, verbose=0, shuffle=False,
              callbacks=callbacks)
    wall, used = time.perf_counter() - t0, cpu() - c0
    trained = len(y) * a.epochs - b
    stats = {}
    for layer in m.layers:
        if hasattr(layer, "stats"):
            for k, v in layer.stats().items():
                if k.startswith("update_"):
                    stats[k] = stats.get(k, 0) + v
    print(json.dumps({"examples": trained, "wall_s": wall, "client_cpu_s": used, **stats}),
          flush=True)


def evaluate(a) -> None:
    u, i, y = examples(HELD_OUT, seed=12)
    m = model(a.config, train=False)
    print(json.dumps({"held_out_loss": float(m.evaluate([u, i], y, batch_size=4096,
                                                        verbose=0))}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["train", "eval"])
    p.add_argument("config")
    p.add_argument("index", type=int, nargs="?", default=0)
    p.add_argument("workers", type=int, nargs="?", default=1)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--global-steps", action="store_true")
    a = p.parse_args()
    train(a) if a.mode == "train" else evaluate(a)


if __name__ == "__main__":
    main()
