"""The layout an Embedding gets when none is given: TFRA's where TFRA-layout rows of its name
are in Redis, the fused one otherwise; an explicit `layout=` wins, and a saved model keeps the
layout it was built with, whatever Redis holds when it is loaded."""

import logging
from typing import Set

import numpy as np
import pytest
import tensorflow as tf

from keras3_only import require_keras3_without_tfra

keras = require_keras3_without_tfra()

import redis_embedding as rde  # noqa: E402
from redis_embedding.keras import Embedding, optimizers  # noqa: E402

DIM = 4


def tfra_rows(config: str, name: str, ids: np.ndarray) -> np.ndarray:
    """Writes rows for `ids` where TFRA's Keras layer `name` keeps its params; returns them."""
    table = rde.RedisTable(tf.int64, tf.float32, tf.zeros([DIM]), name=f"{name}-parameter",
                           config=rde.RedisTableConfig(config), checkpoint=False)
    rows = np.arange(len(ids) * DIM, dtype=np.float32).reshape(-1, DIM) / 10.0
    table.insert(tf.constant(ids, tf.int64), tf.constant(rows))
    return rows


def stored(redis) -> Set[str]:
    return {k.decode() for k in redis.command(b"KEYS", b"*") if not k.startswith(b"rde-")}


def model(config: str, name: str, layout=None) -> keras.Model:
    ids = keras.Input(shape=(1,), dtype="int64")
    emb = Embedding(DIM, config=config, name=name, layout=layout)
    out = keras.layers.Dense(1, kernel_initializer=keras.initializers.Ones())(
        keras.layers.Flatten()(emb(ids)))
    m = keras.Model(ids, out)
    m.compile(optimizer=optimizers.Adam(0.05), loss="mse")
    return m


X = np.arange(16).reshape(-1, 1)
Y = (X % 2).astype("float32")


def test_a_new_table_is_fused_and_a_saved_model_stays_fused(config_path, redis, tmp_path,
                                                           caplog):
    with caplog.at_level(logging.WARNING, logger="redis_embedding"):
        m = model(str(config_path), "fresh")
    emb = m.layers[1]
    assert emb.layout == "fused"
    assert not [r for r in caplog.records if "TFRA-layout rows" in r.getMessage()]
    m.fit(X, Y, epochs=2, batch_size=8, verbose=0)
    assert stored(redis) == {"test:fresh-fused{3560}"}
    want = m.predict(X, verbose=0)
    path = str(tmp_path / "fresh.keras")
    m.save(path)
    # TFRA-layout rows of the name appear: a new layer would take the TFRA layout now, the
    # saved one keeps its own.
    tfra_rows(str(config_path), "fresh", np.array([1, 2]))
    loaded = keras.saving.load_model(path)
    assert loaded.layers[1].layout == "fused"
    np.testing.assert_allclose(loaded.predict(X, verbose=0), want, rtol=1e-6)


def test_tfra_rows_present_choose_the_tfra_layout_and_say_so(config_path, redis, tmp_path,
                                                            caplog):
    ids = np.array([3, 5, 8])
    rows = tfra_rows(str(config_path), "old", ids)
    with caplog.at_level(logging.WARNING, logger="redis_embedding"):
        m = model(str(config_path), "old")
    emb = m.layers[1]
    assert emb.layout == "tfra"
    said = [r.getMessage() for r in caplog.records if "TFRA-layout rows" in r.getMessage()]
    assert len(said) == 1 and "'old'" in said[0] and "3 TFRA-layout rows" in said[0], said
    np.testing.assert_array_equal(emb.lookup(tf.constant(ids)).numpy(), rows)
    m.fit(X, Y, epochs=1, batch_size=8, verbose=0)
    assert stored(redis) == {"test:old-parameter{3560}",
                             "test:old-parameter_DynamicEmbedding_old-shadow_m{3560}",
                             "test:old-parameter_DynamicEmbedding_old-shadow_v{3560}"}
    want = m.predict(X, verbose=0)
    path = str(tmp_path / "old.keras")
    m.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.layers[1].layout == "tfra"
    np.testing.assert_allclose(loaded.predict(X, verbose=0), want, rtol=1e-6)


@pytest.mark.parametrize("layout", ["tfra", "fused"])
def test_an_explicit_layout_wins(config_path, redis, layout, caplog):
    tfra_rows(str(config_path), "either", np.array([1]))
    with caplog.at_level(logging.WARNING, logger="redis_embedding"):
        emb = Embedding(DIM, config=str(config_path), name="either", layout=layout)
        emb.build(None)
    assert emb.layout == layout
    assert not [r for r in caplog.records if "TFRA-layout rows" in r.getMessage()]


def test_a_bad_layout_is_refused_by_name(config_path):
    with pytest.raises(ValueError, match="layout must be None or one of"):
        Embedding(DIM, config=str(config_path), layout="wide")


def test_rows_in_both_layouts_are_refused_naming_both(config_path, redis):
    m = model(str(config_path), "both", layout="fused")
    m.fit(X, Y, epochs=1, batch_size=8, verbose=0)
    tfra_rows(str(config_path), "both", np.array([1, 2]))
    emb = Embedding(DIM, config=str(config_path), name="both")
    with pytest.raises(ValueError, match="both layouts.*2 in 'both-parameter'.*16 in "
                                         "'both-fused'.*layout="):
        emb.build(None)


def test_a_config_taken_before_build_carries_the_chosen_layout(config_path, redis):
    tfra_rows(str(config_path), "early", np.array([7]))
    assert Embedding(DIM, config=str(config_path), name="early").get_config()["layout"] == "tfra"
    assert Embedding(DIM, config=str(config_path), name="new").get_config()["layout"] == "fused"


def test_a_new_fused_model_predicts_initializer_rows_before_fit(config_path, redis):
    """predict builds no optimizer: on an empty fused table every id reads its initializer row
    (as the TFRA layout does); once fused rows are stored, a layer that does not know its row
    width refuses to read them, saying how to give it."""
    init = keras.initializers.RandomUniform(-1.0, 1.0, seed=3)
    fresh = Embedding(DIM, config=str(config_path), name="cold", initializer=init)
    ref = Embedding(DIM, config=str(config_path), name="cold", initializer=init, layout="tfra")
    ids = tf.constant([4, 9, 4], tf.int64)
    got = fresh(ids).numpy()
    assert fresh.layout == "fused"
    np.testing.assert_array_equal(got, ref.lookup(ids).numpy())
    assert np.abs(got).max() > 0
    assert stored(redis) == set()  # inference wrote nothing
    m = model(str(config_path), "cold")
    m.fit(X, Y, epochs=1, batch_size=8, verbose=0)
    late = Embedding(DIM, config=str(config_path), name="cold", initializer=init)
    late.build(None)
    with pytest.raises(ValueError, match="'cold' uses the fused layout.*fused_slots"):
        late.lookup(ids)
