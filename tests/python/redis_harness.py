"""Real redis-server processes for the Python tests: each on a free port (never 6379) with a
pidfile, stopped by pid. A start checks that the server answering on the port is the process
it started (pidfile = `INFO server` process_id); a stop or crash waits (bounded) until that
process is gone. Each raises otherwise. Plus a tiny binary-safe RESP client for checking
stored bytes."""

import json
import os
import socket
import subprocess
import time

# How long a server may take to start, or to exit after a signal.
PROCESS_DEADLINE = 10


def _alive(pid):
    """Whether process `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


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
        self.pid = None  # of the running process this harness started
        self.start()

    def log_tail(self, n=20):
        try:
            with open(os.path.join(self.dir, "redis.log")) as f:
                return "".join(f.readlines()[-n:])
        except OSError as e:
            return f"(no log: {e})"

    def _fail(self, what):
        raise RuntimeError(f"redis-server on port {self.port} (dir {self.dir}): {what}; "
                           f"its log ends:\n{self.log_tail()}")

    def start(self):
        """Starts the server (again, after a stop or crash: same port and directory) and waits
        until it answers PING. Raises if the process answering is not the one started: a
        daemonized server that failed to bind (another process took the free port first)
        exits without a pidfile while whatever holds the port answers."""
        if self.pid is not None:
            raise RuntimeError(f"redis-server on {self.port} is already running (pid {self.pid})")
        try:
            os.remove(self.pidfile)  # left by a crash: not the new process'
        except FileNotFoundError:
            pass
        subprocess.run(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "yes", "--dir", self.dir,
             "--pidfile", self.pidfile, "--logfile", os.path.join(self.dir, "redis.log"),
             *self.extra],
            check=True)
        deadline = time.monotonic() + PROCESS_DEADLINE
        while True:
            pong = False
            try:
                pong = self.command(b"PING") == "PONG"
            except OSError:
                pass  # not listening yet
            except RuntimeError as e:
                if not str(e).startswith("LOADING"):  # replaying its AOF/RDB: keep waiting
                    raise
            pid = None
            try:
                with open(self.pidfile) as f:
                    pid = int(f.read().strip())
            except (OSError, ValueError):
                pass  # written before the server serves: not started yet
            if pong and pid is not None:
                break
            if time.monotonic() > deadline:
                self._fail(f"not started within {PROCESS_DEADLINE} s "
                           f"(answers PING: {pong}, pidfile: {pid})")
            time.sleep(0.02)
        if not _alive(pid):
            self._fail(f"process {pid} from the pidfile is not running")
        info = self.command(b"INFO", b"server").decode()
        answering = next((int(line.split(":", 1)[1]) for line in info.splitlines()
                          if line.startswith("process_id:")), None)
        if answering != pid:
            self._fail(f"the server answering on the port is process {answering}, not the one "
                       f"started (pid {pid}): the port was taken by another server")
        self.pid = pid

    def stop(self):
        """Stops the server with SIGTERM (by its pid) and waits until it is gone. Does nothing
        if it is not running (stopped or crashed); raises if it had died on its own or is
        still there after 10 s."""
        self._signal(15)

    def crash(self):
        """Kills the server with SIGKILL (by its pid), as a crash would, and waits until it is
        gone. `start()` brings it back on the same port and directory."""
        if self.pid is None:
            raise RuntimeError(f"crash(): redis-server on {self.port} is not running")
        self._signal(9)

    def _signal(self, sig):
        pid, self.pid = self.pid, None
        if pid is None:
            return
        try:
            if not _alive(pid):  # a zombie (exited, not reaped) still accepts signals
                raise ProcessLookupError(pid)
            os.kill(pid, sig)
        except ProcessLookupError:
            self._fail(f"process {pid} had already exited before signal {sig}")
        deadline = time.monotonic() + PROCESS_DEADLINE
        while _alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, 9)  # leave nothing behind
                self._fail(f"process {pid} was still running {PROCESS_DEADLINE} s after "
                           f"signal {sig} (now SIGKILLed)")
            time.sleep(0.02)

    def cpu_seconds(self):
        """User + system CPU time the server process has used (from /proc, by its pid)."""
        with open(f"/proc/{self.pid}/stat") as f:
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
