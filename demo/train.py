"""Trains a small two-tower recommender whose embeddings live in Redis.

It starts a throwaway redis-server on a free port, trains user and item embeddings created
with TFRA's `get_variable` and our `RedisTableCreator` through TFRA's
`DynamicEmbeddingOptimizer(Adam)`, prints the falling loss and the table sizes, and stops the
server.
"""

import json
import os
import shutil
import tempfile

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TFRA needs legacy Keras
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_recommenders_addons as tfra  # noqa: E402

import redis_embedding as rde  # noqa: E402
from redis_server import start_redis, stop_redis  # noqa: E402

de = tfra.dynamic_embedding


def synthetic_batches(steps, batch, users=2000, items=500, dim=8, seed=0):
    """Clicks driven by hidden user/item factors, so there is something to learn."""
    rng = np.random.default_rng(seed)
    u_true = rng.normal(size=(users, dim))
    i_true = rng.normal(size=(items, dim))
    for _ in range(steps):
        u = rng.zipf(1.3, batch) % users
        i = rng.integers(0, items, batch)
        label = (np.sum(u_true[u] * i_true[i], axis=1) > 0).astype(np.float32)
        yield (tf.constant(u * 7919 + 1, tf.int64), tf.constant(i + 10**9, tf.int64),
               tf.constant(label))


def main():
    workdir = tempfile.mkdtemp(prefix="rde-demo-")
    port, pidfile = start_redis(workdir)
    try:
        config = os.path.join(workdir, "redis.json")
        with open(config, "w") as f:
            json.dump({"redis_connection_mode": 2, "redis_host_ip": ["127.0.0.1"],
                       "redis_host_port": [port], "table_store_mode": 0,
                       "model_tag_runtime": "demo", "model_tag_import": "demo"}, f)
        print(f"redis-server on 127.0.0.1:{port}, config {config}")
        creator = rde.RedisTableCreator(rde.RedisTableConfig(redis_config_abs_dir=config))
        init = tf.keras.initializers.RandomNormal(stddev=0.1)
        users = de.get_variable("user_emb", key_dtype=tf.int64, value_dtype=tf.float32,
                                dim=16, initializer=init, kv_creator=creator)
        items = de.get_variable("item_emb", key_dtype=tf.int64, value_dtype=tf.float32,
                                dim=16, initializer=init, kv_creator=creator)
        opt = de.DynamicEmbeddingOptimizer(tf.keras.optimizers.Adam(0.02))
        bce = tf.keras.losses.BinaryCrossentropy(from_logits=True)

        window = []
        for step, (u, i, y) in enumerate(synthetic_batches(steps=300, batch=512)):
            with tf.GradientTape() as tape:
                ue = de.embedding_lookup(users, u, name="user_lookup")
                ie = de.embedding_lookup(items, i, name="item_lookup")
                loss = bce(y, tf.reduce_sum(ue * ie, axis=1))
            var_list = tape.watched_variables()
            opt.apply_gradients(zip(tape.gradient(loss, var_list), var_list))
            window.append(float(loss))
            if (step + 1) % 50 == 0:
                print(f"step {step + 1:4d}  loss {np.mean(window):.4f}")
                window = []
        print(f"table sizes: user_emb={int(users.size())} item_emb={int(items.size())} "
              f"(+ Adam slots in Redis under demo:user_emb_*/demo:item_emb_*)")
    finally:
        stop_redis(pidfile)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
