"""Shared fixtures: one redis-server for the session (flushed before every test) and a
config file pointing at it; `backend_config_path` runs a test on both backends (the
redis-server, or `"rde_backend": "memory"` with no server)."""

import importlib.util
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Iterator

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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "redis_only: runs on the Redis backend only under backend_config_path")


def memory_config(path: Path, **fields: object) -> str:
    """Writes an embedded-backend, table_store_mode 0 config to `path`. The model tag is new
    per call, so tables of earlier tests still alive in this process share no rows with it."""
    tag = "mem-" + uuid.uuid4().hex[:12]
    cfg = {"rde_backend": "memory", "table_store_mode": 0,
           "model_tag_runtime": tag, "model_tag_import": tag}
    cfg.update(fields)
    with open(path, "w") as f:
        json.dump(cfg, f)
    return str(path)


@pytest.fixture(params=["redis", "memory"])
def backend(request: pytest.FixtureRequest) -> str:
    """The backend a test runs on. Tests that inspect the server (they take the `redis`
    fixture) or are marked redis_only run on Redis only."""
    if request.param == "memory" and ("redis" in request.fixturenames
                                      or request.node.get_closest_marker("redis_only")):
        pytest.skip("inspects the redis-server")
    return request.param


@pytest.fixture
def backend_config_path(backend: str, request: pytest.FixtureRequest,
                        tmp_path: Path) -> Iterator[str]:
    """A config file for `backend`. The test runs with a variable store of its own, so TFRA's
    `get_variable` accepts the same name on the second backend."""
    if backend == "memory":
        path = memory_config(tmp_path / "memory.json")
    else:
        path = request.getfixturevalue("redis").config(tmp_path / "redis.json")
    from tensorflow.python.ops import variable_scope
    with variable_scope.with_variable_store(variable_scope._VariableStore()):
        yield path


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
