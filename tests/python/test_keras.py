"""The Keras 3 layer and its fused sparse optimizers, on a real redis-server and on the
embedded backend.

Row updates are compared with Keras's own optimizer applied to a dense variable holding the
same rows, given the same (summed) gradients."""

import os
import subprocess
import sys
from typing import Any, Dict, Optional

import numpy as np
import pytest
import tensorflow as tf

from keras3_only import require_keras3_without_tfra

# TFRA's import replaces Keras 3's VarianceScaling.__call__ (tf_patch.py) with one that fails,
# so no Keras 3 Dense layer builds in a process that imported TFRA. The TF 2.21 leg runs
# these tests (and TFRA's half of the continuation tests in a TF 2.16 subprocess).
keras = require_keras3_without_tfra()

import redis_embedding as rde  # noqa: E402
from keras_task import (SLOTS, Rows, assert_lazy_step, assert_rows_close,  # noqa: E402
                        lazy_adam, row_gradients)
from redis_embedding.keras import Embedding, optimizers  # noqa: E402

DIM = 8
# One step in float32 against numpy's float64, relative to each row's largest value: the
# largest difference measured is 3.3e-7 (the Adagrad loop's params, numpy free-running over
# 15 steps; Adam steps of fit 2.9e-7).
RTOL = 1e-6


@pytest.fixture
def config_path(backend_config_path: str) -> str:
    """Every test here that does not inspect the server runs on both backends."""
    return backend_config_path


@pytest.fixture(autouse=True)
def seeded() -> None:
    """Whatever a test draws without a seed of its own (Dense kernels) is the same each run."""
    keras.utils.set_random_seed(0)


def head() -> keras.layers.Dense:
    """The Dense(1) every model here ends with, its kernel seeded."""
    return keras.layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(seed=5))


_readers: Dict[int, Embedding] = {}


def adam_rows(emb: Embedding, ids: np.ndarray) -> Rows:
    """The params (a missing id's initial row), m and v rows of `ids` (a missing slot row
    is zeros, Adam's start), in either layout. Fused rows are read through a second layer of
    the same name told the row width, so `emb` need not have been built yet."""
    keys = tf.constant(ids, tf.int64)
    if emb.layout == "fused":
        reader = _readers.get(id(emb))
        if reader is None:
            reader = _readers[id(emb)] = Embedding(
                DIM, config=emb.redis_config, name=emb.name, layout="fused", fused_slots=2,
                initializer=emb.initializer)
        full = reader.table.lookup(keys).numpy()
        return {"params": reader.lookup(keys).numpy(), "m": full[:, DIM:2 * DIM],
                "v": full[:, 2 * DIM:]}
    return {"params": emb.lookup(keys).numpy(), "m": emb.slot_table("m").lookup(keys).numpy(),
            "v": emb.slot_table("v").lookup(keys).numpy()}


def tf_row_gradients(x: np.ndarray, y: np.ndarray, ids: np.ndarray, params: np.ndarray,
                     kernel: np.ndarray, bias: np.ndarray) -> Dict[int, np.ndarray]:
    """The MSE gradient of each distinct id of `x` (duplicates summed), for the model
    ids (N, 2) → rows → Flatten → Dense(1) with rows `params` (of `ids`), taken by TF in
    float32 on a dense variable, as the layer's own forward pass rounds it."""
    table = tf.Variable(params.astype(np.float32))
    with tf.GradientTape() as tape:
        flat = tf.reshape(tf.gather(table, np.searchsorted(ids, x)), [len(x), -1])
        loss = keras.losses.MeanSquaredError()(y, tf.matmul(flat, kernel) + bias)
    grad = tf.convert_to_tensor(tape.gradient(loss, table)).numpy().astype(np.float64)
    return {int(i): grad[np.searchsorted(ids, i)] for i in np.unique(x)}


class LazyAdamSteps(keras.callbacks.Callback):
    """Checks every step of an unshuffled `fit` of an ids (N, 2) → `emb` → Flatten → `dense`
    model on MSE against lazy Adam in numpy (keras_task.lazy_adam), from the rows, slots,
    dense weights and step count the step started from and TF's gradient of those rows."""

    def __init__(self, emb: Embedding, dense: keras.layers.Dense, x: np.ndarray,
                 y: np.ndarray, batch_size: int, lr: float) -> None:
        super().__init__()
        self.emb, self.dense, self.x, self.y = emb, dense, x, y
        self.batch_size, self.lr = batch_size, lr
        self.ids = np.unique(x)
        self.checked = 0
        self.start: Dict[str, Any] = {}

    def on_train_batch_begin(self, batch: int, logs: Optional[dict] = None) -> None:
        kernel, bias = self.dense.get_weights()
        self.start = {"rows": adam_rows(self.emb, self.ids), "kernel": kernel, "bias": bias,
                      "step": int(self.model.optimizer.iterations.numpy()) + 1}

    def on_train_batch_end(self, batch: int, logs: Optional[dict] = None) -> None:
        part = slice(batch * self.batch_size, (batch + 1) * self.batch_size)
        x, y = self.x[part], self.y[part]
        s = self.start
        grads = tf_row_gradients(x, y, self.ids, s["rows"]["params"], s["kernel"], s["bias"])
        want = lazy_adam(s["rows"], self.ids, grads, s["step"], self.lr)
        assert_lazy_step(adam_rows(self.emb, self.ids), want, s["rows"], self.ids, x, RTOL)
        self.checked += 1


def _pairs():
    return [
        (optimizers.SGD(0.1), keras.optimizers.SGD(0.1)),
        (optimizers.SGD(0.05, momentum=0.9), keras.optimizers.SGD(0.05, momentum=0.9)),
        (optimizers.SGD(0.05, momentum=0.8, nesterov=True),
         keras.optimizers.SGD(0.05, momentum=0.8, nesterov=True)),
        (optimizers.Adagrad(0.1), keras.optimizers.Adagrad(0.1)),
        (optimizers.Adam(0.01), keras.optimizers.Adam(0.01)),
        (optimizers.Adam(keras.optimizers.schedules.ExponentialDecay(0.02, 1, 0.5),
                         beta_1=0.8, beta_2=0.99, epsilon=1e-5),
         keras.optimizers.Adam(keras.optimizers.schedules.ExponentialDecay(0.02, 1, 0.5),
                               beta_1=0.8, beta_2=0.99, epsilon=1e-5)),
        (optimizers.Adam(0.05, amsgrad=True), keras.optimizers.Adam(0.05, amsgrad=True)),
        (optimizers.AdamW(0.02, weight_decay=0.1), keras.optimizers.AdamW(0.02, weight_decay=0.1)),
        (optimizers.SGD(_decay(0.1), weight_decay=0.2),
         keras.optimizers.SGD(_decay(0.1), weight_decay=0.2)),
        (optimizers.Ftrl(0.1), keras.optimizers.Ftrl(0.1)),
        (optimizers.Ftrl(_decay(0.2), learning_rate_power=-0.6, initial_accumulator_value=0.3,
                         l1_regularization_strength=0.05, l2_regularization_strength=0.02,
                         l2_shrinkage_regularization_strength=0.01, beta=0.1),
         keras.optimizers.Ftrl(_decay(0.2), learning_rate_power=-0.6,
                               initial_accumulator_value=0.3, l1_regularization_strength=0.05,
                               l2_regularization_strength=0.02,
                               l2_shrinkage_regularization_strength=0.01, beta=0.1)),
        (optimizers.RMSprop(0.01), keras.optimizers.RMSprop(0.01)),
        (optimizers.RMSprop(_decay(0.01), rho=0.8, momentum=0.7, centered=True),
         keras.optimizers.RMSprop(_decay(0.01), rho=0.8, momentum=0.7, centered=True)),
        (optimizers.Adadelta(1.0, rho=0.9), keras.optimizers.Adadelta(1.0, rho=0.9)),
        (optimizers.Adamax(_decay(0.02)), keras.optimizers.Adamax(_decay(0.02))),
        (optimizers.Nadam(_decay(0.01)), keras.optimizers.Nadam(_decay(0.01))),
        (optimizers.Lion(_decay(0.01), beta_1=0.8), keras.optimizers.Lion(_decay(0.01), beta_1=0.8)),
    ]


def _decay(lr: float) -> keras.optimizers.schedules.LearningRateSchedule:
    return keras.optimizers.schedules.ExponentialDecay(lr, 1, 0.7)


def _train_against_dense(layer: Embedding, ours, ref, raw: list, key_dtype: str, seed: int,
                         scale: float = 1.0, steps: int = 4) -> None:
    """Trains `layer` with `ours` and a dense variable holding the same rows with `ref`, on
    the same per-position gradients (`scale` × the loss, as loss scaling does), and checks
    the rows are equal. The dense variable's gradient sums duplicate ids first."""
    ours.build([layer._anchor])
    ids = [str(i).encode() for i in raw] if key_dtype == "string" else raw
    distinct = sorted(set(raw), key=raw.index)
    start = layer.lookup(tf.constant(ids, dtype=key_dtype), training=False).numpy()
    dense = tf.Variable(np.stack([start[raw.index(d)] for d in distinct]))
    seg = tf.constant([distinct.index(r) for r in raw])
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        w = tf.constant(rng.normal(size=(len(raw), DIM)).astype("float32"))
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(tf.constant(ids, dtype=key_dtype), training=True) * w)
            loss = loss * scale
        ours.apply(tape.gradient(loss, [layer._anchor]), [layer._anchor])
        ref.apply([tf.math.unsorted_segment_sum(w * scale, seg, len(distinct))], [dense])
    got = layer.lookup(tf.constant(ids, dtype=key_dtype), training=False).numpy()
    want = dense.numpy()[[distinct.index(r) for r in raw]]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert int(ours.iterations.numpy()) == steps


@pytest.mark.parametrize("pair", range(len(_pairs())))
@pytest.mark.parametrize("key_dtype", ["int64", "int32", "string"])
@pytest.mark.parametrize("layout", ["tfra", "fused"])
def test_row_updates_equal_keras_on_a_dense_variable(config_path, pair, key_dtype, layout):
    ours, ref = _pairs()[pair]
    layer = Embedding(DIM, config=str(config_path), name="e%d%s" % (pair, key_dtype),
                      key_dtype=key_dtype, layout=layout)
    layer.build(None)
    # Duplicates: summed as a dense gradient sums them.
    _train_against_dense(layer, ours, ref, [3, 7, 3, 11, 7, 3, 42], key_dtype, seed=pair)


_CLIPPED = {"sgd": lambda **kw: (optimizers.SGD(1.0, **kw), keras.optimizers.SGD(1.0, **kw)),
            "momentum": lambda **kw: (optimizers.SGD(0.1, momentum=0.9, **kw),
                                      keras.optimizers.SGD(0.1, momentum=0.9, **kw)),
            "adagrad": lambda **kw: (optimizers.Adagrad(0.1, **kw),
                                     keras.optimizers.Adagrad(0.1, **kw)),
            "adam": lambda **kw: (optimizers.Adam(0.1, **kw), keras.optimizers.Adam(0.1, **kw))}


@pytest.mark.parametrize("kind", sorted(_CLIPPED))
@pytest.mark.parametrize("clip", ["clipvalue", "clipnorm", "loss_scale"])
@pytest.mark.parametrize("layout", ["tfra", "fused"])
def test_clipped_row_updates_equal_keras_on_a_dense_variable(config_path, kind, clip, layout):
    """Keras clips a dense variable's gradient after duplicates are summed (clipnorm: the
    whole step's rows by one factor), so with id 3 three times in the batch, clipping each
    position would move it up to three times further than Keras does."""
    kw = {"clipvalue": {"clipvalue": 0.5}, "clipnorm": {"clipnorm": 1.0},
          "loss_scale": {"loss_scale_factor": 128.0}}[clip]
    ours, ref = _CLIPPED[kind](**kw)
    layer = Embedding(DIM, config=str(config_path), name=f"clip-{kind}-{clip}", layout=layout)
    layer.build(None)
    _train_against_dense(layer, ours, ref, [3, 3, 3, 7, 11, 7], "int64", seed=11,
                         scale=128.0 if clip == "loss_scale" else 1.0, steps=3)


def test_fit_trains_and_stores_rows_and_slots_where_tfra_does(config_path, redis):
    ids = keras.Input(shape=(2,), dtype="int64")
    emb = Embedding(DIM, config=str(config_path), name="user_emb", layout="tfra",
                    initializer=keras.initializers.RandomUniform(-0.05, 0.05, seed=2))
    dense = head()
    model = keras.Model(ids, dense(keras.layers.Flatten()(emb(ids))))
    model.compile(optimizer=optimizers.Adam(0.05), loss="mse")
    rng = np.random.default_rng(0)
    X = rng.integers(0, 50, (512, 2))
    Y = (X[:, :1] % 2).astype("float32")
    steps = LazyAdamSteps(emb, dense, X, Y, 64, 0.05)
    model.fit(X, Y, epochs=4, batch_size=64, verbose=0, shuffle=False, callbacks=[steps])
    assert steps.checked == 4 * 8
    keys = {k.decode() for k in redis.command(b"KEYS", b"*") if not k.startswith(b"rde-")}
    assert keys == {"test:user_emb-parameter{3560}",
                    "test:user_emb-parameter_DynamicEmbedding_user_emb-shadow_m{3560}",
                    "test:user_emb-parameter_DynamicEmbedding_user_emb-shadow_v{3560}"}
    rows = redis.command(b"HLEN", b"test:user_emb-parameter{3560}")
    assert rows == len(np.unique(X))
    # Evaluate and predict read without remembering or writing.
    before = redis.command(b"HLEN", b"test:user_emb-parameter{3560}")
    model.predict(np.array([[1000, 1001]]), verbose=0)
    assert redis.command(b"HLEN", b"test:user_emb-parameter{3560}") == before


def fused_model(config_path, name="fz"):
    """(model, embedding, dense, X, Y): the fused layout, Adam(0.05)."""
    ids = keras.Input(shape=(2,), dtype="int64")
    emb = Embedding(DIM, config=str(config_path), name=name, layout="fused",
                    initializer=keras.initializers.RandomUniform(-0.05, 0.05, seed=2))
    dense = head()
    model = keras.Model(ids, dense(keras.layers.Flatten()(emb(ids))))
    model.compile(optimizer=optimizers.Adam(0.05), loss="mse")
    rng = np.random.default_rng(0)
    X = rng.integers(0, 50, (512, 2))
    return model, emb, dense, X, (X[:, :1] % 2).astype("float32")


def test_fused_layout_keeps_params_and_slots_in_one_row(config_path, redis):
    model, emb, dense, X, Y = fused_model(config_path)
    steps = LazyAdamSteps(emb, dense, X, Y, 64, 0.05)
    model.fit(X, Y, epochs=4, batch_size=64, verbose=0, shuffle=False, callbacks=[steps])
    assert steps.checked == 4 * 8
    keys = {k.decode() for k in redis.command(b"KEYS", b"*") if not k.startswith(b"rde-")}
    assert keys == {"test:fz-fused{3560}"}
    assert redis.command(b"HLEN", b"test:fz-fused{3560}") == len(np.unique(X))
    field = np.int64(X[0, 0]).tobytes()
    assert redis.command(b"HSTRLEN", b"test:fz-fused{3560}", field) == DIM * 3 * 4
    ids, params = emb.export()
    order = np.argsort(ids.numpy())
    np.testing.assert_array_equal(params.numpy()[order],
                                  emb.lookup(np.sort(ids.numpy())).numpy())


def test_fused_rows_survive_checkpoint_and_file_round_trips(config_path, tmp_path):
    model, emb, dense, X, Y = fused_model(config_path, name="fr")
    model.fit(X, Y, epochs=1, batch_size=64, verbose=0, shuffle=False)

    def rows():
        keys, values = emb.table.export()
        return dict(zip(keys.numpy().tolist(), values.numpy().tolist()))

    want = rows()
    assert len(next(iter(want.values()))) == DIM * 3
    ckpt = tf.train.Checkpoint(table=emb.table)
    path = ckpt.write(str(tmp_path / "ckpt"))
    emb.table.clear()
    assert rows() == {}
    ckpt.read(path).assert_consumed()
    assert rows() == want
    emb.table.save_to_file_system(str(tmp_path / "files"))
    emb.table.clear()
    emb.table.load_from_file_system(str(tmp_path / "files"))
    assert rows() == want
    # The next step starts from the rows and slots as saved: numpy's Adam from those.
    ids = np.array(sorted(want), dtype=np.int64)
    saved = np.array([want[i] for i in ids], dtype=np.float32)
    before = {k: saved[:, n * DIM:(n + 1) * DIM] for n, k in enumerate(SLOTS)}
    kernel, bias = dense.get_weights()
    step = int(model.optimizer.iterations.numpy()) + 1
    assert step == 512 // 64 + 1
    model.train_on_batch(X[:64], Y[:64])
    got = emb.table.lookup(tf.constant(ids)).numpy()
    assert_lazy_step({k: got[:, n * DIM:(n + 1) * DIM] for n, k in enumerate(SLOTS)},
                     lazy_adam(before, ids, tf_row_gradients(X[:64], Y[:64], ids,
                                                             before["params"], kernel, bias),
                               step, 0.05),
                     before, ids, X[:64], RTOL)


def test_fused_layout_needs_its_optimizer_first(config_path):
    emb = Embedding(DIM, config=str(config_path), name="early", layout="fused")
    assert emb.lookup(tf.constant([1], tf.int64)).shape == (1, DIM)  # an empty table serves
    wide = rde.RedisTable(tf.int64, tf.float32, tf.zeros([3 * DIM]), name="early-fused",
                          config=rde.RedisTableConfig(str(config_path)), checkpoint=False)
    wide.insert(tf.constant([1], tf.int64), tf.ones([1, 3 * DIM]))
    late = Embedding(DIM, config=str(config_path), name="early", layout="fused")
    with pytest.raises(ValueError, match="fused layout.*optimizer"):
        late.lookup(tf.constant([1], tf.int64))  # stored rows need their width
    emb.build(None)
    optimizers.Adam(0.1).build([emb._anchor])
    assert emb.fused_slots == 2
    with pytest.raises(ValueError, match="hold 2 optimizer slots.*keeps 1"):
        optimizers.Adagrad(0.1).build([emb._anchor])


def test_missing_rows_start_from_the_key_and_seed(config_path):
    a = Embedding(DIM, config=str(config_path), name="a",
                  initializer=keras.initializers.RandomNormal(stddev=0.5, seed=3))
    b = Embedding(DIM, config=str(config_path), name="b",
                  initializer=keras.initializers.RandomNormal(stddev=0.5, seed=3))
    c = Embedding(DIM, config=str(config_path), name="c",
                  initializer=keras.initializers.RandomNormal(stddev=0.5, seed=4))
    ids = tf.constant([5, 6, 5], tf.int64)
    ra, rb, rc = (layer.lookup(ids).numpy() for layer in (a, b, c))
    np.testing.assert_array_equal(ra, rb)
    np.testing.assert_array_equal(ra[0], ra[2])
    assert not np.array_equal(ra[0], ra[1]) and not np.array_equal(ra, rc)
    z = Embedding(DIM, config=str(config_path), name="z", initializer="zeros")
    np.testing.assert_array_equal(z.lookup(ids).numpy(), 0)


def test_unsupported_settings_are_refused_by_name(config_path):
    with pytest.raises(ValueError, match="Orthogonal cannot start rows per key"):
        Embedding(DIM, config=str(config_path), initializer="orthogonal")
    with pytest.raises(ValueError, match="key_dtype"):
        Embedding(DIM, config=str(config_path), key_dtype="float32")
    with pytest.raises(ValueError, match="combiner"):
        Embedding(DIM, config=str(config_path), combiner="max")
    layer = Embedding(DIM, config=str(config_path), name="g")
    layer.build(None)
    opt = optimizers.Adam(0.1, use_ema=True)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(tf.constant([1, 2], tf.int64), training=True))
    with pytest.raises(ValueError, match="use_ema cannot be applied"):
        opt.apply(tape.gradient(loss, [layer._anchor]), [layer._anchor])
    with pytest.raises(TypeError, match="int64 keys; got ids of dtype string"):
        layer.lookup(tf.constant(["x"]))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(tf.constant([1, 2], tf.int64)))  # training not passed
    with pytest.raises(ValueError, match="'g' got no gradient: call the model with training=True"):
        optimizers.Adam(0.1).apply(tape.gradient(loss, [layer._anchor]), [layer._anchor])


def test_combiners_over_dense_ragged_and_sparse_ids(config_path):
    layer = Embedding(DIM, config=str(config_path), name="comb", combiner="mean")
    rows = Embedding(DIM, config=str(config_path), name="comb").lookup(
        tf.constant([1, 2, 3], tf.int64)).numpy()
    dense = layer(tf.constant([[1, 2], [3, 3]], tf.int64), training=False).numpy()
    np.testing.assert_allclose(dense, [(rows[0] + rows[1]) / 2, rows[2]], rtol=1e-6)
    ragged = tf.ragged.constant([[1, 2, 3], [2]], dtype=tf.int64)
    out = layer(ragged, training=False).numpy()
    np.testing.assert_allclose(out, [rows.mean(0), rows[1]], rtol=1e-6)
    sqrtn = Embedding(DIM, config=str(config_path), name="comb", combiner="sqrtn")
    sparse = tf.sparse.from_dense(tf.constant([[1, 0], [2, 3]], tf.int64))
    out = sqrtn(sparse, training=False).numpy()
    np.testing.assert_allclose(out, [rows[0], (rows[1] + rows[2]) / np.sqrt(2)], rtol=1e-6)


def test_a_gradient_tape_loop_in_tf_function_trains(config_path):
    layer = Embedding(DIM, config=str(config_path), name="loop", initializer="zeros",
                      layout="tfra")
    dense = head()
    opt = optimizers.Adagrad(0.5)
    x = np.array([[1, 2], [3, 4]], np.int64)
    ids = tf.constant(x)
    y = tf.constant([[1.0], [-1.0]])
    layer.build(None)
    dense.build((None, 2 * DIM))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            pred = dense(tf.reshape(layer(ids, training=True), [2, 2 * DIM]))
            loss = tf.reduce_mean((pred - y) ** 2)
        variables = [layer._anchor] + dense.trainable_variables
        opt.apply(tape.gradient(loss, variables), variables)
        return loss

    # Adagrad in numpy, step by step from the dense weights each step started from: rows
    # from zeros, accumulators from initial_accumulator_value 0.1.
    rows = np.zeros((4, DIM))
    acc = np.full((4, DIM), 0.1)
    for _ in range(15):
        kernel, bias = dense.get_weights()
        grads = row_gradients(x, y.numpy(), dict(zip([1, 2, 3, 4], rows)), kernel, bias)
        g = np.stack([grads[i] for i in (1, 2, 3, 4)])
        acc += g ** 2
        rows -= 0.5 * g / np.sqrt(acc + 1e-7)
        step()
        assert_rows_close(layer.lookup(tf.constant([1, 2, 3, 4], tf.int64)).numpy(), rows,
                          RTOL, "params")
        assert_rows_close(layer.slot_table("accumulator").lookup(
            tf.constant([1, 2, 3, 4], tf.int64)).numpy(), acc, RTOL, "accumulator")
    assert int(opt.iterations.numpy()) == 15


@pytest.mark.redis_only  # the loading process must reach the same rows
def test_model_save_and_load_reattach_to_the_rows(config_path, tmp_path):
    ids = keras.Input(shape=(1,), dtype="int64")
    x = keras.layers.Flatten()(Embedding(DIM, config=str(config_path), name="saved")(ids))
    model = keras.Model(ids, head()(x))
    model.compile(optimizer=optimizers.SGD(0.5), loss="mse")
    X = np.arange(20).reshape(-1, 1)
    model.fit(X, (X % 2).astype("float32"), epochs=2, verbose=0)
    want = model.predict(X, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    code = (
        "import sys, numpy as np, keras\n"
        "import redis_embedding.keras\n"
        "m = keras.saving.load_model(sys.argv[1])\n"
        "np.save(sys.argv[2], m.predict(np.arange(20).reshape(-1, 1), verbose=0))\n"
        "assert isinstance(m.optimizer, redis_embedding.keras.optimizers.SGD)\n")
    out = str(tmp_path / "got.npy")
    subprocess.run([sys.executable, "-c", code, path, out], check=True, timeout=300)
    np.testing.assert_allclose(np.load(out), want, rtol=1e-6)


def test_a_server_error_fails_the_step_naming_the_table(config_path, redis):
    """A training step (forward lookup and apply, inside model.fit) that the server refuses
    fails with that error, naming the table."""
    ids = keras.Input(shape=(1,), dtype="int64")
    emb = Embedding(DIM, config=str(config_path), name="wrongtype", layout="tfra")
    model = keras.Model(ids, keras.layers.Dense(1)(keras.layers.Flatten()(emb(ids))))
    model.compile(optimizer=optimizers.Adam(0.05), loss="mse")
    x, y = np.arange(8).reshape(8, 1), np.zeros((8, 1), "float32")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    redis.command(b"DEL", b"test:wrongtype-parameter_DynamicEmbedding_wrongtype-shadow_m{3560}")
    redis.command(b"SET", b"test:wrongtype-parameter_DynamicEmbedding_wrongtype-shadow_m{3560}",
                  b"x")
    with pytest.raises(tf.errors.OpError,
                       match='training step on table "wrongtype[^"]*".*WRONGTYPE'):
        model.fit(x, y, epochs=1, batch_size=8, verbose=0)


def test_a_server_at_maxmemory_fails_fit_with_resource_exhausted(tmp_path):
    """noeviction at maxmemory: the server refuses the step's writes (OOM), and model.fit
    raises ResourceExhaustedError naming the table, rather than training on without them."""
    from redis_harness import RedisServer
    server = RedisServer(tmp_path / "full")
    try:
        used = int(dict(line.split(":", 1) for line in server.command(b"INFO", b"memory")
                        .decode().splitlines() if ":" in line)["used_memory"])
        server.command(b"CONFIG", b"SET", b"maxmemory-policy", b"noeviction")
        server.command(b"CONFIG", b"SET", b"maxmemory", str(used + 256 * 1024).encode())
        ids = keras.Input(shape=(1,), dtype="int64")
        emb = Embedding(DIM, config=server.config(tmp_path / "full.json"), name="full")
        model = keras.Model(ids, keras.layers.Dense(1)(keras.layers.Flatten()(emb(ids))))
        model.compile(optimizer=optimizers.Adam(0.05), loss="mse")
        x = np.arange(40_000).reshape(-1, 1)
        with pytest.raises(tf.errors.ResourceExhaustedError,
                           match='training step on table "full[^"]*".*OOM'):
            model.fit(x, np.zeros((len(x), 1), "float32"), epochs=1, batch_size=1000,
                      verbose=0)
    finally:
        server.stop()


@pytest.mark.parametrize("layout", ["tfra", "fused"])
@pytest.mark.parametrize("how", ["export", "tf.saved_model.save"])
def test_a_saved_model_serves_from_the_redis_named_at_load_time(redis, tmp_path, layout, how):
    """table_store_mode 2: the SavedModel carries no rows, so the served values can only come
    from the server that $TFRA_REDIS_CONFIG_PATH names at load time (the training server is
    flushed first)."""
    from redis_harness import RedisServer
    config = redis.config(tmp_path / "train.json", table_store_mode=2)
    ids = keras.Input(shape=(2,), dtype="int64")
    emb = Embedding(DIM, config=config, name="served", layout=layout)
    model = keras.Model(ids, head()(keras.layers.Flatten()(emb(ids))))
    model.compile(optimizer=optimizers.Adam(0.05), loss="mse")
    X = np.random.default_rng(1).integers(0, 40, (256, 2))
    model.fit(X, (X[:, :1] % 2).astype("float32"), epochs=2, batch_size=64, verbose=0)
    want = model.predict(X[:8], verbose=0)
    path = str(tmp_path / "served")
    if how == "export":
        model.export(path, verbose=False)
    else:
        tf.saved_model.save(model, path)
    # Another server gets the rows through files; the model's own server is not used at load.
    emb.table.save_to_file_system(str(tmp_path / "rows"))
    redis.command(b"FLUSHALL")
    other = RedisServer(tmp_path / "other")
    try:
        other_config = other.config(tmp_path / "other.json", table_store_mode=2)
        code = (
            "import sys, numpy as np, tensorflow as tf\n"
            "import redis_embedding as rde\n"
            "t = rde.RedisTable(tf.int64, tf.float32, tf.zeros([%d]), name=%r,\n"
            "                   config=rde.RedisTableConfig(sys.argv[3]))\n"
            "t.load_from_file_system(sys.argv[4])\n"
            "m = tf.saved_model.load(sys.argv[1])\n"
            "f = m.serve if hasattr(m, 'serve') else m.signatures['serving_default']\n"
            "out = f(tf.constant(np.load(sys.argv[2])))\n"
            "out = out if tf.is_tensor(out) else list(out.values())[0]\n"
            "np.save(sys.argv[2], out.numpy())\n") % (
                DIM * (3 if layout == "fused" else 1),
                emb.fused_name if layout == "fused" else emb.params_name)
        x = str(tmp_path / "x.npy")
        np.save(x, X[:8])
        env = dict(os.environ, TFRA_REDIS_CONFIG_PATH=str(other_config))
        subprocess.run([sys.executable, "-c", code, path, x, str(other_config),
                        str(tmp_path / "rows")], check=True, timeout=300, env=env)
        np.testing.assert_allclose(np.load(x), want, rtol=1e-6)
        assert other.command(b"DBSIZE") > 0
    finally:
        other.stop()
