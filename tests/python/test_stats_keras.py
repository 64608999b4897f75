"""`Embedding.stats()` and `StatsCallback`: a layer's hit rate and latency percentiles written
to TensorBoard each epoch or every N steps, read back from the event file."""

import glob
import os
from typing import Dict, Tuple

import numpy as np
import pytest
import tensorflow as tf

from keras3_only import require_keras3_without_tfra  # noqa: E402

keras = require_keras3_without_tfra()

from redis_embedding.keras import Embedding, StatsCallback, optimizers  # noqa: E402


def _fit(config_path: str, name: str, callback: StatsCallback) -> Embedding:
    """2 epochs over ids 0..7 in batches of 4, unshuffled: epoch 0 finds none of its 8 ids,
    epoch 1 finds all 8."""
    ids = keras.Input(shape=(1,), dtype="int64")
    layer = Embedding(4, config=str(config_path), name=name)
    dense = keras.layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(seed=1))
    model = keras.Model(ids, dense(keras.layers.Flatten()(layer(ids))))
    model.compile(optimizer=optimizers.SGD(0.1), loss="mse")
    X = np.arange(8).reshape(-1, 1)
    model.fit(X, np.ones((8, 1), "float32"), epochs=2, batch_size=4, shuffle=False, verbose=0,
              callbacks=[callback])
    return layer


def _events(log_dir: str) -> Dict[Tuple[str, int], float]:
    out = {}
    for path in glob.glob(os.path.join(log_dir, "events.out.tfevents.*")):
        for e in tf.compat.v1.train.summary_iterator(path):
            for v in e.summary.value:
                assert v.metadata.plugin_data.plugin_name == "scalars"
                out[(v.tag, e.step)] = float(tf.make_ndarray(v.tensor))
    return out


def test_each_epoch_writes_hit_rate_and_percentiles(config_path, tmp_path) -> None:
    log_dir = str(tmp_path / "tb")
    layer = _fit(config_path, "cb_epoch", StatsCallback(log_dir))
    ev = _events(log_dir)
    assert ev[("cb_epoch/hit_rate", 0)] == 0.0  # 8 lookups, 0 hits
    assert ev[("cb_epoch/hit_rate", 1)] == 0.5  # 16 lookups, 8 hits
    s = layer.stats()
    assert (s["lookups"], s["hits"], s["train_lookup_calls"], s["train_apply_calls"]) == (
        16, 8, 4, 4)
    assert s["rows_written"] == 16  # 4 distinct rows per step
    for op in ("train_lookup", "train_apply"):
        for q in ("p50", "p95", "p99", "max"):
            assert ev[(f"cb_epoch/{op}_{q}_us", 1)] == s[f"{op}_{q}_us"] > 0
    assert ev[("cb_epoch/train_lookup_p50_us", 0)] <= ev[("cb_epoch/train_lookup_max_us", 0)]
    assert not any(tag.startswith("cb_epoch/insert_") for tag, _ in ev)  # never called
    assert {step for _, step in ev} == {0, 1}


def test_every_n_steps_writes_by_batch(config_path, tmp_path) -> None:
    log_dir = str(tmp_path / "tb")
    _fit(config_path, "cb_steps", StatsCallback(log_dir, every_n_steps=3))
    ev = _events(log_dir)
    # Batches 1..4: written after batch 3 only (3 lookups of 4 ids: 12 lookups, 4 hits).
    assert {step for _, step in ev} == {3}
    assert ev[("cb_steps/hit_rate", 3)] == pytest.approx(4 / 12)
