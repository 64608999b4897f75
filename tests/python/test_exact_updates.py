"""Several worker processes on one table set lose no update (exact updates, the default
`rde_train_updates`): W processes each run N SGD(1.0) steps whose gradient is 1 for every
element of the same 4 rows, so the rows must end at exactly −W·N. Both layouts, a standalone
server and a 3-master cluster. With "last_writer_wins" (TFRA's behaviour) the same run loses
updates, which shows the test can fail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

from keras3_only import require_keras3_without_tfra  # noqa: E402

require_keras3_without_tfra()

import tensorflow as tf  # noqa: E402

from redis_embedding.keras import Embedding  # noqa: E402
from workers import release_together, spawn  # noqa: E402

HERE = Path(__file__).resolve().parent
WORKERS, STEPS = 4, 60


def run_workers(config: Path, layout: str, workers: int = WORKERS, steps: int = STEPS,
                ids: int = 4) -> List[Dict[str, float]]:
    """Starts the workers, lets them all step at once, returns each one's update stats."""
    procs = [spawn([str(HERE / "hot_worker.py"), str(config), layout, str(steps), str(ids)],
                   cwd=HERE) for _ in range(workers)]
    last, _ = release_together(procs)
    return [json.loads(line) for line in last]


def hot_rows(config: Path, layout: str, ids: int = 4) -> np.ndarray:
    # SGD keeps no slots: a fused row is the params alone.
    fused = {"fused_slots": 0} if layout == "fused" else {}
    layer = Embedding(4, config=str(config), name="hot", initializer="zeros", layout=layout,
                      **fused)
    return layer.lookup(tf.constant(list(range(1, ids + 1)), tf.int64), training=False).numpy()


@pytest.mark.parametrize("layout", ["tfra", "fused"])
@pytest.mark.parametrize("where", ["standalone", "cluster"])
def test_four_workers_on_the_same_rows_lose_no_update(request, tmp_path: Path, layout: str,
                                                      where: str) -> None:
    server = request.getfixturevalue("redis" if where == "standalone" else "redis_cluster")
    config = tmp_path / "redis.json"
    server.config(config, **({"storage_slice": 6} if where == "cluster" else {}))
    stats = run_workers(config, layout)
    np.testing.assert_array_equal(hot_rows(config, layout),
                                  np.full((4, 4), -float(WORKERS * STEPS), np.float32))
    # The workers did race (else the test shows nothing): some steps were recomputed.
    assert sum(s["update_conflicts"] for s in stats) > 0, stats


def test_last_writer_wins_loses_updates_under_the_same_run(redis, tmp_path: Path) -> None:
    config = tmp_path / "redis.json"
    redis.config(config, rde_train_updates="last_writer_wins")
    stats = run_workers(config, "fused")
    rows = hot_rows(config, "fused")
    assert rows.max() > -float(WORKERS * STEPS), rows
    assert all(s["update_conflicts"] == 0 for s in stats), stats


def test_eight_workers_on_one_id_finish_within_the_retry_bound(redis, tmp_path: Path) -> None:
    """Eight processes step the same single row at once. Each round some writer wins (the
    first script to run on the row), so a successful write makes at most the 7 others lose
    their round: all conflicts ≤ 7 × all steps. Every worker finishes with no error (a
    worker that gave up would exit non-zero) and no step is lost."""
    workers, steps = 8, 25
    config = tmp_path / "redis.json"
    redis.config(config)
    stats = run_workers(config, "fused", workers=workers, steps=steps, ids=1)
    np.testing.assert_array_equal(hot_rows(config, "fused", ids=1),
                                  np.full((1, 4), -float(workers * steps), np.float32))
    conflicts = sum(s["update_conflicts"] for s in stats)
    assert 0 < conflicts <= (workers - 1) * workers * steps, stats
    # One id: every round a worker loses is one conflicting row.
    assert sum(s["update_retry_rounds"] for s in stats) == conflicts, stats
