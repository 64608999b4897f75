"""Moving between TFRA and the Keras 3 layer without migrating data, in both directions.

TFRA's half runs in a subprocess with the TF 2.16.2 + TFRA interpreter named by
`$RDE_TFRA_PYTHON` (`tfra_side.py`), so the rows cross TensorFlow versions too. Dense weights
and the optimizer's step count travel through a file; embedding rows and Adam's slots only
through Redis. Each direction checks:

- the params, `m` and `v` rows one side left are, bit for bit, what the other side reads
  (ours through `emb.table` / `emb.slot_table`, TFRA's through its layer's params and its
  optimizer's slot variables);
- the step count carried over: the receiving side's next step uses it for the bias
  correction;
- that next step, on a known batch, against Adam computed in numpy from the carried rows,
  slots, step count and dense weights (duplicate ids summed; rows not in the batch unchanged).

Everything drawn is seeded (`keras_task`), so a run is a function of the code only."""

import os
import subprocess
from typing import Dict

import numpy as np
import pytest

from keras3_only import require_keras3_without_tfra

keras = require_keras3_without_tfra()

from keras_task import (BATCH, DENSE_SEED, DIM, EMB_SEED, SEED, SLOTS,  # noqa: E402
                        STEPS, TFRA_SLOTS, Rows, all_ids, assert_lazy_step, data, lazy_adam,
                        row_gradients, step_batch, tfra_optimizer)
from redis_embedding.keras import Embedding, optimizers  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
# One step in float32 (either side) against numpy's float64, relative to each row's largest
# value: the largest difference measured is 1.2e-7 (m; params 5e-8), in both directions.
RTOL = 1e-6


def tfra_python() -> str:
    """The TF 2.16 + TFRA interpreter; TFRA cannot be imported here (see keras3_only)."""
    path = os.environ.get("RDE_TFRA_PYTHON")
    if not path:
        pytest.skip("set RDE_TFRA_PYTHON to the TF 2.16 + TFRA interpreter")
    return path


def run_tfra(config: str, state: str, mode: str, kind: str = "adam") -> Dict[str, np.ndarray]:
    env = {k: v for k, v in os.environ.items() if k not in ("RDE_OPS_LIBRARY", "PYTHONPATH")}
    subprocess.run([tfra_python(), os.path.join(HERE, "tfra_side.py"), config, state, mode,
                    kind], check=True, timeout=600, cwd=HERE, env=env)
    return dict(np.load(state))


def our_model(config: str, kind: str = "adam"):
    """The model of `keras_task` with our layer: (model, embedding, dense, optimizer)."""
    keras.utils.set_random_seed(SEED)
    emb = Embedding(DIM, config=config, name="user_emb", layout="tfra",
                    initializer=keras.initializers.RandomNormal(0.0, 0.1, seed=EMB_SEED))
    dense = keras.layers.Dense(
        1, kernel_initializer=keras.initializers.GlorotUniform(seed=DENSE_SEED))
    model = keras.Sequential([keras.Input(shape=(2,), dtype="int64"), emb,
                              keras.layers.Flatten(), dense])
    opt = tfra_optimizer(optimizers, kind)
    model.compile(optimizer=opt, loss="mse")
    return model, emb, dense, opt


def our_rows(emb: Embedding) -> Rows:
    """The params, m and v rows of every id of the data, as our tables read them."""
    ids = all_ids()
    return {"params": emb.table.lookup(ids).numpy(),
            "m": emb.slot_table("m").lookup(ids).numpy(),
            "v": emb.slot_table("v").lookup(ids).numpy()}


def assert_handed_over_step(got: Rows, before: Rows, kernel: np.ndarray, bias: np.ndarray
                             ) -> None:
    """`got` is `before` after one lazy Adam step on `step_batch()` at step STEPS + 1 with
    these dense weights, as numpy computes it."""
    x, y = step_batch()
    assert not np.isin(all_ids(), x).all()  # some rows must stay as they were
    grads = row_gradients(x, y, dict(zip(all_ids().tolist(), before["params"])), kernel, bias)
    want = lazy_adam(before, all_ids(), grads, STEPS + 1)
    assert_lazy_step(got, want, before, all_ids(), x, RTOL)


def assert_trained(rows: Rows) -> None:
    """Every id has been through Adam: its m and v rows are no longer the zeros a missing
    slot row reads as, so the exact comparisons compare something."""
    assert (np.abs(rows["m"]).max(axis=1) > 0).all() and (rows["v"] > 0).all()


def test_tfra_trained_rows_and_slots_continue_in_the_keras3_layer(config_path, tmp_path):
    theirs = run_tfra(str(config_path), str(tmp_path / "state.npz"), "train")
    assert int(theirs["iterations"]) == STEPS
    model, emb, dense, opt = our_model(str(config_path))
    before = our_rows(emb)
    for k in SLOTS:
        np.testing.assert_array_equal(before[k], theirs[k], err_msg=k)
    assert_trained(before)
    dense.set_weights([theirs["kernel"], theirs["bias"]])
    x, y = data()
    np.testing.assert_allclose(model.evaluate(x, y, batch_size=len(x), verbose=0),
                               theirs["loss"], rtol=1e-5)
    opt.iterations.assign(int(theirs["iterations"]))
    model.train_on_batch(*step_batch())
    assert int(opt.iterations.numpy()) == STEPS + 1
    assert_handed_over_step(our_rows(emb), before, theirs["kernel"], theirs["bias"])


def test_keras3_trained_rows_and_slots_continue_in_tfra(config_path, tmp_path):
    model, emb, dense, opt = our_model(str(config_path))
    x, y = data()
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False)
    assert int(opt.iterations.numpy()) == STEPS
    ours = our_rows(emb)
    assert_trained(ours)
    kernel, bias = dense.get_weights()
    loss = model.evaluate(x, y, batch_size=len(x), verbose=0)
    state = str(tmp_path / "state.npz")
    np.savez(state, kernel=kernel, bias=bias, iterations=int(opt.iterations.numpy()))
    theirs = run_tfra(str(config_path), state, "step")
    for k in SLOTS:
        np.testing.assert_array_equal(theirs["before_" + k], ours[k], err_msg=k)
    np.testing.assert_allclose(theirs["before_loss"], loss, rtol=1e-5)
    assert int(theirs["iterations"]) == STEPS + 1
    assert_handed_over_step({k: theirs[k] for k in SLOTS}, ours, kernel, bias)
    after = our_rows(emb)  # what TFRA's step left in Redis, read by our tables
    for k in SLOTS:
        np.testing.assert_array_equal(after[k], theirs[k], err_msg=k)


@pytest.mark.parametrize("kind", ["ftrl", "rmsprop"])
def test_ftrl_and_rmsprop_rows_and_slots_go_from_tfra_to_keras3_and_back(config_path, tmp_path,
                                                                         kind):
    """TFRA trains STEPS steps; our layer reads its params and slots (Ftrl's accumulator and
    linear; RMSprop's velocity, momentum and average_gradient) bit for bit and its loss is
    TFRA's; it trains STEPS more steps from there; TFRA reads what we left bit for bit, with
    our loss, and its next step writes rows our tables read as TFRA does."""
    state = str(tmp_path / "state.npz")
    theirs = run_tfra(str(config_path), state, "train", kind)
    model, emb, dense, opt = our_model(str(config_path), kind)
    names = ("params",) + TFRA_SLOTS[kind]
    ids = all_ids()

    def ours() -> Rows:
        return {k: (emb.table if k == "params" else emb.slot_table(k)).lookup(ids).numpy()
                for k in names}

    got = ours()
    for k in names:
        np.testing.assert_array_equal(got[k], theirs[k], err_msg=k)
        assert np.abs(got[k]).max() > 0, k  # trained, not the zeros of a missing row
    dense.set_weights([theirs["kernel"], theirs["bias"]])
    x, y = data()
    np.testing.assert_allclose(model.evaluate(x, y, batch_size=len(x), verbose=0),
                               theirs["loss"], rtol=1e-5)
    opt.iterations.assign(int(theirs["iterations"]))
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False)
    assert int(opt.iterations.numpy()) == 2 * STEPS
    trained = ours()
    assert any((trained[k] != got[k]).any() for k in names)
    kernel, bias = dense.get_weights()
    loss = model.evaluate(x, y, batch_size=len(x), verbose=0)
    np.savez(state, kernel=kernel, bias=bias, iterations=int(opt.iterations.numpy()))
    back = run_tfra(str(config_path), state, "step", kind)
    for k in names:
        np.testing.assert_array_equal(back["before_" + k], trained[k], err_msg=k)
    np.testing.assert_allclose(back["before_loss"], loss, rtol=1e-5)
    assert int(back["iterations"]) == 2 * STEPS + 1
    after = ours()
    for k in names:
        np.testing.assert_array_equal(after[k], back[k], err_msg=k)
    assert any((after[k] != trained[k]).any() for k in names)
