"""Trains a two-tower recommender with Keras 3's `model.fit` on the newest TensorFlow, no TFRA.

It starts a throwaway redis-server on a free port (with `--embedded`, none: the rows live in
this process, `"rde_backend": "memory"`). User and item embeddings are
`redis_embedding.keras.Embedding` layers whose rows live in Redis, trained by
`redis_embedding.keras.optimizers.Adam`: dense weights as Keras updates them, embedding rows
by one fused op per table and step. It prints the falling loss and the rows in Redis, then
stops the server.
"""

import argparse
import json
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import redis_embedding as rde  # noqa: E402
from redis_server import start_redis, stop_redis  # noqa: E402

USERS, ITEMS, DIM = 20_000, 2_000, 16


def clicks(n: int, seed: int = 0):
    """Clicks driven by hidden user and item factors, so there is something to learn."""
    rng = np.random.default_rng(seed)
    u_true = rng.normal(size=(USERS, 8))
    i_true = rng.normal(size=(ITEMS, 8))
    u = rng.zipf(1.3, n) % USERS
    i = rng.integers(0, ITEMS, n)
    label = (np.sum(u_true[u] * i_true[i], axis=1) > 0).astype(np.float32)
    return {"user": u.astype(np.int64) * 7919 + 1, "item": i.astype(np.int64) + 10**9}, label


def two_towers(config: str) -> keras.Model:
    user = keras.Input(shape=(), dtype="int64", name="user")
    item = keras.Input(shape=(), dtype="int64", name="item")
    init = keras.initializers.RandomNormal(stddev=0.1, seed=1)
    u = rde.keras.Embedding(DIM, config=config, name="user_emb", initializer=init)(user)
    i = rde.keras.Embedding(DIM, config=config, name="item_emb", initializer=init)(item)
    u = keras.layers.Dense(DIM, name="user_tower")(u)
    i = keras.layers.Dense(DIM, name="item_tower")(i)
    logit = keras.layers.Dot(axes=1)([u, i])
    return keras.Model({"user": user, "item": item}, logit)


def train(config: str) -> None:
    """Fits the two towers on the clicks and prints the loss and the rows stored."""
    model = two_towers(config)
    model.compile(optimizer=rde.keras.optimizers.Adam(0.01),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True),
                  metrics=[keras.metrics.BinaryAccuracy(threshold=0.0)])
    x, y = clicks(200_000)
    history = model.fit(x, y, batch_size=2048, epochs=5, verbose=2)
    losses = history.history["loss"]
    print("loss by epoch: " + " ".join(f"{v:.4f}" for v in losses))
    user_emb = model.get_layer("user_emb")
    item_emb = model.get_layer("item_emb")
    where = ("each row holds the params, then Adam's m and v" if user_emb.layout == "fused"
             else "Adam's m and v rows beside them, where TFRA keeps them")
    print(f"rows stored: user_emb={int(user_emb.table.size())} "
          f"item_emb={int(item_emb.table.size())} ({user_emb.layout} layout: {where})")
    if not losses[-1] < losses[0]:
        raise SystemExit("the loss did not fall")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--embedded", action="store_true",
                    help="keep the rows in this process: no redis-server")
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="rde-demo-")
    config = os.path.join(workdir, "config.json")
    tags = {"model_tag_runtime": "demo", "model_tag_import": "demo"}
    if args.embedded:
        try:
            with open(config, "w") as f:
                json.dump({"rde_backend": "memory", **tags}, f)
            print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}; embedded backend")
            train(config)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return
    port, pidfile = start_redis(workdir)
    try:
        with open(config, "w") as f:
            json.dump({"redis_connection_mode": 2, "redis_host_ip": ["127.0.0.1"],
                       "redis_host_port": [port], **tags}, f)
        print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}; "
              f"redis-server on 127.0.0.1:{port}")
        train(config)
    finally:
        stop_redis(pidfile)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
