"""One worker of the hot-ids test: `python hot_worker.py <config> <layout> <steps> [<ids>]`.

Builds a Keras 3 `Embedding` of dim 4 with zero initial rows and `SGD(1.0)`; prints "ready",
waits for a line on stdin (so that every worker starts stepping at once), then runs <steps>
steps of `loss = reduce_sum(emb(ids, training=True))` for the same ids 1..<ids> (4 unless
given): each step subtracts exactly 1 from every element of those rows. Prints the layer's
stats as JSON at the end."""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(config: str, layout: str, steps: int, n_ids: int) -> None:
    import tensorflow as tf
    from redis_embedding.keras import Embedding, optimizers

    layer = Embedding(4, config=config, name="hot", initializer="zeros", layout=layout)
    layer.build(None)
    opt = optimizers.SGD(1.0)
    opt.build([layer._anchor])
    ids = tf.constant(list(range(1, n_ids + 1)), tf.int64)

    @tf.function
    def step() -> None:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(ids, training=True))
        opt.apply(tape.gradient(loss, [layer._anchor]), [layer._anchor])

    step()  # traced (and one step applied) before the start line, like the others' first
    print("ready", flush=True)
    sys.stdin.readline()
    for _ in range(steps - 1):
        step()
    print(json.dumps({k: v for k, v in layer.stats().items() if k.startswith("update_")}),
          flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 4)
