"""`RedisTableCreator`: the `kv_creator` handed to `tfra.dynamic_embedding.get_variable`."""

from tensorflow.python.eager import context

from redis_embedding.config import RedisTableConfig
from redis_embedding.table import RedisTable

try:  # A real KVCreator when TFRA is installed, so TFRA's isinstance checks pass.
    from tensorflow_recommenders_addons.dynamic_embedding.python.ops.dynamic_embedding_creator import (  # noqa: E501
        KVCreator as _Base,
        RedisTableConfig as _TfraConfig,
    )
except ImportError:  # pragma: no cover - exercised only without TFRA
    _TfraConfig = None

    class _Base:
        def __init__(self, config=None, saver=None):
            self.config = config
            self.saver = saver


def _is_config(c):
    return isinstance(c, RedisTableConfig) or (_TfraConfig is not None and isinstance(c, _TfraConfig))


class RedisTableCreator(_Base):
    """Creates one `RedisTable` per Variable shard, with TFRA's `create` signature."""

    def __init__(self, config=None, saver=None):
        if config is not None and not _is_config(config):
            raise TypeError(f"config should be a RedisTableConfig, got {type(config)!r}")
        super().__init__(config=config, saver=saver)

    def create(self, key_dtype=None, value_dtype=None, default_value=None, name=None,
               checkpoint=None, init_size=None, config=None, device=None,
               shard_saveable_object_fn=None):
        """Returns a `RedisTable`. `init_size` is accepted for TFRA compatibility and unused."""
        self.key_dtype = key_dtype
        self.value_dtype = value_dtype
        self.default_value = default_value
        self.name = name
        self.checkpoint = checkpoint
        self.init_size = init_size
        if config:
            if not _is_config(config):
                raise TypeError(f"config should be a RedisTableConfig, got {type(config)!r}")
            self.config = config
        elif self.config is None:
            self.config = RedisTableConfig()
        self.device = device
        self.shard_saveable_object_fn = shard_saveable_object_fn
        return RedisTable(key_dtype=key_dtype, value_dtype=value_dtype,
                          default_value=default_value, name=name, checkpoint=checkpoint,
                          config=self.config, device=device,
                          shard_saveable_object_fn=shard_saveable_object_fn)

    def get_config(self):
        """The creator's arguments as a dict (eager mode only, as in TFRA)."""
        if not context.executing_eagerly():
            raise RuntimeError("Unsupported to serialize python object of RedisTableCreator.")
        return {
            "key_dtype": self.key_dtype,
            "value_dtype": self.value_dtype,
            "default_value": self.default_value.numpy(),
            "name": self.name,
            "checkpoint": self.checkpoint,
            "init_size": self.init_size,
            "config": self.config,
            "device": self.device,
        }
