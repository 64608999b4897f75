"""Secrets stay secret from Python: ACL credentials work, a wrong password is a
PermissionDeniedError, and no password reaches logs (at debug level), error messages or
repr(); a config file with a password that others can read gives a warning."""

import json
import os
import subprocess
import sys
import textwrap

import redis_embedding as rde
import tensorflow as tf

SECRET = "Sup3r-s3cret-pw"

SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    import redis_embedding as rde
    good, bad = sys.argv[1], sys.argv[2]
    cfg = rde.RedisTableConfig(good)
    t = rde.RedisTable(tf.int64, tf.float32, tf.zeros([2]), name="sec", config=cfg)
    t.insert(tf.constant([1], tf.int64), tf.constant([[1.0, 2.0]]))
    print(repr(cfg), repr(t), t.lookup(tf.constant([1, 2], tf.int64)).numpy().tolist())
    try:
        rde.RedisTable(tf.int64, tf.float32, tf.zeros([2]), name="sec2",
                       config=rde.RedisTableConfig(bad))
        print("OPENED WITH A BAD PASSWORD")
    except tf.errors.PermissionDeniedError as e:
        print("denied:", e.message)
    print(json.dumps(rde.stats()))
""")


def test_passwords_stay_out_of_logs_errors_and_repr(redis, tmp_path):
    redis.command(b"ACL", b"SETUSER", b"trainer", b"on", b">" + SECRET.encode(), b"~*", b"+@all")
    good = redis.config(tmp_path / "good.json", redis_user="trainer", redis_password=SECRET)
    os.chmod(good, 0o644)
    bad = redis.config(tmp_path / "bad.json", redis_user="trainer", redis_password=SECRET + "x")
    os.chmod(bad, 0o600)
    env = dict(os.environ, RDE_LOG="debug", TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", SCRIPT, good, bad], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    everything = out.stdout + out.stderr
    assert SECRET not in everything
    assert "[1.0, 2.0], [0.0, 0.0]" in out.stdout
    assert "denied:" in out.stdout and "WRONGPASS" in out.stdout
    assert f"127.0.0.1:{redis.port}" in out.stdout
    # Debug logging was really on, and the 0644 file (only) was flagged.
    assert "[redis_embedding" in out.stderr
    assert f"{good} holds a password but its mode is 644" in out.stderr
    assert f"{bad} holds a password" not in out.stderr
    stats = json.loads(out.stdout.strip().splitlines()[-1])
    assert stats["op_errors"] >= 1 and stats["connections_opened"] >= 1


def test_stats_are_visible_and_count_errors(config_path, redis):
    before = rde.stats()
    assert set(before) >= {"retries", "connection_failures", "timeouts", "op_errors",
                           "redirects", "refusals", "commands"}
    t = rde.RedisTable(tf.int64, tf.float32, tf.zeros([2]), name="st",
                       config=rde.RedisTableConfig(config_path))
    t.insert(tf.constant([1, 2], tf.int64), tf.ones([2, 2]))
    try:
        t.insert(tf.constant([1], tf.int64), tf.ones([1, 3]))
    except tf.errors.InvalidArgumentError:
        pass
    after = rde.stats()
    assert after["commands"] > before["commands"]
    assert after["op_errors"] == before["op_errors"] + 1
    json.dumps(after)
