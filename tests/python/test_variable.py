"""A TFRA Variable over several device shards whose tables share one Redis prefix."""

import numpy as np
import pytest
import tensorflow as tf

import redis_embedding as rde
from optional_tfra import de, requires_tfra

pytestmark = requires_tfra


@pytest.fixture
def config_path(backend_config_path: str) -> str:
    """Runs on both backends (tests taking `redis` or marked redis_only: Redis only)."""
    return backend_config_path


def test_multi_device_variable_size_export_and_checkpoint(config_path, tmp_path):
    creator = rde.RedisTableCreator(rde.RedisTableConfig(redis_config_abs_dir=config_path))
    var = de.get_variable("md", key_dtype=tf.int64, value_dtype=tf.float32, dim=2,
                          devices=["/CPU:0", "/CPU:0", "/CPU:0"], kv_creator=creator,
                          initializer=0.0)
    assert len(var.tables) == 3
    keys = tf.range(10, dtype=tf.int64)
    values = tf.reshape(tf.range(20, dtype=tf.float32), [10, 2])
    var.upsert(keys, values)
    assert int(var.size()) == 10  # TFRA's backend reports 30 here
    ek, ev = var.export()
    assert sorted(ek.numpy().tolist()) == list(range(10))  # no duplicate rows
    order = np.argsort(ek.numpy())
    np.testing.assert_array_equal(ev.numpy()[order], values.numpy())
    np.testing.assert_array_equal(var.lookup(keys).numpy(), values.numpy())

    ckpt = tf.train.Checkpoint(var=var)
    path = ckpt.write(str(tmp_path / "md"))
    var.clear()
    assert int(var.size()) == 0
    ckpt.read(path)
    assert int(var.size()) == 10
    np.testing.assert_array_equal(var.lookup(keys).numpy(), values.numpy())


def test_clear_on_one_shard_clears_the_shared_rows(config_path):
    creator = rde.RedisTableCreator(rde.RedisTableConfig(redis_config_abs_dir=config_path))
    var = de.get_variable("md2", dim=1, devices=["/CPU:0", "/CPU:0"], kv_creator=creator,
                          initializer=0.0)
    var.upsert(tf.constant([1, 2, 3], tf.int64), tf.ones([3, 1]))
    var.tables[1].clear()
    assert int(var.size()) == 0


def test_ttl_covers_optimizer_slots_but_not_siblings(redis, tmp_path):
    path = redis.config(tmp_path / "ttl.json", expire_model_tag_in_seconds=3600)
    sibling_path = redis.config(tmp_path / "sib.json", expire_model_tag_in_seconds=-1)
    creator = rde.RedisTableCreator(rde.RedisTableConfig(redis_config_abs_dir=path))
    emb = de.get_variable("tt", dim=2, kv_creator=creator, initializer=0.0)
    sibling = de.get_variable("tt2", dim=2, initializer=0.0, kv_creator=rde.RedisTableCreator(
        rde.RedisTableConfig(redis_config_abs_dir=sibling_path)))
    sibling.upsert(tf.constant([1], tf.int64), tf.ones([1, 2]))
    opt = de.DynamicEmbeddingOptimizer(tf.keras.optimizers.Adam(0.1))
    ids = tf.constant([1, 2, 3], tf.int64)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(de.embedding_lookup(emb, ids, name="lk"))
    var_list = tape.watched_variables()
    opt.apply_gradients(zip(tape.gradient(loss, var_list), var_list))
    ttls = {k: redis.command(b"TTL", k) for k in redis.command(b"KEYS", b"test:*")}
    assert set(ttls) == {b"test:tt{3560}", b"test:tt_lk_m{3560}", b"test:tt_lk_v{3560}",
                         b"test:tt2{3560}"}, ttls
    assert all(0 < ttls[k] <= 3600 for k in ttls if k != b"test:tt2{3560}"), ttls
    assert ttls[b"test:tt2{3560}"] == -1
