"""A throwaway redis-server for the demos: a free port, a pidfile, stopped by pid."""

import os
import socket
import subprocess
import sys
import time


def start_redis(workdir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pidfile = os.path.join(workdir, "redis.pid")
    subprocess.run(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--daemonize", "yes", "--dir", workdir,
                    "--pidfile", pidfile, "--logfile", os.path.join(workdir, "redis.log")],
                   check=True)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                c.sendall(b"PING\r\n")
                if c.recv(16).startswith(b"+PONG"):
                    return port, pidfile
        except OSError:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"redis-server did not start on port {port}")
        time.sleep(0.05)


def stop_redis(pidfile):
    try:
        with open(pidfile) as f:
            os.kill(int(f.read()), 15)
    except (OSError, ValueError):
        pass
