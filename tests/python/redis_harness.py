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


def free_cluster_port():
    """A free port whose cluster bus port (port + 10000) is valid and free too."""
    for _ in range(1000):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisServer:
    """A standalone redis-server in `workdir`, started on construction."""

    def __init__(self, workdir, port=None, extra=()):
        self.port = port or free_port()
        self.extra = list(extra)
        self.dir = os.path.join(str(workdir), f"redis-{self.port}")
        os.makedirs(self.dir, exist_ok=True)
        self.pidfile = os.path.join(self.dir, "redis.pid")
        self.start()

    def start(self):
        subprocess.run(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "yes", "--dir", self.dir,
             "--pidfile", self.pidfile, "--logfile", os.path.join(self.dir, "redis.log"),
             *self.extra],
            check=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.command(b"PING") == "PONG":
                    return
            except OSError:
                pass  # not listening yet
            except RuntimeError as e:
                if not str(e).startswith("LOADING"):  # replaying its AOF/RDB: keep waiting
                    raise
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on {self.port} did not start")
            time.sleep(0.02)

    def stop(self):
        """Stops the server with SIGTERM (by its pid) and waits until it is gone."""
        self._signal(15, required=False)

    def crash(self):
        """Kills the server with SIGKILL (by its pid), as a crash would, and waits until it is
        gone. `start()` brings it back on the same port and directory."""
        self._signal(9, required=True)

    def _signal(self, sig, required):
        try:
            with open(self.pidfile) as f:
                pid = int(f.read().strip())
            os.kill(pid, sig)
        except (OSError, ValueError):
            if required:
                raise
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server {pid} survived signal {sig}")

    def cpu_seconds(self):
        """User + system CPU time the server process has used (from /proc, by its pid)."""
        with open(self.pidfile) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

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


class RedisCluster:
    """`masters` cluster-enabled redis-servers joined with `redis-cli --cluster create`."""

    def __init__(self, workdir, masters=3):
        cluster_args = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", "2000")
        self.nodes = [RedisServer(workdir, port=free_cluster_port(), extra=cluster_args)
                      for _ in range(masters)]
        subprocess.run(["redis-cli", "--cluster", "create",
                        *[f"127.0.0.1:{n.port}" for n in self.nodes],
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not all("cluster_state:ok" in n.command(b"CLUSTER", b"INFO").decode()
                      for n in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("cluster did not become ok")
            time.sleep(0.05)

    def config(self, path, **fields):
        cfg = {"redis_connection_mode": 0, "redis_host_ip": ["127.0.0.1"] * len(self.nodes),
               "redis_host_port": [n.port for n in self.nodes], "table_store_mode": 0}
        cfg.update(fields)
        with open(path, "w") as f:
            json.dump(cfg, f)
        return str(path)

    def keys(self):
        return sorted(k for n in self.nodes for k in n.command(b"KEYS", b"*"))

    def flush(self):
        for n in self.nodes:
            n.command(b"FLUSHALL")

    def stop(self):
        for n in self.nodes:
            n.stop()
