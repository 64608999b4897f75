"""A worker killed in the middle of a training step's apply leaves every row whole, and the
other workers go on (exact updates, a 3-master cluster, both layouts).

The victim's apply is caught half done: one master is paused for writes (`CLIENT PAUSE WRITE`),
so the step's compare-and-set script for the rows on that master waits there while the scripts
for the other masters' rows run. The victim is killed while its script is seen blocked on the
paused master. Every row must then hold the params and accumulator of one whole number of
Adagrad steps (`kill_worker.py`), the rows on the paused master one step fewer than the others,
and the two surviving workers' steps must all land on top."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import pytest

from keras3_only import require_keras3_without_tfra  # noqa: E402

require_keras3_without_tfra()

import tensorflow as tf  # noqa: E402

from kill_worker import IDS, LR  # noqa: E402
from redis_embedding.keras import Embedding  # noqa: E402
from workers import spawn  # noqa: E402

HERE = Path(__file__).resolve().parent
VICTIM_STEPS, SURVIVOR_STEPS = 5, 20
INIT_ACC, EPS = 0.1, 1e-7  # keras.optimizers.Adagrad's defaults


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    """Polls `cond` until it holds; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def whole_row(steps: int) -> np.ndarray:
    """Params then accumulator of one row after `steps` Adagrad steps of gradient 1, computed in
    float32 as the Rust optimizer does."""
    p, a = np.float32(0), np.float32(INIT_ACC)
    for _ in range(steps):
        a = np.float32(a + np.float32(1))
        p = np.float32(p - np.float32(LR) / np.sqrt(np.float32(a + np.float32(EPS))))
    return np.array([p] * 4 + [a] * 4, np.float32)


class Worker:
    def __init__(self, config: Path, layout: str) -> None:
        self.p = spawn([str(HERE / "kill_worker.py"), str(config), layout], cwd=HERE)

    def expect(self, want: str) -> str:
        line = self.p.stdout.readline()
        assert line.strip() == want or want == "*", (
            line, self.p.stderr.read()[-3000:] if self.p.poll() is not None else "")
        return line

    def send(self, line: str) -> None:
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()


def master_of_each_id(cluster, layout: str) -> Dict[int, int]:
    """Which master (index) holds each id's row, from the hash fields in every bucket."""
    where: Dict[int, int] = {}
    for m, node in enumerate(cluster.nodes):
        for key in node.command(b"KEYS", b"*"):
            if b"kill" not in key:
                continue
            for field in node.command(b"HKEYS", key):
                if len(field) == 8:
                    where[int.from_bytes(field, "little", signed=True)] = m
    return where


def rows(config: Path, layout: str) -> np.ndarray:
    """Each id's params then accumulator, as stored."""
    ids = tf.constant(IDS, tf.int64)
    if layout == "fused":
        layer = Embedding(4, config=str(config), name="kill", initializer="zeros",
                          layout="fused", fused_slots=1)
        return layer.table.lookup(ids).numpy()
    layer = Embedding(4, config=str(config), name="kill", initializer="zeros")
    params = layer.table.lookup(ids).numpy()
    return np.concatenate([params, layer.slot_table("accumulator").lookup(ids).numpy()], axis=1)


def blocked_scripts(node) -> List[str]:
    """The clients whose script waits on `node` (paused for writes)."""
    clients = node.command(b"CLIENT", b"LIST").decode().splitlines()
    return [c for c in clients if "flags=b" in c]


@pytest.mark.parametrize("layout", ["tfra", "fused"])
def test_a_worker_killed_during_an_apply_leaves_every_row_whole(redis_cluster, tmp_path: Path,
                                                                 layout: str) -> None:
    config = tmp_path / "redis.json"
    redis_cluster.config(config, storage_slice=6)
    workers = [Worker(config, layout) for _ in range(3)]
    victim, survivors = workers[0], workers[1:]
    try:
        for w in workers:
            w.expect("ready")  # each has applied one step
        for _ in range(VICTIM_STEPS):
            victim.send("step")
            victim.expect("done")
        before = 3 + VICTIM_STEPS
        where = master_of_each_id(redis_cluster, layout)
        assert sorted(where) == IDS, where
        paused = where[IDS[0]]
        on_paused = [i for i in IDS if where[i] == paused]
        assert len(on_paused) < len(IDS), f"all rows on one master: {where}"
        node = redis_cluster.nodes[paused]
        node.command(b"CLIENT", b"PAUSE", b"120000", b"WRITE")
        try:
            victim.send("step")
            wait_for(lambda: len(blocked_scripts(node)) == 1, "the victim's blocked apply")
            victim.p.kill()
            victim.p.wait()
            # Redis drops the dead client's waiting script once it sees the socket closed.
            wait_for(lambda: not blocked_scripts(node), "the dead client to be dropped")
        finally:
            node.command(b"CLIENT", b"UNPAUSE")
        half = rows(config, layout)
        for k, i in enumerate(IDS):
            want = before if i in on_paused else before + 1
            np.testing.assert_allclose(half[k], whole_row(want), rtol=1e-6,
                                       err_msg=f"id {i} right after the kill")

        for w in survivors:
            w.send(f"run {SURVIVOR_STEPS}")
        for w in survivors:
            json.loads(w.expect("*"))  # its stats: it finished every step
            assert w.p.wait(timeout=300) == 0, w.p.stderr.read()[-3000:]
        end = rows(config, layout)
        for k, i in enumerate(IDS):
            want = (before if i in on_paused else before + 1) + 2 * SURVIVOR_STEPS
            np.testing.assert_allclose(end[k], whole_row(want), rtol=1e-6,
                                       err_msg=f"id {i} after the survivors' steps")
    finally:
        for w in workers:
            if w.p.poll() is None:
                w.p.kill()
                w.p.wait()
