"""One worker of the serial-order test (test_exact_updates.py):
`python exact_worker.py <config> <layout> <index>`.

Two Keras 3 Embeddings of dim DIM whose rows start at INIT: "ser_adam", trained by
`Adam(ADAM_LR)`, and "ser_adagrad", trained by `Adagrad(ADAGRAD_LR)`. Step s of worker w looks
up `step_ids(w, s)` in both and takes `loss = sum(rows * gradient(w, s))`, so each id's
gradient is a constant of the worker and step, whatever its row holds, while the update still
depends on the slots as they stand: the order in which the workers' steps land on a row shows
in its params and slots. PLAN says which ids each worker's steps touch: some ids both, some
one worker only.

Commands, one per line on stdin:
- `look`: the next step's forward pass and gradients (its lookup reads the rows), then prints
  "looked";
- `apply`: applies that step's gradients, then prints the stats JSON (below);
- `free`: prints "ready", waits for a line (workers.release_together), runs the remaining
  steps whole, prints the stats JSON and exits.
The stats JSON: per optimizer, the layer's `update_*` stats and the optimizer's `iterations`.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Dict, List

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DIM, STEPS, INIT = 3, 4, 0.5
ADAM_LR, ADAGRAD_LR = 0.01, 0.05
OPTIMIZERS = ("adam", "adagrad")
# id: (the steps of worker 0 that touch it, those of worker 1)
PLAN: Dict[int, tuple] = {
    1: ({0, 1, 2, 3}, {0, 1, 2, 3}),
    2: ({0, 1, 2, 3}, {0, 2}),
    3: ({1, 3}, {0, 1, 2, 3}),
    10: ({0, 1, 2, 3}, set()),
    20: (set(), {0, 1, 2, 3}),
}


def step_ids(worker: int, step: int) -> List[int]:
    """The ids step `step` of worker `worker` looks up, each once."""
    return sorted(i for i, steps in PLAN.items() if step in steps[worker])


def gradient(worker: int, step: int) -> np.ndarray:
    """That step's gradient, one row per id of `step_ids`: positive, of varied sizes."""
    rng = np.random.default_rng(100 * worker + step + 1)
    return rng.uniform(0.2, 2.0, (len(step_ids(worker, step)), DIM)).astype(np.float32)


def main(config: str, layout: str, index: int) -> None:
    import keras
    import tensorflow as tf
    from redis_embedding.keras import Embedding, optimizers

    init = keras.initializers.Constant(INIT)
    layers = {name: Embedding(DIM, config=config, name=f"ser_{name}", initializer=init,
                              layout=layout) for name in OPTIMIZERS}
    opts = {"adam": optimizers.Adam(ADAM_LR), "adagrad": optimizers.Adagrad(ADAGRAD_LR)}
    for name, layer in layers.items():
        layer.build(None)
        opts[name].build([layer._anchor])  # the slot layout, before the first lookup

    def look(step: int) -> Dict[str, list]:
        ids = tf.constant(step_ids(index, step), tf.int64)
        c = tf.constant(gradient(index, step))
        grads = {}
        for name, layer in layers.items():
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(layer(ids, training=True) * c)
            grads[name] = tape.gradient(loss, [layer._anchor])
        return grads

    def apply(grads: Dict[str, list]) -> None:
        for name, layer in layers.items():
            opts[name].apply(grads[name], [layer._anchor])

    def stats() -> str:
        return json.dumps({name: {**{k: v for k, v in layers[name].stats().items()
                                     if k.startswith("update_")},
                                  "iterations": int(opts[name].iterations.numpy())}
                           for name in OPTIMIZERS})

    step, grads = 0, None
    for line in sys.stdin:
        command = line.strip()
        if command == "look":
            grads = look(step)
            print("looked", flush=True)
        elif command == "apply":
            apply(grads)
            step += 1
            print(stats(), flush=True)
        elif command == "free":
            print("ready", flush=True)
            sys.stdin.readline()
            for s in range(step, STEPS):
                apply(look(s))
            print(stats(), flush=True)
            return
        else:
            raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
