"""table_store_mode 1: buckets DUMPed to <model_lib_abs_dir>/<model_tag>/<bucket>.rdb and
RESTOREd by name; TFRA's files restore in ours and ours in TFRA."""

import os
import time

import numpy as np
import tensorflow as tf

import redis_embedding as rde
from optional_tfra import de, requires_tfra
from redis_embedding._ops import ops as rde_ops



def rows(t):
    k, v = t.export() if not isinstance(t, tuple) else t
    order = np.argsort(k.numpy())
    return k.numpy()[order], v.numpy()[order]


def lookup_all(t, keys):
    return t.lookup(tf.constant(keys, tf.int64), return_exists=True)


def test_checkpoint_round_trip_restores_exact_state(redis, tmp_path):
    lib = tmp_path / "models"
    path = redis.config(tmp_path / "r.json", table_store_mode=1, model_lib_abs_dir=str(lib),
                        storage_slice=2)
    t = rde.RedisTable(tf.int64, tf.float32, tf.zeros([3]), name="rdbt", checkpoint=True,
                       config=rde.RedisTableConfig(path))
    keys = list(range(100))
    t.insert(tf.constant(keys, tf.int64), tf.reshape(tf.range(300, dtype=tf.float32), [100, 3]))
    ckpt = tf.train.Checkpoint(table=t)
    saved = ckpt.write(str(tmp_path / "ckpt"))
    assert sorted(os.listdir(lib / "test")) == ["test:rdbt{3560}.rdb", "test:rdbt{8209}.rdb"]
    # The checkpoint tensors are empty and well-defined, not a garbage row.
    reader = tf.train.load_checkpoint(saved)
    shapes = {k: v for k, v in reader.get_variable_to_shape_map().items() if "table" in k}
    assert sorted(shapes.values()) == [[0], [0, 3]], shapes
    before, _ = lookup_all(t, keys)
    # Change the table, then restore: exactly the saved rows come back.
    t.remove(tf.constant(keys[:10], tf.int64))
    t.insert(tf.constant([1000], tf.int64), tf.ones([1, 3]))
    ckpt.read(saved)
    after, exists = lookup_all(t, keys)
    assert exists.numpy().all()
    np.testing.assert_array_equal(before.numpy(), after.numpy())
    assert int(t.size()) == 100


def test_missing_file_is_an_error(redis, tmp_path):
    path = redis.config(tmp_path / "r.json", table_store_mode=1,
                        model_lib_abs_dir=str(tmp_path / "none"))
    t = rde.RedisTable(tf.int64, tf.float32, tf.zeros([3]), name="nofile",
                       config=rde.RedisTableConfig(path))
    import pytest
    with pytest.raises(tf.errors.NotFoundError, match=r"test:nofile\{3560\}\.rdb"):
        rde_ops.tfra_rde_redis_table_import(t.resource_handle, tf.constant([], tf.int64),
                                            tf.zeros([0, 3]))


def wait_for_file(path, size):
    """TFRA writes its dump asynchronously: wait (bounded) for the whole file."""
    deadline = time.monotonic() + 20
    while not (os.path.exists(path) and os.path.getsize(path) == size):
        got = os.path.getsize(path) if os.path.exists(path) else "no file"
        assert time.monotonic() < deadline, f"{path} never reached {size} bytes ({got})"
        time.sleep(0.02)


@requires_tfra
def test_rdb_files_move_between_tfra_and_us(redis, tmp_path):
    from tensorflow_recommenders_addons.dynamic_embedding.python.ops import \
        redis_table_ops as tfra_ops
    lib = tmp_path / "lib"
    # TFRA's export does not reliably create <model_lib_abs_dir>/<model_tag>/ itself (it logs
    # "failed to create" and writes nothing), so the directory is made here, as its users must.
    os.makedirs(lib / "test")
    path = redis.config(tmp_path / "r.json", table_store_mode=1, model_lib_abs_dir=str(lib))
    theirs = de.RedisTable(tf.int64, tf.float32, tf.zeros([2]), name="cross_mht_1of1",
                           config=de.RedisTableConfig(redis_config_abs_dir=path))
    keys = tf.range(50, dtype=tf.int64)
    values = tf.reshape(tf.range(100, dtype=tf.float32), [50, 2])
    theirs.insert(keys, values)
    bucket = b"test:cross{3560}"
    dump_len = len(redis.command(b"DUMP", bucket))
    theirs.export()  # TFRA's mode 1 save: DUMP to lib/test/test:cross{3560}.rdb
    wait_for_file(lib / "test" / "test:cross{3560}.rdb", dump_len)
    redis.command(b"DEL", bucket)
    ours = rde.RedisTable(tf.int64, tf.float32, tf.zeros([2]), name="cross",
                          config=rde.RedisTableConfig(path))
    rde_ops.tfra_rde_redis_table_import(ours.resource_handle, tf.constant([], tf.int64), tf.zeros([0, 2]))
    np.testing.assert_array_equal(ours.lookup(keys).numpy(), values.numpy())

    # And back: our dump, TFRA's restore.
    ours.insert(tf.constant([77], tf.int64), tf.constant([[7.0, 7.0]]))
    os.remove(lib / "test" / "test:cross{3560}.rdb")
    ours.export()
    redis.command(b"DEL", bucket)
    tfra_ops.redis_table_ops.tfra_redis_table_import(theirs.resource_handle,
                                                     tf.constant([], tf.int64), tf.zeros([0, 2]))
    got = theirs.lookup(tf.constant([77, 3], tf.int64)).numpy()
    np.testing.assert_array_equal(got, [[7.0, 7.0], [6.0, 7.0]])
