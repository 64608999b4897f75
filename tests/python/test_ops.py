"""Table ops on both backends (a real redis-server, and the embedded one): dtypes, shapes,
defaults, duplicates, accum, and the three TF execution styles."""

import threading

import numpy as np
import pytest
import tensorflow as tf

import redis_embedding as rde

@pytest.fixture
def config_path(backend_config_path: str) -> str:
    """Every test here runs on both backends."""
    return backend_config_path


# Every (key, value) pair TFRA registers kernels for.
PAIRS = [
    (tf.int32, tf.float64), (tf.int32, tf.float32), (tf.int32, tf.int32), (tf.int32, tf.bfloat16),
    (tf.int64, tf.float64), (tf.int64, tf.float32), (tf.int64, tf.int32), (tf.int64, tf.int64),
    (tf.int64, tf.string), (tf.int64, tf.int8), (tf.int64, tf.float16), (tf.int64, tf.bfloat16),
    (tf.string, tf.bool), (tf.string, tf.float64), (tf.string, tf.float32), (tf.string, tf.int32),
    (tf.string, tf.int64), (tf.string, tf.int8), (tf.string, tf.float16), (tf.string, tf.bfloat16),
]


def make_keys(dtype, ids):
    if dtype == tf.string:
        return tf.constant([b"key-%d" % i for i in ids])
    return tf.constant(ids, dtype)


def make_values(dtype, n, dim, base=0):
    if dtype == tf.string:
        return tf.constant([[b"s%d-%d" % (base + i, j) * (j + 1) for j in range(dim)] for i in range(n)])
    if dtype == tf.bool:
        return tf.constant([[(base + i + j) % 2 == 0 for j in range(dim)] for i in range(n)])
    v = np.arange(n * dim, dtype=np.float64).reshape(n, dim) + base
    return tf.cast(tf.constant(v), dtype)


def table(config_path, key_dtype, value_dtype, dim, name="t", **kw):
    default = make_values(value_dtype, 1, dim, base=-100)[0] if value_dtype == tf.string \
        else tf.cast(tf.fill([dim], -1.0), value_dtype) if value_dtype != tf.bool \
        else tf.zeros([dim], tf.bool)
    return rde.RedisTable(key_dtype, value_dtype, default, name=name,
                          config=rde.RedisTableConfig(config_path), **kw)


@pytest.mark.parametrize("key_dtype,value_dtype", PAIRS, ids=lambda d: d.name)
def test_every_dtype_pair_round_trips(config_path, key_dtype, value_dtype):
    dim = 3
    t = table(config_path, key_dtype, value_dtype, dim, name=f"p_{key_dtype.name}_{value_dtype.name}")
    keys = make_keys(key_dtype, [1, 2, 3])
    values = make_values(value_dtype, 3, dim)
    t.insert(keys, values)
    got, exists = t.lookup(make_keys(key_dtype, [3, 9, 1]), return_exists=True)
    np.testing.assert_array_equal(got.numpy()[0], values.numpy()[2])
    np.testing.assert_array_equal(got.numpy()[1], t._default_value.numpy())
    np.testing.assert_array_equal(got.numpy()[2], values.numpy()[0])
    assert exists.numpy().tolist() == [True, False, True]
    assert int(t.size()) == 3
    ek, ev = t.export()
    order = np.argsort(ek.numpy())
    np.testing.assert_array_equal(ek.numpy()[order], np.sort(keys.numpy()))
    np.testing.assert_array_equal(ev.numpy()[order], values.numpy()[np.argsort(keys.numpy())])
    t.remove(make_keys(key_dtype, [1, 42]))
    assert int(t.size()) == 2


def test_per_key_dynamic_defaults(config_path):
    t = table(config_path, tf.int64, tf.float32, 2)
    t.insert(tf.constant([5], tf.int64), tf.constant([[5.0, 5.0]]))
    dyn = tf.constant([[1.0, 1.5], [2.0, 2.5], [3.0, 3.5]])
    got = t.lookup(tf.constant([4, 5, 6], tf.int64), dynamic_default_values=dyn)
    np.testing.assert_array_equal(got.numpy(), [[1.0, 1.5], [5.0, 5.0], [3.0, 3.5]])


def test_high_rank_keys(config_path):
    t = table(config_path, tf.int64, tf.float32, 2)
    keys = tf.constant([[1, 2, 3], [4, 5, 6]], tf.int64)
    vals = tf.reshape(tf.range(12, dtype=tf.float32), [2, 3, 2])
    t.insert(keys, vals)
    got, exists = t.lookup(keys, return_exists=True)
    assert got.shape == (2, 3, 2) and exists.shape == (2, 3)
    np.testing.assert_array_equal(got.numpy(), vals.numpy())
    dyn = tf.fill([2, 2, 2], 7.0)
    got = t.lookup(tf.constant([[1, 100], [2, 200]], tf.int64), dynamic_default_values=dyn)
    np.testing.assert_array_equal(got.numpy()[:, 1], [[7.0, 7.0], [7.0, 7.0]])


@pytest.mark.parametrize("values_shape", [[2, 3], [2], [3, 2], [1, 2, 2]])
def test_invalid_value_shapes_are_rejected(config_path, values_shape):
    t = table(config_path, tf.int64, tf.float32, 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Expected shape"):
        t.insert(tf.constant([1, 2], tf.int64), tf.zeros(values_shape))
    with pytest.raises(tf.errors.InvalidArgumentError, match="Expected shape"):
        t.accum(tf.constant([1, 2], tf.int64), tf.zeros(values_shape), tf.constant([True, True]))
    assert int(t.size()) == 0


def test_wrong_key_dtype_is_rejected(config_path):
    t = table(config_path, tf.int64, tf.float32, 2)
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
        t.insert(tf.constant([1], tf.int32), tf.zeros([1, 2]))
    with pytest.raises(TypeError, match="Keys must be dtype"):
        t.remove(tf.constant([1], tf.int32))


def test_duplicate_keys_in_one_insert_keep_the_last_row(config_path):
    t = table(config_path, tf.int64, tf.float32, 1)
    keys = tf.constant([1, 2, 1, 1, 2], tf.int64)
    t.insert(keys, tf.constant([[1.0], [2.0], [3.0], [4.0], [5.0]]))
    np.testing.assert_array_equal(t.lookup(tf.constant([1, 2], tf.int64)).numpy(), [[4.0], [5.0]])
    assert int(t.size()) == 2


def test_duplicate_keys_in_lookup_get_the_same_row(config_path):
    t = table(config_path, tf.int64, tf.float32, 2)
    t.insert(tf.constant([1], tf.int64), tf.constant([[1.0, 2.0]]))
    got, ex = t.lookup(tf.constant([1, 3, 1, 3], tf.int64), return_exists=True)
    np.testing.assert_array_equal(got.numpy(), [[1, 2], [-1, -1], [1, 2], [-1, -1]])
    assert ex.numpy().tolist() == [True, False, True, False]


def test_remove_missing_keys_is_a_no_op(config_path):
    t = table(config_path, tf.int64, tf.float32, 1)
    t.insert(tf.constant([1], tf.int64), tf.constant([[1.0]]))
    t.remove(tf.constant([7, 8, 9], tf.int64))
    assert int(t.size()) == 1
    t.remove(tf.constant([], tf.int64))
    assert int(t.size()) == 1


def test_empty_batches(config_path):
    t = table(config_path, tf.int64, tf.float32, 2)
    got = t.lookup(tf.constant([], tf.int64))
    assert got.shape == (0, 2)
    t.accum(tf.constant([], tf.int64), tf.zeros([0, 2]), tf.constant([], tf.bool))
    assert int(t.size()) == 0


def test_find_with_exists_and_accum_semantics(config_path):
    t = table(config_path, tf.int64, tf.float32, 2)
    t.insert(tf.constant([1, 2], tf.int64), tf.constant([[1.0, 1.0], [2.0, 2.0]]))
    _, exists = t.lookup(tf.constant([1, 2, 3, 4], tf.int64), return_exists=True)
    assert exists.numpy().tolist() == [True, True, False, False]
    # Present+exists adds, present+!exists keeps, absent+!exists inserts, absent+exists drops.
    t.accum(tf.constant([1, 2, 3, 4], tf.int64),
            tf.constant([[0.5, 0.5], [9.0, 9.0], [3.0, 3.0], [4.0, 4.0]]),
            tf.constant([True, False, False, True]))
    got, exists = t.lookup(tf.constant([1, 2, 3, 4], tf.int64), return_exists=True)
    np.testing.assert_array_equal(got.numpy(), [[1.5, 1.5], [2.0, 2.0], [3.0, 3.0], [-1, -1]])
    assert exists.numpy().tolist() == [True, True, True, False]


def test_accum_rejects_string_values_and_bad_exists(config_path):
    t = table(config_path, tf.int64, tf.string, 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="accum does not support string"):
        t.accum(tf.constant([1], tf.int64), tf.constant([[b"x"]]), tf.constant([False]))
    t = table(config_path, tf.int64, tf.float32, 1, name="u")
    with pytest.raises(tf.errors.InvalidArgumentError, match="exists has 1 entries"):
        t.accum(tf.constant([1, 2], tf.int64), tf.zeros([2, 1]), tf.constant([True]))


def test_concurrent_accums_add_up_exactly(config_path):
    dim, n_keys, threads, rounds = 8, 256, 8, 20
    t = table(config_path, tf.int64, tf.float32, dim)
    keys = tf.range(n_keys, dtype=tf.int64)
    t.insert(keys, tf.zeros([n_keys, dim]))
    ones = tf.ones([n_keys, dim])
    exists = tf.ones([n_keys], tf.bool)
    errors = []

    def worker():
        try:
            for _ in range(rounds):
                t.accum(keys, ones, exists)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    assert not errors
    np.testing.assert_array_equal(t.lookup(keys).numpy(), np.full([n_keys, dim], threads * rounds))


def test_clear_only_touches_this_table(config_path):
    a = table(config_path, tf.int64, tf.float32, 1, name="emb")
    b = table(config_path, tf.int64, tf.float32, 1, name="emb2")
    a.insert(tf.constant([1], tf.int64), tf.constant([[1.0]]))
    b.insert(tf.constant([1], tf.int64), tf.constant([[1.0]]))
    a.clear()
    assert int(a.size()) == 0 and int(b.size()) == 1


def test_tf_function(config_path):
    t = table(config_path, tf.int64, tf.float32, 2)

    @tf.function
    def step(keys, values):
        t.insert(keys, values)
        return t.lookup(keys * 1, return_exists=True)

    got, exists = step(tf.constant([1, 2], tf.int64), tf.constant([[1.0, 2.0], [3.0, 4.0]]))
    np.testing.assert_array_equal(got.numpy(), [[1, 2], [3, 4]])
    assert exists.numpy().all()
    assert int(tf.function(t.size)()) == 2


def test_tf1_graph_mode_with_session(config_path):
    with tf.Graph().as_default():
        t = table(config_path, tf.int64, tf.float32, 2)
        keys = tf.compat.v1.placeholder(tf.int64, [None])
        ins = t.insert(keys, tf.ones([tf.size(keys), 2]))
        found, exists = t.lookup(keys, return_exists=True)
        assert found.shape.as_list() == [None, 2]
        size = t.size()
        with tf.compat.v1.Session() as sess:
            sess.run(ins, {keys: [1, 2, 3]})
            f, e, n = sess.run([found, exists, size], {keys: [3, 4]})
    np.testing.assert_array_equal(f, [[1, 1], [-1, -1]])
    assert e.tolist() == [True, False] and n == 3


def test_stored_value_of_wrong_length_fails_naming_bucket_and_key(config_path, redis):
    t = table(config_path, tf.int64, tf.float32, 4, name="bad")
    t.insert(tf.constant([1], tf.int64), tf.ones([1, 4]))
    redis.command(b"HSET", b"test:bad{3560}", np.int64(77).tobytes(), b"\x00" * 12)
    with pytest.raises(tf.errors.DataLossError, match=r"bucket test:bad\{3560\} key 77: stored value has 12 bytes"):
        t.lookup(tf.constant([1, 77], tf.int64))
    with pytest.raises(tf.errors.DataLossError, match="key 77"):
        t.export()
    assert redis.command(b"HLEN", b"test:bad{3560}") == 2  # nothing was lost or rewritten
