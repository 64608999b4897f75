"""Byte compatibility with TFRA's backend in cluster mode (3 masters): same bucket names, same
bucket for every key, rows readable in both directions."""

import numpy as np
import pytest
import tensorflow as tf

import redis_embedding as rde
from optional_tfra import de, requires_tfra
from test_ops import make_keys, make_values

pytestmark = requires_tfra



@pytest.mark.parametrize("key_dtype", [tf.int64, tf.int32, tf.string], ids=lambda d: d.name)
@pytest.mark.parametrize("hashed", [False, True], ids=["mod", "crc32c"])
def test_cluster_cross_read(redis_cluster, tmp_path, key_dtype, hashed):
    path = redis_cluster.config(tmp_path / "c.json", storage_slice=3,
                                using_hash_storage_slice=hashed, keys_sending_size=16)
    dim = 2
    default = tf.zeros([dim])
    theirs = de.RedisTable(key_dtype, tf.float32, default, name="cc_mht_1of1",
                           config=de.RedisTableConfig(redis_config_abs_dir=path))
    ids_a, ids_b = list(range(0, 60)), list(range(60, 100))
    ka, va = make_keys(key_dtype, ids_a), make_values(tf.float32, len(ids_a), dim)
    kb, vb = make_keys(key_dtype, ids_b), make_values(tf.float32, len(ids_b), dim, base=1000)
    theirs.insert(ka, va)
    # TFRA's connection probe writes a key that lives 1 ms; it is not table data.
    tfra_keys = [k for k in redis_cluster.keys() if k != b"key test for connecting"]
    assert len(tfra_keys) == 3
    ours = rde.RedisTable(key_dtype, tf.float32, default, name="cc",
                          config=rde.RedisTableConfig(redis_config_abs_dir=path))
    ours.insert(kb, vb)
    # Same three buckets (plus our layout record), so every key went to TFRA's bucket.
    assert [k for k in redis_cluster.keys()
            if not k.startswith(b"rde-layout:") and k != b"key test for connecting"] == tfra_keys
    both = tf.concat([ka, kb], 0)
    want = tf.concat([va, vb], 0).numpy()
    for table in (ours, theirs):
        got, exists = table.lookup(both, return_exists=True)
        np.testing.assert_array_equal(got.numpy(), want)
        assert exists.numpy().all()
    assert int(ours.size()) == int(theirs.size()) == 100
