"""Moving between TFRA and the Keras 3 layer without migrating data, in both directions.

TFRA's half runs in a subprocess with the TF 2.16.2 + TFRA interpreter (`tfra_side.py`): this
interpreter in the TF 2.16 leg, `$RDE_TFRA_PYTHON` (the TF 2.16 venv) in the TF 2.21 leg, so
there the rows cross TensorFlow versions too. Dense weights and the optimizer's step count
travel through a file; embedding rows and Adam's slots only through Redis."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

keras = pytest.importorskip("keras")
if int(keras.__version__.split(".")[0]) < 3:
    pytest.skip("the layer needs Keras 3", allow_module_level=True)

if importlib.util.find_spec("tensorflow_recommenders_addons") is not None:
    # TFRA's import replaces Keras 3's VarianceScaling.__call__ (tf_patch.py) with one that
    # fails, so no Keras 3 Dense layer builds in a process that imported TFRA. The TF 2.21 leg
    # runs these tests (and TFRA's half of the continuation tests in a TF 2.16 subprocess).
    pytest.skip("Keras 3 models cannot be built after TFRA's import", allow_module_level=True)

from keras_task import DIM, LR, STEPS, data  # noqa: E402
from redis_embedding.keras import Embedding, optimizers  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def tfra_python() -> str:
    env = os.environ.get("RDE_TFRA_PYTHON")
    if env:
        return env
    try:
        import tensorflow_recommenders_addons  # noqa: F401
        return sys.executable
    except ImportError:
        pytest.skip("needs TFRA: run in the TF 2.16 leg or set RDE_TFRA_PYTHON")


def run_tfra(config: str, state: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RDE_OPS_LIBRARY", "PYTHONPATH")}
    subprocess.run([tfra_python(), os.path.join(HERE, "tfra_side.py"), config, state,
                    str(STEPS)], check=True, timeout=600, cwd=HERE, env=env)
    return dict(np.load(state))


def our_model(config: str):
    emb = Embedding(DIM, config=config, name="user_emb",
                    initializer=keras.initializers.RandomNormal(0.0, 0.1))
    model = keras.Sequential([keras.Input(shape=(2,), dtype="int64"), emb,
                              keras.layers.Flatten(), keras.layers.Dense(1)])
    opt = optimizers.Adam(LR)
    model.compile(optimizer=opt, loss="mse")
    return model, emb, opt


def test_tfra_trained_rows_and_slots_continue_in_the_keras3_layer(config_path, tmp_path):
    state = str(tmp_path / "state.npz")
    theirs = run_tfra(str(config_path), state)
    assert theirs["after"] < theirs["before"]
    model, emb, opt = our_model(str(config_path))
    x, y = data()
    ids = np.unique(x)
    np.testing.assert_array_equal(emb.table.lookup(ids).numpy(), theirs["params"])
    assert np.abs(emb.slot_table("v").lookup(ids).numpy()).min() > 0, "Adam's v not in Redis"
    model.layers[-1].set_weights([theirs["kernel"], theirs["bias"]])
    start = model.evaluate(x, y, batch_size=len(x), verbose=0)
    np.testing.assert_allclose(start, theirs["after"], rtol=1e-5)
    opt.iterations.assign(int(theirs["iterations"]))
    model.fit(x, y, batch_size=len(x) // STEPS, epochs=1, verbose=0, shuffle=False)
    assert model.evaluate(x, y, batch_size=len(x), verbose=0) < start


def test_keras3_trained_rows_and_slots_continue_in_tfra(config_path, tmp_path):
    model, emb, opt = our_model(str(config_path))
    x, y = data()
    first = model.evaluate(x, y, batch_size=len(x), verbose=0)
    model.fit(x, y, batch_size=len(x) // STEPS, epochs=1, verbose=0, shuffle=False)
    ours = model.evaluate(x, y, batch_size=len(x), verbose=0)
    assert ours < first
    kernel, bias = model.layers[-1].get_weights()
    state = str(tmp_path / "state.npz")
    np.savez(state, kernel=kernel, bias=bias, iterations=int(opt.iterations.numpy()))
    theirs = run_tfra(str(config_path), state)
    np.testing.assert_allclose(theirs["before"], ours, rtol=1e-5)
    assert theirs["after"] < theirs["before"]
    np.testing.assert_array_equal(theirs["params"], emb.table.lookup(np.unique(x)).numpy())
