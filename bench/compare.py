"""Side-by-side throughput of TFRA 0.8.1's Redis backend and ours, through the same
`de.Variable` calls, in one process against one redis-server, alternating backends per round.

Each round times a run of calls per workload (at least --keys-per-sample keys, so short calls
are not timed one by one). For each workload it reports the median over rounds of keys/s, client CPU µs per key (this
process's user+sys time), server CPU µs per key (INFO cpu of redis-server) and server
utilisation = keys/s × server µs/key. Accum runs for ours only (TFRA's needs its server module).

    python bench/compare.py [--batch 16384] [--dim 64] [--rounds 5] [--cluster] [--write]
    python bench/compare.py --matrix --write     # batches 1024/16384/131072 × dims 8/64/256
    python bench/compare.py --matrix --cluster --write   # the same on a 3-master cluster
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
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
from redis_harness import RedisCluster, RedisServer  # noqa: E402
from save_load import write_section  # noqa: E402

de = tfra.dynamic_embedding
WORKLOADS = ["upsert (new keys, uniform)", "lookup, present", "lookup, absent",
             "Zipf(1.2) upsert", "Zipf(1.2) lookup", "accum (ours only)"]


def server_cpu(nodes):
    total = 0.0
    for n in nodes:
        info = n.command(b"INFO", b"cpu").decode()
        for line in info.splitlines():
            if line.startswith(("used_cpu_sys:", "used_cpu_user:")):
                total += float(line.split(":")[1])
    return total


def client_cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_matrix(batch, dim, rounds, cluster, workdir, keys_per_sample):
    if cluster:
        server = RedisCluster(workdir)
        nodes = server.nodes
        cfg_path = server.config(os.path.join(workdir, "c.json"), storage_slice=3)
    else:
        server = RedisServer(workdir)
        nodes = [server]
        cfg_path = server.config(os.path.join(workdir, "s.json"))
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg.update(expire_model_tag_in_seconds=-1, table_store_mode=2)
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    try:
        variables = {
            "TFRA": de.get_variable(f"tfra_{batch}_{dim}", dim=dim, initializer=0.0,
                                    kv_creator=de.RedisTableCreator(
                                        de.RedisTableConfig(redis_config_abs_dir=cfg_path))),
            "ours": de.get_variable(f"ours_{batch}_{dim}", dim=dim, initializer=0.0,
                                    kv_creator=rde.RedisTableCreator(
                                        rde.RedisTableConfig(redis_config_abs_dir=cfg_path))),
        }
        rng = np.random.default_rng(0)
        values = tf.random.uniform([batch, dim])
        present = {}
        samples = {w: {b: [] for b in variables} for w in WORKLOADS}
        # A sample is `calls` calls (at least keys_per_sample keys), so that short calls are
        # not timed one by one against the server's CPU-time resolution.
        calls = max(1, keys_per_sample // batch)
        exists = tf.ones([batch], tf.bool)
        for r in range(rounds):
            for name, var in (variables.items() if r % 2 == 0 else reversed(variables.items())):
                base = present.setdefault(name, [])
                new_keys = [tf.constant(np.arange((len(base) + i) * batch,
                                                  (len(base) + i + 1) * batch) + 10**12, tf.int64)
                            for i in range(calls)]
                zipf = [tf.constant(rng.zipf(1.2, batch) % 10_000_000, tf.int64)
                        for _ in range(calls)]
                absent = [tf.constant(rng.integers(2 * 10**12, 3 * 10**12, batch), tf.int64)
                          for _ in range(calls)]
                ops = {
                    "upsert (new keys, uniform)": lambda i: var.upsert(new_keys[i], values),
                    "lookup, present": lambda i: var.lookup(new_keys[i]),
                    "lookup, absent": lambda i: var.lookup(absent[i]),
                    "Zipf(1.2) upsert": lambda i: var.upsert(zipf[i], values),
                    "Zipf(1.2) lookup": lambda i: var.lookup(zipf[i]),
                    "accum (ours only)": lambda i: var.tables[0].accum(
                        new_keys[i], values, exists),
                }
                for w in WORKLOADS:
                    if w.startswith("accum") and name == "TFRA":
                        continue
                    s0, c0, t0 = server_cpu(nodes), client_cpu(), time.perf_counter()
                    for i in range(calls):
                        ops[w](i)
                    t1, c1, s1 = time.perf_counter(), client_cpu(), server_cpu(nodes)
                    if r > 0:  # the first round warms connections and caches
                        samples[w][name].append(((t1 - t0) / calls, (c1 - c0) / calls,
                                                 (s1 - s0) / calls))
                base.extend([1] * calls)
        rows = []
        for w in WORKLOADS:
            for name in variables:
                got = samples[w][name]
                if not got:
                    continue
                wall, cli, srv = (float(np.median([g[i] for g in got])) for i in range(3))
                kps = batch / wall
                srv_us, cli_us = srv / batch * 1e6, cli / batch * 1e6
                rows.append((w, name, kps, cli_us, srv_us, kps * srv_us / 1e6 / len(nodes)))
        return rows
    finally:
        if cluster:
            server.stop()
        else:
            server.stop()


def table(rows, batch, dim, cluster):
    where = "3-master cluster" if cluster else "standalone"
    out = [f"### batch {batch:,} × dim {dim}, {where}", "",
           "| workload | backend | keys/s | client µs/key | server µs/key | server utilisation |",
           "|---|---|---|---|---|---|"]
    by = {}
    for w, name, kps, cli, srv, util in rows:
        out.append(f"| {w} | {name} | {kps / 1e6:.2f} M | {cli:.2f} | {srv:.2f} | {util:.0%} |")
        by[(w, name)] = kps
    out += ["", "| workload | ours ÷ TFRA keys/s |", "|---|---|"]
    for w in WORKLOADS:
        if (w, "TFRA") in by and (w, "ours") in by:
            out.append(f"| {w} | {by[(w, 'ours')] / by[(w, 'TFRA')]:.2f}× |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16384)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cluster", action="store_true")
    ap.add_argument("--matrix", action="store_true")
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--keys-per-sample", type=int, default=131072,
                    help="each timed sample runs ceil(this / batch) calls")
    args = ap.parse_args()
    # One topology per process: TFRA's backend keeps one Redis connection per process, so a
    # standalone run followed by a cluster run in the same process fails on TFRA's side.
    configs = ([(b, d, args.cluster) for b in (1024, 16384, 131072) for d in (8, 64, 256)]
               if args.matrix else [(args.batch, args.dim, args.cluster)])
    parts = []
    for batch, dim, cluster in configs:
        work = tempfile.mkdtemp(prefix="rde-cmp-")
        try:
            rows = run_matrix(batch, dim, args.rounds, cluster, work, args.keys_per_sample)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        parts.append(table(rows, batch, dim, cluster))
        print(parts[-1], flush=True)
    if args.write:
        body = (f"Median of {args.rounds - 1} measured rounds (a first warm-up round is dropped), "
                "backends alternating per round, client and server on the same 2 cores; each "
                f"round times max(1, {args.keys_per_sample:,} / batch) calls per workload and "
                "reports their mean. Client CPU is the whole Python process (TensorFlow "
                "included).\n\n" + "\n\n".join(parts))
        size = (not args.matrix and (args.batch, args.dim) != (16384, 64)
                and f"{args.batch:,} x {args.dim}")
        tags = [t for t, on in (("matrix", args.matrix), (size, size), ("cluster", args.cluster))
                if on]
        label = "TFRA vs ours" + (f" ({', '.join(tags)})" if tags else "")
        write_section(label, body, " ".join(["python", *sys.argv]))


if __name__ == "__main__":
    main()
