"""TFRA's contract for dtype mismatches: a key or value of the wrong dtype raises ValueError
(TFRA's own kernel tests, `test_signature_mismatch`, catch exactly that), in eager and in graph
mode, from our `RedisTable` and through TFRA's `get_variable` with our creator. The error is
also a TypeError, which earlier releases raised, so code catching either keeps working."""

from typing import Any, Callable, Dict, List

import pytest
import tensorflow as tf

import redis_embedding as rde
from optional_tfra import de, requires_tfra

MODES = ["eager", "graph"]


def run_in(mode: str, build: Callable[[], None]) -> None:
    """Runs `build` eagerly, or while constructing a TF1 graph (where the error is raised as
    the op is added, as TFRA's graph-mode test expects)."""
    if mode == "eager":
        build()
    else:
        with tf.Graph().as_default():
            build()


def table_calls(t: Any, key: tf.DType, value: tf.DType) -> Dict[str, Callable[[], Any]]:
    """Every keyed method of a table, each given one argument of the wrong dtype."""
    wrong_keys = tf.constant([1.5, 2.5], tf.float32)
    wrong_values = tf.constant([["a", "b"], ["c", "d"]])
    good_keys = tf.constant([1, 2], key)
    good_values = tf.zeros([2, 2], value)
    return {
        "insert keys": lambda: t.insert(wrong_keys, good_values),
        "insert values": lambda: t.insert(good_keys, wrong_values),
        "lookup keys": lambda: t.lookup(wrong_keys),
        "lookup defaults": lambda: t.lookup(good_keys, dynamic_default_values=wrong_values),
        "remove keys": lambda: t.remove(wrong_keys),
        "accum keys": lambda: t.accum(wrong_keys, good_values, [False, False]),
        "accum values": lambda: t.accum(good_keys, wrong_values, [False, False]),
        "accum exists": lambda: t.accum(good_keys, good_values, tf.constant([1, 0])),
    }


def variable_calls(v: Any, key: tf.DType, value: tf.DType) -> Dict[str, Callable[[], Any]]:
    """The same through a TFRA `de.Variable`, as TFRA's tests call it."""
    wrong_keys = tf.constant([1.5, 2.5], tf.float32)
    wrong_values = tf.constant([["a", "b"], ["c", "d"]])
    good_keys = tf.constant([1, 2], key)
    good_values = tf.zeros([2, 2], value)
    return {
        "upsert keys": lambda: v.upsert(wrong_keys, good_values),
        "upsert values": lambda: v.upsert(good_keys, wrong_values),
        "lookup keys": lambda: v.lookup(wrong_keys),
        "remove keys": lambda: v.remove(wrong_keys),
        "accum keys": lambda: v.accum(wrong_keys, good_values, good_values, [False, False]),
        "accum values": lambda: v.accum(good_keys, good_values, wrong_values, [False, False]),
    }


def assert_each_raises_value_error(calls: Dict[str, Callable[[], Any]]) -> List[str]:
    """Runs each call; returns the names of those that did not raise a ValueError that is
    also a TypeError."""
    wrong = []
    for name, call in calls.items():
        try:
            call()
        except ValueError as e:
            if not isinstance(e, TypeError):
                wrong.append(f"{name}: {type(e).__name__} is not also a TypeError")
        except Exception as e:  # noqa: BLE001 - reported with its type
            wrong.append(f"{name}: {type(e).__name__}: {e}")
        else:
            wrong.append(f"{name}: no error")
    return wrong


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("key,value", [(tf.int64, tf.float32), (tf.int64, tf.int32)],
                         ids=["int64-float32", "int64-int32"])
def test_a_redis_table_raises_value_error_for_a_wrong_dtype(config_path, mode, key, value):
    wrong: List[str] = []

    def build() -> None:
        t = rde.RedisTable(key, value, tf.zeros([2], value), name="mismatch",
                           config=rde.RedisTableConfig(config_path))
        wrong.extend(assert_each_raises_value_error(table_calls(t, key, value)))

    run_in(mode, build)
    assert wrong == []


def test_the_error_names_the_argument_and_both_dtypes(config_path):
    t = rde.RedisTable(tf.int64, tf.float32, [0.0, 0.0], name="named",
                       config=rde.RedisTableConfig(config_path))
    with pytest.raises(rde.DTypeMismatchError, match=r"Keys must be dtype .*int64.*, got .*float32"):
        t.insert(tf.constant([1.5]), [[1.0, 1.0]])
    with pytest.raises(rde.DTypeMismatchError, match=r"Values must be dtype .*float32"):
        t.insert([1], [["a", "b"]])
    assert int(t.size()) == 0


def error_kinds(calls: Dict[str, Callable[[], Any]]) -> Dict[str, type]:
    """Runs each call; maps its name to the class of what it raised (None if nothing)."""
    kinds: Dict[str, Any] = {}
    for name, call in calls.items():
        try:
            call()
        except Exception as e:  # noqa: BLE001 - the class is the result
            kinds[name] = type(e)
        else:
            kinds[name] = None
    return kinds


@requires_tfra
@pytest.mark.parametrize("mode", MODES)
def test_get_variable_raises_what_tfras_creator_raises_for_a_wrong_dtype(config_path, mode):
    """Through TFRA's `get_variable`, our creator raises what TFRA's own raises, call by call:
    ValueError where the table checks the dtype, and where TFRA's Variable fails first (its
    `accum` subtracts the values before the table sees them, its `remove` raises TypeError) an
    error of the class TFRA gives."""
    kinds: Dict[str, Dict[str, Any]] = {}

    def build() -> None:
        for ours in (True, False):
            if ours:
                creator = rde.RedisTableCreator(
                    rde.RedisTableConfig(redis_config_abs_dir=config_path))
            else:
                creator = de.RedisTableCreator(
                    de.RedisTableConfig(redis_config_abs_dir=config_path))
            for value in (tf.float32, tf.int32):
                v = de.get_variable(f"mismatch_{mode}_{ours}_{value.name}", key_dtype=tf.int64,
                                    value_dtype=value, dim=2, kv_creator=creator,
                                    initializer=0 if value == tf.int32 else 0.0)
                for name, kind in error_kinds(variable_calls(v, tf.int64, value)).items():
                    kinds.setdefault(f"{value.name} {name}", {})["ours" if ours else "tfra"] = kind

    run_in(mode, build)
    assert all(k["tfra"] is not None for k in kinds.values()), kinds
    # Ours may be narrower (DTypeMismatchError is both a ValueError and a TypeError), never other.
    differ = {call: k for call, k in kinds.items()
              if k["ours"] is None or not issubclass(k["ours"], k["tfra"])}
    assert differ == {}
    assert sum(issubclass(k["tfra"], ValueError) for k in kinds.values()) >= 4
