"""Config errors are raised before any connection is made and name the field or path; a
server that is down or silent fails the op (never default values) and names host:port."""

import json
import time

import pytest
import tensorflow as tf

import redis_embedding as rde
from redis_harness import RedisServer, free_port


def make_table(path=None, env=None, name="cfg"):
    return rde.RedisTable(tf.int64, tf.float32, tf.zeros([2]), name=name,
                          config=rde.RedisTableConfig(path, env))


def write(tmp_path, text, name="redis.json"):
    p = tmp_path / name
    p.write_text(text if isinstance(text, str) else json.dumps(text))
    return str(p)


# Every config below points at a port nobody listens on: an InvalidArgument (not Unavailable)
# proves the config was rejected before connecting.
DEAD = {"redis_connection_mode": 2, "redis_host_ip": ["127.0.0.1"], "table_store_mode": 0}

BAD_CONFIGS = [
    ("{not json", "not valid JSON"),
    ({"redis_host_port": 7000}, "redis_host_port should be json integer array"),
    ({"storage_slice": 0}, "storage_slice = 0"),
    ({"redis_host_ip": ["127.0.0.1", "127.0.0.2"], "redis_host_port": [1]},
     "redis_host_ip has 2 entries but redis_host_port has 1"),
    ({"redis_connection_mode": 7}, "redis_connection_mode = 7"),
    ({"redis_connect_timeout": "1000"}, "redis_connect_timeout should be json integer"),
    ({"using_md5_prefix_name": "yes"}, "using_md5_prefix_name should be json boolean"),
    ({"redis_hash_tags_runtime": [1]}, "redis_hash_tags_runtime should be json string array"),
    ({"model_tag_runtime": None}, "model_tag_runtime should be json string"),
    ({"table_store_mode": 9}, "table_store_mode = 9"),
    ({"keys_sending_size": 0}, "keys_sending_size = 0"),
]


@pytest.mark.parametrize("bad,message", BAD_CONFIGS, ids=[m for _, m in BAD_CONFIGS])
def test_invalid_config_is_rejected_before_connecting(tmp_path, bad, message):
    if isinstance(bad, dict):
        bad = {**DEAD, "redis_host_port": [free_port()], **bad}
    path = write(tmp_path, bad)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message) as e:
        make_table(path)
    assert path in str(e.value)


def test_missing_and_empty_files_are_not_found(tmp_path):
    missing = str(tmp_path / "missing.json")
    with pytest.raises(tf.errors.NotFoundError, match="missing.json"):
        make_table(missing)
    empty = write(tmp_path, "", "empty.json")
    with pytest.raises(tf.errors.NotFoundError, match="empty.json"):
        make_table(empty)
    with pytest.raises(tf.errors.NotFoundError, match="no redis config file given"):
        make_table(None)


def test_unreachable_cluster_seeds_and_sentinels_are_unavailable(tmp_path):
    for mode in (0, 1):
        port = free_port()
        path = write(tmp_path, {**DEAD, "redis_host_port": [port], "redis_connection_mode": mode,
                                "redis_connect_timeout": 200, "redis_sentinel_connect_timeout": 200})
        with pytest.raises(tf.errors.UnavailableError, match=f"127.0.0.1:{port}") as e:
            make_table(path)
        assert f"redis_connection_mode {mode} (" in str(e.value)
        assert '"redis_connection_mode": 2' in str(e.value)  # what to set for a plain server


def test_tfra_default_mode_uses_a_plain_server_and_says_so(tmp_path, redis, capfd):
    """TFRA's shortest config has no redis_connection_mode (so mode 1, sentinel): pointed at a
    plain server, the table works against that server and one log line says so."""
    path = write(tmp_path, {"redis_host_ip": ["127.0.0.1"], "redis_host_port": [redis.port]})
    t = make_table(path, name="tfra_default")
    t.insert(tf.constant([5, 6], tf.int64), tf.constant([[1.0, 2.0], [3.0, 4.0]]))
    assert t.lookup(tf.constant([6], tf.int64)).numpy().tolist() == [[3.0, 4.0]]
    assert int(redis.command(b"HLEN", b"test:tfra_default{3560}")) == 2
    err = capfd.readouterr().err
    assert "is a plain Redis master, not a sentinel; using it as a standalone server" in err, err
    assert "TFRA's default: the config does not set it" in err, err


def test_a_dead_sentinel_in_the_default_mode_is_a_clear_error(tmp_path):
    port = free_port()
    path = write(tmp_path, {"redis_host_ip": ["127.0.0.1"], "redis_host_port": [port],
                            "redis_sentinel_connect_timeout": 200, "rde_max_retries": 0})
    with pytest.raises(tf.errors.UnavailableError) as e:
        make_table(path, name="dead_sentinel")
    msg = str(e.value)
    assert "redis_connection_mode 1 (sentinel, TFRA's default: the config does not set it)" in msg
    assert f"via sentinels 127.0.0.1:{port}" in msg and '"redis_connection_mode": 2' in msg


def test_lookup_priority_env_attr_then_tfra_env_then_path(tmp_path, redis, monkeypatch):
    good = redis.config(tmp_path / "good.json")
    bad = str(tmp_path / "does-not-exist.json")
    monkeypatch.delenv("TFRA_REDIS_CONFIG_PATH", raising=False)
    monkeypatch.setenv("MY_REDIS_CFG", good)
    make_table(bad, "MY_REDIS_CFG", name="a").insert(tf.constant([1], tf.int64), tf.ones([1, 2]))
    monkeypatch.setenv("TFRA_REDIS_CONFIG_PATH", good)
    make_table(bad, name="b").insert(tf.constant([1], tf.int64), tf.ones([1, 2]))
    # The op's env attribute beats TFRA_REDIS_CONFIG_PATH.
    monkeypatch.setenv("MY_REDIS_CFG", bad)
    with pytest.raises(tf.errors.NotFoundError, match="does-not-exist.json"):
        make_table(good, "MY_REDIS_CFG", name="c")


def test_unreachable_server_is_unavailable_naming_host_port(tmp_path):
    port = free_port()
    path = write(tmp_path, {**DEAD, "redis_host_port": [port], "redis_connect_timeout": 300})
    with pytest.raises(tf.errors.UnavailableError, match=f"127.0.0.1:{port}"):
        make_table(path)


def test_server_down_mid_run_fails_ops_then_recovers_after_restart(tmp_path):
    server = RedisServer(tmp_path)
    try:
        path = server.config(tmp_path / "r.json", redis_connect_timeout=300, redis_socket_timeout=300,
                             rde_max_retries=2)
        t = make_table(path)
        keys = tf.constant([1, 2], tf.int64)
        t.insert(keys, tf.ones([2, 2]))
        server.stop()
        start = time.monotonic()
        for op in (lambda: t.lookup(keys), lambda: t.lookup(keys, return_exists=True),
                   lambda: t.insert(keys, tf.ones([2, 2])), t.size, t.export,
                   lambda: t.accum(keys, tf.ones([2, 2]), tf.constant([True, True]))):
            with pytest.raises(tf.errors.UnavailableError, match=f"127.0.0.1:{server.port}"):
                op()
        assert time.monotonic() - start < 30  # bounded by timeouts and retries, no hang
        server.start()
        t.insert(tf.constant([3], tf.int64), tf.fill([1, 2], 3.0))
        assert int(t.size()) == 1  # no persistence configured: only the new row
    finally:
        server.stop()


def test_silent_server_is_deadline_exceeded(tmp_path):
    """A server that accepts connections and never answers (a real one, paused with CLIENT
    PAUSE ALL for far longer than the test) fails the op with DeadlineExceeded naming it,
    after waiting out the socket timeout of every attempt (the open's handshake is retried
    like a request) and within the bound its timeouts allow."""
    server = RedisServer(tmp_path)
    try:
        socket_ms, connect_ms, retries = 200, 200, 2
        path = server.config(tmp_path / "silent.json", redis_socket_timeout=socket_ms,
                             redis_connect_timeout=connect_ms, rde_max_retries=retries)
        # The work an open does besides waiting (TF resource creation, the handshake, the
        # layout record), on this machine in this run: the slowest of two opens while the
        # server answers.
        healthy = 0.0
        for name in ("warm1", "warm2"):
            t0 = time.monotonic()
            make_table(path, name=name)
            healthy = max(healthy, time.monotonic() - t0)
        assert server.command(b"CLIENT", b"PAUSE", b"60000", b"ALL") == "OK"
        start = time.monotonic()
        with pytest.raises(tf.errors.DeadlineExceededError, match=f"127.0.0.1:{server.port}") as e:
            make_table(path)
        took = time.monotonic() - start
        assert f"gave up after {retries} retries" in e.value.message, e.value.message
        # Each attempt waited out its socket timeout, with 50 + 100 ms of backoff between.
        assert took >= ((retries + 1) * socket_ms + 150) / 1000, took
        # Each attempt at most its connect, write and read timeouts, plus 50 + 100 ms of
        # backoff: the waits. On top, each attempt may do at most the work of one whole
        # healthy open, measured above (twice it, for one attempt's jitter): a slow machine
        # widens the margin by what an open costs there, not by doubling the timeouts.
        waits = ((retries + 1) * (connect_ms + 2 * socket_ms) + 150) / 1000
        assert took < waits + 2 * (retries + 1) * healthy, (took, waits, healthy)
    finally:
        server.stop()
