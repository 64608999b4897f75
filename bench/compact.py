"""Compact storage: Redis memory per row and lookup/upsert speed of a float32 table stored
natively, as bfloat16 and as float16 (one local redis-server, median of rounds).

    python bench/compact.py [--rows 200000] [--dim 64] [--batch 16384] [--rounds 5] [--write]
    python bench/compact.py --rows 10000000 --title "scale: 10M keys" --write   # scale figure
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("RDE_LOG", "warn")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python"))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import redis_embedding as rde  # noqa: E402
from redis_harness import RedisServer  # noqa: E402
from save_load import write_section  # noqa: E402


def used_memory(server):
    info = server.command(b"INFO", b"memory").decode()
    return int(next(l.split(":")[1] for l in info.splitlines() if l.startswith("used_memory:")))


def flush(server):
    """Empties the server without blocking it (a 10M-field hash takes seconds to free) and
    waits until the memory is really released, so the next table's growth is measured alone."""
    server.command(b"FLUSHALL", b"ASYNC")
    while "lazyfree_pending_objects:0" not in server.command(b"INFO", b"memory").decode():
        time.sleep(0.1)


def server_cpu(server):
    info = server.command(b"INFO", b"cpu").decode()
    return sum(float(l.split(":")[1]) for l in info.splitlines()
               if l.startswith(("used_cpu_sys:", "used_cpu_user:")))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16384)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--title", default="compact storage", help="docs/benchmarks.md section")
    args = ap.parse_args()
    server = RedisServer(tempfile.mkdtemp(prefix="rde-compact-"))
    lines = ["| storage | Redis bytes per row | payload bytes per row | lookup keys/s | "
             "lookup server µs/key | upsert keys/s | upsert server µs/key |",
             "|---|---|---|---|---|---|---|"]
    try:
        for storage in ("native", "bfloat16", "float16"):
            flush(server)
            cfg = server.config(os.path.join(server.dir, f"{storage}.json"),
                                rde_value_storage=storage, expire_model_tag_in_seconds=-1)
            t = rde.RedisTable(tf.int64, tf.float32, tf.zeros([args.dim]), name=f"c_{storage}",
                               config=rde.RedisTableConfig(cfg))
            before = used_memory(server)
            for a in range(0, args.rows, 65536):
                b = min(a + 65536, args.rows)
                t.insert(tf.range(a, b, dtype=tf.int64), tf.random.uniform([b - a, args.dim]))
            per_row = (used_memory(server) - before) / args.rows
            rng = np.random.default_rng(0)
            look, ups = [], []
            vals = tf.random.uniform([args.batch, args.dim])
            for _ in range(args.rounds):
                keys = tf.constant(rng.integers(0, args.rows, args.batch), tf.int64)
                for op, out in ((lambda: t.lookup(keys), look), (lambda: t.insert(keys, vals), ups)):
                    c0, t0 = server_cpu(server), time.perf_counter()
                    op()
                    out.append((time.perf_counter() - t0, server_cpu(server) - c0))
            lk = np.median([x[0] for x in look]), np.median([x[1] for x in look])
            up = np.median([x[0] for x in ups]), np.median([x[1] for x in ups])
            payload = 8 + args.dim * (4 if storage == "native" else 2)
            lines.append(f"| {storage} | {per_row:.0f} | {payload} | {args.batch / lk[0] / 1e6:.2f} M | "
                         f"{lk[1] / args.batch * 1e6:.2f} | {args.batch / up[0] / 1e6:.2f} M | "
                         f"{up[1] / args.batch * 1e6:.2f} |")
    finally:
        server.stop()
    body = (f"{args.rows:,} rows × {args.dim} float32; batches of {args.batch:,} random present "
            f"keys; median of {args.rounds} rounds.\n\n" + "\n".join(lines))
    print(body)
    if args.write:
        write_section(args.title, body, " ".join(["python", *sys.argv]))


if __name__ == "__main__":
    main()
