"""`RedisTable`: one embedding table shard in Redis, with the methods TFRA's
dynamic-embedding stack calls (lookup, insert, accum, remove, clear, size, export) and a
checkpoint saveable (table_store_mode 0: the rows travel through the checkpoint)."""

from __future__ import annotations

import copy
import functools
import os
import re
import warnings
import weakref
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf
from tensorflow.python.eager import context
from tensorflow.python.framework import dtypes
from tensorflow.python.framework import ops
from tensorflow.python.ops.lookup_ops import LookupInterface
from tensorflow.python.training.saver import BaseSaverBuilder

from redis_embedding._ops import ops as _lib
from redis_embedding.config import ConfigLike, RedisTableConfig
from redis_embedding.stats import Figure, figures

TensorLike = Union[tf.Tensor, tf.Variable, np.ndarray, Sequence, int, float, bool, str, bytes]
"""Keys and values: a tensor, or what `tf.convert_to_tensor` makes a tensor of (lists, tuples,
numpy arrays, scalars). Non-tensors are converted to the table's dtypes."""

DTypeLike = Union[tf.DType, np.dtype, type, str]
"""A dtype as `tf.as_dtype` takes it: `tf.int64`, `np.int64`, `"int64"`."""

PathLike = Union[str, bytes, "os.PathLike[str]", tf.Tensor]
"""A directory or file name: a string, a `pathlib.Path`, or a string tensor."""

SaveableFn = Callable[..., BaseSaverBuilder.SaveableObject]


_LIVE: "weakref.WeakSet[RedisTable]" = weakref.WeakSet()
"""Every RedisTable of this process that is still referenced (for `prometheus_text()`)."""


def live_tables() -> List["RedisTable"]:
    """The RedisTables of this process that are still alive and were created eagerly (their
    statistics can be read)."""
    return [t for t in list(_LIVE) if t._eager]  # pylint: disable=protected-access


def _shard_of(name: str) -> Tuple[int, int]:
    """(i, N) from a Variable shard name `<var>_mht_<i>of<N>`, else (1, 1)."""
    m = re.search(r"_mht_(\d+)of(\d+)", name)
    if not m:
        return 1, 1
    i, n = int(m.group(1)), int(m.group(2))
    return (i, n) if 1 <= i <= n else (1, 1)


class CheckpointWarning(UserWarning):
    """A checkpoint tracks a table whose rows it does not save (`checkpoint=False`)."""


class DTypeMismatchError(ValueError, TypeError):
    """A key or value of another dtype than the table's.

    A `ValueError`, as TFRA's Redis table raises (its own tests catch that), and also a
    `TypeError`, as releases before 0.9 raised, so code catching either keeps working."""


def _to_tensor(value: TensorLike, dtype: DTypeLike, name: str) -> tf.Tensor:
    """`value` as a tensor of `dtype`. Lists and arrays are converted; a tensor of another
    dtype is refused rather than cast, as TFRA's `remove` does."""
    if tf.is_tensor(value) and value.dtype != dtype:
        raise DTypeMismatchError("Signature mismatch. %s must be dtype %s, got %s." %
                                 (name.capitalize(), tf.as_dtype(dtype), value.dtype))
    try:
        return ops.convert_to_tensor(value, dtype=dtype, name=name)
    except (TypeError, ValueError) as e:
        raise DTypeMismatchError("Signature mismatch. %s must be dtype %s: %s" %
                                 (name.capitalize(), tf.as_dtype(dtype), e)) from e


def _path(value: PathLike) -> Union[str, bytes, tf.Tensor]:
    """`pathlib.Path` and other path objects as strings; strings and tensors unchanged."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value


class RedisTable(LookupInterface):
    """A Redis-backed mutable table mapping keys to fixed-shape value vectors.

    Arguments follow TFRA's `RedisTable`. `name` is the table name; its part before the first
    `_mht_` is the embedding name used in Redis keys (`<model_tag>:<embedding_name>{tag}`).

    The shards `<name>_mht_<i>of<N>` of a multi-device Variable share that prefix and so share
    their rows, as in TFRA. Only shard 1 reports them from `size()` and `export()`, so the
    Variable's size and export count every row once; `clear()` on any shard clears them all.
    """

    def __init__(self, key_dtype: DTypeLike, value_dtype: DTypeLike, default_value: TensorLike,
                 name: str = "RedisTable", checkpoint: bool = False,
                 config: Optional[ConfigLike] = None, device: Optional[str] = "",
                 shard_saveable_object_fn: Optional[SaveableFn] = None) -> None:
        if config is None:
            config = RedisTableConfig()
        self._default_value = ops.convert_to_tensor(default_value, dtype=value_dtype)
        self._value_shape = self._default_value.get_shape()
        self._checkpoint = checkpoint
        self._warned_not_saved = False
        self._key_dtype = key_dtype
        self._value_dtype = value_dtype
        self._device = device
        self._name = name
        self._embedding_name = name.split("_mht_", 1)[0]
        self._shard_index, self._shard_count = _shard_of(name)
        self._config = config
        self._new_obj_trackable = None
        self._shared_name = None
        if context.executing_eagerly():
            self._shared_name = "table_%d" % (ops.uid(),)
        super().__init__(key_dtype, value_dtype)
        self._resource_handle = self._create_resource()
        self._eager = context.executing_eagerly()
        _LIVE.add(self)
        self._saveable_fn = shard_saveable_object_fn or RedisTable._Saveable
        if checkpoint:
            if context.executing_eagerly():
                table_name = full_name = self._name
            else:
                table_name = full_name = self._resource_handle.op.name
            self.saveable = self._saveable_fn(table=self, name=table_name, full_name=full_name)
            if not context.executing_eagerly():
                ops.add_to_collection(ops.GraphKeys.SAVEABLE_OBJECTS, self.saveable)

    def _create_resource(self) -> tf.Tensor:
        use_node_name_sharing = bool(self._checkpoint and self._shared_name is None)
        with ops.device(self._device):
            handle = _lib.tfra_rde_redis_table_of_tensors(
                shared_name=self._shared_name,
                use_node_name_sharing=use_node_name_sharing,
                key_dtype=self._key_dtype,
                value_dtype=self._value_dtype,
                value_shape=self._default_value.get_shape(),
                embedding_name=self._embedding_name,
                redis_config_abs_dir=self._config.redis_config_abs_dir or "",
                redis_config_abs_dir_env=self._config.redis_config_abs_dir_env or "",
                shard_index=self._shard_index,
                shard_count=self._shard_count,
                name=self._name,
            )
        # A graph names the table by its op (made unique there); eager ops have no names.
        self._table_name = (self._name if context.executing_eagerly()
                            else handle.op.name.split("/")[-1])
        return handle

    def _map_resources(self, _: object,
                       ) -> Tuple[Dict[RedisTable, RedisTable], Dict[tf.Tensor, tf.Tensor]]:
        """For SavedModel export: a copy of this table with its own resource op."""
        new_obj = copy.copy(self)
        if self._new_obj_trackable is None:
            self._new_obj_trackable = new_obj
        with ops.device(self._resource_device):
            new_resource = new_obj._create_resource()  # pylint: disable=protected-access
        new_obj._resource_handle = new_resource  # pylint: disable=protected-access
        return {self: new_obj}, {self.resource_handle: new_resource}

    @property
    def name(self) -> str:
        """The table's name: the op name in graph mode, the `name` argument in eager mode.
        (TFRA's table returns None in eager mode.)"""
        return self._table_name

    @property
    def embedding_name(self) -> str:
        """The name the rows live under in Redis: the table name cut at the first `_mht_`."""
        return self._embedding_name

    def stats(self) -> Dict[str, Figure]:
        """This table's statistics since it was created, as a dict (docs/operations.md,
        "Per-table statistics"):

        * ``lookups``: key positions looked up (a call of 10 keys is 10, duplicates
          included), by `lookup` and the Keras layer's training lookups; ``hits`` of them
          found in Redis, ``misses`` not; ``hit_rate`` = hits / lookups (0.0 before any);
        * ``rows_written``: distinct keys written (insert, accum, the optimizer's apply);
        * ``bytes_in`` / ``bytes_out``: stored value bytes read from / written to Redis;
        * ``errors``: failed calls; ``retries``: rounds of resending this table's requests;
        * ``ttl_refresh_failures``: rolling-TTL refreshes that failed (the writes succeeded);
        * ``update_conflicts``, ``update_retry_rounds``: exact training updates
          (``rde_train_updates``, docs/keras.md) whose row another worker changed between the
          step's lookup and its apply, recomputed from the row as it then stood; and the
          compare-and-set rounds that took;
        * per op (find, insert, accum, remove, export, and train_lookup / train_apply once
          used): ``<op>_calls`` and the wall time of a call in microseconds,
          ``<op>_p50_us``, ``_p95_us``, ``_p99_us``, ``_max_us`` (HDR histogram, within 1%).

        Counters only grow. Read eagerly (not inside a `tf.function`).
        """
        with tf.init_scope():
            names, values = _lib.tfra_rde_redis_table_stats(self.resource_handle)
        return figures(names.numpy(), values.numpy())

    def size(self, name: Optional[str] = None) -> tf.Tensor:
        """Number of rows in the table (an int64 scalar)."""
        with ops.name_scope(name, "%s_Size" % self.name, [self.resource_handle]):
            with ops.colocate_with(self.resource_handle):
                return _lib.tfra_rde_redis_table_size(self.resource_handle)

    def remove(self, keys: TensorLike, name: Optional[str] = None) -> Optional[tf.Operation]:
        """Removes `keys`; missing keys are ignored."""
        with ops.name_scope(name, "%s_lookup_table_remove" % self.name,
                            (self.resource_handle, keys)):
            keys = _to_tensor(keys, self._key_dtype, "keys")
            return _lib.tfra_rde_redis_table_remove(self.resource_handle, keys)

    def clear(self, name: Optional[str] = None) -> Optional[tf.Operation]:
        """Deletes every row of this table."""
        with ops.name_scope(name, "%s_lookup_table_clear" % self.name, [self.resource_handle]):
            return _lib.tfra_rde_redis_table_clear(self.resource_handle, key_dtype=self._key_dtype,
                                                   value_dtype=self._value_dtype)

    def lookup(self, keys: TensorLike, dynamic_default_values: Optional[TensorLike] = None,
               return_exists: bool = False, name: Optional[str] = None,
               ) -> Union[tf.Tensor, Tuple[tf.Tensor, tf.Tensor]]:
        """Values for `keys` (shape keys.shape + [dim]); missing keys get their default.

        `dynamic_default_values` of shape keys.shape + [dim] gives one default per key;
        otherwise the table's static default is used. With `return_exists`, also returns a
        bool tensor shaped like `keys`.
        """
        with ops.name_scope(name, "%s_lookup_table_find" % self.name,
                            (self.resource_handle, keys, self._default_value)):
            keys = _to_tensor(keys, self._key_dtype, "keys")
            defaults = (self._default_value if dynamic_default_values is None else
                        _to_tensor(dynamic_default_values, self._value_dtype,
                                   "dynamic_default_values"))
            with ops.colocate_with(self.resource_handle):
                if return_exists:
                    return _lib.tfra_rde_redis_table_find_with_exists(self.resource_handle, keys,
                                                                      defaults)
                return _lib.tfra_rde_redis_table_find(self.resource_handle, keys, defaults)

    def insert(self, keys: TensorLike, values: TensorLike,
               name: Optional[str] = None) -> Optional[tf.Operation]:
        """Upserts rows; for a key repeated in `keys` the last row wins."""
        with ops.name_scope(name, "%s_lookup_table_insert" % self.name,
                            [self.resource_handle, keys, values]):
            keys = _to_tensor(keys, self._key_dtype, "keys")
            values = _to_tensor(values, self._value_dtype, "values")
            with ops.colocate_with(self.resource_handle):
                return _lib.tfra_rde_redis_table_insert(self.resource_handle, keys, values)

    def accum(self, keys: TensorLike, values_or_deltas: TensorLike, exists: TensorLike,
              name: Optional[str] = None) -> Optional[tf.Operation]:
        """TFRA's bp_v2 update, atomic per key on the server: where `exists`, adds the delta
        to a stored row; where not, inserts the value if the key is absent."""
        with ops.name_scope(name, "%s_lookup_table_accum" % self.name,
                            [self.resource_handle, keys, values_or_deltas]):
            keys = _to_tensor(keys, self._key_dtype, "keys")
            values_or_deltas = _to_tensor(values_or_deltas, self._value_dtype, "values_or_deltas")
            exists = _to_tensor(exists, dtypes.bool, "exists")
            with ops.colocate_with(self.resource_handle):
                return _lib.tfra_rde_redis_table_accum(self.resource_handle, keys,
                                                       values_or_deltas, exists)

    def export(self, name: Optional[str] = None) -> Tuple[tf.Tensor, tf.Tensor]:
        """All keys and values (table_store_mode 0), or empty tensors in mode 2."""
        with ops.name_scope(name, "%s_lookup_table_export_values" % self.name,
                            [self.resource_handle]):
            with ops.colocate_with(self.resource_handle):
                return _lib.tfra_rde_redis_table_export(self.resource_handle, Tkeys=self._key_dtype,
                                                        Tvalues=self._value_dtype)

    def save_to_file_system(self, dirpath: PathLike, file_name: Optional[PathLike] = None,
                            dirpath_env: Optional[str] = "TFRA_SAVED_KV",
                            append_to_file: bool = False, buffer_size: int = 4194304,
                            name: Optional[str] = None) -> Optional[tf.Operation]:
        """Writes the table to `<dir>/<file_name>-keys` and `-values` (TFRA's file layout).

        `dir` is `$<dirpath_env>` if that variable is set, else `dirpath`. Files are replaced
        atomically (or appended to with `append_to_file`) and fsynced. Memory stays bounded
        whatever `buffer_size` (rows) says.
        """
        with ops.name_scope(name, "%s_save_table" % self.name, [self.resource_handle]):
            with ops.colocate_with(None, ignore_existing=True):
                return _lib.tfra_rde_redis_table_save_to_file_system(
                         self.resource_handle, dirpath=_path(dirpath),
                         file_name=self._file_name(file_name),
                         key_dtype=self._key_dtype, value_dtype=self._value_dtype,
                         dirpath_env=dirpath_env or "", append_to_file=append_to_file,
                         buffer_size=buffer_size)

    def load_from_file_system(self, dirpath: PathLike, file_name: Optional[PathLike] = None,
                              dirpath_env: Optional[str] = "TFRA_SAVED_KV",
                              load_entire_dir: bool = False, buffer_size: int = 4194304,
                              name: Optional[str] = None) -> Optional[tf.Operation]:
        """Upserts the rows of files written by `save_to_file_system` (ours or TFRA's).

        With `load_entire_dir`, loads every file pair in the directory whose name shares
        `file_name` up to `_mht_`.
        """
        with ops.name_scope(name, "%s_load_table" % self.name, [self.resource_handle]):
            with ops.colocate_with(None, ignore_existing=True):
                return _lib.tfra_rde_redis_table_load_from_file_system(
                         self.resource_handle, dirpath=_path(dirpath),
                         file_name=self._file_name(file_name),
                         key_dtype=self._key_dtype, value_dtype=self._value_dtype,
                         dirpath_env=dirpath_env or "", load_entire_dir=load_entire_dir,
                         buffer_size=buffer_size)

    def _file_name(self, file_name: Optional[PathLike]) -> Union[str, bytes, tf.Tensor]:
        """The files' name prefix: `file_name`, or the table's name when it is None or empty
        (as in TFRA)."""
        if file_name is None or (isinstance(file_name, (str, bytes)) and not file_name):
            return self._name
        return _path(file_name)

    def _gather_saveables_for_checkpoint(self) -> Dict[str, SaveableFn]:
        self._new_obj_trackable = None
        if not self._checkpoint:
            self._warn_not_saved()
            return {}
        return {"table": functools.partial(self._saveable_fn, table=self, name=self._name,
                                           full_name=self._table_name)}

    def _warn_not_saved(self) -> None:
        """Says once per table that a checkpoint tracking it holds none of its rows."""
        if self._warned_not_saved:
            return
        self._warned_not_saved = True
        warnings.warn(
            f"RedisTable {self._name!r} was created with checkpoint=False, so a checkpoint or "
            "SavedModel that tracks it saves none of its rows and a restore brings none back "
            "(the rows stay in Redis only). Create it with checkpoint=True to save them.",
            CheckpointWarning, stacklevel=3)

    class _Saveable(BaseSaverBuilder.SaveableObject):
        """Saves the table as `<name>-keys` / `<name>-values`; restore runs the import op.

        The export runs only when a checkpoint is written (the specs are callables), never when
        the saveable is built: in table_store_mode 1 an export writes the bucket files, and a
        restore must not overwrite the files it is about to read.
        """

        def __init__(self, table: RedisTable, name: str, full_name: Optional[str] = "") -> None:
            exported: Dict[str, Tuple[tf.Tensor, tf.Tensor]] = {}

            def keys() -> tf.Tensor:
                exported["kv"] = table.export()
                return exported["kv"][0]

            def values() -> tf.Tensor:
                kv = exported.pop("kv", None) or table.export()
                return kv[1]

            device = table.resource_handle.device
            specs = [
                BaseSaverBuilder.SaveSpec(keys, "", name + "-keys", dtype=table._key_dtype,
                                          device=device),
                BaseSaverBuilder.SaveSpec(values, "", name + "-values",
                                          dtype=table._value_dtype, device=device),
            ]
            super().__init__(table, specs, name)
            self._restore_name = table._name  # pylint: disable=protected-access

        def restore(self, restored_tensors: Sequence[tf.Tensor],
                    restored_shapes: Optional[Sequence[tf.TensorShape]],
                    name: Optional[str] = None) -> Optional[tf.Operation]:
            del restored_shapes
            with ops.name_scope(name, "%s_table_restore" % self._restore_name):
                with ops.colocate_with(self.op.resource_handle):
                    return _lib.tfra_rde_redis_table_import(self.op.resource_handle,
                                                            restored_tensors[0], restored_tensors[1])


ops.NotDifferentiable("TFRA>RdeRedisTableOfTensors")
