"""TLS through the TF ops: a redis-server with a TLS port and certificates made here with the
openssl CLI; the table reads and writes over TLS with a client certificate."""

import json
import subprocess

import numpy as np
import tensorflow as tf

import redis_embedding as rde
from redis_harness import RedisServer, free_port


def openssl(cwd, *args):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d):
    openssl(d, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=rde-test-ca", "-keyout", "ca.key", "-out", "ca.crt")
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for who in ("server", "client"):
        openssl(d, "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=rde-{who}",
                "-keyout", f"{who}.key", "-out", f"{who}.csr")
        openssl(d, "x509", "-req", "-days", "2", "-in", f"{who}.csr", "-CA", "ca.crt",
                "-CAkey", "ca.key", "-CAcreateserial", "-extfile", f"{who}.ext",
                "-out", f"{who}.crt")


def test_ops_over_tls_with_a_client_certificate(tmp_path):
    make_certs(tmp_path)
    tls_port = free_port()
    server = RedisServer(tmp_path / "tls", extra=(
        "--tls-port", str(tls_port), "--tls-cert-file", str(tmp_path / "server.crt"),
        "--tls-key-file", str(tmp_path / "server.key"),
        "--tls-ca-cert-file", str(tmp_path / "ca.crt"), "--tls-auth-clients", "yes"))
    try:
        cfg = {"redis_connection_mode": 2, "redis_host_ip": ["127.0.0.1"],
               "redis_host_port": [tls_port], "table_store_mode": 0, "rde_tls": True,
               "rde_tls_ca_cert_file": str(tmp_path / "ca.crt"),
               "rde_tls_cert_file": str(tmp_path / "client.crt"),
               "rde_tls_key_file": str(tmp_path / "client.key")}
        path = tmp_path / "tls.json"
        path.write_text(json.dumps(cfg))
        t = rde.RedisTable(tf.int64, tf.float32, tf.zeros([3]), name="tls",
                           config=rde.RedisTableConfig(str(path)))
        t.insert(tf.constant([1, 2], tf.int64), tf.constant([[1., 2., 3.], [4., 5., 6.]]))
        np.testing.assert_array_equal(t.lookup(tf.constant([2, 9], tf.int64)).numpy(),
                                      [[4., 5., 6.], [0., 0., 0.]])
        # The rows are in the server (read back over its plain port).
        assert server.command(b"HLEN", b"test:tls{3560}") == 2
    finally:
        server.stop()
