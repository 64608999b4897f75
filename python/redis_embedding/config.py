"""`RedisTableConfig`: where the table's JSON config file is, as in TFRA."""

from __future__ import annotations

from typing import Optional, Protocol


class RedisTableConfig:
    """Names the JSON config file, by path or by an environment variable holding the path.

    The file is chosen at table creation, in TFRA's order: the environment variable named by
    ``redis_config_abs_dir_env`` if it is set, else ``$TFRA_REDIS_CONFIG_PATH`` if set, else
    ``redis_config_abs_dir``. The schema is TFRA's (see docs/config.md).
    """

    def __init__(self, redis_config_abs_dir: Optional[str] = None,
                 redis_config_abs_dir_env: Optional[str] = None) -> None:
        self.redis_config_abs_dir = redis_config_abs_dir
        self.redis_config_abs_dir_env = redis_config_abs_dir_env

    def __repr__(self) -> str:
        return (f"RedisTableConfig(redis_config_abs_dir={self.redis_config_abs_dir!r}, "
                f"redis_config_abs_dir_env={self.redis_config_abs_dir_env!r})")


class ConfigLike(Protocol):
    """What a table reads from its config: this `RedisTableConfig` or TFRA's."""

    redis_config_abs_dir: Optional[str]
    redis_config_abs_dir_env: Optional[str]
