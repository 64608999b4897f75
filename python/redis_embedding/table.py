"""`RedisTable`: one embedding table shard in Redis, with the methods TFRA's
dynamic-embedding stack calls (lookup, insert, accum, remove, clear, size, export) and a
checkpoint saveable (table_store_mode 0: the rows travel through the checkpoint)."""

import copy
import functools
import re

from tensorflow.python.eager import context
from tensorflow.python.framework import dtypes
from tensorflow.python.framework import ops
from tensorflow.python.ops.lookup_ops import LookupInterface
from tensorflow.python.training.saver import BaseSaverBuilder

from redis_embedding._ops import ops as _lib


def _shard_of(name):
    """(i, N) from a Variable shard name `<var>_mht_<i>of<N>`, else (1, 1)."""
    m = re.search(r"_mht_(\d+)of(\d+)", name)
    if not m:
        return 1, 1
    i, n = int(m.group(1)), int(m.group(2))
    return (i, n) if 1 <= i <= n else (1, 1)


class RedisTable(LookupInterface):
    """A Redis-backed mutable table mapping keys to fixed-shape value vectors.

    Arguments follow TFRA's `RedisTable`. `name` is the table name; its part before the first
    `_mht_` is the embedding name used in Redis keys (`<model_tag>:<embedding_name>{tag}`).

    The shards `<name>_mht_<i>of<N>` of a multi-device Variable share that prefix and so share
    their rows, as in TFRA. Only shard 1 reports them from `size()` and `export()`, so the
    Variable's size and export count every row once; `clear()` on any shard clears them all.
    """

    def __init__(self, key_dtype, value_dtype, default_value, name="RedisTable",
                 checkpoint=False, config=None, device="", shard_saveable_object_fn=None):
        if config is None:
            from redis_embedding.config import RedisTableConfig
            config = RedisTableConfig()
        self._default_value = ops.convert_to_tensor(default_value, dtype=value_dtype)
        self._value_shape = self._default_value.get_shape()
        self._checkpoint = checkpoint
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
        self._saveable_fn = shard_saveable_object_fn or RedisTable._Saveable
        if checkpoint:
            if context.executing_eagerly():
                table_name = full_name = self._name
            else:
                table_name = full_name = self._resource_handle.op.name
            self.saveable = self._saveable_fn(table=self, name=table_name, full_name=full_name)
            if not context.executing_eagerly():
                ops.add_to_collection(ops.GraphKeys.SAVEABLE_OBJECTS, self.saveable)

    def _create_resource(self):
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
        self._table_name = None if context.executing_eagerly() else handle.op.name.split("/")[-1]
        return handle

    def _map_resources(self, _):
        """For SavedModel export: a copy of this table with its own resource op."""
        new_obj = copy.copy(self)
        if self._new_obj_trackable is None:
            self._new_obj_trackable = new_obj
        with ops.device(self._resource_device):
            new_resource = new_obj._create_resource()  # pylint: disable=protected-access
        new_obj._resource_handle = new_resource  # pylint: disable=protected-access
        return {self: new_obj}, {self.resource_handle: new_resource}

    @property
    def name(self):
        return self._table_name

    def size(self, name=None):
        """Number of rows in the table (an int64 scalar)."""
        with ops.name_scope(name, "%s_Size" % self.name, [self.resource_handle]):
            with ops.colocate_with(self.resource_handle):
                return _lib.tfra_rde_redis_table_size(self.resource_handle)

    def remove(self, keys, name=None):
        """Removes `keys`; missing keys are ignored."""
        if keys.dtype != self._key_dtype:
            raise TypeError("Signature mismatch. Keys must be dtype %s, got %s." %
                            (self._key_dtype, keys.dtype))
        with ops.name_scope(name, "%s_lookup_table_remove" % self.name,
                            (self.resource_handle, keys)):
            return _lib.tfra_rde_redis_table_remove(self.resource_handle, keys)

    def clear(self, name=None):
        """Deletes every row of this table."""
        with ops.name_scope(name, "%s_lookup_table_clear" % self.name, [self.resource_handle]):
            return _lib.tfra_rde_redis_table_clear(self.resource_handle, key_dtype=self._key_dtype,
                                                   value_dtype=self._value_dtype)

    def lookup(self, keys, dynamic_default_values=None, return_exists=False, name=None):
        """Values for `keys` (shape keys.shape + [dim]); missing keys get their default.

        `dynamic_default_values` of shape keys.shape + [dim] gives one default per key;
        otherwise the table's static default is used. With `return_exists`, also returns a
        bool tensor shaped like `keys`.
        """
        with ops.name_scope(name, "%s_lookup_table_find" % self.name,
                            (self.resource_handle, keys, self._default_value)):
            keys = ops.convert_to_tensor(keys, dtype=self._key_dtype, name="keys")
            defaults = (dynamic_default_values
                        if dynamic_default_values is not None else self._default_value)
            with ops.colocate_with(self.resource_handle):
                if return_exists:
                    return _lib.tfra_rde_redis_table_find_with_exists(self.resource_handle, keys,
                                                                      defaults)
                return _lib.tfra_rde_redis_table_find(self.resource_handle, keys, defaults)

    def insert(self, keys, values, name=None):
        """Upserts rows; for a key repeated in `keys` the last row wins."""
        with ops.name_scope(name, "%s_lookup_table_insert" % self.name,
                            [self.resource_handle, keys, values]):
            keys = ops.convert_to_tensor(keys, self._key_dtype, name="keys")
            values = ops.convert_to_tensor(values, self._value_dtype, name="values")
            with ops.colocate_with(self.resource_handle):
                return _lib.tfra_rde_redis_table_insert(self.resource_handle, keys, values)

    def accum(self, keys, values_or_deltas, exists, name=None):
        """TFRA's bp_v2 update, atomic per key on the server: where `exists`, adds the delta
        to a stored row; where not, inserts the value if the key is absent."""
        with ops.name_scope(name, "%s_lookup_table_accum" % self.name,
                            [self.resource_handle, keys, values_or_deltas]):
            keys = ops.convert_to_tensor(keys, self._key_dtype, name="keys")
            values_or_deltas = ops.convert_to_tensor(values_or_deltas, self._value_dtype,
                                                     name="values_or_deltas")
            exists = ops.convert_to_tensor(exists, dtypes.bool, name="exists")
            with ops.colocate_with(self.resource_handle):
                return _lib.tfra_rde_redis_table_accum(self.resource_handle, keys,
                                                       values_or_deltas, exists)

    def export(self, name=None):
        """All keys and values (table_store_mode 0), or empty tensors in mode 2."""
        with ops.name_scope(name, "%s_lookup_table_export_values" % self.name,
                            [self.resource_handle]):
            with ops.colocate_with(self.resource_handle):
                return _lib.tfra_rde_redis_table_export(self.resource_handle, Tkeys=self._key_dtype,
                                                        Tvalues=self._value_dtype)

    def save_to_file_system(self, dirpath, file_name=None, dirpath_env="TFRA_SAVED_KV",
                            append_to_file=False, buffer_size=4194304, name=None):
        """Writes the table to `<dir>/<file_name>-keys` and `-values` (TFRA's file layout).

        `dir` is `$<dirpath_env>` if that variable is set, else `dirpath`. Files are replaced
        atomically (or appended to with `append_to_file`) and fsynced. Memory stays bounded
        whatever `buffer_size` (rows) says.
        """
        with ops.name_scope(name, "%s_save_table" % self.name, [self.resource_handle]):
            with ops.colocate_with(None, ignore_existing=True):
                return _lib.tfra_rde_redis_table_save_to_file_system(
                         self.resource_handle, dirpath=dirpath,
                         file_name=file_name if file_name else self._name,
                         key_dtype=self._key_dtype, value_dtype=self._value_dtype,
                         dirpath_env=dirpath_env or "", append_to_file=append_to_file,
                         buffer_size=buffer_size)

    def load_from_file_system(self, dirpath, file_name=None, dirpath_env="TFRA_SAVED_KV",
                              load_entire_dir=False, buffer_size=4194304, name=None):
        """Upserts the rows of files written by `save_to_file_system` (ours or TFRA's).

        With `load_entire_dir`, loads every file pair in the directory whose name shares
        `file_name` up to `_mht_`.
        """
        with ops.name_scope(name, "%s_load_table" % self.name, [self.resource_handle]):
            with ops.colocate_with(None, ignore_existing=True):
                return _lib.tfra_rde_redis_table_load_from_file_system(
                         self.resource_handle, dirpath=dirpath,
                         file_name=file_name if file_name else self._name,
                         key_dtype=self._key_dtype, value_dtype=self._value_dtype,
                         dirpath_env=dirpath_env or "", load_entire_dir=load_entire_dir,
                         buffer_size=buffer_size)

    def _gather_saveables_for_checkpoint(self):
        self._new_obj_trackable = None
        if not self._checkpoint:
            return {}
        return {"table": functools.partial(self._saveable_fn, table=self, name=self._name,
                                           full_name=self._table_name)}

    class _Saveable(BaseSaverBuilder.SaveableObject):
        """Saves the table as `<name>-keys` / `<name>-values`; restore runs the import op.

        The export runs only when a checkpoint is written (the specs are callables), never when
        the saveable is built: in table_store_mode 1 an export writes the bucket files, and a
        restore must not overwrite the files it is about to read.
        """

        def __init__(self, table, name, full_name=""):
            exported = {}

            def keys():
                exported["kv"] = table.export()
                return exported["kv"][0]

            def values():
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

        def restore(self, restored_tensors, restored_shapes, name=None):
            del restored_shapes
            with ops.name_scope(name, "%s_table_restore" % self._restore_name):
                with ops.colocate_with(self.op.resource_handle):
                    return _lib.tfra_rde_redis_table_import(self.op.resource_handle,
                                                            restored_tensors[0], restored_tensors[1])


ops.NotDifferentiable("TFRA>RdeRedisTableOfTensors")
