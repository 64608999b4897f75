"""A reshard of the cluster in the middle of a training loop: no op fails, no write is lost."""

import subprocess

import numpy as np
import tensorflow as tf

import redis_embedding as rde
from optional_tfra import de, requires_tfra

pytestmark = requires_tfra



def test_reshard_during_training(redis_cluster, tmp_path):
    path = redis_cluster.config(tmp_path / "c.json", storage_slice=3, keys_sending_size=64,
                                rde_max_retries=30)
    creator = rde.RedisTableCreator(rde.RedisTableConfig(redis_config_abs_dir=path))
    emb = de.get_variable("rs_emb", dim=4, kv_creator=creator,
                          initializer=tf.keras.initializers.RandomNormal(seed=3))
    journal = rde.RedisTable(tf.int64, tf.float32, tf.zeros([4]), name="rs_journal",
                             config=rde.RedisTableConfig(path))
    opt = de.DynamicEmbeddingOptimizer(tf.keras.optimizers.Adam(0.05))

    # Move 4000 slots from the first master to the second while the loop runs; the first
    # master owns slot 0, where the table's first bucket lives.
    src, dst = redis_cluster.nodes[0], redis_cluster.nodes[1]
    ids = [n.command(b"CLUSTER", b"MYID").decode() for n in (src, dst)]
    reshard = subprocess.Popen(
        ["redis-cli", "--cluster", "reshard", f"127.0.0.1:{src.port}", "--cluster-from", ids[0],
         "--cluster-to", ids[1], "--cluster-slots", "4000", "--cluster-yes",
         "--cluster-pipeline", "20"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rng = np.random.default_rng(0)
    step, seen, journal_rows, losses = 0, set(), {}, []
    while reshard.poll() is None or step < 5:
        batch = rng.integers(0, 5000, 256)
        seen.update(batch.tolist())
        keys = tf.constant(batch, tf.int64)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(de.embedding_lookup(emb, keys, name="lk") - 1.0))
        var_list = tape.watched_variables()
        opt.apply_gradients(zip(tape.gradient(loss, var_list), var_list))
        losses.append(float(loss))
        rows = np.tile(np.arange(step * 256, step * 256 + 256, dtype=np.float32)[:, None], [1, 4])
        jkeys = np.arange(step * 256, step * 256 + 256, dtype=np.int64)
        journal.insert(tf.constant(jkeys), tf.constant(rows))
        journal_rows.update(zip(jkeys.tolist(), rows[:, 0].tolist()))
        step += 1
        assert step < 5000, "reshard did not finish"
    _, err = reshard.communicate()
    assert reshard.returncode == 0, err
    assert losses[-1] < losses[0]
    assert int(emb.size()) == len(seen)
    keys = np.array(sorted(journal_rows), dtype=np.int64)
    got, exists = journal.lookup(tf.constant(keys), return_exists=True)
    assert exists.numpy().all()
    np.testing.assert_array_equal(got.numpy()[:, 0], [journal_rows[k] for k in keys])
    # Slot 0 (the first bucket of every table here) moved while the loop was running.
    assert src.command(b"CLUSTER", b"COUNTKEYSINSLOT", b"0") == 0
    assert dst.command(b"CLUSTER", b"COUNTKEYSINSLOT", b"0") >= 3
    assert step > 5, "the reshard finished before training really overlapped it"
