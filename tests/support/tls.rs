//! TLS: a test CA, server and client certificates (openssl CLI), and servers listening on TLS.

#![allow(unused_imports)]

use super::*;

/// A test CA with a server certificate (for 127.0.0.1 and localhost) and a client
/// certificate, made with the openssl CLI in a temp dir. A second, unrelated CA is made too,
/// for the "wrong CA" case.
pub struct Certs {
    dir: tempfile::TempDir,
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl must be installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Certs {
    /// Generates everything (RSA 2048, valid for two days).
    pub fn generate() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for ca in ["ca", "other-ca"] {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=rde-test-{ca}"),
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.crt"),
                ],
            );
        }
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        std::fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for (who, cn) in [("server", "localhost"), ("client", "rde-test-client")] {
            openssl(
                d,
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-subj",
                    &format!("/CN={cn}"),
                    "-keyout",
                    &format!("{who}.key"),
                    "-out",
                    &format!("{who}.csr"),
                ],
            );
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-days",
                    "2",
                    "-in",
                    &format!("{who}.csr"),
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-extfile",
                    &format!("{who}.ext"),
                    "-out",
                    &format!("{who}.crt"),
                ],
            );
        }
        Certs { dir }
    }

    /// Path of `name` (for example `ca.crt`, `client.key`).
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

impl Server {
    /// A server that also listens with TLS on a second port (returned); the plain port stays
    /// for the harness' own checks. `auth_clients` makes it require a client certificate.
    pub fn start_tls(certs: &Certs, auth_clients: bool) -> (Server, u16) {
        let tls_port = free_port().to_string();
        let s = Server::start_with(&[
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            &certs.path("server.crt"),
            "--tls-key-file",
            &certs.path("server.key"),
            "--tls-ca-cert-file",
            &certs.path("ca.crt"),
            "--tls-auth-clients",
            if auth_clients { "yes" } else { "no" },
        ]);
        (s, tls_port.parse().unwrap())
    }
}
