"""No Rust panic reaches TensorFlow: a panic inside an op fails that op with InternalError
naming it, the process lives on, and the next op works. Needs a library built with the
test-only `failpoints` feature (scripts/asan.sh builds one and sets RDE_FAILPOINTS=1)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

from test_ops import make_keys, make_values, table

pytestmark = pytest.mark.skipif(
    os.environ.get("RDE_FAILPOINTS") != "1",
    reason="needs the op library built with --features failpoints (scripts/asan.sh)")


@pytest.mark.parametrize("op", ["find", "insert", "size", "open"])
def test_a_panic_fails_one_op_and_the_next_op_works(config_path, monkeypatch, op: str) -> None:
    keys, values = make_keys(tf.int64, [1, 2, 3]), make_values(tf.float32, 3, 4)
    t = table(config_path, tf.int64, tf.float32, 4, name=f"panic_{op}")
    t.insert(keys, values)

    monkeypatch.setenv("RDE_FAILPOINT_PANIC", op)
    with pytest.raises(tf.errors.InternalError, match=f"op {op} failed on a bug") as e:
        if op == "find":
            t.lookup(keys)
        elif op == "insert":
            t.insert(keys, values * 2)
        elif op == "size":
            t.size()
        else:
            table(config_path, tf.int64, tf.float32, 4, name="panic_open_fresh").size()
    assert "failpoint RDE_FAILPOINT_PANIC" in str(e.value)
    monkeypatch.delenv("RDE_FAILPOINT_PANIC")

    np.testing.assert_array_equal(t.lookup(keys).numpy(), values.numpy())
    assert int(t.size()) == 3
    t.insert(make_keys(tf.int64, [4]), make_values(tf.float32, 1, 4, base=9))
    assert int(t.size()) == 4


# Where each backend's op panics while holding a lock (RDE_FAILPOINT_PANIC_LOCKED, see
# src/sync.rs): a memory table's insert holds its shard's write lock, its open the registry
# of memory tables; a Redis table's ops hold its router's pools while picking a connection.
LOCKED = {"memory": {"insert": "memory_shard", "open": "memory_registry"},
          "redis": {"insert": "redis_pools", "find": "redis_pools", "open": "redis_pools"}}


@pytest.mark.parametrize("op", ["insert", "find", "open"])
def test_a_panic_holding_a_lock_fails_the_op_and_the_table_stays_usable(
        backend, config_path, monkeypatch, op: str) -> None:
    site = LOCKED[backend].get(op)
    if site is None:
        pytest.skip(f"a {backend} {op} takes no lock it could leave poisoned")
    name = f"locked_{op}"
    keys, values = make_keys(tf.int64, [1, 2, 3]), make_values(tf.float32, 3, 4)
    t = table(config_path, tf.int64, tf.float32, 4, name=name)
    t.insert(keys, values)

    monkeypatch.setenv("RDE_FAILPOINT_PANIC_LOCKED", site)
    with pytest.raises(tf.errors.InternalError, match=f"op {op} failed on a bug") as e:
        if op == "insert":
            t.insert(make_keys(tf.int64, [1, 4]), make_values(tf.float32, 2, 4, base=50))
        elif op == "find":
            t.lookup(keys)
        else:
            table(config_path, tf.int64, tf.float32, 4, name=name).size()
    assert f"failpoint RDE_FAILPOINT_PANIC_LOCKED={site}" in str(e.value)
    monkeypatch.delenv("RDE_FAILPOINT_PANIC_LOCKED")

    # Nothing of the panicked op was written, and the ops that take the same lock work.
    got, exists = t.lookup(make_keys(tf.int64, [1, 2, 3, 4]), return_exists=True)
    np.testing.assert_array_equal(got.numpy()[:3], values.numpy())
    assert exists.numpy().tolist() == [True, True, True, False]
    t.insert(make_keys(tf.int64, [4]), make_values(tf.float32, 1, 4, base=9))
    assert int(t.size()) == 4
    # The same name opens again (after the open that panicked, too) and holds the rows.
    again = table(config_path, tf.int64, tf.float32, 4, name=name)
    np.testing.assert_array_equal(again.lookup(keys).numpy(), values.numpy())
    assert int(again.size()) == 4
