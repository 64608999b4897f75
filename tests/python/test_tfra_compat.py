"""Byte compatibility with TFRA 0.8.1's own Redis backend, in both directions: rows written
by TFRA are read by us and the reverse, and the stored bytes are the raw little-endian
layout."""

import json

import numpy as np
import pytest
import tensorflow as tf

import redis_embedding as rde
from optional_tfra import de, requires_tfra
from test_ops import make_keys, make_values

pytestmark = requires_tfra


PAIRS = [(tf.int64, tf.float32), (tf.int32, tf.float64), (tf.string, tf.float32),
         (tf.int64, tf.bfloat16), (tf.int64, tf.int8), (tf.string, tf.int64),
         (tf.int64, tf.string)]


def tables(path, key_dtype, value_dtype, dim, name, **cfg):
    default = make_values(value_dtype, 1, dim, base=-7)[0]
    theirs = de.RedisTable(key_dtype, value_dtype, default, name=f"{name}_mht_1of1",
                           config=de.RedisTableConfig(redis_config_abs_dir=path))
    ours = rde.RedisTable(key_dtype, value_dtype, default, name=name,
                          config=rde.RedisTableConfig(redis_config_abs_dir=path))
    return theirs, ours


@pytest.mark.parametrize("key_dtype,value_dtype", PAIRS, ids=lambda d: d.name)
@pytest.mark.parametrize("md5", [False, True], ids=["plain", "md5"])
def test_cross_read_both_directions(redis, tmp_path, key_dtype, value_dtype, md5):
    path = redis.config(tmp_path / "redis.json", using_md5_prefix_name=md5)
    dim = 4
    theirs, ours = tables(path, key_dtype, value_dtype, dim, "compat")
    k1, v1 = make_keys(key_dtype, [1, 2, 3]), make_values(value_dtype, 3, dim)
    k2, v2 = make_keys(key_dtype, [4, 5]), make_values(value_dtype, 2, dim, base=50)
    theirs.insert(k1, v1)
    ours.insert(k2, v2)
    both = tf.concat([k1, k2], 0)
    want = tf.concat([v1, v2], 0).numpy()
    got_ours, ex_ours = ours.lookup(both, return_exists=True)
    got_theirs, ex_theirs = theirs.lookup(both, return_exists=True)
    np.testing.assert_array_equal(got_ours.numpy(), want)
    np.testing.assert_array_equal(got_theirs.numpy(), want)
    assert ex_ours.numpy().all() and ex_theirs.numpy().all()
    assert int(ours.size()) == int(theirs.size()) == 5


def test_stored_bytes_are_raw_little_endian(redis, tmp_path):
    path = redis.config(tmp_path / "redis.json")
    theirs, ours = tables(path, tf.int64, tf.float32, 3, "raw")
    theirs.insert(tf.constant([7], tf.int64), tf.constant([[1.0, 2.5, -3.0]]))
    ours.insert(tf.constant([8], tf.int64), tf.constant([[4.0, 5.5, -6.0]]))
    bucket = b"test:raw{3560}"
    assert redis.command(b"TYPE", bucket) == "hash"
    assert redis.command(b"HGET", bucket, np.int64(7).tobytes()) == \
        np.array([1.0, 2.5, -3.0], "<f4").tobytes()
    assert redis.command(b"HGET", bucket, np.int64(8).tobytes()) == \
        np.array([4.0, 5.5, -6.0], "<f4").tobytes()
    # The only other key is our layout record, which TFRA's prefix scans never match.
    assert [k for k in redis.command(b"KEYS", b"*") if not k.startswith(b"rde-layout:")] == [bucket]


def _train(creator, ids, target, steps):
    """A Variable named "migrate" made by `creator`, trained `steps` Adam steps (through
    TFRA's DynamicEmbeddingOptimizer) towards `target`. Returns the Variable, its rows as
    first looked up, and the loss of every step."""
    var = de.Variable(key_dtype=tf.int64, value_dtype=tf.float32, dim=2, name="migrate",
                      initializer=tf.keras.initializers.RandomNormal(0, 0.1, seed=1),
                      kv_creator=creator)
    first = var.lookup(ids).numpy()
    shadow = de.shadow_ops.ShadowVariable(var, name="migrate-shadow", trainable=True)
    opt = de.DynamicEmbeddingOptimizer(tf.keras.optimizers.Adam(0.1))
    losses = []
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(de.shadow_ops.embedding_lookup(shadow, ids) - target))
        grads = tape.gradient(loss, [shadow])
        opt.apply_gradients(zip(grads, [shadow]))
        losses.append(float(loss))
    return var, first, losses


def test_tfra_training_data_is_readable_by_ours(redis, tmp_path):
    """A Variable trained through TFRA's creator keeps training through ours: both are named
    "migrate" (tables "migrate_mht_1of1", so the same bucket `test:migrate{3560}`). Ours starts
    from the rows TFRA trained, not from fresh initial values; its training moves them; and
    TFRA's table then reads what ours wrote."""
    path = redis.config(tmp_path / "redis.json")
    ids = tf.constant([1, 2, 3], tf.int64)
    target = tf.constant([[1., -1.], [2., -2.], [3., -3.]])
    tfra_creator = de.RedisTableCreator(de.RedisTableConfig(redis_config_abs_dir=path))
    old, initial, old_losses = _train(tfra_creator, ids, target, 5)
    assert isinstance(old.tables[0], de.RedisTable)
    # Why a loss fall can be asserted here: the start is Σ t² = 28 plus what the rows' draw
    # adds (seeded; an N(0, 0.1) draw moves it by about 2 · 0.1 · √28 ≈ 1.1 at one sigma), and
    # each Adam(0.1) step moves all 6 elements by about 0.1 towards the target, about 2.4 off
    # the loss per step: the fall over 5 steps (about 11) is ten times that spread.
    assert old_losses[-1] < old_losses[0], old_losses
    trained_by_tfra = old.lookup(ids).numpy()
    assert not np.allclose(trained_by_tfra, initial)
    assert int(redis.command(b"HLEN", b"test:migrate{3560}")) == 3
    # The rows and the Adam slots (m, v) TFRA wrote.
    tfra_keys = set(redis.command(b"KEYS", b"*"))
    assert b"test:migrate{3560}" in tfra_keys and len(tfra_keys) == 3, tfra_keys

    ours = rde.RedisTableCreator(rde.RedisTableConfig(redis_config_abs_dir=path))
    new, first, new_losses = _train(ours, ids, target, 5)
    assert isinstance(new.tables[0], rde.RedisTable)
    assert new.tables[0].name == "migrate_mht_1of1"
    # Ours read TFRA's trained rows (not its own initializer) and its first step started there.
    np.testing.assert_array_equal(first, trained_by_tfra)
    expected = float(tf.reduce_sum(tf.square(trained_by_tfra - target)))
    assert new_losses[0] == pytest.approx(expected, rel=1e-5), (new_losses, expected)
    assert new_losses[-1] < new_losses[0], new_losses
    # Training through ours moved the rows, in Redis: TFRA's table reads what ours wrote.
    trained_by_ours = new.lookup(ids).numpy()
    assert np.abs(trained_by_ours - trained_by_tfra).min() > 1e-3, (trained_by_ours,
                                                                    trained_by_tfra)
    np.testing.assert_array_equal(old.lookup(ids).numpy(), trained_by_ours)
    assert int(redis.command(b"HLEN", b"test:migrate{3560}")) == 3
    # Ours wrote to TFRA's keys (rows and slots) and added only its layout records.
    ours_keys = set(redis.command(b"KEYS", b"*"))
    assert {k for k in ours_keys if not k.startswith(b"rde-layout:")} == tfra_keys, ours_keys


def test_tfra_keras_layer_fits_and_saves_with_tfras_save_options(redis, tmp_path):
    """TFRA's shortest config (no redis_connection_mode, so mode 1, against a plain server)
    and TFRA's Keras layer with our creator: model.fit lowers the loss, and model.save with
    the options TFRA's docs give (namespace_whitelist=["TFRA"]) works with no code change."""
    path = tmp_path / "redis.json"
    path.write_text(json.dumps({"redis_host_ip": ["127.0.0.1"], "redis_host_port": [redis.port],
                                "table_store_mode": 0}))
    creator = rde.RedisTableCreator(rde.RedisTableConfig(redis_config_abs_dir=str(path)))
    tf.keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 64, size=(2048, 1)).astype(np.int64)
    labels = (ids[:, 0] % 2).astype(np.float32)  # learnable only through the embedding
    model = tf.keras.Sequential([
        tf.keras.Input(shape=(1,), dtype=tf.int64),
        de.keras.layers.Embedding(4, key_dtype=tf.int64, kv_creator=creator, name="ids",
                                  initializer=tf.keras.initializers.RandomNormal(0, 0.1, seed=1)),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(1, kernel_initializer=tf.keras.initializers.GlorotUniform(seed=2)),
    ])
    model.compile(optimizer=de.DynamicEmbeddingOptimizer(tf.keras.optimizers.Adam(0.05)),
                  loss=tf.keras.losses.BinaryCrossentropy(from_logits=True))
    history = model.fit(ids, labels, batch_size=256, epochs=6, verbose=0).history["loss"]
    assert history[-1] < 0.5 * history[0], history
    stored = [k for k in redis.command(b"KEYS", b"*") if not k.startswith(b"rde-layout:")]
    assert stored, "the embedding rows are not in Redis"

    out = str(tmp_path / "saved")
    model.save(out, options=tf.saved_model.SaveOptions(namespace_whitelist=["TFRA"]))
    served = tf.saved_model.load(out).signatures["serving_default"]
    ops = {n.op for n in served.graph.as_graph_def().node}
    ops |= {n.op for f in served.graph.as_graph_def().library.function for n in f.node_def}
    assert any(op.startswith("TFRA>Rde") for op in ops), sorted(ops)
    assert not any(op.startswith("RDE>") for op in ops), sorted(ops)
    (arg,) = served.structured_input_signature[1]
    got = list(served(**{arg: tf.constant(ids[:8])}).values())[0].numpy()
    np.testing.assert_allclose(got, model.predict(ids[:8], verbose=0), rtol=1e-5)
