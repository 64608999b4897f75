"""Keras 3's `model.fit` under `MultiWorkerMirroredStrategy` with two workers fails, with no
redis_embedding involved: `python upstream_mwms_fit.py` starts two workers on loopback, each
fitting a one-Dense model on a `tf.data` input, and prints each worker's outcome as JSON.

Keras 3.15.1 (`keras/src/backend/tensorflow/trainer.py`) fails twice on this path:
1. `_maybe_symbolic_build` passes the whole `(x, y)` batch to `strategy.reduce("MEAN", …)`;
   with more than one worker that goes to `CrossDeviceOps.reduce`, which takes one value and
   tries to convert the tuple of `PerReplica` to a tensor: "Attempt to convert a value
   (PerReplica…) with an unsupported type".
2. With that step bypassed, `reduce_per_replica` reduces the scalar loss logs with
   `strategy.reduce("MEAN", v, axis=0)`: "Invalid reduction dimension 0 for input with 0
   dimensions".
Upstream: keras-team/keras#20585 and tensorflow/tensorflow#72388."""

import json
import os
import socket
import subprocess
import sys


def worker(index: int, ports: str) -> None:
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports.split(",")]},
        "task": {"type": "worker", "index": index}})
    import numpy as np
    import tensorflow as tf
    import keras

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    x = np.random.default_rng(index).normal(size=(256, 4)).astype(np.float32)
    y = (x.sum(axis=1, keepdims=True) > 0).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(
            1, kernel_initializer=keras.initializers.GlorotUniform(seed=1))])
        model.compile(optimizer="sgd", loss=keras.losses.BinaryCrossentropy(from_logits=True))
    try:
        model.fit(data, epochs=1, verbose=0)
        outcome = {"fit": "ok"}
    except Exception as e:  # the outcome is the point: print it whatever it is
        outcome = {"fit": "failed", "error": type(e).__name__, "message": str(e)[-300:]}
    print(json.dumps({"keras": keras.__version__, "tf": tf.__version__, **outcome}), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ports = f"{free_port()},{free_port()}"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_USE_LEGACY_KERAS", None)
    procs = [subprocess.Popen([sys.executable, __file__, str(i), ports], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
             for i in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=600)
        print(out.strip().splitlines()[-1] if out.strip() else '{"fit": "no output"}')


if __name__ == "__main__":
    if len(sys.argv) == 3:
        worker(int(sys.argv[1]), sys.argv[2])
    else:
        main()
