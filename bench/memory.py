"""The embedded backend (`"rde_backend": "memory"`): lookup and upsert speed of a float32
table through the TF ops (median of rounds), and the same batches on one local redis-server
for reference (`--redis`).

    python bench/memory.py [--rows 1000000] [--dim 64] [--batch 16384] [--rounds 20] [--redis] [--write]
"""

import argparse
import json
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
from save_load import write_section  # noqa: E402


def measure(t: rde.RedisTable, rows: int, dim: int, batch: int, rounds: int) -> tuple:
    """Median keys/s of lookups and of upserts of random present keys."""
    for a in range(0, rows, 65536):
        b = min(a + 65536, rows)
        t.insert(tf.range(a, b, dtype=tf.int64), tf.random.uniform([b - a, dim]))
    rng = np.random.default_rng(0)
    vals = tf.random.uniform([batch, dim])
    look, ups = [], []
    for _ in range(rounds + 2):  # the first two rounds warm up
        keys = tf.constant(rng.integers(0, rows, batch), tf.int64)
        t0 = time.perf_counter()
        t.lookup(keys)
        t1 = time.perf_counter()
        t.insert(keys, vals)
        t2 = time.perf_counter()
        look.append(t1 - t0)
        ups.append(t2 - t1)
    return batch / np.median(look[2:]), batch / np.median(ups[2:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16384)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--redis", action="store_true", help="also measure one local redis-server")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="rde-memory-bench-")
    lines = ["| backend | lookup keys/s | upsert keys/s |", "|---|---|---|"]
    cfg = os.path.join(work, "memory.json")
    with open(cfg, "w") as f:
        json.dump({"rde_backend": "memory", "table_store_mode": 0}, f)
    t = rde.RedisTable(tf.int64, tf.float32, tf.zeros([args.dim]), name="bench",
                       config=rde.RedisTableConfig(cfg))
    lk, up = measure(t, args.rows, args.dim, args.batch, args.rounds)
    lines.append(f"| memory | {lk / 1e6:.2f} M | {up / 1e6:.2f} M |")
    if args.redis:
        from redis_harness import RedisServer
        server = RedisServer(os.path.join(work, "redis"))
        try:
            r = rde.RedisTable(tf.int64, tf.float32, tf.zeros([args.dim]), name="bench",
                               config=rde.RedisTableConfig(server.config(
                                   os.path.join(work, "redis.json"),
                                   expire_model_tag_in_seconds=-1)))
            lk, up = measure(r, args.rows, args.dim, args.batch, args.rounds)
            lines.append(f"| redis (one local server) | {lk / 1e6:.2f} M | {up / 1e6:.2f} M |")
        finally:
            server.stop()
    body = (f"{args.rows:,} rows × {args.dim} float32; batches of {args.batch:,} random present "
            f"keys through the TF ops (eager); median of {args.rounds} rounds.\n\n"
            + "\n".join(lines))
    print(body)
    if args.write:
        write_section("embedded backend", body, " ".join(["python", *sys.argv]))


if __name__ == "__main__":
    main()
