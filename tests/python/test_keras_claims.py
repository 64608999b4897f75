"""Claims docs/keras.md makes about the Keras 3 layer, each checked where it could break:
lazy updates (ids outside the batch keep their rows and slots bit for bit), the same initial
row in every process, the optimizer settings refused by name, and what a SavedModel carries
in `table_store_mode` 0 and 2."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest

from keras3_only import require_keras3_without_tfra  # noqa: E402

keras = require_keras3_without_tfra()

import tensorflow as tf  # noqa: E402

import redis_embedding as rde  # noqa: E402
from redis_embedding.keras import Embedding, optimizers  # noqa: E402
from redis_harness import RedisServer  # noqa: E402
from workers import release_together, spawn  # noqa: E402

DIM = 4
Rows = Dict[Tuple[str, int], bytes]


def step(layer: Embedding, opt: keras.optimizers.Optimizer, ids: List[int]) -> None:
    """One eager training step whose row gradients differ per element."""
    with tf.GradientTape() as tape:
        rows = layer(tf.constant(ids, tf.int64), training=True)
        loss = tf.reduce_sum(rows * rows + rows * tf.range(DIM, dtype=tf.float32))
    opt.apply(tape.gradient(loss, [layer._anchor]), [layer._anchor])


def stored(layer: Embedding) -> Rows:
    """(part, id) -> the stored float32 bytes of params and each Adam slot, either layout."""
    if layer.layout == "fused":
        keys, values = layer.table.export()
        parts = {p: values.numpy()[:, i * DIM:(i + 1) * DIM]
                 for i, p in enumerate(("params", "m", "v"))}
        keys = {p: keys for p in parts}
    else:
        tables = {"params": layer.table, "m": layer.slot_table("m"), "v": layer.slot_table("v")}
        exported = {p: t.export() for p, t in tables.items()}
        keys = {p: kv[0] for p, kv in exported.items()}
        parts = {p: kv[1].numpy() for p, kv in exported.items()}
    return {(p, int(k)): row.tobytes()
            for p in parts for k, row in zip(keys[p].numpy(), parts[p])}


@pytest.mark.parametrize("layout", ["tfra", "fused"])
def test_ids_outside_the_batch_keep_rows_and_slots_bit_for_bit(backend_config_path: str,
                                                                layout: str) -> None:
    """docs/keras.md: "an id that is not in the batch is not touched (a dense Keras Adam would
    still decay its moments)"."""
    layer = Embedding(DIM, config=backend_config_path, name=f"lazy_{layout}", layout=layout)
    layer.build(None)
    opt = optimizers.Adam(0.1)
    opt.build([layer._anchor])
    for _ in range(2):  # ids 1, 2, 3 get params and non-zero moments
        step(layer, opt, [1, 2, 3])
    before = stored(layer)
    step(layer, opt, [1, 4, 1])
    after = stored(layer)
    parts = ("params", "m", "v")
    assert set(after) == set(before) | {(p, 4) for p in parts}
    for p in parts:
        assert after[(p, 2)] == before[(p, 2)] and after[(p, 3)] == before[(p, 3)], p
        assert after[(p, 1)] != before[(p, 1)], p  # the batch's ids did move


FRESH = """
import json, sys
import numpy as np, tensorflow as tf, keras
from redis_embedding.keras import Embedding, optimizers
print("ready", flush=True)
sys.stdin.readline()
out = {}
cases = [("seedless", "int64", "uniform", "tfra", [3, 2**40 + 1, -5]),
         ("seeded", "int64", keras.initializers.RandomNormal(stddev=0.5, seed=3), "fused",
          [3, 77]),
         ("glorot", "string", keras.initializers.GlorotUniform(seed=7), "tfra",
          [b"a", b"new-id"])]
for name, key_dtype, init, layout, ids in cases:
    layer = Embedding(4, config=sys.argv[1], name=name, key_dtype=key_dtype,
                      initializer=init, layout=layout)
    layer.build(None)
    opt = optimizers.Adam(0.1)
    opt.build([layer._anchor])
    ids = tf.constant(ids, dtype=key_dtype)
    out[name] = layer.lookup(ids).numpy().tobytes().hex()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(ids, training=True) ** 2)
    opt.apply(tape.gradient(loss, [layer._anchor]), [layer._anchor])
    keys, values = layer.table.export()
    order = np.argsort(keys.numpy())
    out[name + " trained"] = values.numpy()[order].tobytes().hex()
print(json.dumps(out))
"""


def test_a_new_id_starts_from_the_same_row_in_every_process(redis, tmp_path: Path) -> None:
    """docs/keras.md: "every worker and every rerun sees the same initial row of an id", the
    default initializer (no seed given) included: two processes, each on a server of its
    own, look up and train the same new ids."""
    other = RedisServer(tmp_path / "other")
    try:
        configs = [redis.config(tmp_path / "a.json"), other.config(tmp_path / "b.json")]
        procs = [spawn(["-c", FRESH, c], cwd=str(Path(__file__).parent)) for c in configs]
        a, b = (json.loads(line) for line in release_together(procs, timeout=300)[0])
    finally:
        other.stop()
    assert a == b
    for name in ("seedless", "seeded", "glorot"):
        rows = np.frombuffer(bytes.fromhex(a[name]), np.float32).reshape(-1, DIM)
        assert (rows != 0).all() and len(np.unique(rows, axis=0)) == len(rows), (name, rows)


@pytest.mark.parametrize("kind,argument", [
    ("Adam", "use_ema"), ("Adagrad", "use_ema"), ("Ftrl", "use_ema"), ("Lion", "use_ema")])
def test_settings_the_rows_cannot_take_are_refused_by_name(backend_config_path: str, kind: str,
                                                           argument: str) -> None:
    """docs/keras.md: `use_ema` is refused with a ValueError naming it, when the optimizer is
    built on the layer and when it applies to it (amsgrad, weight_decay, global_clipnorm and
    gradient_accumulation_steps are applied: test_keras.py, test_keras_global_options.py)."""
    value = {"use_ema": True}[argument]
    layer = Embedding(DIM, config=backend_config_path, name="refused")
    layer.build(None)
    refused = f"{kind}: {argument} cannot be applied to redis_embedding Embedding rows"
    with pytest.raises(ValueError, match=refused):
        getattr(optimizers, kind)(0.1, **{argument: value}).build([layer._anchor])
    opt = getattr(optimizers, kind)(0.1, **{argument: value})
    opt.build([])  # built on dense weights only: the refusal comes at the first apply
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(tf.constant([1, 2], tf.int64), training=True))
    with pytest.raises(ValueError, match=refused):
        opt.apply(tape.gradient(loss, [layer._anchor]), [layer._anchor])
    assert layer.layout == "fused"  # the default for a new table
    assert layer._fused_rows_stored(range(4)) == 0  # nothing was written


def rows_in_redis(config: str, name: str, width: int) -> Dict[int, bytes]:
    """The rows of table `name`, exported by a fresh handle (so no model tracks it) through
    `config`, which must be in table_store_mode 0 (the export op of mode 2 returns none)."""
    table = rde.RedisTable(tf.int64, tf.float32, tf.zeros([width]), name=name,
                           config=rde.RedisTableConfig(config))
    keys, values = table.export()
    return {int(k): v.tobytes() for k, v in zip(keys.numpy(), values.numpy())}


# The fused layer's handle table (params width, checkpoint=False) saves nothing, but its rows
# are saved by the wide table beside it, so no CheckpointWarning may say otherwise.
@pytest.mark.filterwarnings("error::redis_embedding.CheckpointWarning")
@pytest.mark.parametrize("layout", ["tfra", "fused"])
@pytest.mark.parametrize("mode", [0, 2])
def test_a_saved_model_carries_rows_in_mode_0_and_none_in_mode_2(redis, tmp_path: Path,
                                                                 mode: int, layout: str) -> None:
    """docs/keras.md: "With `table_store_mode` 0 the SavedModel also carries the rows (as a
    TFRA checkpoint would); mode 2 carries none". The server is emptied after the export;
    loading the SavedModel brings the rows back in mode 0 and none in mode 2."""
    config = redis.config(tmp_path / "redis.json", table_store_mode=mode)
    ids = keras.Input(shape=(2,), dtype="int64")
    emb = Embedding(DIM, config=config, name="carried", layout=layout)
    model = keras.Model(ids, keras.layers.Dense(1)(keras.layers.Flatten()(emb(ids))))
    model.compile(optimizer=optimizers.Adam(0.05), loss="mse")
    X = np.random.default_rng(2).integers(0, 30, (64, 2))
    model.fit(X, (X[:, :1] % 2).astype("float32"), epochs=1, batch_size=32, verbose=0)
    name, width = ((emb.fused_name, 3 * DIM) if layout == "fused" else (emb.params_name, DIM))
    read = redis.config(tmp_path / "read.json", table_store_mode=0)
    trained = rows_in_redis(read, name, width)
    assert len(trained) == len(np.unique(X))
    path = str(tmp_path / "saved")
    tf.saved_model.save(model, path)

    # The layer's table saves its rows as "<...>/table-keys" and "-values" tensors.
    saved = dict(tf.train.list_variables(os.path.join(path, "variables", "variables")))
    keys = [shape for k, shape in saved.items() if k.endswith(f"/_tables/{name}:{width}"
                                                               "/.ATTRIBUTES/table-keys")]
    assert keys == [[len(trained) if mode == 0 else 0]], saved

    redis.command(b"FLUSHALL")
    tf.saved_model.load(path)
    assert rows_in_redis(read, name, width) == (trained if mode == 0 else {})
