"""`stats()`: the process-wide fault and traffic counters of the Redis backend;
`prometheus_text()`: those and every live table's statistics in Prometheus' text format."""

from __future__ import annotations

from typing import Dict, Iterable, List, Tuple, Union

from redis_embedding._ops import ops as _lib

Figure = Union[int, float]

OPS = ("find", "insert", "accum", "remove", "export", "train_lookup", "train_apply")
"""The ops a table times (the training ops appear once used)."""

COUNTERS = ("lookups", "hits", "misses", "rows_written", "bytes_in", "bytes_out", "errors",
            "retries", "ttl_refresh_failures", "update_conflicts", "update_retry_rounds")
"""A table's counters, in the order `RedisTable.stats()` gives them."""

QUANTILES = (("p50", "0.5"), ("p95", "0.95"), ("p99", "0.99"), ("max", "1"))
"""Latency figures per op (`<op>_<name>_us`) and the quantile each is."""


def stats() -> Dict[str, int]:
    """Returns a dict of counter name -> count for this process.

    Counters only grow. Compare two snapshots to see what a piece of work caused, for
    example how many requests were retried during a failover:

    * ``connections_opened``: connects and reconnects;
    * ``connection_failures``, ``timeouts``, ``pool_wait_timeouts``: faults seen;
    * ``pipelines``, ``commands``: traffic sent, resends included;
    * ``retries``: rounds of resending after a redirect, refusal or failed connection;
    * ``redirects`` (MOVED/ASK), ``refusals`` (TRYAGAIN, CLUSTERDOWN, READONLY, LOADING,
      MASTERDOWN), ``topology_refreshes``;
    * ``requests_failed``: requests that gave up; ``op_errors``: errors returned by ops;
    * ``calls``, ``call_nanoseconds``: lookups, upserts, accums and removes, and the wall
      time spent inside them (the rest of a step's time is TensorFlow's and Python's).
    * ``evicting_opens_refused``, ``evicting_opens_allowed``: table opens refused because a
      server's ``maxmemory-policy`` can evict the table's rows, and servers with such a policy
      opened on anyway under ``rde_allow_eviction`` (docs/operations.md, "The eviction guard").

    Per-table figures (hit rate, latency percentiles) are ``RedisTable.stats()``.
    """
    names, values = _lib.tfra_rde_redis_stats()
    return {n.decode(): int(v) for n, v in zip(names.numpy(), values.numpy())}


def figures(names: Iterable[bytes], values: Iterable[float]) -> Dict[str, Figure]:
    """A table's statistics op output as a dict: `hit_rate` a float, the rest ints."""
    return {n.decode(): (float(v) if n == b"hit_rate" else int(v))
            for n, v in zip(names, values)}


def combine(tables: Iterable[Dict[str, Figure]]) -> Dict[str, Figure]:
    """The statistics of several tables as one: counters and calls add up, `hit_rate` is
    recomputed, and each latency figure is the largest of the tables' (exact when one table
    ran the op, an upper bound otherwise: percentiles of separate histograms do not add);
    so is `evicted_keys`, a figure of the servers that every table on them sees alike."""
    out: Dict[str, Figure] = {}
    for t in tables:
        for name, v in t.items():
            if name == "hit_rate":
                continue
            if name.endswith("_us") or name == "evicted_keys":
                out[name] = max(out.get(name, 0), v)
            else:
                out[name] = out.get(name, 0) + v
    for name in COUNTERS:
        out.setdefault(name, 0)
    lookups = out["lookups"]
    out["hit_rate"] = out["hits"] / lookups if lookups else 0.0
    return out


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def _family(lines: List[str], metric: str, kind: str, help_text: str,
            samples: List[Tuple[str, Figure]]) -> None:
    """Appends one metric family: HELP, TYPE, then `metric{labels} value` per sample."""
    lines.append(f"# HELP {metric} {help_text}")
    lines.append(f"# TYPE {metric} {kind}")
    lines.extend(f"{metric}{labels} {value}" for labels, value in samples)


def prometheus_text() -> str:
    """The process counters (`redis_embedding_<name>_total`) and every live table's statistics
    (`redis_embedding_table_…{table="<embedding name>"}`) in the Prometheus text exposition
    format, for a `/metrics` endpoint or a textfile collector. Tables that share an embedding
    name (the shards of a Variable, a Keras layer's handles) are combined (see `combine`)."""
    from redis_embedding.table import live_tables  # table.py imports this module

    lines: List[str] = []
    for name, value in stats().items():
        _family(lines, f"redis_embedding_{name}_total", "counter",
                f"Process-wide {name.replace('_', ' ')} (redis_embedding.stats()).",
                [("", value)])
    by_name: Dict[str, List[Dict[str, Figure]]] = {}
    for table in live_tables():
        by_name.setdefault(table.embedding_name, []).append(table.stats())
    tables = {name: combine(figs) for name, figs in sorted(by_name.items())}
    for counter in COUNTERS:
        _family(lines, f"redis_embedding_table_{counter}_total", "counter",
                f"Per-table {counter.replace('_', ' ')} (RedisTable.stats()).",
                [(f'{{table="{_label(n)}"}}', t[counter]) for n, t in tables.items()])
    _family(lines, "redis_embedding_table_evicted_keys_total", "counter",
            "Keys evicted since the table opened by servers it was allowed to open on "
            "although they can evict (rde_allow_eviction).",
            [(f'{{table="{_label(n)}"}}', t.get("evicted_keys", 0)) for n, t in tables.items()])
    _family(lines, "redis_embedding_table_hit_rate", "gauge",
            "Per-table hits / lookups (key positions).",
            [(f'{{table="{_label(n)}"}}', t["hit_rate"]) for n, t in tables.items()])
    calls, latency = [], []
    for n, t in tables.items():
        for op in OPS:
            if f"{op}_calls" not in t:
                continue
            labels = f'table="{_label(n)}",op="{op}"'
            calls.append((f"{{{labels}}}", t[f"{op}_calls"]))
            latency.extend((f'{{{labels},quantile="{q}"}}', t[f"{op}_{fig}_us"])
                           for fig, q in QUANTILES)
    _family(lines, "redis_embedding_table_op_calls_total", "counter",
            "Per-table calls of each op.", calls)
    _family(lines, "redis_embedding_table_op_latency_microseconds", "gauge",
            "Per-table wall time of an op's calls at a quantile (1 is the maximum), "
            "from an HDR histogram (within 1%).", latency)
    return "\n".join(lines) + "\n"
