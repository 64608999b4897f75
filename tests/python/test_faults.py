"""Faults during training, from Python: the server is SIGKILLed mid-training and restarted
on its AOF, and several processes share one table."""

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import tensorflow as tf

import redis_embedding as rde
from optional_tfra import de, requires_tfra
from redis_harness import RedisServer

FAULTS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError)


@requires_tfra
def test_training_survives_a_server_kill_and_restart(tmp_path):
    """Training with a journal write per step; the server is SIGKILLed at step 25 and
    restarted on its AOF (`appendfsync always`) after four failed steps. While it is down,
    lookups and writes raise, naming it, within the timeout bound; afterwards training goes
    on, and every journal write that did not raise (acknowledged) is there. The journal write
    is tried even when the training step failed, so writes meet the dead server too."""
    server = RedisServer(tmp_path / "aof", extra=("--appendonly", "yes", "--appendfsync", "always"))
    try:
        path = server.config(tmp_path / "r.json", redis_connect_timeout=300,
                             redis_socket_timeout=500, rde_max_retries=2,
                             rde_retry_backoff_ms=20)
        creator = rde.RedisTableCreator(rde.RedisTableConfig(redis_config_abs_dir=path))
        emb = de.get_variable("ft", dim=4, kv_creator=creator, initializer=0.1)
        journal = de.get_variable("journal", dim=2, kv_creator=creator, initializer=-7.0)
        opt = de.DynamicEmbeddingOptimizer(tf.keras.optimizers.Adam(0.05))
        rng = np.random.default_rng(0)

        def train_step():
            ids = tf.constant(rng.integers(0, 500, 256), tf.int64)
            with tf.GradientTape() as tape:
                rows = de.embedding_lookup(emb, ids, name="lk")
                loss = tf.reduce_mean(tf.square(rows - 1.0))
            var_list = tape.watched_variables()
            opt.apply_gradients(zip(tape.gradient(loss, var_list), var_list))
            return float(loss)

        def journal_step(i):
            journal.upsert(tf.range(i * 10, i * 10 + 10, dtype=tf.int64),
                           tf.fill([10, 2], float(i)))

        def attempt(op, failures):
            started = time.monotonic()
            try:
                return True, op()
            except FAULTS as e:
                failures.append((time.monotonic() - started, e.message))
                return False, None

        trained, acked, losses, failures, write_failures, failed_steps = [], [], [], [], [], 0
        for i in range(70):
            if i == 25:
                server.crash()
            if failed_steps == 4 and not server_up(server):
                server.start()  # same port and directory: the AOF is replayed
            ok, loss = attempt(train_step, failures)
            if ok:
                losses.append(loss)
                trained.append(i)
            elif not server_up(server):
                # A lookup while the server is down raises too: no initializer values.
                try:
                    journal.lookup(tf.constant([0], tf.int64))
                    raise AssertionError("a lookup returned values with the server down")
                except FAULTS:
                    pass
            written, _ = attempt(lambda: journal_step(i), write_failures)
            if written:
                acked.append(i)
            failed_steps += not (ok and written)
        assert failed_steps >= 4
        assert write_failures, "no journal write raised while the server was down"
        for took, message in failures + write_failures:
            assert f"127.0.0.1:{server.port}" in message, message
            assert took < 5.0, (took, message)  # bounded by timeouts x 3 attempts + backoff
        assert len(trained) >= 60 and trained[-1] == 69  # training went on after the restart
        assert len(acked) >= 60 and acked[-1] == 69
        assert losses[-1] < losses[0]
        keys = tf.constant([i * 10 + j for i in acked for j in range(10)], tf.int64)
        got = journal.lookup(keys).numpy()
        want = np.repeat(np.array(acked, np.float32), 10)
        np.testing.assert_array_equal(got[:, 0], want)  # every acknowledged write is there
        print(f"server kill: {failed_steps} steps failed ({len(write_failures)} journal "
              f"writes), {len(acked)} writes acknowledged and checked")
    finally:
        server.stop()


def server_up(server):
    try:
        return server.command(b"PING") == "PONG"
    except OSError:
        return False


WORKER = textwrap.dedent("""
    import sys
    import tensorflow as tf
    import redis_embedding as rde
    path, w = sys.argv[1], int(sys.argv[2])
    t = rde.RedisTable(tf.int64, tf.float32, tf.zeros([4]), name="shared",
                       config=rde.RedisTableConfig(path))
    shared = tf.range(50, dtype=tf.int64)
    for _ in range(30):
        t.accum(shared, tf.ones([50, 4]), tf.ones([50], tf.bool))
        t.insert(tf.range(1000 * (w + 1), 1000 * (w + 1) + 20, dtype=tf.int64),
                 tf.fill([20, 4], float(w)))
    print("done", w)
""")


def test_several_processes_share_one_table(redis, tmp_path):
    path = redis.config(tmp_path / "mp.json")
    t = rde.RedisTable(tf.int64, tf.float32, tf.zeros([4]), name="shared",
                       config=rde.RedisTableConfig(path))
    t.insert(tf.range(50, dtype=tf.int64), tf.zeros([50, 4]))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, path, str(w)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for w in range(3)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    np.testing.assert_array_equal(t.lookup(tf.range(50, dtype=tf.int64)).numpy(),
                                  np.full([50, 4], 90.0))
    for w in range(3):
        own = tf.range(1000 * (w + 1), 1000 * (w + 1) + 20, dtype=tf.int64)
        np.testing.assert_array_equal(t.lookup(own).numpy(), np.full([20, 4], float(w)))
    assert int(t.size()) == 50 + 60
