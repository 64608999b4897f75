"""save_to_file_system / load_from_file_system: round trips for every dtype pair (strings
included), TFRA's files both ways, Variable naming, dirpath_env, append and whole-dir loads."""

import os

import numpy as np
import pytest
import tensorflow as tf

import redis_embedding as rde
from optional_tfra import de, requires_tfra
from test_ops import PAIRS, make_keys, make_values, table


@pytest.fixture
def config_path(backend_config_path: str) -> str:
    """Runs on both backends (tests taking `redis` or marked redis_only: Redis only)."""
    return backend_config_path


def sorted_rows(t):
    k, v = t.export()
    order = np.argsort(k.numpy())
    return k.numpy()[order], v.numpy()[order]


@pytest.mark.parametrize("key_dtype,value_dtype", PAIRS, ids=lambda d: d.name)
def test_round_trip_every_dtype_pair(config_path, tmp_path, key_dtype, value_dtype):
    t = table(config_path, key_dtype, value_dtype, 3, name="f")
    t.insert(make_keys(key_dtype, range(50)), make_values(value_dtype, 50, 3))
    before = sorted_rows(t)
    t.save_to_file_system(str(tmp_path), file_name="f", buffer_size=7)
    t.clear()
    t.load_from_file_system(str(tmp_path), file_name="f", buffer_size=7)
    after = sorted_rows(t)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])


@pytest.mark.parametrize("key_dtype,value_dtype",
                         [(tf.int64, tf.float32), (tf.int32, tf.float64), (tf.int64, tf.int8)],
                         ids=lambda d: d.name)
@requires_tfra
@pytest.mark.redis_only  # TFRA's own table needs the server
def test_files_move_between_tfra_and_us(config_path, tmp_path, key_dtype, value_dtype):
    cfg = de.RedisTableConfig(redis_config_abs_dir=config_path)
    theirs = de.RedisTable(key_dtype, value_dtype, tf.zeros([4], value_dtype), name="x_mht_1of1",
                           config=cfg)
    ours = table(config_path, key_dtype, value_dtype, 4, name="y")
    k1, v1 = make_keys(key_dtype, range(30)), make_values(value_dtype, 30, 4)
    theirs.insert(k1, v1)
    theirs.save_to_file_system(str(tmp_path / "a"), file_name="t")
    ours.load_from_file_system(str(tmp_path / "a"), file_name="t")
    np.testing.assert_array_equal(ours.lookup(k1).numpy(), v1.numpy())

    k2, v2 = make_keys(key_dtype, range(100, 120)), make_values(value_dtype, 20, 4, base=9)
    ours.clear()
    ours.insert(k2, v2)
    ours.save_to_file_system(str(tmp_path / "b"), file_name="t")
    theirs.clear()
    theirs.load_from_file_system(str(tmp_path / "b"), file_name="t")
    np.testing.assert_array_equal(theirs.lookup(k2).numpy(), v2.numpy())
    assert int(theirs.size()) == 20


@requires_tfra
def test_variable_files_env_append_and_entire_dir(config_path, tmp_path, monkeypatch):
    creator = rde.RedisTableCreator(rde.RedisTableConfig(redis_config_abs_dir=config_path))
    var = de.get_variable("fs", dim=2, devices=["/CPU:0", "/CPU:0"], kv_creator=creator,
                          initializer=0.0)
    keys = tf.range(40, dtype=tf.int64)
    values = tf.reshape(tf.range(80, dtype=tf.float32), [40, 2])
    var.upsert(keys, values)
    monkeypatch.setenv("TFRA_SAVED_KV", str(tmp_path / "from_env"))
    var.save_to_file_system(str(tmp_path / "ignored"), proc_size=2, proc_rank=1)
    names = sorted(os.listdir(tmp_path / "from_env"))
    assert names == ["fs_mht_1of2_rank1_size2-keys", "fs_mht_1of2_rank1_size2-values",
                     "fs_mht_2of2_rank1_size2-keys", "fs_mht_2of2_rank1_size2-values"]
    assert not (tmp_path / "ignored").exists()
    var.clear()
    var.load_from_file_system(str(tmp_path / "x"), proc_size=2, proc_rank=1)
    assert int(var.size()) == 40
    np.testing.assert_array_equal(var.lookup(keys).numpy(), values.numpy())

    monkeypatch.delenv("TFRA_SAVED_KV")
    t = var.tables[0]
    t.save_to_file_system(str(tmp_path / "app"), file_name="p_mht_1of1", append_to_file=True)
    t.save_to_file_system(str(tmp_path / "app"), file_name="p_mht_1of1", append_to_file=True)
    assert os.path.getsize(tmp_path / "app" / "p_mht_1of1-keys") == 2 * 40 * 8
    t.save_to_file_system(str(tmp_path / "app"), file_name="p_mht_2of2")
    var.clear()
    t.load_from_file_system(str(tmp_path / "app"), file_name="p_mht_9of9", load_entire_dir=True)
    assert int(var.size()) == 40


def test_mismatched_files_are_an_error_naming_them(config_path, tmp_path):
    t = table(config_path, tf.int64, tf.float32, 2, name="m")
    (tmp_path / "bad-keys").write_bytes(np.arange(3, dtype=np.int64).tobytes())
    (tmp_path / "bad-values").write_bytes(np.zeros([2, 2], np.float32).tobytes())
    with pytest.raises(tf.errors.DataLossError, match="bad-keys.*3 keys.*2 rows"):
        t.load_from_file_system(str(tmp_path), file_name="bad")
    with pytest.raises(tf.errors.NotFoundError, match="missing-keys"):
        t.load_from_file_system(str(tmp_path), file_name="missing")
    assert int(t.size()) == 0
