//! TLS settings, loaded once at startup: the certificate pgmux shows its clients, and how it
//! talks TLS to servers. rustls with the ring provider; PEM files through rustls-pki-types.

use crate::config::{PoolerConfig, ServerTlsMode, TlsMode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

/// A TLS file that cannot be used. Display: `pooler.KEY: "FILE": problem`.
#[derive(Debug, thiserror::Error)]
#[error("pooler.{key}: {file:?}: {problem}")]
pub struct TlsError {
    pub key: &'static str,
    pub file: String,
    pub problem: String,
}

/// Everything TLS that the running pooler needs, built from `[pooler]`.
#[derive(Clone, Default)]
pub struct Tls {
    /// For clients that ask for TLS (tls_mode allow, prefer or require).
    pub to_clients: Option<Arc<rustls::ServerConfig>>,
    /// For server connections (server_tls_mode other than disable).
    pub to_servers: Option<ServerTls>,
}

/// How pgmux talks TLS to servers.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// Prefer, Require or VerifyFull (Disable means no `ServerTls` at all).
    pub mode: ServerTlsMode,
    pub config: Arc<rustls::ClientConfig>,
}

/// Two are equal when they are the same settings object (a reload that changes nothing keeps it).
impl PartialEq for ServerTls {
    fn eq(&self, other: &ServerTls) -> bool {
        self.mode == other.mode && Arc::ptr_eq(&self.config, &other.config)
    }
}

impl Eq for ServerTls {}

impl Tls {
    /// Reads and checks the certificate, key and CA files the settings name.
    pub fn load(p: &PoolerConfig) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let to_clients = match p.tls_mode {
            TlsMode::Disable => None,
            _ => Some(server_config(&provider, &p.tls_cert_file, &p.tls_key_file)?),
        };
        let to_servers = match p.server_tls_mode {
            ServerTlsMode::Disable => None,
            mode => Some(ServerTls {
                mode,
                config: client_config(&provider, mode, &p.server_tls_ca_file)?,
            }),
        };
        Ok(Tls { to_clients, to_servers })
    }
}

fn read(key: &'static str, file: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(file).map_err(|e| TlsError {
        key,
        file: file.to_owned(),
        problem: format!("cannot read it: {e}"),
    })
}

fn certificates(key: &'static str, file: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |problem: String| TlsError {
        key,
        file: file.to_owned(),
        problem,
    };
    let pem = read(key, file)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a valid PEM file: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate (BEGIN CERTIFICATE) in it".into()));
    }
    Ok(certs)
}

fn server_config(
    provider: &Arc<CryptoProvider>,
    cert_file: &str,
    key_file: &str,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = certificates("tls_cert_file", cert_file)?;
    let pem = read("tls_key_file", key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError {
        key: "tls_key_file",
        file: key_file.to_owned(),
        problem: format!("no usable private key (PKCS#8, RSA or SEC1 PEM): {e}"),
    })?;
    let config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| TlsError {
            key: "tls_key_file",
            file: key_file.to_owned(),
            problem: format!("cannot be used with tls_cert_file {cert_file:?}: {e}"),
        })?;
    Ok(Arc::new(config))
}

fn client_config(
    provider: &Arc<CryptoProvider>,
    mode: ServerTlsMode,
    ca_file: &str,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError {
            key: "server_tls_mode",
            file: String::new(),
            problem: e.to_string(),
        })?;
    let config = if mode == ServerTlsMode::VerifyFull {
        let mut roots = rustls::RootCertStore::empty();
        for cert in certificates("server_tls_ca_file", ca_file)? {
            roots.add(cert).map_err(|e| TlsError {
                key: "server_tls_ca_file",
                file: ca_file.to_owned(),
                problem: format!("not a usable CA certificate: {e}"),
            })?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        // prefer and require encrypt without checking who answers, as libpq's sslmode does.
        let verifier = Arc::new(AnyCertificate(provider.clone()));
        builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// The server name to check a server's certificate against: its host name or IP address.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_owned()).map_err(|e| format!("{host:?} is not a valid host name for TLS: {e}"))
}

/// Accepts any server certificate (server_tls_mode prefer and require), but still checks that
/// the server holds the key of the certificate it shows (the handshake signatures).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pooler(tls_mode: TlsMode, cert: &str, key: &str) -> PoolerConfig {
        PoolerConfig {
            tls_mode,
            tls_cert_file: cert.into(),
            tls_key_file: key.into(),
            ..PoolerConfig::default()
        }
    }

    #[test]
    fn disabled_loads_nothing() {
        let tls = Tls::load(&PoolerConfig::default()).unwrap();
        assert!(tls.to_clients.is_none() && tls.to_servers.is_none());
    }

    #[test]
    fn errors_name_the_key_and_the_file() {
        let Err(e) = Tls::load(&pooler(
            TlsMode::Require,
            "/nonexistent/cert.pem",
            "/nonexistent/key.pem",
        )) else {
            panic!("a missing file loaded");
        };
        let text = e.to_string();
        assert!(
            text.starts_with("pooler.tls_cert_file: \"/nonexistent/cert.pem\": cannot read it"),
            "{text}"
        );

        let dir = std::env::temp_dir().join(format!("pgmux-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let junk = junk.to_str().unwrap();
        let e = Tls::load(&pooler(TlsMode::Prefer, junk, junk))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("pooler.tls_cert_file") && e.contains("no PEM certificate"),
            "{e}"
        );

        let p = PoolerConfig {
            server_tls_mode: ServerTlsMode::VerifyFull,
            server_tls_ca_file: junk.into(),
            ..PoolerConfig::default()
        };
        let e = Tls::load(&p).err().unwrap().to_string();
        assert!(e.starts_with("pooler.server_tls_ca_file") && e.contains(junk), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn require_needs_no_ca() {
        let p = PoolerConfig {
            server_tls_mode: ServerTlsMode::Require,
            ..PoolerConfig::default()
        };
        let tls = Tls::load(&p).unwrap();
        assert_eq!(tls.to_servers.map(|s| s.mode), Some(ServerTlsMode::Require));
    }

    #[test]
    fn server_names() {
        assert!(server_name("localhost").is_ok());
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("::1").is_ok());
        assert!(server_name("bad name").is_err());
    }
}
