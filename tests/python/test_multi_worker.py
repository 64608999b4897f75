"""Two worker processes train one Keras 3 model against the same Redis tables, each on its
own shard of ids (plus ids both write), with MultiWorkerMirroredStrategy keeping the dense
weights in step over loopback gRPC (`mw_worker.py`)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras3_only import require_keras3_without_tfra  # noqa: E402

require_keras3_without_tfra()

import redis_embedding as rde  # noqa: E402
from redis_harness import free_port  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def run_workers(config: str, tmp_path, layout: str) -> list:
    ports = f"{free_port()},{free_port()}"
    env = dict(os.environ, RDE_MW_LAYOUT=layout)
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "mw_worker.py"), str(i),
                               ports, config, str(tmp_path / f"w{i}.npz")], env=env)
             for i in range(2)]
    try:
        codes = [p.wait(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert codes == [0, 0], codes
    return [dict(np.load(tmp_path / f"w{i}.npz")) for i in range(2)]


@pytest.mark.parametrize("layout,where", [("tfra", "standalone"), ("fused", "cluster")])
def test_two_workers_train_one_model_and_lose_no_row(request, tmp_path, layout, where):
    server = request.getfixturevalue("redis" if where == "standalone" else "redis_cluster")
    config = server.config(tmp_path / "redis.json")
    a, b = run_workers(config, tmp_path, layout)
    assert a["losses"][-1] < 0.8 * a["losses"][0], a["losses"]
    # The dense head is the same on both workers: all-reduced, applied in step.
    np.testing.assert_array_equal(a["kernel"], b["kernel"])
    np.testing.assert_array_equal(a["bias"], b["bias"])
    trained = set(a["ids"].tolist()) | set(b["ids"].tolist())
    width = 8 * (3 if layout == "fused" else 1)
    name = "mw-fused" if layout == "fused" else "mw-parameter"
    tables = [name] if layout == "fused" else [
        name] + [f"mw-parameter_DynamicEmbedding_mw-shadow_{s}" for s in ("m", "v")]
    for table_name in tables:
        table = rde.RedisTable(tf.int64, tf.float32, tf.zeros([width]), name=table_name,
                               config=rde.RedisTableConfig(config))
        keys, values = table.export()  # fails on any row of another length
        assert set(keys.numpy().tolist()) == trained, table_name
        assert np.isfinite(values.numpy()).all(), table_name
