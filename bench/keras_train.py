"""End-to-end training throughput: TFRA 0.8.1's Keras layer + DynamicEmbeddingOptimizer(Adam)
on TF 2.16.2 against redis_embedding.keras (TFRA-compatible and fused layouts) on TF 2.21.

One redis-server; every run starts from empty tables and is timed twice over the same
batches: from empty, then steady state (rows present). The implementations alternate within
each round (rotated per round) and the medians over rounds are reported. Each run is a fresh
process of bench/train_runner.py (see it for the model and the measurements).

    python bench/keras_train.py [--rounds 5] [--steps 20] [--batch 16384] [--dim 64]
        [--impls tfra,rde-tfra,rde-fused] [--dists zipf,uniform] [--section NAME] [--write]

`--impls rde-fused,rde-fused-lww --dists zipf --section "Exact updates, one worker"` measures
what exact updates cost one worker against last-writer-wins.
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))

from redis_harness import RedisServer  # noqa: E402
import report  # noqa: E402

IMPLS = ["tfra", "rde-tfra", "rde-fused"]
DISTS = ["zipf", "uniform"]
FIELDS = ["steps_per_s", "examples_per_s", "server_ms_per_step", "client_cpu_ms_per_step"]
PHASES = ["empty", "steady"]
SECTION = "Keras 3 training vs TFRA (end to end)"


def run(python: str, impl: str, dist: str, server: RedisServer, config: str, a) -> dict:
    server.command(b"FLUSHALL")
    env = dict(os.environ, RDE_BENCH_IMPL=impl, RDE_LOG="warn")
    cmd = [python, os.path.join(HERE, "train_runner.py"), "--impl", impl, "--dist", dist,
           "--config", config, "--port", str(server.port), "--batch", str(a.batch),
           "--dim", str(a.dim), "--steps", str(a.steps), "--warmup", str(a.warmup)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True,
                         timeout=1800).stdout
    return json.loads(out.strip().splitlines()[-1])


def table(results: dict, impls: list, dists: list) -> str:
    """Medians per ids, phase and implementation; the ratio is against the first of `impls`."""
    lines = [f"| ids | tables | implementation | steps/s | examples/s | × {impls[0]} | "
             "server ms/step | client CPU ms/step | held-out loss |",
             "|---|---|---|---|---|---|---|---|---|"]
    for dist in dists:
        for phase in PHASES:
            base = statistics.median(r[phase]["steps_per_s"] for r in results[(impls[0], dist)])
            for impl in impls:
                rs = results[(impl, dist)]
                med = {f: statistics.median(r[phase][f] for r in rs) for f in FIELDS}
                loss = statistics.median(r["held_out_loss"] for r in rs)
                lines.append(
                    f"| {'Zipf(1.2)' if dist == 'zipf' else 'uniform'} | {phase} | {impl} | "
                    f"{med['steps_per_s']:.2f} | {med['examples_per_s']:,.0f} | "
                    f"{med['steps_per_s'] / base:.2f}× | {med['server_ms_per_step']:.1f} | "
                    f"{med['client_cpu_ms_per_step']:.0f} | {loss:.4f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=16384)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--py16", default=os.path.join(ROOT, ".venv", "tf2.16", "bin", "python"))
    p.add_argument("--py21", default=os.path.join(ROOT, ".venv", "tf2.21", "bin", "python"))
    p.add_argument("--impls", default=",".join(IMPLS))
    p.add_argument("--dists", default=",".join(DISTS))
    p.add_argument("--section", default=SECTION)
    p.add_argument("--write", action="store_true")
    a = p.parse_args()
    impls, dists = a.impls.split(","), a.dists.split(",")
    workdir = tempfile.mkdtemp(prefix="rde-bench-")
    server = RedisServer(workdir)
    results: dict = {(i, d): [] for i in impls for d in dists}
    try:
        config = server.config(os.path.join(workdir, "redis.json"))
        for rnd in range(a.rounds):
            k = rnd % len(impls)
            order = impls[k:] + impls[:k]
            for dist in dists:
                for impl in order:
                    python = a.py16 if impl == "tfra" else a.py21
                    r = run(python, impl, dist, server, config, a)
                    results[(impl, dist)].append(r)
                    print(json.dumps(r), flush=True)
    finally:
        server.stop()
    body = (f"B = {a.batch}, dim {a.dim}, two towers (an Embedding and a Dense each, dot "
            f"product, binary cross-entropy), Adam 1e-3; {a.steps} timed steps after "
            f"{a.warmup} warm-up steps, timed from empty tables and again over the same "
            f"batches with the rows present (steady); medians of {a.rounds} rounds, "
            f"implementations alternating. `tfra` is TFRA 0.8.1's Keras layer (unique op) and "
            f"DynamicEmbeddingOptimizer(Adam) over TFRA's own Redis backend, TF 2.16.2; "
            f"`rde-*` is redis_embedding.keras on TF 2.21 (exact updates; `-lww`: "
            f"last-writer-wins). The held-out loss is taken after the from-empty phase.\n\n"
            f"{table(results, impls, dists)}")
    print(body)
    if a.write:
        cmd = "python bench/keras_train.py " + shlex.join(sys.argv[1:])
        report.write_section(a.section, body, cmd.strip())


if __name__ == "__main__":
    main()
