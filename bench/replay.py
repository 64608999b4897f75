"""Replays the Redis command patterns of both backends from a bare socket client, to separate
the server's cost of the commands from the effect of the client process running beside it.

Each iteration writes 16,384 new int64 keys x 64 f32 with HSET and reads them back with HMGET:
- "one": ours, one connection, a pipeline of 16 commands of 1,024 keys;
- "eight": TFRA's at 16,384 keys, 8 connections on 8 threads, one command of 2,048 keys each.
Prints redis-server CPU per key and INFO commandstats time per key for HSET and HMGET.

    python bench/replay.py {one,eight} [iterations]
"""
import os, sys, socket, struct, threading, time, tempfile, shutil, re
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python"))
from redis_harness import RedisServer
import numpy as np
mode = sys.argv[1]; iters = int(sys.argv[2]) if len(sys.argv) > 2 else 60
work = tempfile.mkdtemp(prefix="rde-raw-"); server = RedisServer(work)
val = np.random.default_rng(0).random(64, dtype=np.float32).tobytes()
def enc(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args: out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)
def conn():
    s = socket.create_connection(("127.0.0.1", server.port)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1); return s
def read_replies(s, n):
    # crude: read until we've seen n top-level replies; replies are ints or arrays of bulks of fixed size
    buf = b""; got = 0; pos = 0
    while got < n:
        chunk = s.recv(1 << 20); buf += chunk
        while True:
            if pos >= len(buf): break
            t = buf[pos:pos+1]
            e = buf.find(b"\r\n", pos)
            if e < 0: break
            if t == b":":
                pos = e + 2; got += 1; continue
            if t == b"*":
                m = int(buf[pos+1:e]); need = e + 2 + m * (len(b"$256\r\n") + 256 + 2)
                if len(buf) < need: break
                pos = need; got += 1; continue
            raise RuntimeError(buf[pos:pos+20])
        buf = buf[pos:]; pos = 0
def cmds(cmd, keys, size):
    return [enc(cmd, b"b", *[x for k in keys[i:i+size] for x in ((struct.pack("<q", int(k)), val) if cmd == b"HSET" else (struct.pack("<q", int(k)),))]) for i in range(0, len(keys), size)]
def scpu():
    f = open(f"/proc/{open(server.pidfile).read().strip()}/stat").read().split(")")[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
try:
    B = 16384
    prep = []
    for it in range(iters):
        keys = np.arange(it * B, (it + 1) * B) + 10**12
        size = 1024 if mode == "one" else 2048
        prep.append((cmds(b"HSET", keys, size), cmds(b"HMGET", keys, size)))
    conns = [conn() for _ in range(8)]
    s0 = scpu(); t0 = time.perf_counter()
    for hs, hm in prep:
        for group in (hs, hm):
            if mode == "one":
                conns[0].sendall(b"".join(group)); read_replies(conns[0], len(group))
            else:
                def run(i):
                    conns[i].sendall(group[i]); read_replies(conns[i], 1)
                ts = [threading.Thread(target=run, args=(i,)) for i in range(len(group))]
                [t.start() for t in ts]; [t.join() for t in ts]
    wall = time.perf_counter() - t0; srv = scpu() - s0
    info = server.command(b"INFO", b"commandstats").decode()
    k = iters * B
    st = {c: int(u) / k for c, u in re.findall(r"cmdstat_(\w+):calls=\d+,usec=(\d+)", info)}
    print(mode, "server us/key %.3f" % (srv / k * 1e6), {c: round(v, 3) for c, v in st.items() if c in ("hset", "hmget")}, "wall %.1fs" % wall)
finally:
    server.stop(); shutil.rmtree(work, ignore_errors=True)
