"""One worker of the multi-worker test: `python mw_worker.py <index> <ports> <config> <out>`.

Two processes on loopback run `tf.distribute.MultiWorkerMirroredStrategy` (CPU collectives
over gRPC), which keeps the dense weights in step by all-reducing their gradients. Each
trains on its own shard of the data; the embedding rows go to the shared Redis tables
directly from each worker. Keras 3.15's `model.fit` cannot run under this strategy with a
tf.data input (its symbolic build reduces the (x, y) batch as one value and fails), so the
loop is the standard custom one: `strategy.run` per step, the optimizer's `apply` in replica
context.

The model has no bias, so only the embedding rows can fit the labels (a dense bias alone
would take the loss most of the way). A second layer, `mwcount` (one float per id, zeros,
SGD(1.0)), gets a gradient of exactly 1 per occurrence of an id, so each of its rows must end
at exactly −(occurrences of that id in both workers' batches). `RDE_MW_FROZEN=1` freezes the
`mw` rows (`trainable = False`): the baseline loss the trained one is compared with.

Prints "ready" once set up and trains on the line `release_together` sends (workers.py); then
writes the loss history, the dense kernel, the ids it trained and its batches' ids to <out>
(.npz)."""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

EPOCHS = 4


def main(index: int, ports: str, config: str, out: str) -> None:
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports.split(",")]},
        "task": {"type": "worker", "index": index}})
    import numpy as np
    import tensorflow as tf
    import keras
    from redis_embedding.keras import Embedding, optimizers

    layout = os.environ.get("RDE_MW_LAYOUT", "tfra")
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    rng = np.random.default_rng(100 + index)  # each worker its own shard of ids
    x = rng.integers(0, 400, size=(2048, 2)).astype(np.int64) + index * 1000
    x[:, 1] = rng.integers(0, 50, size=2048)  # shared ids: both workers write these rows
    y = ((x[:, 0] % 3 == 0) ^ (x[:, 1] % 2 == 0)).astype(np.float32)[:, None]
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(128)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    data = strategy.experimental_distribute_dataset(data.with_options(options))
    with strategy.scope():
        ids = keras.Input(shape=(2,), dtype="int64")
        frozen = os.environ.get("RDE_MW_FROZEN") == "1"
        # Frozen, no optimizer configures the fused width: Adam's, as a trained run has.
        emb = Embedding(8, config=config, name="mw", layout=layout,
                        fused_slots=2 if frozen and layout == "fused" else None)
        emb.trainable = not frozen
        h = keras.layers.Flatten()(emb(ids))
        model = keras.Model(ids, keras.layers.Dense(
            1, use_bias=False, name="head",
            kernel_initializer=keras.initializers.GlorotUniform(seed=1))(h))
        count = Embedding(1, config=config, name="mwcount", layout=layout,
                          initializer="zeros")
        count.build(None)
        opt = optimizers.Adam(0.02)
        opt.build(model.trainable_variables)
        count_opt = optimizers.SGD(1.0)
        count_opt.build([count._anchor])

    @tf.function
    def step(batch):
        def replica(x, y):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean((model(x, training=True) - y) ** 2)
                scaled = loss / strategy.num_replicas_in_sync  # the all-reduce sums
                # d/d(row) = 1 per occurrence; the count rows do not reach `loss`.
                occurrences = tf.reduce_sum(count(x, training=True))
            variables = model.trainable_variables
            grads = tape.gradient([scaled, occurrences], variables + [count._anchor])
            opt.apply(grads[:-1], variables)
            count_opt.apply(grads[-1:], [count._anchor])
            return loss
        return strategy.reduce("MEAN", strategy.run(replica, args=batch), axis=None)

    print("ready", flush=True)
    sys.stdin.readline()
    losses = []
    for _ in range(EPOCHS):
        epoch = [float(step(batch)) for batch in data]
        losses.append(float(np.mean(epoch)))
    (kernel,) = model.get_layer("head").get_weights()
    np.savez(out, losses=np.array(losses), kernel=kernel, ids=np.unique(x), x=x,
             epochs=EPOCHS)
    print("done", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4])
