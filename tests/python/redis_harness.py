"""Real redis-server processes for the Python tests: each on a free port (never 6379) with a
pidfile, stopped by pid. Plus a tiny binary-safe RESP client for checking stored bytes."""

import json
import os
import socket
import subprocess
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert port != 6379
    return port


class RedisServer:
    """A standalone redis-server in `workdir`, started on construction."""

    def __init__(self, workdir, port=None):
        self.port = port or free_port()
        self.dir = os.path.join(str(workdir), f"redis-{self.port}")
        os.makedirs(self.dir, exist_ok=True)
        self.pidfile = os.path.join(self.dir, "redis.pid")
        self.start()

    def start(self):
        subprocess.run(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "yes", "--dir", self.dir,
             "--pidfile", self.pidfile, "--logfile", os.path.join(self.dir, "redis.log")],
            check=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.command(b"PING") == "PONG":
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on {self.port} did not start")
            time.sleep(0.02)

    def stop(self):
        try:
            with open(self.pidfile) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)

    def config(self, path, **fields):
        """Writes a standalone, table_store_mode 0 config for this server to `path`."""
        cfg = {"redis_connection_mode": 2, "redis_host_ip": ["127.0.0.1"],
               "redis_host_port": [self.port], "table_store_mode": 0}
        cfg.update(fields)
        with open(path, "w") as f:
            json.dump(cfg, f)
        return str(path)

    def command(self, *args):
        """Sends one command with binary-safe arguments and returns the decoded reply."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            out = b"*%d\r\n" % len(args)
            for a in args:
                a = a if isinstance(a, bytes) else str(a).encode()
                out += b"$%d\r\n%s\r\n" % (len(a), a)
            s.sendall(out)
            return _read(s.makefile("rb"))


def _read(f):
    line = f.readline()
    t, rest = line[:1], line[1:-2]
    if t == b"+":
        return rest.decode()
    if t == b"-":
        raise RuntimeError(rest.decode())
    if t == b":":
        return int(rest)
    if t == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2]
    if t == b"*":
        n = int(rest)
        return None if n < 0 else [_read(f) for _ in range(n)]
    raise RuntimeError(f"bad reply {line!r}")
