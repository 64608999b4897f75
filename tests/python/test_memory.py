"""A 1M-row save/load to files keeps the process's peak RSS within a stated bound."""

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json, re, sys
    import tensorflow as tf
    import redis_embedding as rde

    def status(field):
        with open("/proc/self/status") as f:
            return int(re.search(field + r":\\s+(\\d+) kB", f.read()).group(1)) / 1024

    t = rde.RedisTable(tf.int64, tf.float32, tf.zeros([64]), name="mem",
                       config=rde.RedisTableConfig(sys.argv[1]))
    for a in range(0, 1_000_000, 65536):
        b = min(a + 65536, 1_000_000)
        t.insert(tf.range(a, b, dtype=tf.int64), tf.random.uniform([b - a, 64]))
    insert_peak = status("VmHWM")
    # Reset the peak to the current RSS (Linux: 5 > clear_refs), so the peak read at the
    # end is the save/load phase's own and the insert phase's peak cannot hide a copy.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = status("VmRSS")
    reset_peak = status("VmHWM")
    t.save_to_file_system(sys.argv[2], file_name="mem")
    t.clear()
    t.load_from_file_system(sys.argv[2], file_name="mem")
    print(json.dumps({"growth_mb": status("VmHWM") - base, "rows": int(t.size()),
                      "base_mb": base, "reset_peak_mb": reset_peak,
                      "insert_peak_mb": insert_peak}))
""")

# The table holds 264 MB of keys and values; a save or load may use a bounded working set
# (file buffers of at most 64 MB each, a few scan pages, one load batch), never a copy.
BOUND_MB = 200


def test_one_million_row_save_and_load_stay_within_bound(redis, tmp_path):
    config = redis.config(tmp_path / "mem.json", expire_model_tag_in_seconds=-1)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", RDE_LOG="warn")
    out = subprocess.run([sys.executable, "-c", SCRIPT, config, str(tmp_path / "files")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["rows"] == 1_000_000
    # The peak was reset at the start of the phase measured (else the bound means nothing).
    assert result["reset_peak_mb"] - result["base_mb"] < 16, result
    assert result["growth_mb"] < BOUND_MB, result
    assert os.path.getsize(tmp_path / "files" / "mem-values") == 1_000_000 * 64 * 4
