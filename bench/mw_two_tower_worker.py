"""One process of `bench/multi_worker.py --task two-tower`.

    python bench/mw_two_tower_worker.py <config> <index> <ports> [--epochs 1] [--global-steps]
        [--rows-lr 1e-3]

bench/keras_train.py's two-tower model (bench/train_runner.py: a user and an item fused
`redis_embedding.keras.Embedding` of dim 64, a Dense(64) tower on each, dot product, binary
cross-entropy, Adam 1e-3) and its data: `train_runner.batches("zipf", 16384, 24, seed=7)`, the
last batch held out. W processes (one per port of <ports>) run
`tf.distribute.MultiWorkerMirroredStrategy` over loopback with a custom loop (Keras 3.15's
`model.fit` fails under it, docs/keras.md "Several workers"): each global batch of 16384 is
cut into W slices and worker <index> trains on its slice, so every W trains on the same
examples in the same number of steps. The Dense towers' gradients are all-reduced (the loss
is scaled by 1/W, so their update is W = 1's); each worker applies its own rows' gradients to
Redis.

`--global-steps` advances the rows' optimizer step count by W per step instead of 1, so Adam's
bias correction follows the number of steps all workers applied to the shared rows; the Dense
towers keep their own optimizer, whose count is the number of (all-reduced) steps.
`--rows-lr` sets the rows' Adam learning rate alone (the Dense towers keep 1e-3).

The first step runs (and traces) before the process prints "ready" and waits for a line on
stdin (workers.release_together); then the rest, timed. After a barrier (every worker's last
rows written), worker 0 computes the held-out loss. Each prints one JSON line."""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

BATCH, DIM, BATCHES, LR = 16384, 64, 24, 1e-3  # bench/keras_train.py's defaults: 3 + 20 + 1


def main(a: argparse.Namespace) -> None:
    ports = a.ports.split(",")
    workers = len(ports)
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
        "task": {"type": "worker", "index": a.index}})
    import numpy as np
    import tensorflow as tf
    import keras
    from redis_embedding.keras import Embedding, optimizers
    from train_runner import batches, towers

    data = batches("zipf", BATCH, BATCHES, seed=7)
    held_out = data.pop()
    part = BATCH // workers

    def shard(k: int) -> tuple:
        (u, i), y = data[k]
        cut = slice(a.index * part, (a.index + 1) * part)
        return u[cut], i[cut], y[cut]

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        keras.utils.set_random_seed(5)
        init = keras.initializers.RandomNormal(0.0, 0.1)
        user = keras.Input(shape=(1,), dtype="int64")
        item = keras.Input(shape=(1,), dtype="int64")
        emb = [Embedding(DIM, config=a.config, name=n, initializer=init, layout="fused")
               for n in ("user_emb", "item_emb")]
        model = towers(keras, user, item, emb[0](user), emb[1](item), DIM)
        rows = [layer._anchor for layer in emb]
        dense = [v for v in model.trainable_variables if all(v is not r for r in rows)]
        dense_opt, row_opt = optimizers.Adam(LR), optimizers.Adam(a.rows_lr)
        dense_opt.build(dense)
        row_opt.build(rows)
    bce = keras.losses.BinaryCrossentropy(from_logits=True)

    @tf.function
    def step(u: tf.Tensor, i: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        def replica() -> tf.Tensor:
            with tf.GradientTape() as tape:
                loss = bce(y, model([u, i], training=True))
                scaled = loss / strategy.num_replicas_in_sync  # the all-reduce sums
            grads = tape.gradient(scaled, dense + rows)
            dense_opt.apply(grads[:len(dense)], dense)
            row_opt.apply(grads[len(dense):], rows)
            return loss
        loss = strategy.reduce("MEAN", strategy.run(replica), axis=None)
        if a.global_steps:
            row_opt.iterations.assign_add(workers - 1)
        return loss

    @tf.function
    def barrier() -> tf.Tensor:
        return strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)

    steps = len(data) * a.epochs
    step(*shard(0))
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.perf_counter()
    for k in range(1, steps):
        step(*shard(k % len(data)))
    wall = time.perf_counter() - t0
    barrier()
    out = {"examples": (steps - 1) * part, "wall_s": wall,
           "row_iterations": int(row_opt.iterations.numpy()),
           "dense_iterations": int(dense_opt.iterations.numpy())}
    for layer in emb:
        for k, v in layer.stats().items():
            if k.startswith("update_"):
                out[k] = out.get(k, 0) + v
    if a.index == 0:
        (u, i), y = held_out
        logits = np.concatenate([model([u[s:s + 4096], i[s:s + 4096]], training=False).numpy()
                                 for s in range(0, len(y), 4096)])
        out["held_out_loss"] = float(bce(y, logits))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("index", type=int)
    p.add_argument("ports")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--global-steps", action="store_true")
    p.add_argument("--rows-lr", type=float, default=LR)
    main(p.parse_args())
