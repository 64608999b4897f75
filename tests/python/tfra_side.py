"""TFRA's half of the continuation tests, run with the TF 2.16.2 + TFRA 0.8.1 interpreter.

    python tfra_side.py <config.json> <state.npz> <steps>

Builds the same model as `test_keras_tfra.py` with TFRA's Keras layer (`user_emb`, TFRA's own
Redis backend) and `DynamicEmbeddingOptimizer(Adam)`. If <state.npz> exists, the dense
weights and the optimizer step count are taken from it first. Evaluates the loss, trains
<steps> steps, evaluates again, and writes the dense weights, the step count, both losses and
the params it sees for the data's ids back to <state.npz>."""

import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_recommenders_addons as tfra  # noqa: E402

from keras_task import DIM, LR, data  # noqa: E402

de = tfra.dynamic_embedding


def main(config: str, state: str, steps: int) -> None:
    creator = de.RedisTableCreator(de.RedisTableConfig(redis_config_abs_dir=config))
    emb = de.keras.layers.Embedding(DIM, key_dtype=tf.int64, name="user_emb", kv_creator=creator,
                                    initializer=tf.keras.initializers.RandomNormal(0, 0.1))
    model = tf.keras.Sequential([tf.keras.Input(shape=(2,), dtype=tf.int64), emb,
                                 tf.keras.layers.Flatten(), tf.keras.layers.Dense(1)])
    opt = de.DynamicEmbeddingOptimizer(tf.keras.optimizers.Adam(LR))
    model.compile(optimizer=opt, loss="mse")
    x, y = data()
    if os.path.exists(state):
        saved = np.load(state)
        model.layers[-1].set_weights([saved["kernel"], saved["bias"]])
        start = int(saved["iterations"])
    else:
        start = 0
    before = model.evaluate(x, y, batch_size=len(x), verbose=0)
    opt.iterations.assign(start)  # Adam's bias correction continues from the other side
    model.fit(x, y, batch_size=len(x) // steps, epochs=1, verbose=0, shuffle=False)
    after = model.evaluate(x, y, batch_size=len(x), verbose=0)
    kernel, bias = model.layers[-1].get_weights()
    params = emb.params.lookup(tf.constant(np.unique(x))).numpy()
    np.savez(state, kernel=kernel, bias=bias, iterations=int(opt.iterations.numpy()),
             before=before, after=after, params=params)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
