"""The Python surface: every method takes lists and numpy arrays, names are set in eager mode,
`RedisTableCreator.create()` keeps no config passed to it, and the type hints ship."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import tensorflow as tf

import redis_embedding as rde
from optional_tfra import de, requires_tfra


def table(config_path: str, key_dtype=tf.int64, name: str = "api") -> rde.RedisTable:
    return rde.RedisTable(key_dtype, tf.float32, [-1.0, -1.0], name=name,
                          config=rde.RedisTableConfig(config_path))


def buckets(redis) -> list:
    """The data buckets in the server (not the layout records)."""
    return sorted(k for k in redis.command(b"KEYS", b"*") if not k.startswith(b"rde-layout:"))


def test_every_method_takes_lists_and_numpy_arrays(config_path):
    t = table(config_path)
    t.insert([1, 2, 3], [[1, 1], [2, 2], [3, 3]])
    t.insert(np.array([4], np.int32), np.array([[4, 4]], np.float64))
    got = t.lookup([1, 9], dynamic_default_values=[[0, 0], [9, 9]])
    np.testing.assert_array_equal(got.numpy(), [[1, 1], [9, 9]])
    got, exists = t.lookup(np.array([4, 8]), np.zeros([2, 2]), return_exists=True)
    np.testing.assert_array_equal(got.numpy(), [[4, 4], [0, 0]])
    assert exists.numpy().tolist() == [True, False]
    t.accum([1, 5], [[10, 10], [5, 5]], [True, False])
    np.testing.assert_array_equal(t.lookup([1, 5]).numpy(), [[11, 11], [5, 5]])
    t.remove([1, 2])
    t.remove(np.array([3], np.int32))
    assert sorted(t.export()[0].numpy().tolist()) == [4, 5]

    @tf.function
    def remove_in_a_graph():
        t.remove([4])

    remove_in_a_graph()
    assert int(t.size()) == 1


def test_string_keys_may_be_python_strings(config_path):
    t = table(config_path, tf.string)
    t.insert(["a", "b"], [[1, 1], [2, 2]])
    t.remove(["a"])
    np.testing.assert_array_equal(t.lookup(["a", "b"]).numpy(), [[-1, -1], [2, 2]])


def test_a_tensor_of_another_dtype_is_refused_alike_by_every_method(config_path):
    t = table(config_path)
    k32, v64 = tf.constant([1], tf.int32), tf.constant([[1.0, 1.0]], tf.float64)
    calls = [lambda: t.lookup(k32), lambda: t.insert(k32, [[1, 1]]), lambda: t.remove(k32),
             lambda: t.accum(k32, [[1, 1]], [False]), lambda: t.insert([1], v64),
             lambda: t.lookup([1], dynamic_default_values=v64)]
    for call in calls:
        with pytest.raises(TypeError, match="Signature mismatch"):
            call()
    assert int(t.size()) == 0


def test_save_and_load_take_path_objects(config_path, tmp_path):
    t = table(config_path, name="paths")
    t.insert([1, 2], [[1, 1], [2, 2]])
    t.save_to_file_system(tmp_path / "kv", file_name=pathlib.Path("rows"))
    assert (tmp_path / "kv" / "rows-keys").is_file()
    t.clear()
    t.load_from_file_system(tmp_path / "kv", file_name=pathlib.Path("rows"))
    np.testing.assert_array_equal(t.lookup([1, 2]).numpy(), [[1, 1], [2, 2]])


def test_name_is_the_table_name_in_eager_and_graph_mode(config_path):
    assert table(config_path, name="emb_mht_1of2").name == "emb_mht_1of2"
    with tf.Graph().as_default():
        assert table(config_path, name="emb_mht_1of2").name == "emb_mht_1of2"


def test_create_keeps_no_config_passed_to_it(redis, tmp_path):
    mine = rde.RedisTableConfig(redis.config(tmp_path / "a.json", model_tag_runtime="mine"))
    other = rde.RedisTableConfig(redis.config(tmp_path / "b.json", model_tag_runtime="other"))
    creator = rde.RedisTableCreator(mine)
    args = dict(key_dtype=tf.int64, value_dtype=tf.float32, default_value=[0.0])
    creator.create(name="t1", config=other, **args).insert([1], [[1.0]])
    assert creator.config is mine and creator.get_config()["config"] is other
    creator.create(name="t2", **args).insert([1], [[1.0]])
    assert creator.get_config()["config"] is mine  # as in TFRA: the last table's config
    assert [b.split(b":")[0] for b in buckets(redis)] == [b"mine", b"other"]


def test_get_config_takes_a_list_default(config_path):
    creator = rde.RedisTableCreator(rde.RedisTableConfig(config_path))
    creator.create(key_dtype=tf.int64, value_dtype=tf.float32, default_value=[0.5, 1.5],
                   name="listed")
    np.testing.assert_array_equal(creator.get_config()["default_value"], [0.5, 1.5])


def test_create_names_missing_arguments(config_path):
    creator = rde.RedisTableCreator(rde.RedisTableConfig(config_path))
    with pytest.raises(TypeError, match="needs key_dtype, value_dtype, default_value and name"):
        creator.create(key_dtype=tf.int64, value_dtype=tf.float32, default_value=[0.0])


@requires_tfra
def test_a_variable_uses_its_creators_config_after_a_direct_create(redis, tmp_path):
    mine = rde.RedisTableConfig(redis.config(tmp_path / "a.json", model_tag_runtime="mine"))
    other = de.RedisTableConfig(redis.config(tmp_path / "b.json", model_tag_runtime="other"))
    creator = rde.RedisTableCreator(mine)
    creator.create(key_dtype=tf.int64, value_dtype=tf.float32, default_value=[0.0],
                   name="direct", config=other)
    var = de.get_variable("viacreator", dim=1, kv_creator=creator, initializer=0.0)
    var.upsert([3], [[3.0]])
    assert [t.name for t in var.tables] == ["viacreator_mht_1of1"]
    assert buckets(redis) and all(b.startswith(b"mine:") for b in buckets(redis))
    assert creator.get_config()["name"] == "viacreator_mht_1of1"


def test_py_typed_ships_with_the_package():
    assert pathlib.Path(rde.__file__).with_name("py.typed").is_file()
