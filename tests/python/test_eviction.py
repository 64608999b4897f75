"""The eviction guard from Python: a table does not open on a server whose maxmemory-policy
can evict its rows (FailedPreconditionError naming server, policy and fix), unless the config
says `rde_allow_eviction: true`; a user whose ACL denies CONFIG opens unchecked."""

from typing import Iterator

import pytest
import redis_embedding as rde
import tensorflow as tf


@pytest.fixture
def evicting(redis) -> Iterator[object]:
    """The session server with `maxmemory-policy allkeys-lru`, put back afterwards."""
    assert redis.command(b"CONFIG", b"SET", b"maxmemory-policy", b"allkeys-lru") == "OK"
    try:
        yield redis
    finally:
        redis.command(b"CONFIG", b"SET", b"maxmemory-policy", b"noeviction")


def _open(path: str, name: str = "ev") -> rde.RedisTable:
    return rde.RedisTable(tf.int64, tf.float32, tf.zeros([2]), name=name,
                          config=rde.RedisTableConfig(path))


def test_allkeys_lru_refuses_the_open(evicting, tmp_path) -> None:
    before = rde.stats()["evicting_opens_refused"]
    with pytest.raises(tf.errors.FailedPreconditionError) as e:
        _open(evicting.config(tmp_path / "r.json"))
    msg = e.value.message
    assert f"redis 127.0.0.1:{evicting.port} has maxmemory-policy allkeys-lru" in msg
    assert "maxmemory-policy noeviction" in msg and '"rde_allow_eviction": true' in msg
    assert rde.stats()["evicting_opens_refused"] == before + 1


def test_allow_eviction_opens(evicting, tmp_path) -> None:
    before = rde.stats()["evicting_opens_allowed"]
    t = _open(evicting.config(tmp_path / "r.json", rde_allow_eviction=True))
    t.insert(tf.constant([1], tf.int64), tf.constant([[1.0, 2.0]]))
    assert t.lookup(tf.constant([1], tf.int64)).numpy().tolist() == [[1.0, 2.0]]
    assert rde.stats()["evicting_opens_allowed"] == before + 1
    assert t.stats()["evicted_keys"] == 0  # watched from the open on (tests/eviction.rs)


def test_noeviction_opens(redis, tmp_path) -> None:
    assert redis.command(b"CONFIG", b"GET", b"maxmemory-policy")[1] == b"noeviction"
    _open(redis.config(tmp_path / "r.json"))


def test_a_user_denied_config_opens(evicting, tmp_path) -> None:
    evicting.command(b"ACL", b"SETUSER", b"nocfg", b"on", b">pw", b"~*", b"+@all", b"-config")
    try:
        _open(evicting.config(tmp_path / "r.json", redis_user="nocfg", redis_password="pw"))
    finally:
        evicting.command(b"ACL", b"DELUSER", b"nocfg")
