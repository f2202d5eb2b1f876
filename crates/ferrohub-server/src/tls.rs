//! TLS material: the generated development CA and server certificate, or the user's own.
//!
//! On first start in a data dir Ferrohub creates `tls/ca.pem` + `tls/ca.key` (ECDSA P-256, ten
//! years) and `tls/server.pem` + `tls/server.key` signed by it for the hub's names. When the host
//! name or aliases change, only the server certificate is issued again, so clients keep trusting
//! the same CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{Datelike, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;
use crate::fsutil::{create_dir_durably, write_durably};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Generating a certificate failed.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate or key.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The server's TLS configuration and, when generated, where its CA lives.
pub(crate) struct TlsMaterial {
    /// rustls configuration for every TLS listener.
    pub server_config: Arc<ServerConfig>,
    /// `tls/ca.pem` when the certificate was generated; `None` for a user-supplied one.
    pub ca_path: Option<PathBuf>,
}

/// Loads the user's certificate, or generates (and on later starts reuses) the development one
/// for `names` in `data_dir/tls`.
pub(crate) fn prepare(
    data_dir: &Path,
    user: Option<&TlsFiles>,
    names: &[String],
) -> Result<TlsMaterial, TlsError> {
    let (chain, key, ca_path) = match user {
        Some(files) => {
            let (chain, key) = load_pem(&files.cert_file, &files.key_file)?;
            (chain, key, None)
        }
        None => {
            let dir = data_dir.join("tls");
            create_dir_durably(&dir).map_err(io_err(&dir))?;
            ensure_generated(&dir, names)?;
            let (chain, key) = load_pem(&dir.join("server.pem"), &dir.join("server.key"))?;
            (chain, key, Some(dir.join("ca.pem")))
        }
    };
    let mut server_config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    // The server's order decides: AES-128-GCM with SHA-256 first, the cheapest key schedule
    // for a device handshake (every suite offered is a current AEAD suite).
    server_config.ignore_client_order = true;
    server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        server_config: Arc::new(server_config),
        ca_path,
    })
}

/// aws-lc-rs with its cipher suites in the hub's preference order: the SHA-256 suites before
/// the SHA-384 one, for TLS 1.3 and 1.2 alike.
fn provider() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites.sort_by_key(|suite| {
        use rustls::CipherSuite::*;
        matches!(
            suite.suite(),
            TLS13_AES_256_GCM_SHA384
                | TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                | TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
        )
    });
    provider
}

fn load_pem(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let bytes = std::fs::read(cert).map_err(io_err(cert))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: cert.to_owned(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: cert.to_owned(),
            message: "no certificate found".into(),
        });
    }
    let key_bytes = std::fs::read(key).map_err(io_err(key))?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| TlsError::Pem {
        path: key.to_owned(),
        message: e.to_string(),
    })?;
    Ok((chain, key_der))
}

fn ensure_generated(dir: &Path, names: &[String]) -> Result<(), TlsError> {
    let ca_pem_path = dir.join("ca.pem");
    let ca_key_path = dir.join("ca.key");
    let year = Utc::now().year();

    let (ca_pem, ca_key) = if ca_pem_path.exists() && ca_key_path.exists() {
        let pem = std::fs::read_to_string(&ca_pem_path).map_err(io_err(&ca_pem_path))?;
        let key_pem = std::fs::read_to_string(&ca_key_path).map_err(io_err(&ca_key_path))?;
        let key = KeyPair::from_pem(&key_pem)?;
        (pem, key)
    } else {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let tag = crate::random_hex(4);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("Ferrohub Development CA {tag}"));
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Ferrohub");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
        params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
        let cert = params.self_signed(&key)?;
        write_durably(&ca_key_path, key.serialize_pem().as_bytes(), true)
            .map_err(io_err(&ca_key_path))?;
        write_durably(&ca_pem_path, cert.pem().as_bytes(), false).map_err(io_err(&ca_pem_path))?;
        // A new CA invalidates any server certificate left from an earlier one.
        let _ = std::fs::remove_file(dir.join("server.names"));
        (cert.pem(), key)
    };

    let names_path = dir.join("server.names");
    let wanted = server_names(names).join("\n");
    let current = std::fs::read_to_string(&names_path).unwrap_or_default();
    if current == wanted && dir.join("server.pem").exists() && dir.join("server.key").exists() {
        return Ok(());
    }

    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(server_names(names))?;
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().map_or("localhost", String::as_str),
    );
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 2, 1, 1);
    let cert = params.signed_by(&key, &issuer)?;
    let server_key = dir.join("server.key");
    let server_pem = dir.join("server.pem");
    write_durably(&server_key, key.serialize_pem().as_bytes(), true)
        .map_err(io_err(&server_key))?;
    // The chain a client needs: leaf, then the CA.
    let chain = format!("{}{}", cert.pem(), ca_pem);
    write_durably(&server_pem, chain.as_bytes(), false).map_err(io_err(&server_pem))?;
    write_durably(&names_path, wanted.as_bytes(), false).map_err(io_err(&names_path))?;
    tracing::info!(names = %wanted.replace('\n', ", "), "issued a development server certificate");
    Ok(())
}

/// The subject alternative names: the configured names plus the loopback names, deduplicated.
fn server_names(names: &[String]) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    for n in names
        .iter()
        .map(String::as_str)
        .chain(["localhost", "127.0.0.1", "::1"])
    {
        if !all.iter().any(|a| a.eq_ignore_ascii_case(n)) {
            all.push(n.to_owned());
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_suites_are_preferred() {
        let suites: Vec<rustls::CipherSuite> =
            provider().cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(suites[0], rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        let first_384 = suites
            .iter()
            .position(|s| format!("{s:?}").ends_with("SHA384"))
            .expect("a SHA-384 suite is still offered");
        assert!(
            suites[first_384..]
                .iter()
                .all(|s| format!("{s:?}").ends_with("SHA384")),
            "{suites:?}"
        );
        assert_eq!(
            suites.len(),
            rustls::crypto::aws_lc_rs::default_provider()
                .cipher_suites
                .len()
        );
    }

    #[test]
    fn generates_once_and_reissues_for_new_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = vec!["hub.example".to_owned()];
        let m = prepare(dir.path(), None, &names).expect("generated");
        let ca_path = m.ca_path.expect("ca path");
        let ca1 = std::fs::read(&ca_path).expect("ca");
        let server1 = std::fs::read(dir.path().join("tls/server.pem")).expect("server");

        prepare(dir.path(), None, &names).expect("reused");
        assert_eq!(std::fs::read(&ca_path).expect("ca"), ca1);
        assert_eq!(
            std::fs::read(dir.path().join("tls/server.pem")).expect("server"),
            server1
        );

        prepare(dir.path(), None, &["other.example".to_owned()]).expect("reissued");
        assert_eq!(std::fs::read(&ca_path).expect("ca"), ca1, "CA kept");
        assert_ne!(
            std::fs::read(dir.path().join("tls/server.pem")).expect("server"),
            server1,
            "server certificate reissued"
        );
        let names = std::fs::read_to_string(dir.path().join("tls/server.names")).expect("names");
        assert_eq!(names, "other.example\nlocalhost\n127.0.0.1\n::1");
    }

    #[test]
    fn user_files_must_hold_pem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        std::fs::write(&cert, "not a certificate").expect("write");
        std::fs::write(&key, "not a key").expect("write");
        let files = TlsFiles {
            cert_file: cert,
            key_file: key,
        };
        let err = prepare(dir.path(), Some(&files), &[])
            .err()
            .expect("refused");
        assert!(matches!(err, TlsError::Pem { .. }), "{err}");
    }
}
