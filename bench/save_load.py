"""Save/load throughput of a 1M x 64 float32 table on one local redis-server.

Measures (medians over rounds): export into tensors and import from them (the Redis side of a
mode-0 checkpoint), save_to_file_system, load_from_file_system, and a tf.train.Checkpoint
write/read (table_store_mode 0, TensorFlow's checkpoint file writer included) and mode 1, in
MB/s of key+value payload, plus the process's peak RSS growth during the file save and load.
Writes docs/benchmarks.md section "save/load" when --write is given.

    python bench/save_load.py [--rows 1000000] [--dim 64] [--rounds 3] [--config JSON] [--write]
"""

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("RDE_LOG", "warn")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import redis_embedding as rde  # noqa: E402
from redis_embedding._ops import ops as _lib  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python"))
from redis_harness import RedisServer  # noqa: E402
import report  # noqa: E402


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    ap.add_argument("--config", default="{}",
                    help="extra JSON config fields, e.g. '{\"storage_slice\": 32, "
                         "\"rde_standalone_buckets\": true}'")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="rde-bench-")
    server = RedisServer(work)
    try:
        cfg = server.config(os.path.join(work, "redis.json"), expire_model_tag_in_seconds=-1,
                            **json.loads(args.config))
        t = rde.RedisTable(tf.int64, tf.float32, tf.zeros([args.dim]), name="bench",
                           checkpoint=True, config=rde.RedisTableConfig(cfg))
        batch = 65536
        for a in range(0, args.rows, batch):
            b = min(a + batch, args.rows)
            t.insert(tf.range(a, b, dtype=tf.int64),
                     tf.random.uniform([b - a, args.dim]))
        assert int(t.size()) == args.rows
        mb = args.rows * (8 + 4 * args.dim) / 1e6
        files = os.path.join(work, "files")
        results = {k: [] for k in ("export to tensors", "import from tensors", "file save",
                                   "file load", "checkpoint save (mode 0)",
                                   "checkpoint load (mode 0)", "checkpoint save (mode 1)",
                                   "checkpoint load (mode 1)")}
        # The Redis side of a mode-0 checkpoint, without TensorFlow's own checkpoint writer.
        for _ in range(args.rounds):
            s = time.perf_counter()
            keys, values = t.export()
            results["export to tensors"].append(time.perf_counter() - s)
            t.clear()
            s = time.perf_counter()
            _lib.rde_redis_table_import(t.resource_handle, keys, values)
            results["import from tensors"].append(time.perf_counter() - s)
            del keys, values
        assert int(t.size()) == args.rows
        rss_base = peak_rss_mb()
        for _ in range(args.rounds):
            s = time.perf_counter()
            t.save_to_file_system(files, file_name="bench")
            results["file save"].append(time.perf_counter() - s)
            t.clear()
            s = time.perf_counter()
            t.load_from_file_system(files, file_name="bench")
            results["file load"].append(time.perf_counter() - s)
        rss_files = peak_rss_mb() - rss_base
        assert int(t.size()) == args.rows
        ckpt = tf.train.Checkpoint(table=t)
        for _ in range(args.rounds):
            s = time.perf_counter()
            path = ckpt.write(os.path.join(work, "ckpt"))
            results["checkpoint save (mode 0)"].append(time.perf_counter() - s)
            t.clear()
            s = time.perf_counter()
            ckpt.read(path)
            results["checkpoint load (mode 0)"].append(time.perf_counter() - s)
        assert int(t.size()) == args.rows
        # The same rows through table_store_mode 1 (bucket DUMP/RESTORE files).
        with open(cfg) as f:
            mode1 = dict(json.load(f), table_store_mode=1, model_lib_abs_dir=os.path.join(work, "rdb"),
                         redis_socket_timeout=60000)  # one DUMP/RESTORE per bucket
        cfg1 = os.path.join(work, "redis1.json")
        with open(cfg1, "w") as f:
            json.dump(mode1, f)
        t1 = rde.RedisTable(tf.int64, tf.float32, tf.zeros([args.dim]), name="bench",
                            checkpoint=True, config=rde.RedisTableConfig(cfg1))
        ckpt1 = tf.train.Checkpoint(table=t1)
        for _ in range(args.rounds):
            s = time.perf_counter()
            path = ckpt1.write(os.path.join(work, "ckpt1"))
            results["checkpoint save (mode 1)"].append(time.perf_counter() - s)
            t1.clear()
            s = time.perf_counter()
            ckpt1.read(path)
            results["checkpoint load (mode 1)"].append(time.perf_counter() - s)
        assert int(t1.size()) == args.rows
        lines = [
            f"Config extras: `{args.config}`. "
            f"Table: {args.rows:,} rows x {args.dim} float32 (int64 keys), "
            f"{mb:.0f} MB of key+value payload; one local redis-server; median of "
            f"{args.rounds} rounds.",
            "",
            "| operation | seconds | MB/s |",
            "|---|---|---|",
        ]
        for k, v in results.items():
            med = float(np.median(v))
            lines.append(f"| {k} | {med:.2f} | {mb / med:.0f} |")
        lines += ["", f"Peak RSS growth of the process during the file save/load rounds: "
                  f"{rss_files:.0f} MB (the table is {mb:.0f} MB)."]
        text = "\n".join(lines)
        print(text)
        if args.write:
            label = "save/load" if args.config == "{}" else f"save/load, {args.config}"
            write_section(label, text, " ".join(["python", *[f"'{a}'" if " " in a else a for a in sys.argv]]))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def write_section(name: str, body: str, command: str) -> None:
    report.write_section(name, body, command, tf.__version__)


if __name__ == "__main__":
    main()
