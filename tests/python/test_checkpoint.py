"""Checkpoints in table_store_mode 0: tf.train.Checkpoint, a TF1 Saver, and an Adam training
run whose embedding and optimizer-slot tables come back exactly."""

import numpy as np
import pytest
import tensorflow as tf

import redis_embedding as rde
from optional_tfra import de, requires_tfra


@pytest.fixture
def config_path(backend_config_path: str) -> str:
    """Runs on both backends (tests taking `redis` or marked redis_only: Redis only)."""
    return backend_config_path


def rows(table):
    keys, values = table.export()
    order = np.argsort(keys.numpy())
    return keys.numpy()[order], values.numpy()[order]


def new_table(config_path, name="ckpt"):
    return rde.RedisTable(tf.int64, tf.float32, tf.zeros([3]), name=name, checkpoint=True,
                          config=rde.RedisTableConfig(config_path))


def test_tf_train_checkpoint_round_trip(config_path, tmp_path):
    t = new_table(config_path)
    keys = tf.constant([3, 1, 2], tf.int64)
    t.insert(keys, tf.reshape(tf.range(9, dtype=tf.float32), [3, 3]))
    before = rows(t)
    ckpt = tf.train.Checkpoint(table=t)
    path = ckpt.write(str(tmp_path / "ckpt"))
    t.clear()
    assert int(t.size()) == 0
    ckpt.read(path).assert_consumed()
    after = rows(t)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])


def test_a_checkpoint_of_a_table_without_checkpoint_true_warns_once(config_path, tmp_path):
    t = rde.RedisTable(tf.int64, tf.float32, tf.zeros([3]), name="unsaved",
                       config=rde.RedisTableConfig(config_path))
    t.insert(tf.constant([1], tf.int64), tf.ones([1, 3]))
    ckpt = tf.train.Checkpoint(table=t)
    with pytest.warns(rde.CheckpointWarning) as seen:
        ckpt.write(str(tmp_path / "first"))
        ckpt.write(str(tmp_path / "second"))
    said = [str(w.message) for w in seen if issubclass(w.category, rde.CheckpointWarning)]
    assert len(said) == 1, said
    assert "'unsaved'" in said[0] and "checkpoint=True" in said[0]


def test_a_checkpoint_of_a_saved_table_does_not_warn(config_path, tmp_path):
    import warnings

    t = new_table(config_path, name="saved")
    with warnings.catch_warnings():
        warnings.simplefilter("error", rde.CheckpointWarning)
        tf.train.Checkpoint(table=t).write(str(tmp_path / "ckpt"))


def test_tf1_saver_round_trip(config_path, tmp_path):
    with tf.Graph().as_default():
        t = new_table(config_path, name="saver_tbl")
        ins = t.insert(tf.constant([10, 20], tf.int64), tf.constant([[1., 2., 3.], [4., 5., 6.]]))
        clear = t.clear()
        size = t.size()
        exported = t.export()
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as sess:
            sess.run(ins)
            before = sess.run(exported)
            path = saver.save(sess, str(tmp_path / "model"))
            sess.run(clear)
            assert sess.run(size) == 0
            saver.restore(sess, path)
            after = sess.run(exported)
    ob, oa = np.argsort(before[0]), np.argsort(after[0])
    np.testing.assert_array_equal(before[0][ob], after[0][oa])
    np.testing.assert_array_equal(before[1][ob], after[1][oa])


@requires_tfra
def test_adam_training_survives_save_and_restore_exactly(config_path, tmp_path):
    creator = rde.RedisTableCreator(rde.RedisTableConfig(redis_config_abs_dir=config_path))
    emb = de.get_variable("ckpt_emb", key_dtype=tf.int64, value_dtype=tf.float32, dim=4,
                          initializer=tf.keras.initializers.RandomNormal(seed=1),
                          kv_creator=creator)
    opt = de.DynamicEmbeddingOptimizer(tf.keras.optimizers.Adam(0.05))
    ids = tf.constant([1, 2, 3, 5, 8, 2], tf.int64)
    losses = []
    for _ in range(4):
        with tf.GradientTape() as tape:
            e = de.embedding_lookup(emb, ids, name="lk")
            loss = tf.reduce_mean(tf.square(e - 0.5))
        var_list = tape.watched_variables()
        opt.apply_gradients(zip(tape.gradient(loss, var_list), var_list))
        losses.append(float(loss))
    assert losses[-1] < losses[0]

    slots = [v.params for v in opt.variables() if isinstance(getattr(v, "params", None), de.Variable)]
    tables = [emb] + slots
    assert len(tables) == 3, [v.name for v in opt.variables()]  # embedding + Adam m and v
    before = [rows(v.tables[0]) for v in tables]
    assert all(len(b[0]) == 5 for b in before)

    ckpt = tf.train.Checkpoint(emb=emb, opt=opt)
    path = ckpt.write(str(tmp_path / "adam"))
    for v in tables:
        v.clear()
    assert all(int(v.size()) == 0 for v in tables)
    ckpt.read(path)
    for v, b in zip(tables, before):
        a = rows(v.tables[0])
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


from test_ops import PAIRS, make_keys, make_values  # noqa: E402


@pytest.mark.parametrize("mode", [0, 1, 2])
@pytest.mark.parametrize("key_dtype,value_dtype", PAIRS, ids=lambda d: d.name)
def test_every_mode_round_trips_every_dtype_pair(redis, tmp_path, mode, key_dtype, value_dtype):
    path = redis.config(tmp_path / "m.json", table_store_mode=mode,
                        model_lib_abs_dir=str(tmp_path / "lib"))
    default = make_values(value_dtype, 1, 2, base=-5)[0]
    t = rde.RedisTable(key_dtype, value_dtype, default, name="rt", checkpoint=True,
                       config=rde.RedisTableConfig(path))
    keys = make_keys(key_dtype, range(20))
    values = make_values(value_dtype, 20, 2)
    t.insert(keys, values)
    ckpt = tf.train.Checkpoint(table=t)
    saved = ckpt.write(str(tmp_path / "ckpt"))
    if mode != 2:  # mode 2 keeps the data in Redis only: nothing to clear and bring back
        t.clear()
        assert int(t.size()) == 0
    ckpt.read(saved)
    got, exists = t.lookup(keys, return_exists=True)
    assert exists.numpy().all()
    np.testing.assert_array_equal(got.numpy(), values.numpy())
    assert int(t.size()) == 20


@requires_tfra
def test_tfra_file_system_saver(config_path, tmp_path):
    creator = rde.RedisTableCreator(rde.RedisTableConfig(redis_config_abs_dir=config_path),
                                    saver=de.FileSystemSaver())
    var = de.get_variable("fss", dim=2, kv_creator=creator, initializer=0.0)
    keys = tf.range(30, dtype=tf.int64)
    values = tf.reshape(tf.range(60, dtype=tf.float32), [30, 2])
    var.upsert(keys, values)
    ckpt = tf.train.Checkpoint(var=var)
    path = ckpt.save(str(tmp_path / "c"))
    kv_dir = tmp_path / "TFRADynamicEmbedding"
    assert sorted(p.name for p in kv_dir.iterdir()) == [
        "fss_mht_1of1_rank0_size1-keys", "fss_mht_1of1_rank0_size1-values"]
    var.clear()
    ckpt.restore(path)
    assert int(var.size()) == 30
    np.testing.assert_array_equal(var.lookup(keys).numpy(), values.numpy())


@requires_tfra
def test_training_with_bfloat16_storage_still_learns(redis, tmp_path):
    path = redis.config(tmp_path / "bf.json", rde_value_storage="bfloat16")
    creator = rde.RedisTableCreator(rde.RedisTableConfig(redis_config_abs_dir=path))
    emb = de.get_variable("bf_emb", dim=8, kv_creator=creator,
                          initializer=tf.keras.initializers.RandomNormal(seed=2))
    opt = de.DynamicEmbeddingOptimizer(tf.keras.optimizers.Adam(0.05))
    ids = tf.constant([1, 2, 3, 4, 5], tf.int64)
    target = tf.constant(np.linspace(-1, 1, 40, dtype=np.float32).reshape(5, 8))
    losses = []
    for _ in range(30):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(de.embedding_lookup(emb, ids, name="lk") - target))
        var_list = tape.watched_variables()
        opt.apply_gradients(zip(tape.gradient(loss, var_list), var_list))
        losses.append(float(loss))
    assert losses[-1] < 0.2 * losses[0], losses[::10]
    # Rows are stored as 8 bfloat16 values: 16 bytes, half of float32.
    assert len(redis.command(b"HGET", b"test:bf_emb{3560}", np.int64(1).tobytes())) == 16
