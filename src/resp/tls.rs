//! TLS for connections to Redis (`rde_tls`), with rustls: the server certificate is checked
//! against the CA file in the config, and a client certificate is sent when one is given
//! (Redis' default `tls-auth-clients yes` requires one).

use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::{Arc, Mutex, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::sync;

/// A TLS-wrapped socket.
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// The TLS settings of a config, built once and shared by every connection that uses them.
pub struct Tls {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl PartialEq for Tls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config) && self.server_name == other.server_name
    }
}

impl Eq for Tls {}

/// The file paths and name that identify one TLS setting.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Files {
    ca: String,
    cert: String,
    key: String,
    server_name: String,
}

/// The TLS settings of `cfg`, or `None` when `rde_tls` is off. Reads the certificate files
/// the first time a setting is seen; errors name the field and the file.
pub fn settings(cfg: &Config) -> Result<Option<Arc<Tls>>> {
    if !cfg.rde_tls {
        return Ok(None);
    }
    let files = Files {
        ca: cfg.rde_tls_ca_cert_file.clone(),
        cert: cfg.rde_tls_cert_file.clone(),
        key: cfg.rde_tls_key_file.clone(),
        server_name: cfg.rde_tls_server_name.clone(),
    };
    static CACHE: OnceLock<Mutex<HashMap<Files, Arc<Tls>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(t) = sync::lock(cache).get(&files) {
        return Ok(Some(t.clone()));
    }
    let tls = Arc::new(build(&files)?);
    sync::lock(cache).insert(files, tls.clone());
    Ok(Some(tls))
}

fn build(f: &Files) -> Result<Tls> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs("rde_tls_ca_cert_file", &f.ca)? {
        roots.add(cert).map_err(|e| {
            Error::invalid(format!(
                "rde_tls_ca_cert_file {}: not a usable CA certificate: {e}",
                f.ca
            ))
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::invalid(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots);
    let config = if f.cert.is_empty() {
        builder.with_no_client_auth()
    } else {
        let certs = read_certs("rde_tls_cert_file", &f.cert)?;
        let key = PrivateKeyDer::from_pem_file(&f.key).map_err(|e| {
            Error::invalid(format!(
                "rde_tls_key_file {}: no readable PEM private key: {e}",
                f.key
            ))
        })?;
        builder.with_client_auth_cert(certs, key).map_err(|e| {
            Error::invalid(format!(
                "rde_tls_cert_file {} and rde_tls_key_file {} do not form a usable client identity: {e}",
                f.cert, f.key
            ))
        })?
    };
    let server_name = if f.server_name.is_empty() {
        None
    } else {
        Some(ServerName::try_from(f.server_name.clone()).map_err(|e| {
            Error::invalid(format!(
                "rde_tls_server_name {:?} is not a DNS name or IP address: {e}",
                f.server_name
            ))
        })?)
    };
    Ok(Tls {
        config: Arc::new(config),
        server_name,
    })
}

fn read_certs(field: &str, path: &str) -> Result<Vec<CertificateDer<'static>>> {
    let bad = |what: String| Error::invalid(format!("{field} {path}: {what}"));
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot be read: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("is not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad("holds no PEM certificate".into()));
    }
    Ok(certs)
}

impl Tls {
    /// Runs the TLS handshake on `tcp`, a fresh connection to `addr` (`host:port`).
    pub fn connect(&self, addr: &str, mut tcp: TcpStream) -> Result<TlsStream> {
        let name = match &self.server_name {
            Some(n) => n.clone(),
            None => {
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                ServerName::try_from(host.to_owned()).map_err(|e| {
                    Error::invalid(format!(
                        "redis at {addr}: {host:?} cannot be checked against a certificate ({e}); set rde_tls_server_name"
                    ))
                })?
            }
        };
        let mut conn = ClientConnection::new(self.config.clone(), name)
            .map_err(|e| Error::invalid(format!("redis at {addr}: TLS setup failed: {e}")))?;
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp)
                .map_err(|e| Error::tls_handshake(addr, e))?;
        }
        Ok(StreamOwned::new(conn, tcp))
    }
}
