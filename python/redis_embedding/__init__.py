"""redis-embedding: TFRA-compatible dynamic embedding tables kept in Redis.

Drop-in for TFRA's Redis backend::

    import tensorflow_recommenders_addons as tfra, redis_embedding as rde
    creator = rde.RedisTableCreator(rde.RedisTableConfig(redis_config_abs_dir="redis.json"))
    emb = tfra.dynamic_embedding.get_variable("user_emb", dim=64, kv_creator=creator)
"""

from redis_embedding.config import RedisTableConfig
from redis_embedding.creator import RedisTableCreator
from redis_embedding.stats import prometheus_text, stats
from redis_embedding.table import CheckpointWarning, DTypeMismatchError, RedisTable


def __getattr__(name: str) -> object:
    # `rde.keras` imports Keras 3 only when used, so the TFRA drop-in never loads it.
    if name == "keras":
        import importlib

        return importlib.import_module("redis_embedding.keras")
    raise AttributeError(f"module 'redis_embedding' has no attribute {name!r}")


__all__ = ["CheckpointWarning", "DTypeMismatchError", "RedisTable", "RedisTableConfig", "RedisTableCreator", "prometheus_text", "stats"]
__version__ = "0.1.0"
