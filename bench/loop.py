"""One backend, one workload, sustained: for profiling with perf and for steadier per-key
figures than compare.py's single-call samples.

Upserts 40 key sets of 16,384 x 64 f32 (and, for the Zipf workloads, 40 Zipf(1.2) batches),
writes "<client pid> <redis-server pid>" to --pids, then loops the workload for --seconds and
prints keys/s, client and server CPU per key and server utilisation; for ours also the time per
call inside our op and outside it (TensorFlow's and Python's, during which the server idles).

    python bench/loop.py {ours,tfra} {lookup,upsert,zipf,zipf_upsert} [--seconds 10] [--pids F]
    perf record -g -p <pid> -- sleep 6      # while it runs
"""

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("RDE_LOG", "warn")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python"))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_recommenders_addons as tfra  # noqa: E402

import redis_embedding as rde  # noqa: E402
from redis_harness import RedisServer  # noqa: E402

de = tfra.dynamic_embedding


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("backend", choices=["ours", "tfra"])
    ap.add_argument("workload", choices=["lookup", "upsert", "zipf", "zipf_upsert"])
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--pids", default=None)
    args = ap.parse_args()
    batch, dim = 16384, 64
    work = tempfile.mkdtemp(prefix="rde-loop-")
    server = RedisServer(work)
    try:
        cfg = server.config(os.path.join(work, "s.json"), expire_model_tag_in_seconds=-1,
                            table_store_mode=2)
        creator = (de.RedisTableCreator(de.RedisTableConfig(redis_config_abs_dir=cfg))
                   if args.backend == "tfra"
                   else rde.RedisTableCreator(rde.RedisTableConfig(redis_config_abs_dir=cfg)))
        var = de.get_variable("v", dim=dim, initializer=0.0, kv_creator=creator)
        rng = np.random.default_rng(0)
        values = tf.random.uniform([batch, dim])
        uniform = [tf.constant(np.arange(i * batch, (i + 1) * batch) + 10**12, tf.int64)
                   for i in range(40)]
        zipf = [tf.constant(rng.zipf(1.2, batch) % 10_000_000, tf.int64) for _ in range(40)]
        for k in uniform + (zipf if args.workload.startswith("zipf") else []):
            var.upsert(k, values)
        step = {
            "lookup": lambda i: var.lookup(uniform[i]),
            "upsert": lambda i: var.upsert(uniform[i], values),
            "zipf": lambda i: var.lookup(zipf[i]),
            "zipf_upsert": lambda i: var.upsert(zipf[i], values),
        }[args.workload]
        if args.pids:
            with open(server.pidfile) as f:
                server_pid = int(f.read().strip())
            with open(args.pids, "w") as f:
                f.write(f"{os.getpid()} {server_pid}")

        def client_cpu():
            r = resource.getrusage(resource.RUSAGE_SELF)
            return r.ru_utime + r.ru_stime

        st0 = rde.stats()
        calls, t0, c0, s0 = 0, time.perf_counter(), client_cpu(), server.cpu_seconds()
        while time.perf_counter() - t0 < args.seconds:
            step(calls % 40)
            calls += 1
        wall, keys = time.perf_counter() - t0, calls * batch
        srv = server.cpu_seconds() - s0
        print(f"{args.backend} {args.workload}: {keys / wall / 1e6:.2f} M keys/s, client "
              f"{(client_cpu() - c0) / keys * 1e6:.3f} us/key, server {srv / keys * 1e6:.3f} "
              f"us/key, server utilisation {srv / wall:.0%}")
        if args.backend == "ours":
            st = rde.stats()
            inside = (st["call_nanoseconds"] - st0["call_nanoseconds"]) / 1e6 / calls
            print(f"  per call: {wall / calls * 1e3:.2f} ms, of which {inside:.2f} ms inside our "
                  f"op and {wall / calls * 1e3 - inside:.2f} ms in TensorFlow and Python "
                  "between ops (the server idles then)")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
