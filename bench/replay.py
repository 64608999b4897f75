"""Replays the Redis command patterns of both backends from a bare socket client, to separate
the server's cost of the commands from the effect of the client process running beside it.

Each iteration writes 16,384 new int64 keys x 64 f32 with HSET and reads them back with HMGET:
- "one": ours, one connection, a pipeline of 16 commands of 1,024 keys;
- "eight": TFRA's at 16,384 keys, 8 connections on 8 threads, one command of 2,048 keys each.
Prints redis-server CPU per key and INFO commandstats time per key for HSET and HMGET.

    python bench/replay.py {one,eight} [iterations]
"""

import os
import re
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python"))
from redis_harness import RedisServer  # noqa: E402

BATCH = 16384
VALUE = np.random.default_rng(0).random(64, dtype=np.float32).tobytes()
# One HMGET reply item: "$256\r\n" + 256 bytes + "\r\n".
ITEM_BYTES = len(b"$%d\r\n" % len(VALUE)) + len(VALUE) + 2


def encode(*args):
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(parts)


def commands(cmd, keys, per_command):
    """`cmd` over `keys`, `per_command` keys per command (HSET with the fixed value)."""
    out = []
    for i in range(0, len(keys), per_command):
        args = []
        for k in keys[i:i + per_command]:
            args.append(struct.pack("<q", int(k)))
            if cmd == b"HSET":
                args.append(VALUE)
        out.append(encode(cmd, b"bucket", *args))
    return out


def read_replies(sock, n):
    """Reads `n` replies: integers, or arrays of VALUE-sized bulk strings."""
    buf, got = b"", 0
    while got < n:
        buf += sock.recv(1 << 20)
        while buf:
            end = buf.find(b"\r\n")
            if end < 0:
                break
            if buf[:1] == b":":
                size = end + 2
            elif buf[:1] == b"*":
                size = end + 2 + int(buf[1:end]) * ITEM_BYTES
            else:
                raise RuntimeError(f"unexpected reply {buf[:40]!r}")
            if len(buf) < size:
                break
            buf, got = buf[size:], got + 1


def main():
    mode = sys.argv[1]
    iterations = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    work = tempfile.mkdtemp(prefix="rde-replay-")
    server = RedisServer(work)
    try:
        per_command = 1024 if mode == "one" else 2048
        calls = []
        for it in range(iterations):
            keys = np.arange(it * BATCH, (it + 1) * BATCH) + 10**12
            calls.append((commands(b"HSET", keys, per_command),
                          commands(b"HMGET", keys, per_command)))
        socks = []
        for _ in range(8):
            s = socket.create_connection(("127.0.0.1", server.port))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            socks.append(s)

        def one_each(i, cmd):
            socks[i].sendall(cmd)
            read_replies(socks[i], 1)

        cpu0, t0 = server.cpu_seconds(), time.perf_counter()
        for writes, reads in calls:
            for group in (writes, reads):
                if mode == "one":
                    socks[0].sendall(b"".join(group))
                    read_replies(socks[0], len(group))
                else:
                    threads = [threading.Thread(target=one_each, args=(i, c))
                               for i, c in enumerate(group)]
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join()
        wall, cpu = time.perf_counter() - t0, server.cpu_seconds() - cpu0
        keys = iterations * BATCH
        stats = server.command(b"INFO", b"commandstats").decode()
        per_key = {c: round(int(us) / keys, 3)
                   for c, us in re.findall(r"cmdstat_(\w+):calls=\d+,usec=(\d+)", stats)
                   if c in ("hset", "hmget")}
        print(f"{mode}: server {cpu / keys * 1e6:.3f} us/key, commandstats us/key {per_key}, "
              f"wall {wall:.1f} s")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
