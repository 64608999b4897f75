"""One worker of the multi-worker test: `python mw_worker.py <index> <ports> <config> <out>`.

Two processes on loopback run `tf.distribute.MultiWorkerMirroredStrategy` (CPU collectives
over gRPC), which keeps the dense weights in step by all-reducing their gradients. Each
trains on its own shard of the data; the embedding rows go to the shared Redis tables
directly from each worker (last writer wins per row). Keras 3.15's `model.fit` cannot run
under this strategy with a tf.data input (its symbolic build reduces the (x, y) batch as one
value and fails), so the loop is the standard custom one: `strategy.run` per step, the
optimizer's `apply` in replica context. Writes the loss history, the dense weights and the
ids it trained to <out> (.npz)."""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(index: int, ports: str, config: str, out: str) -> None:
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports.split(",")]},
        "task": {"type": "worker", "index": index}})
    import numpy as np
    import tensorflow as tf
    import keras
    from redis_embedding.keras import Embedding, optimizers

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
        emb = Embedding(8, config=config, name="mw", layout=os.environ.get("RDE_MW_LAYOUT",
                                                                          "tfra"))
        h = keras.layers.Flatten()(emb(ids))
        model = keras.Model(ids, keras.layers.Dense(1, name="head")(h))
        opt = optimizers.Adam(0.02)
        opt.build(model.trainable_variables)

    @tf.function
    def step(batch):
        def replica(x, y):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean((model(x, training=True) - y) ** 2)
                scaled = loss / strategy.num_replicas_in_sync  # the all-reduce sums
            variables = model.trainable_variables
            opt.apply(tape.gradient(scaled, variables), variables)
            return loss
        return strategy.reduce("MEAN", strategy.run(replica, args=batch), axis=None)

    losses = []
    for _ in range(4):
        epoch = [float(step(batch)) for batch in data]
        losses.append(float(np.mean(epoch)))
    kernel, bias = model.get_layer("head").get_weights()
    np.savez(out, losses=np.array(losses), kernel=kernel, bias=bias, ids=np.unique(x))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4])
