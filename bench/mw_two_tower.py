"""`bench/multi_worker.py --task two-tower`: bench/keras_train.py's two-tower model (an
Embedding and a Dense tower each side, dim 64, Adam 1e-3, Zipf(1.2) ids, batch 16384) trained
by W = 1, 2 and 4 worker processes under MultiWorkerMirroredStrategy
(bench/mw_two_tower_worker.py: each global batch split W ways, the Dense towers all-reduced),
exact updates against last-writer-wins, against one standalone redis-server. Reports the
held-out loss (the batch keras_train holds out), aggregate examples/s (information only),
conflicts, and the rows' Adam step count at the end. Then, as a control, W = 1 with the rows'
learning rate multiplied by each W > 1 (the Dense towers keep 1e-3): what W rows' steps of
about one learning rate each per batch, instead of one, would give alone."""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
from typing import Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "python"))

from redis_harness import RedisServer, free_port  # noqa: E402
from workers import release_together, spawn  # noqa: E402
import report  # noqa: E402

SECTION = "Several workers: the two-tower task"
LR = 1e-3  # bench/keras_train.py's Adam


def training(config: str, workers: int, global_steps: bool, epochs: int,
             rows_lr: float = LR) -> Dict[str, float]:
    ports = ",".join(str(free_port()) for _ in range(workers))
    flags = ["--global-steps"] if global_steps else []
    flags += ["--rows-lr", str(rows_lr)]
    procs = [spawn([os.path.join(HERE, "mw_two_tower_worker.py"), config, str(k), ports,
                    "--epochs", str(epochs), *flags], env={"RDE_LOG": "warn"})
             for k in range(workers)]
    outs, wall = release_together(procs, timeout=3600)
    runs = [json.loads(o) for o in outs]
    return {"examples_per_s": sum(r["examples"] for r in runs) / wall,
            "held_out_loss": runs[0]["held_out_loss"],
            "conflicts": sum(r.get("update_conflicts", 0) for r in runs),
            "row_iterations": runs[0]["row_iterations"],
            "dense_iterations": runs[0]["dense_iterations"]}


def main(counts: List[int], modes: list, epochs: int, write: bool) -> None:
    lines = ["| updates | Adam's t (rows) | rows' lr | workers | held-out loss | "
             "rows' t at the end | Dense steps | conflicts | examples/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    runs = [(mode, global_steps, w, LR) for mode, global_steps in modes for w in counts
            if not (global_steps and w == 1)]  # W = 1: the same as a worker's own count
    runs += [("exact", False, 1, w * LR) for w in counts if w > 1]  # the control
    workdir = tempfile.mkdtemp(prefix="rde-mw-two-tower-")
    server = RedisServer(workdir)
    try:
        for mode, global_steps, w, rows_lr in runs:
            config = server.config(os.path.join(workdir, f"{mode}.json"),
                                   rde_train_updates=mode)
            server.command(b"FLUSHALL")
            r = training(config, w, global_steps, epochs, rows_lr)
            t = "all workers'" if global_steps else "own"
            line = (f"| {mode} | {t} | {rows_lr:g} | {w} | {r['held_out_loss']:.4f} | "
                    f"{r['row_iterations']} | {r['dense_iterations']} | "
                    f"{r['conflicts']:,.0f} | {r['examples_per_s']:,.0f} |")
            print(line, flush=True)
            lines.append(line)
    finally:
        server.stop()
    body = ("bench/keras_train.py's two-tower model and data (B = 16384 a step, dim 64, Adam "
            f"1e-3, Zipf(1.2) ids; {epochs} pass(es) over its 23 batches, held-out loss on its "
            "24th), trained by W worker processes under MultiWorkerMirroredStrategy with a "
            "custom loop: each batch split W ways, the Dense towers all-reduced, each worker "
            "applying its own rows; fused layout, one standalone redis-server. See "
            "bench/mw_two_tower_worker.py.\n\n" + "\n".join(lines))
    print(body)
    if write:
        report.write_section(SECTION, body,
                             "python bench/multi_worker.py " + shlex.join(sys.argv[1:]))
