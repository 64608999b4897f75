"""`stats()`: the process-wide fault and traffic counters of the Redis backend."""

from __future__ import annotations

from typing import Dict

from redis_embedding._ops import ops as _lib


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
    """
    names, values = _lib.tfra_rde_redis_stats()
    return {n.decode(): int(v) for n, v in zip(names.numpy(), values.numpy())}
