"""Several training workers on one table set: exact updates against last-writer-wins.

    python bench/multi_worker.py [--workers 1,2,4] [--epochs 3] [--hot-steps 100] [--write]
    python bench/multi_worker.py --task two-tower [--workers 1,2,4] [--epochs 1] [--write]

`--task two-tower` runs bench/keras_train.py's two-tower model instead (bench/mw_two_tower.py).

For W = 1, 2 and 4 worker processes on the same total examples (bench/mw_bench_worker.py:
a two-tower dot product of fused Embeddings, Adam 0.01, 100 k Zipf(1.3) examples, 3 epochs,
batch 512, each worker 1/W of them, all at once), against a standalone redis-server and a
3-master cluster, in both `rde_train_updates` modes, it reports:
- aggregate examples/s (all workers' examples over the wall time from the common start to the
  last worker's end);
- the held-out binary cross-entropy on 20 k examples after training;
- lost updates: W processes of tests/python/hot_worker.py each run N SGD(1.0) steps on the same
  4 ids, so with none lost the rows end at −W·N; the share of the W·N that is missing;
- client CPU per example (user + sys of each worker, summed) and redis-server CPU per example
  (all masters summed), in microseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from typing import Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TESTS = os.path.join(ROOT, "tests", "python")
sys.path.insert(0, TESTS)

from redis_harness import RedisCluster, RedisServer  # noqa: E402
from workers import release_together, spawn  # noqa: E402
import report  # noqa: E402

# (rde_train_updates, whether Adam's step count follows all workers' steps: see
# bench/mw_bench_worker.py --global-steps)
MODES = [("exact", False), ("exact", True), ("last_writer_wins", False)]
SECTION = "Several workers: exact updates against last-writer-wins"


def start(args: List[str]) -> subprocess.Popen:
    return spawn(args, env={"RDE_LOG": "warn"})


def server_cpu(servers: list) -> float:
    return sum(s.cpu_seconds() for s in servers)


def training(config: str, servers: list, workers: int, global_steps: bool,
             a) -> Dict[str, float]:
    py = sys.executable
    flags = ["--global-steps"] if global_steps else []
    procs = [start([os.path.join(HERE, "mw_bench_worker.py"), "train", config, str(k),
                    str(workers), "--epochs", str(a.epochs), *flags]) for k in range(workers)]
    s0 = server_cpu(servers)
    outs, wall = release_together(procs, timeout=3600)
    server = server_cpu(servers) - s0
    runs = [json.loads(o) for o in outs]
    n = sum(r["examples"] for r in runs)
    ev = subprocess.run([py, os.path.join(HERE, "mw_bench_worker.py"), "eval", config],
                        check=True, capture_output=True, text=True, timeout=600)
    return {"examples_per_s": n / wall,
            "held_out_loss": json.loads(ev.stdout.strip().splitlines()[-1])["held_out_loss"],
            "client_cpu_us": 1e6 * sum(r["client_cpu_s"] for r in runs) / n,
            "server_cpu_us": 1e6 * server / n,
            "conflicts": sum(r.get("update_conflicts", 0) for r in runs)}


def lost_updates(config: str, workers: int, steps: int) -> float:
    """The share of the hot-ids test's W·N unit updates missing from the rows."""
    procs = [start([os.path.join(TESTS, "hot_worker.py"), config, "fused",
                    str(steps)]) for _ in range(workers)]
    release_together(procs, timeout=3600)
    import tensorflow as tf
    from redis_embedding.keras import Embedding
    layer = Embedding(4, config=config, name="hot", initializer="zeros", layout="fused",
                      fused_slots=0)
    rows = layer.lookup(tf.constant([1, 2, 3, 4], tf.int64)).numpy()
    return 1.0 - float(-rows.mean()) / (workers * steps)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workers", default="1,2,4")
    p.add_argument("--task", choices=["issue", "two-tower"], default="issue")
    p.add_argument("--epochs", type=int, default=None, help="3 (issue), 1 (two-tower)")
    p.add_argument("--hot-steps", type=int, default=100)
    p.add_argument("--write", action="store_true")
    a = p.parse_args()
    counts = [int(w) for w in a.workers.split(",")]
    if a.task == "two-tower":
        import mw_two_tower
        mw_two_tower.main(counts, MODES, a.epochs or 1, a.write)
        return
    a.epochs = a.epochs or 3
    lines = ["| Redis | updates | Adam's t | workers | examples/s | held-out loss | lost updates (hot ids) | "
             "conflicts | client CPU µs/example | redis-server CPU µs/example |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for where in ["standalone", "cluster"]:
        workdir = tempfile.mkdtemp(prefix="rde-mw-bench-")
        topo = RedisServer(workdir) if where == "standalone" else RedisCluster(workdir)
        servers = [topo] if where == "standalone" else topo.nodes
        try:
            for mode, global_steps in MODES:
                for w in counts:
                    if global_steps and w == 1:
                        continue  # the same as a worker's own count
                    config = topo.config(os.path.join(workdir, f"{mode}.json"),
                                         rde_train_updates=mode,
                                         **({"storage_slice": 6} if where == "cluster" else {}))
                    for s in servers:
                        s.command(b"FLUSHALL")
                    r = training(config, servers, w, global_steps, a)
                    for s in servers:
                        s.command(b"FLUSHALL")
                    # The hot-ids run uses SGD: Adam's step count does not enter it.
                    lost = None if global_steps else lost_updates(config, w, a.hot_steps)
                    t = "all workers'" if global_steps else "own"
                    line = (f"| {where} | {mode} | {t} | {w} | {r['examples_per_s']:,.0f} | "
                            f"{r['held_out_loss']:.4f} | "
                            f"{'as above' if lost is None else f'{100 * lost:.1f}%'} | "
                            f"{r['conflicts']:,.0f} | {r['client_cpu_us']:.1f} | "
                            f"{r['server_cpu_us']:.1f} |")
                    print(line, flush=True)
                    lines.append(line)
        finally:
            topo.stop()
    body = (f"Each row: W worker processes at once on 1/W each of the same examples "
            f"({a.epochs} epochs), then the hot-ids run ({a.hot_steps} SGD steps per worker). "
            "See bench/multi_worker.py for the task and the measures.\n\n" + "\n".join(lines))
    print(body)
    if a.write:
        report.write_section(SECTION, body, "python bench/multi_worker.py " + shlex.join(sys.argv[1:]))


if __name__ == "__main__":
    main()
