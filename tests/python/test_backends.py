"""The embedded backend (`"rde_backend": "memory"`) against Redis: files move a table
embedded → Redis → embedded byte for byte, the row cap, compact storage, checkpoints, and
sharing by model tag and name."""

import json
import uuid
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest
import tensorflow as tf

import redis_embedding as rde
from conftest import memory_config
from optional_tfra import de, requires_tfra


def f32_table(config: str, name: str = "emb", dim: int = 4, **kw: object) -> rde.RedisTable:
    return rde.RedisTable(tf.int64, tf.float32, tf.fill([dim], -1.0), name=name,
                          config=rde.RedisTableConfig(config), **kw)


def file_rows(directory: Path, name: str, dim: int) -> list:
    """The (key bytes, value bytes) rows of a `-keys`/`-values` pair, sorted."""
    keys = (directory / f"{name}-keys").read_bytes()
    values = (directory / f"{name}-values").read_bytes()
    row = 4 * dim
    assert len(keys) // 8 * row == len(values)
    return sorted((keys[i * 8:(i + 1) * 8], values[i * row:(i + 1) * row])
                  for i in range(len(keys) // 8))


def test_files_move_a_table_embedded_to_redis_and_back_exactly(redis, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    keys = rng.choice(2**62, 5000, replace=False).astype(np.int64)
    values = rng.standard_normal((5000, 4)).astype(np.float32)
    embedded = f32_table(memory_config(tmp_path / "m1.json"))
    embedded.insert(tf.constant(keys), tf.constant(values))
    embedded.save_to_file_system(str(tmp_path / "a"), file_name="emb")
    on_redis = f32_table(redis.config(tmp_path / "r.json"))
    on_redis.load_from_file_system(str(tmp_path / "a"), file_name="emb")
    assert redis.command(b"HLEN", b"test:emb{3560}") == 5000
    on_redis.save_to_file_system(str(tmp_path / "b"), file_name="emb")
    back = f32_table(memory_config(tmp_path / "m2.json"))
    back.load_from_file_system(str(tmp_path / "b"), file_name="emb")
    back.save_to_file_system(str(tmp_path / "c"), file_name="emb")
    rows = [file_rows(tmp_path / d, "emb", 4) for d in "abc"]
    assert len(rows[0]) == 5000 and rows[0] == rows[1] == rows[2]
    np.testing.assert_array_equal(back.lookup(tf.constant(keys)).numpy(), values)


def test_the_row_cap_fails_inserts_naming_the_table(tmp_path: Path) -> None:
    t = f32_table(memory_config(tmp_path / "m.json", rde_memory_max_rows=10), name="capped")
    t.insert(tf.range(10, dtype=tf.int64), tf.zeros([10, 4]))
    t.insert(tf.range(10, dtype=tf.int64), tf.ones([10, 4]))  # updates are not new rows
    with pytest.raises(tf.errors.ResourceExhaustedError,
                       match=r'"capped".*rde_memory_max_rows = 10'):
        t.insert(tf.constant([10], tf.int64), tf.zeros([1, 4]))
    assert int(t.size()) == 10


def test_bfloat16_storage_rounds_and_reads_back_float32(tmp_path: Path) -> None:
    t = f32_table(memory_config(tmp_path / "m.json", rde_value_storage="bfloat16"), dim=2)
    t.insert(tf.constant([1], tf.int64), tf.constant([[1.0, 1.005]]))
    got = t.lookup(tf.constant([1], tf.int64))
    assert got.dtype == tf.float32
    np.testing.assert_array_equal(got.numpy(), [[1.0, 1.0078125]])  # 8 significant bits
    t.accum(tf.constant([1], tf.int64), tf.constant([[0.5, 0.5]]), tf.constant([True]))
    np.testing.assert_array_equal(t.export()[1].numpy(), [[1.5, 1.5078125]])


def test_checkpoints_carry_the_rows_in_mode_0(tmp_path: Path) -> None:
    t = f32_table(memory_config(tmp_path / "m.json"), checkpoint=True)
    t.insert(tf.constant([1, 2], tf.int64), tf.ones([2, 4]))
    ckpt = tf.train.Checkpoint(table=t)
    path = ckpt.write(str(tmp_path / "ckpt"))
    t.clear()
    ckpt.read(path).assert_consumed()
    assert int(t.size()) == 2


def default_mode_config(tmp_path: Path) -> Tuple[str, Path]:
    """A memory config as a Redis config switched over by one field: no table_store_mode, so
    TFRA's default mode 1. Returns it and the directory mode 1 uses for its model tag."""
    tag = "mem-" + uuid.uuid4().hex[:12]
    lib = tmp_path / "lib"
    path = tmp_path / "default.json"
    path.write_text(json.dumps({"rde_backend": "memory", "model_lib_abs_dir": str(lib),
                                "model_tag_runtime": tag, "model_tag_import": tag}))
    return str(path), lib / tag


def test_mode_1_saves_and_restores_a_memory_table_through_its_own_files(tmp_path: Path) -> None:
    config, mode1_dir = default_mode_config(tmp_path)
    t = f32_table(config, checkpoint=True)
    keys = tf.constant([3, 1, 2], tf.int64)
    values = tf.reshape(tf.range(12, dtype=tf.float32), [3, 4])
    t.insert(keys, values)
    ckpt = tf.train.Checkpoint(table=t)
    path = ckpt.write(str(tmp_path / "ckpt"))
    # The rows are in the table's files in mode 1's directory, not in the checkpoint.
    assert sorted(p.name for p in mode1_dir.iterdir()) == ["emb.rows-keys", "emb.rows-values"]
    assert file_rows(mode1_dir, "emb.rows", 4) == sorted(
        (k.tobytes(), v.tobytes()) for k, v in zip(keys.numpy(), values.numpy()))
    k, v = t.export()
    assert k.shape == [0] and v.shape == [0, 4]
    # A restore replaces the rows by the files' (a row added since is gone, a removed one back).
    t.remove(tf.constant([1], tf.int64))
    t.insert(tf.constant([9], tf.int64), tf.ones([1, 4]))
    ckpt.read(path).assert_consumed()
    assert int(t.size()) == 3
    np.testing.assert_array_equal(t.lookup(keys).numpy(), values.numpy())
    np.testing.assert_array_equal(t.lookup(tf.constant([9], tf.int64)).numpy(), [[-1.0] * 4])


def test_a_mode_1_restore_without_its_files_names_them_and_keeps_the_rows(tmp_path: Path) -> None:
    config, mode1_dir = default_mode_config(tmp_path)
    t = f32_table(config, checkpoint=True)
    t.insert(tf.constant([1], tf.int64), tf.ones([1, 4]))
    ckpt = tf.train.Checkpoint(table=t)
    path = ckpt.write(str(tmp_path / "ckpt"))
    (mode1_dir / "emb.rows-values").unlink()
    with pytest.raises(tf.errors.NotFoundError, match="emb.rows-values"):
        ckpt.read(path)
    assert int(t.size()) == 1


@requires_tfra
def test_a_tfra_variable_on_a_default_memory_config_checkpoints(tmp_path: Path) -> None:
    config, mode1_dir = default_mode_config(tmp_path)
    creator = rde.RedisTableCreator(rde.RedisTableConfig(redis_config_abs_dir=config))
    var = de.get_variable("mem_var", key_dtype=tf.int64, value_dtype=tf.float32, dim=2,
                          kv_creator=creator, initializer=-1.0)
    keys = tf.constant([4, 5], tf.int64)
    var.upsert(keys, tf.constant([[1.0, 2.0], [3.0, 4.0]]))
    ckpt = tf.train.Checkpoint(var=var)
    path = ckpt.write(str(tmp_path / "ckpt"))
    assert (mode1_dir / "mem_var.rows-keys").stat().st_size == 16
    var.clear()
    assert int(var.size()) == 0
    ckpt.read(path)
    np.testing.assert_array_equal(var.lookup(keys).numpy(), [[1.0, 2.0], [3.0, 4.0]])


def test_tables_of_one_model_tag_and_name_share_rows(tmp_path: Path) -> None:
    config = memory_config(tmp_path / "m.json")
    a, b = f32_table(config), f32_table(config)
    a.insert(tf.constant([5], tf.int64), tf.fill([1, 4], 5.0))
    np.testing.assert_array_equal(b.lookup(tf.constant([5], tf.int64)).numpy(), [[5.0] * 4])
    assert int(f32_table(memory_config(tmp_path / "other.json")).size()) == 0


def sorted_export(t: rde.RedisTable) -> tuple:
    """The table's exported keys and values as bytes, sorted by key."""
    keys, values = (x.numpy() for x in t.export())
    order = np.argsort(keys, kind="stable")
    return keys[order].tobytes(), values[order].tobytes()


@pytest.mark.parametrize("direction", ["memory_to_redis", "redis_to_memory"])
def test_a_mode_0_checkpoint_loads_into_the_other_backend_byte_for_byte(
        redis, tmp_path: Path, direction: str) -> None:
    """README: a mode-0 checkpoint written by one backend loads into the other byte for byte.
    Rows of every float32 bit pattern class (signs, subnormals, large and tiny numbers) go
    through tf.train.Checkpoint; the reader's export equals the writer's exactly, and holds
    nothing of the reader's own rows from before the restore that the checkpoint overwrote."""
    rng = np.random.default_rng(11)
    keys = rng.choice(2**62, 3000, replace=False).astype(np.int64) - 2**61
    values = rng.standard_normal((3000, 4)).astype(np.float32)
    values[:10] = np.array([0.0, -0.0, 1e-45, -3.4e38], np.float32)
    memory = memory_config(tmp_path / "m.json")
    on_redis = redis.config(tmp_path / "r.json")
    write_cfg, read_cfg = (memory, on_redis) if direction == "memory_to_redis" else (on_redis, memory)
    writer = f32_table(write_cfg, name="ck", checkpoint=True)
    writer.insert(tf.constant(keys), tf.constant(values))
    path = tf.train.Checkpoint(table=writer).write(str(tmp_path / "ckpt"))

    reader = f32_table(read_cfg, name="ck", checkpoint=True)
    # A stale row under a key the checkpoint holds is overwritten by the restore.
    reader.insert(tf.constant(keys[:1]), tf.fill([1, 4], 9.0))
    tf.train.Checkpoint(table=reader).read(path).assert_consumed()
    assert int(reader.size()) == 3000
    assert sorted_export(reader) == sorted_export(writer)
    np.testing.assert_array_equal(reader.lookup(tf.constant(keys)).numpy().view(np.uint32),
                                  values.view(np.uint32))
