"""`RedisTableCreator`: the `kv_creator` handed to `tfra.dynamic_embedding.get_variable`."""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
from tensorflow.python.eager import context

from redis_embedding.config import ConfigLike, RedisTableConfig
from redis_embedding.table import DTypeLike, RedisTable, SaveableFn, TensorLike

try:  # A real KVCreator when TFRA is installed, so TFRA's isinstance checks pass.
    from tensorflow_recommenders_addons.dynamic_embedding.python.ops.dynamic_embedding_creator import (  # noqa: E501
        KVCreator as _Base,
        RedisTableConfig as _TfraConfig,
    )
except ImportError:  # pragma: no cover - exercised only without TFRA
    _TfraConfig = None

    class _Base:  # type: ignore[no-redef]
        def __init__(self, config: Optional[ConfigLike] = None, saver: object = None) -> None:
            self.config = config
            self.saver = saver


def _check_config(c: Optional[ConfigLike]) -> None:
    """Refuses anything but ours or TFRA's `RedisTableConfig` (None passes)."""
    if c is None or isinstance(c, RedisTableConfig) or \
            (_TfraConfig is not None and isinstance(c, _TfraConfig)):
        return
    raise TypeError(f"config should be a RedisTableConfig, got {type(c)!r}")


class RedisTableCreator(_Base):
    """Creates one `RedisTable` per Variable shard, with TFRA's `create` signature.

    As in TFRA, `create()` records its arguments on the creator for `get_config()`. Unlike
    TFRA, a `config` passed to `create()` is for that table only: `self.config` stays the
    creator's, so the next `create()` without a config does not inherit it.
    """

    def __init__(self, config: Optional[ConfigLike] = None, saver: object = None) -> None:
        _check_config(config)
        super().__init__(config=config, saver=saver)

    def create(self, key_dtype: Optional[DTypeLike] = None,
               value_dtype: Optional[DTypeLike] = None,
               default_value: Optional[TensorLike] = None, name: Optional[str] = None,
               checkpoint: Optional[bool] = None, init_size: Optional[int] = None,
               config: Optional[ConfigLike] = None, device: Optional[str] = None,
               shard_saveable_object_fn: Optional[SaveableFn] = None) -> RedisTable:
        """Returns a `RedisTable`. `init_size` is accepted for TFRA compatibility and unused.

        The table uses `config` if given, else the creator's config, else the defaults."""
        if key_dtype is None or value_dtype is None or default_value is None or name is None:
            raise TypeError("create() needs key_dtype, value_dtype, default_value and name")
        _check_config(config)
        if config is None:
            config = self.config if self.config is not None else RedisTableConfig()
        self.key_dtype = key_dtype
        self.value_dtype = value_dtype
        self.default_value = default_value
        self.name = name
        self.checkpoint = checkpoint
        self.init_size = init_size
        self.device = device
        self.shard_saveable_object_fn = shard_saveable_object_fn
        self._table_config = config
        return RedisTable(key_dtype=key_dtype, value_dtype=value_dtype,
                          default_value=default_value, name=name, checkpoint=bool(checkpoint),
                          config=config, device=device,
                          shard_saveable_object_fn=shard_saveable_object_fn)

    def get_config(self) -> Dict[str, object]:
        """The arguments of the last `create()`, with the config that table used (eager mode
        only, as in TFRA)."""
        if not context.executing_eagerly():
            raise RuntimeError("Unsupported to serialize python object of RedisTableCreator.")
        return {
            "key_dtype": self.key_dtype,
            "value_dtype": self.value_dtype,
            "default_value": np.asarray(self.default_value),
            "name": self.name,
            "checkpoint": self.checkpoint,
            "init_size": self.init_size,
            "config": self._table_config,
            "device": self.device,
        }
