"""Per-table statistics from Python (`RedisTable.stats()`) and `prometheus_text()`, against a
real redis-server: counts that could be wrong, and text a Prometheus parser reads."""

import pytest
import redis_embedding as rde
import tensorflow as tf


def _table(config_path: str, name: str) -> rde.RedisTable:
    return rde.RedisTable(tf.int64, tf.float32, tf.zeros([2]), name=name,
                          config=rde.RedisTableConfig(config_path))


def test_three_lookups_of_ten_keys_with_four_present(config_path) -> None:
    t = _table(config_path, "st_user")
    t.insert(tf.constant([1, 2, 3, 4], tf.int64), tf.ones([4, 2]))
    for _ in range(3):
        t.lookup(tf.range(1, 11, dtype=tf.int64))
    s = t.stats()
    # lookups count key positions (3 calls of 10 keys), find_calls the calls.
    assert (s["lookups"], s["hits"], s["misses"], s["find_calls"]) == (30, 12, 18, 3)
    assert s["hit_rate"] == pytest.approx(0.4)
    assert (s["rows_written"], s["insert_calls"]) == (4, 1)
    assert (s["bytes_out"], s["bytes_in"]) == (4 * 8, 12 * 8)  # float32 rows of 2
    assert s["errors"] == 0
    assert 0 < s["find_p50_us"] <= s["find_p95_us"] <= s["find_p99_us"] <= s["find_max_us"]
    assert s["remove_calls"] == 0 and "train_lookup_calls" not in s
    t.remove(tf.constant([1], tf.int64))
    keys, _ = t.export()
    assert t.stats()["remove_calls"] == 1 and t.stats()["export_calls"] == 1
    assert t.stats()["bytes_in"] == 12 * 8 + int(keys.shape[0]) * 8
    # A failed call counts as an error.
    with pytest.raises(tf.errors.InvalidArgumentError):
        t.lookup(tf.constant([1], tf.int64), dynamic_default_values=tf.zeros([1, 1]))
    assert t.stats()["errors"] == 1
    # The process-wide counters are still there, unchanged in shape.
    assert "calls" in rde.stats() and "lookups" not in rde.stats()


def test_prometheus_text_parses_and_carries_each_table(config_path) -> None:
    # A real Prometheus text parser (scripts/setup.sh installs prometheus_client in both venvs;
    # a missing one fails here rather than skipping the check).
    from prometheus_client import parser
    a, b = _table(config_path, "prom_a"), _table(config_path, "prom_b")
    a.insert(tf.constant([1, 2], tf.int64), tf.ones([2, 2]))
    a.lookup(tf.constant([1, 2, 3, 4], tf.int64))
    b.lookup(tf.constant([7], tf.int64))
    text = rde.prometheus_text()
    samples = {}
    for family in parser.text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    assert samples[("redis_embedding_table_lookups_total", (("table", "prom_a"),))] == 4
    assert samples[("redis_embedding_table_hits_total", (("table", "prom_a"),))] == 2
    assert samples[("redis_embedding_table_misses_total", (("table", "prom_b"),))] == 1
    assert samples[("redis_embedding_table_hit_rate", (("table", "prom_a"),))] == 0.5
    calls = (("op", "find"), ("table", "prom_a"))
    assert samples[("redis_embedding_table_op_calls_total", calls)] == 1
    p99 = samples[("redis_embedding_table_op_latency_microseconds",
                   (("op", "find"), ("quantile", "0.99"), ("table", "prom_a")))]
    assert p99 == a.stats()["find_p99_us"] > 0
    assert samples[("redis_embedding_calls_total", ())] == rde.stats()["calls"]
    assert samples[("redis_embedding_table_evicted_keys_total", (("table", "prom_a"),))] == 0
    # A table that is gone leaves the text.
    del b
    import gc
    gc.collect()
    assert 'table="prom_b"' not in rde.prometheus_text()


def test_a_failed_ttl_refresh_is_counted(redis, tmp_path) -> None:
    """A user that may write rows but no longer set TTLs: the write succeeds, the refresh of
    the new bucket's TTL fails, and the table counts it (stats and Prometheus)."""
    from prometheus_client.parser import text_string_to_metric_families

    redis.command(b"ACL", b"SETUSER", b"ttl_user", b"on", b">pw", b"~*", b"+@all")
    try:
        path = redis.config(tmp_path / "ttl.json", expire_model_tag_in_seconds=3600,
                            redis_user="ttl_user", redis_password="pw")
        t = _table(path, "ttl_refresh")
        assert t.stats()["ttl_refresh_failures"] == 0
        redis.command(b"ACL", b"SETUSER", b"ttl_user", b"-expire")
        t.insert(tf.constant([1, 2], tf.int64), tf.ones([2, 2]))  # creates the bucket
        assert int(t.size()) == 2
        assert redis.command(b"TTL", b"test:ttl_refresh{3560}") == -1
        s = t.stats()
        assert s["ttl_refresh_failures"] == 1 and s["errors"] == 0
        families = {f.name: f for f in text_string_to_metric_families(rde.prometheus_text())}
        samples = {tuple(x.labels.items()): x.value
                   for x in families["redis_embedding_table_ttl_refresh_failures"].samples}
        assert samples[(("table", "ttl_refresh"),)] == 1
        # Once the user may set TTLs again, the next write arms the bucket.
        redis.command(b"ACL", b"SETUSER", b"ttl_user", b"+expire")
        t.insert(tf.constant([3], tf.int64), tf.ones([1, 2]))
        assert 0 < redis.command(b"TTL", b"test:ttl_refresh{3560}") <= 3600
        assert t.stats()["ttl_refresh_failures"] == 1
    finally:
        redis.command(b"ACL", b"DELUSER", b"ttl_user")
