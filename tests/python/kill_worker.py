"""One worker of the killed-worker test: `python kill_worker.py <config> <layout>`.

A Keras 3 `Embedding` "kill" of dim 4 with zero initial rows, trained by `Adagrad(0.1)` on
`loss = reduce_sum(emb(IDS, training=True))`: every step adds exactly 1 to each accumulator
element of the 16 rows, so a row's accumulator tells how many steps it took. One step is run
(and traced) before it prints "ready"; then it reads commands from stdin:
- `step`: one step, then prints "done";
- `run N`: N steps, then prints the layer's update stats as JSON and exits."""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

IDS = list(range(1, 17))
LR = 0.1


def main(config: str, layout: str) -> None:
    import tensorflow as tf
    from redis_embedding.keras import Embedding, optimizers

    layer = Embedding(4, config=config, name="kill", initializer="zeros", layout=layout)
    layer.build(None)
    opt = optimizers.Adagrad(LR)
    opt.build([layer._anchor])
    ids = tf.constant(IDS, tf.int64)

    @tf.function
    def step() -> None:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(ids, training=True))
        opt.apply(tape.gradient(loss, [layer._anchor]), [layer._anchor])

    step()
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if words == ["step"]:
            step()
            print("done", flush=True)
        elif words and words[0] == "run":
            for _ in range(int(words[1])):
                step()
            stats = {k: v for k, v in layer.stats().items() if k.startswith("update_")}
            print(json.dumps(stats), flush=True)
            return


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
