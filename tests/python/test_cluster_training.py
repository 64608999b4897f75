"""A reshard of the cluster in the middle of a training loop: no op fails, no write is lost.

Every step is followed in numpy (lazy Adam: only the batch's ids, duplicate ids' gradients
summed, as TFRA's `embedding_lookup_unique` sums them). The params, m and v rows a step reads
must be what numpy's Adam made of the rows that id's previous step read; a lost, stale or torn
write shows as a difference. (Starting each id's step from what was read keeps float32
rounding from accumulating over hundreds of steps.)"""

import subprocess
from typing import Dict, Tuple

import numpy as np
import tensorflow as tf

import redis_embedding as rde
from keras_task import adam, assert_rows_close
from optional_tfra import de, requires_tfra

pytestmark = requires_tfra

DIM, LR, BATCH = 4, 0.05, 256
# Far from the rows (Adam moves a row about LR a step): no gradient nears 0, where m (a running
# mean of gradients, in float32) would be mostly rounding.
TARGET = 10.0
# One step, float64 numpy against float32 TF, relative to each row's largest value: the
# largest difference measured is 1.9e-7 (params; m 1.0e-7, v 1.6e-7; two runs of ~85 steps).
RTOL = 1e-6


def test_reshard_during_training(redis_cluster, tmp_path):
    path = redis_cluster.config(tmp_path / "c.json", storage_slice=3, keys_sending_size=64,
                                rde_max_retries=30)
    creator = rde.RedisTableCreator(rde.RedisTableConfig(redis_config_abs_dir=path))
    emb = de.get_variable("rs_emb", dim=DIM, kv_creator=creator,
                          initializer=tf.keras.initializers.RandomNormal(seed=3))
    journal = rde.RedisTable(tf.int64, tf.float32, tf.zeros([4]), name="rs_journal",
                             config=rde.RedisTableConfig(path))
    opt = de.DynamicEmbeddingOptimizer(tf.keras.optimizers.Adam(LR))

    # Move 4000 slots from the first master to the second while the loop runs; the first
    # master owns slot 0, where the table's first bucket lives.
    src, dst = redis_cluster.nodes[0], redis_cluster.nodes[1]
    node_ids = [n.command(b"CLUSTER", b"MYID").decode() for n in (src, dst)]
    reshard = subprocess.Popen(
        ["redis-cli", "--cluster", "reshard", f"127.0.0.1:{src.port}", "--cluster-from",
         node_ids[0], "--cluster-to", node_ids[1], "--cluster-slots", "4000", "--cluster-yes",
         "--cluster-pipeline", "20"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rng = np.random.default_rng(0)
    step, journal_rows, slots = 0, {}, {}
    model: Dict[int, Tuple[np.ndarray, ...]] = {}  # id -> (params, m, v) after its last step
    while reshard.poll() is None or step < 5:
        batch = rng.integers(0, 5000, BATCH)
        ids, first, counts = np.unique(batch, return_index=True, return_counts=True)
        keys = tf.constant(ids)
        read_slots = [slots[s].lookup(keys).numpy() for s in ("m", "v")] if slots else []
        with tf.GradientTape() as tape:
            looked = de.embedding_lookup_unique(emb, tf.constant(batch, tf.int64), name="lk")
            loss = tf.reduce_mean(tf.square(looked - TARGET))
        var_list = tape.watched_variables()
        opt.apply_gradients(zip(tape.gradient(loss, var_list), var_list))
        slots = slots or {s.name.rsplit("/", 1)[-1]: s for s in emb.get_slot_variables(opt)}
        read = [looked.numpy()[first]] + read_slots
        old = [n for n, i in enumerate(ids.tolist()) if i in model]
        for k, what in enumerate(("params", "m", "v")[:len(read)] if old else ()):
            # What this step read is what numpy's Adam left after the id's last step.
            assert_rows_close(read[k][old], np.stack([model[i][k] for i in ids[old].tolist()]),
                              RTOL, f"{what} read at step {step}")
        for n, (i, count) in enumerate(zip(ids.tolist(), counts)):
            p, m, v = (r[n].astype(np.float64) for r in read) if i in model else (
                read[0][n].astype(np.float64), np.zeros(DIM), np.zeros(DIM))
            grad = count * 2.0 * (p - TARGET) / (BATCH * DIM)  # d mean((rows - TARGET)^2)
            model[i] = adam(p, m, v, grad, step + 1, lr=LR)
        rows = np.tile(np.arange(step * 256, step * 256 + 256, dtype=np.float32)[:, None], [1, 4])
        jkeys = np.arange(step * 256, step * 256 + 256, dtype=np.int64)
        journal.insert(tf.constant(jkeys), tf.constant(rows))
        journal_rows.update(zip(jkeys.tolist(), rows[:, 0].tolist()))
        step += 1
        assert step < 5000, "reshard did not finish"
    _, err = reshard.communicate()
    assert reshard.returncode == 0, err
    assert sorted(slots) == ["m", "v"], sorted(slots)
    assert int(opt.iterations.numpy()) == step
    assert int(emb.size()) == len(model)
    ids = np.array(sorted(model), dtype=np.int64)
    for n, (what, table) in enumerate((("params", emb), ("m", slots["m"]), ("v", slots["v"]))):
        got = table.lookup(tf.constant(ids)).numpy()
        assert_rows_close(got, np.stack([model[i][n] for i in ids.tolist()]), RTOL, what)
    keys = np.array(sorted(journal_rows), dtype=np.int64)
    got, exists = journal.lookup(tf.constant(keys), return_exists=True)
    assert exists.numpy().all()
    np.testing.assert_array_equal(got.numpy()[:, 0], [journal_rows[k] for k in keys])
    # Slot 0 (the first bucket of every table here) moved while the loop was running.
    assert src.command(b"CLUSTER", b"COUNTKEYSINSLOT", b"0") == 0
    assert dst.command(b"CLUSTER", b"COUNTKEYSINSLOT", b"0") >= 3
    assert step > 5, "the reshard finished before training really overlapped it"
