"""TFRA's half of the hand-over tests, run with the TF 2.16.2 + TFRA 0.8.1 interpreter.

    python tfra_side.py <config.json> <state.npz> train|step [adam|ftrl|rmsprop]

Builds the model of `keras_task` with TFRA's Keras layer (`user_emb`, TFRA's own Redis
backend) and `DynamicEmbeddingOptimizer` of the optimizer named (`keras_task.tfra_optimizer`:
Adam unless told), everything seeded.

- `train`: fits STEPS batches of `keras_task.data()` from fresh tables.
- `step`: takes the dense weights and the optimizer step count from <state.npz>, reads the
  params and slot rows of every id as TFRA sees them (`before_*`), then trains one step on
  `keras_task.step_batch()`.

Either way it then writes to <state.npz>: the dense weights, the step count, the MSE over
`data()`, and the params and slot rows of `all_ids()` read through TFRA's own variables
(the layer's params and the optimizer's slot variables)."""

import os
import sys
from typing import Dict

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_recommenders_addons as tfra  # noqa: E402

from keras_task import (BATCH, DENSE_SEED, DIM, EMB_SEED, SEED, TFRA_SLOTS,  # noqa: E402
                        all_ids, data, step_batch, tfra_optimizer)

de = tfra.dynamic_embedding


# Where tf-keras 2.16's optimizers keep each slot's variables.
SLOT_LISTS = {"m": "_momentums", "v": "_velocities", "accumulator": "_accumulators",
              "linear": "_linears", "velocity": "_velocities", "momentum": "_momentums",
              "average_gradient": "_average_gradients"}


def rows(emb, opt, ids: np.ndarray, slots) -> Dict[str, np.ndarray]:
    """The params and `slots` rows of `ids`, through TFRA: the layer's params variable and the
    de.Variables behind the optimizer's slots of the layer's shadow variable."""
    keys = tf.constant(ids, tf.int64)
    out = {"params": emb.params.lookup(keys).numpy()}
    for name in slots:
        mine = [s for s in getattr(opt, SLOT_LISTS[name]) if isinstance(s, de.TrainableWrapper)]
        assert len(mine) == 1, (name, mine)
        assert any(p is mine[0].params for p in emb.optimizer_vars), mine[0].params.name
        out[name] = mine[0].params.lookup(keys).numpy()
    return out


def main(config: str, state: str, mode: str, kind: str) -> None:
    tf.keras.utils.set_random_seed(SEED)
    creator = de.RedisTableCreator(de.RedisTableConfig(redis_config_abs_dir=config))
    emb = de.keras.layers.Embedding(
        DIM, key_dtype=tf.int64, name="user_emb", kv_creator=creator,
        initializer=tf.keras.initializers.RandomNormal(0.0, 0.1, seed=EMB_SEED))
    dense = tf.keras.layers.Dense(
        1, kernel_initializer=tf.keras.initializers.GlorotUniform(seed=DENSE_SEED))
    model = tf.keras.Sequential([tf.keras.Input(shape=(2,), dtype=tf.int64), emb,
                                 tf.keras.layers.Flatten(), dense])
    opt = de.DynamicEmbeddingOptimizer(tfra_optimizer(tf.keras.optimizers, kind))
    slots = TFRA_SLOTS[kind]
    model.compile(optimizer=opt, loss="mse")
    x, y = data()
    out: Dict[str, np.ndarray] = {}
    if mode == "train":
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False)
    elif mode == "step":
        saved = np.load(state)
        dense.set_weights([saved["kernel"], saved["bias"]])
        opt.iterations.assign(int(saved["iterations"]))  # bias correction continues
        opt.build(model.trainable_variables)  # the slot variables, to read them before
        out.update({"before_" + k: v for k, v in rows(emb, opt, all_ids(), slots).items()})
        out["before_loss"] = np.float64(model.evaluate(x, y, batch_size=len(x), verbose=0))
        model.train_on_batch(*step_batch())
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    kernel, bias = dense.get_weights()
    out.update(rows(emb, opt, all_ids(), slots))
    out["loss"] = np.float64(model.evaluate(x, y, batch_size=len(x), verbose=0))
    np.savez(state, kernel=kernel, bias=bias, iterations=int(opt.iterations.numpy()), **out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else "adam")
