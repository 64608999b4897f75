"""Shared fixtures: one redis-server for the session (flushed before every test) and a
config file pointing at it."""

import importlib.util
import os
import sys

# TFRA needs legacy Keras (tf-keras, the TF 2.16 leg); the newest-TF leg runs Keras 3. Set
# before TensorFlow is imported, and inherited by the subprocesses the tests start.
if importlib.util.find_spec("tf_keras") is not None:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402

from redis_harness import RedisServer  # noqa: E402


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis(redis_server):
    redis_server.command(b"FLUSHALL")
    return redis_server


@pytest.fixture
def config_path(redis, tmp_path):
    return redis.config(tmp_path / "redis.json")


@pytest.fixture(scope="session")
def redis_cluster_session(tmp_path_factory):
    from redis_harness import RedisCluster
    cluster = RedisCluster(tmp_path_factory.mktemp("cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_cluster(redis_cluster_session):
    redis_cluster_session.flush()
    return redis_cluster_session
