"""One timed training run of the two-tower benchmark model; prints one JSON line.

    python bench/train_runner.py --impl {tfra,rde-tfra,rde-fused} --dist {zipf,uniform}
        --config redis.json [--batch 16384] [--dim 64] [--steps 20] [--warmup 3]

`tfra` is TFRA 0.8.1 on TF 2.16.2: its Keras `Embedding` layer (with its unique op) over
its own Redis backend, trained by `DynamicEmbeddingOptimizer(Adam)` (run with the TF 2.16
interpreter). `rde-tfra` / `rde-fused` are `redis_embedding.keras.Embedding` with
`redis_embedding.keras.optimizers.Adam` in the TFRA-compatible and fused layouts (run with the
TF 2.21 interpreter). Same model, data, learning rate and initial-row distribution. A `-lww`
suffix (`rde-fused-lww`, `rde-tfra-lww`) runs the same with `"rde_train_updates":
"last_writer_wins"` instead of the default exact updates.

Two timed phases over the same batches: `empty` (after the warm-up, most rows are new) and
`steady` (the same batches again, every row present), each reported on its own.

Reported: steps/s and examples/s over the timed steps, this process's CPU per step (user +
sys, all threads), redis-server CPU per step (from INFO cpu), the wall time spent inside our
table calls per step (`rde_io_ms_per_step`: the finds and inserts of both towers, which may
overlap), and the loss on a held-out batch after training."""

import argparse
import json
import os
import resource
import socket
import time

IMPL = os.environ.get("RDE_BENCH_IMPL", "")
if IMPL == "tfra":
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

USERS, ITEMS, FACTORS = 1_000_000, 100_000, 8


def batches(dist: str, batch: int, n: int, seed: int):
    """`n` batches of (user, item) ids and labels from hidden factors, so the task is
    learnable through the embeddings."""
    rng = np.random.default_rng(seed)
    u_true = np.random.default_rng(1).normal(size=(4096, FACTORS))
    i_true = np.random.default_rng(2).normal(size=(4096, FACTORS))
    out = []
    for _ in range(n):
        if dist == "zipf":
            u = rng.zipf(1.2, batch) % USERS
            i = rng.zipf(1.2, batch) % ITEMS
        else:
            u = rng.integers(0, USERS, batch)
            i = rng.integers(0, ITEMS, batch)
        y = (np.sum(u_true[u % 4096] * i_true[i % 4096], axis=1) > 0).astype(np.float32)
        out.append(((u.astype(np.int64)[:, None], (i + 10**9).astype(np.int64)[:, None]),
                    y[:, None]))
    return out


def tfra_model(config: str, dim: int):
    import tensorflow_recommenders_addons as tfra
    de = tfra.dynamic_embedding
    keras = tf.keras
    creator = de.RedisTableCreator(de.RedisTableConfig(redis_config_abs_dir=config))
    init = keras.initializers.RandomNormal(0.0, 0.1)
    user = keras.Input(shape=(1,), dtype=tf.int64)
    item = keras.Input(shape=(1,), dtype=tf.int64)
    u = de.keras.layers.Embedding(dim, key_dtype=tf.int64, name="user_emb", kv_creator=creator,
                                  initializer=init)(user)
    i = de.keras.layers.Embedding(dim, key_dtype=tf.int64, name="item_emb", kv_creator=creator,
                                  initializer=init)(item)
    model = towers(keras, user, item, u, i, dim)
    model.compile(optimizer=de.DynamicEmbeddingOptimizer(keras.optimizers.Adam(1e-3)),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True))
    return model


def rde_model(config: str, dim: int, layout: str):
    import keras
    from redis_embedding.keras import Embedding, optimizers
    init = keras.initializers.RandomNormal(0.0, 0.1)
    user = keras.Input(shape=(1,), dtype="int64")
    item = keras.Input(shape=(1,), dtype="int64")
    u = Embedding(dim, config=config, name="user_emb", initializer=init, layout=layout)(user)
    i = Embedding(dim, config=config, name="item_emb", initializer=init, layout=layout)(item)
    model = towers(keras, user, item, u, i, dim)
    model.compile(optimizer=optimizers.Adam(1e-3),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True))
    return model


def towers(keras, user, item, u, i, dim: int):
    u = keras.layers.Dense(dim, name="user_tower")(keras.layers.Flatten()(u))
    i = keras.layers.Dense(dim, name="item_tower")(keras.layers.Flatten()(i))
    return keras.Model([user, item], keras.layers.Dot(axes=1)([u, i]))


def server_cpu(port: int) -> float:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"INFO cpu\r\n")
        data = b""
        while b"used_cpu_user:" not in data or not data.endswith(b"\r\n"):
            data += s.recv(65536)
    total = 0.0
    for line in data.decode().splitlines():
        if line.startswith(("used_cpu_sys:", "used_cpu_user:")):
            total += float(line.split(":")[1])
    return total


def rde_call_ns() -> float:
    """Wall time inside redis_embedding's table calls so far (0 for TFRA's backend)."""
    if IMPL == "tfra":
        return 0.0
    import redis_embedding
    return float(dict(redis_embedding.stats()).get("call_nanoseconds", 0))


def client_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--impl", required=True, choices=["tfra", "rde-tfra", "rde-fused",
                                                     "rde-tfra-lww", "rde-fused-lww"])
    p.add_argument("--dist", required=True, choices=["zipf", "uniform"])
    p.add_argument("--config", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--batch", type=int, default=16384)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    a = p.parse_args()
    data = batches(a.dist, a.batch, a.warmup + a.steps + 1, seed=7)
    held_out = data.pop()
    if a.impl == "tfra":
        model = tfra_model(a.config, a.dim)
    else:
        model = rde_model(updates_config(a.config, a.impl), a.dim, a.impl.split("-")[1])

    def fit(part):
        xs = tuple(np.concatenate([b[0][k] for b in part]) for k in range(2))
        ys = np.concatenate([b[1] for b in part])
        model.fit(list(xs), ys, batch_size=a.batch, epochs=1, verbose=0, shuffle=False)

    def timed(part) -> dict:
        calls0 = rde_call_ns()
        c0, s0, t0 = client_cpu(), server_cpu(a.port), time.perf_counter()
        fit(part)
        wall = time.perf_counter() - t0
        c1, s1 = client_cpu(), server_cpu(a.port)
        return {"steps_per_s": a.steps / wall, "examples_per_s": a.steps * a.batch / wall,
                "client_cpu_ms_per_step": 1000 * (c1 - c0) / a.steps,
                "server_ms_per_step": 1000 * (s1 - s0) / a.steps,
                "rde_io_ms_per_step": (rde_call_ns() - calls0) / 1e6 / a.steps}

    fit(data[:a.warmup])  # traces the train function and fills the tables a little
    empty = timed(data[a.warmup:])
    loss = model.evaluate(list(held_out[0]), held_out[1], batch_size=a.batch, verbose=0)
    steady = timed(data[a.warmup:])
    print(json.dumps({"impl": a.impl, "dist": a.dist, "tf": tf.__version__, "empty": empty,
                      "steady": steady, "held_out_loss": float(loss)}))


def updates_config(config: str, impl: str) -> str:
    """`config`, or for a `-lww` implementation a copy of it with last-writer-wins updates."""
    if not impl.endswith("-lww"):
        return config
    with open(config) as f:
        fields = json.load(f)
    fields["rde_train_updates"] = "last_writer_wins"
    path = config + ".lww.json"
    with open(path, "w") as f:
        json.dump(fields, f)
    return path


if __name__ == "__main__":
    main()
