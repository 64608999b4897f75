"""SavedModel: a model that looks up through our table is exported, loaded in a fresh process
and served against a second redis-server chosen by TFRA_REDIS_CONFIG_PATH."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import tensorflow as tf

import redis_embedding as rde
from redis_harness import RedisServer


EXPORT = textwrap.dedent("""
    import os, sys
    import tensorflow as tf
    import redis_embedding as rde
    config, out = sys.argv[1], sys.argv[2]

    class Model(tf.Module):
        def __init__(self):
            try:  # through TFRA's Variable where TFRA is installed, else our table alone
                import tensorflow_recommenders_addons as tfra
            except ImportError:
                self.emb = rde.RedisTable(tf.int64, tf.float32, tf.constant([-1.0, -1.0]),
                                          name="served", config=rde.RedisTableConfig(config),
                                          checkpoint=True)
                self.emb.upsert = self.emb.insert
                return
            creator = rde.RedisTableCreator(rde.RedisTableConfig(redis_config_abs_dir=config))
            self.emb = tfra.dynamic_embedding.get_variable(
                "served", dim=2, initializer=-1.0, kv_creator=creator)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64)])
        def serve(self, ids):
            return tf.reduce_sum(self.emb.lookup(ids), axis=1)

    m = Model()
    m.emb.upsert(tf.constant([1, 2], tf.int64), tf.constant([[1.0, 1.0], [2.0, 2.0]]))
    print("offline", m.serve(tf.constant([1, 2, 3], tf.int64)).numpy().tolist())
    tf.saved_model.save(m, out)
""")

SERVE = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    import redis_embedding  # registers the ops
    loaded = tf.saved_model.load(sys.argv[1])
    print(json.dumps(loaded.serve(tf.constant([1, 2, 3], tf.int64)).numpy().tolist()))
""")


def run(script, *args, env=None):
    full = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    full.pop("TFRA_REDIS_CONFIG_PATH", None) if env is None else None
    out = subprocess.run([sys.executable, "-c", script, *args], env=full, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def test_saved_model_serves_from_the_redis_named_at_load_time(redis, tmp_path):
    """table_store_mode 2: the data stays in Redis, so the served values are the online ones."""
    offline = redis.config(tmp_path / "offline.json", table_store_mode=2)
    online_server = RedisServer(tmp_path / "online")
    try:
        online = online_server.config(tmp_path / "online.json", table_store_mode=2)
        model_dir = str(tmp_path / "model")
        assert run(EXPORT, offline, model_dir) == "offline [2.0, 4.0, -2.0]"

        # The online store has other values for the same keys.
        t = rde.RedisTable(tf.int64, tf.float32, tf.zeros([2]), name="served",
                           config=rde.RedisTableConfig(online))
        t.insert(tf.constant([1, 3], tf.int64), tf.constant([[10.0, 10.0], [30.0, 30.0]]))

        served = json.loads(run(SERVE, model_dir, env={"TFRA_REDIS_CONFIG_PATH": online}))
        assert served == [20.0, -2.0, 60.0]
        # Without the override the model reads the offline store it was exported with.
        assert json.loads(run(SERVE, model_dir, env={})) == [2.0, 4.0, -2.0]
    finally:
        online_server.stop()


def test_saved_model_in_mode_0_carries_its_rows(redis, tmp_path):
    """table_store_mode 0: the rows are in the SavedModel and are restored on load."""
    offline = redis.config(tmp_path / "offline.json", table_store_mode=0)
    fresh = RedisServer(tmp_path / "fresh")
    try:
        target = fresh.config(tmp_path / "fresh.json", table_store_mode=0)
        model_dir = str(tmp_path / "model")
        run(EXPORT, offline, model_dir)
        served = json.loads(run(SERVE, model_dir, env={"TFRA_REDIS_CONFIG_PATH": target}))
        assert served == [2.0, 4.0, -2.0]
        assert fresh.command(b"HLEN", b"test:served{3560}") == 2
    finally:
        fresh.stop()
