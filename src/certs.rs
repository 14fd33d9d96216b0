//! Serving certificates: a private CA and a serving certificate signed by it (rcgen, aws-lc-rs), written as
//! PEM files with the names a Kubernetes TLS Secret uses, plus loading them into a rustls server config and
//! reloading that config when the files change ([`TlsReloader`]).

mod reload;

pub use reload::{Reload, TlsFiles, TlsReloader};

use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// File names inside a certificate directory.
pub const CA_CERT: &str = "ca.crt";
/// The CA's private key.
pub const CA_KEY: &str = "ca.key";
/// The serving certificate.
pub const TLS_CERT: &str = "tls.crt";
/// The serving certificate's private key.
pub const TLS_KEY: &str = "tls.key";

/// Errors making or loading certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen failed to build or sign a certificate.
    #[error("generating certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A PEM file held nothing usable.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// rustls rejected the certificate/key pair.
    #[error("building TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The client CA could not be used to verify client certificates.
    #[error("building client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The directory already holds a different CA; replacing it would invalidate every caBundle that trusts it.
    #[error(
        "{} already holds a CA (ca.crt or ca.key): writing a new one would invalidate every caBundle that trusts \
         the old one (APIService, webhook, scheduler). Nothing was written. To start a new CA on purpose, remove \
         {0}/ca.crt and {0}/ca.key (or choose another --out-dir), then update every caBundle",
        dir.display()
    )]
    CaExists {
        /// The directory.
        dir: PathBuf,
    },
}

/// A CA and a serving certificate, as PEM.
#[derive(Debug, Clone)]
pub struct CertBundle {
    /// CA certificate.
    pub ca_cert_pem: String,
    /// CA private key.
    pub ca_key_pem: String,
    /// Serving certificate.
    pub cert_pem: String,
    /// Serving key.
    pub key_pem: String,
}

/// The DNS names a Service is reached by from inside the cluster.
pub fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// Generates a CA valid for `days × 10` and a serving certificate valid for `days`, both from `today`
/// (year, month, day), for the given DNS names and IP addresses.
pub fn generate(
    names: &[String],
    today: (i32, u8, u8),
    days: u32,
) -> Result<CertBundle, CertError> {
    let (y, m, d) = today;
    let start = rcgen::date_time_ymd(y, m, d);
    let day = rcgen::date_time_ymd(1970, 1, 2) - rcgen::date_time_ymd(1970, 1, 1);

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "smart-autoscaler CA");
    dn.push(DnType::OrganizationName, "smart-autoscaler");
    ca_params.distinguished_name = dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = start - day;
    ca_params.not_after = start + day * (days as i32) * 10;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        names
            .first()
            .cloned()
            .unwrap_or_else(|| "smart-autoscaler".into()),
    );
    params.distinguished_name = dn;
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => n.clone().try_into().map(SanType::DnsName),
        })
        .collect::<Result<_, _>>()?;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = start - day;
    params.not_after = start + day * (days as i32);
    let cert = params.signed_by(&key, &issuer)?;

    Ok(CertBundle {
        ca_cert_pem: ca_cert.pem(),
        ca_key_pem: ca_key.serialize_pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Today's date in UTC as (year, month, day).
pub fn today_utc(now_millis: i64) -> (i32, u8, u8) {
    let date = jiff::Timestamp::from_millisecond(now_millis)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    (date.year() as i32, date.month() as u8, date.day() as u8)
}

fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), CertError> {
    let io_err = |source| CertError::Io {
        action: "writing",
        path: path.to_path_buf(),
        source,
    };
    fs::write(path, contents).map_err(io_err)?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io_err)?;
    }
    #[cfg(not(unix))]
    let _ = private;
    Ok(())
}

impl CertBundle {
    /// Writes the four PEM files into `dir`, creating it; private keys get mode 0600. Refuses, writing nothing,
    /// when `dir` already holds a CA other than this bundle's ([`CertError::CaExists`]): running `certs` again
    /// must not silently replace the CA that every caBundle in the cluster trusts.
    pub fn write(&self, dir: &Path) -> Result<(), CertError> {
        fs::create_dir_all(dir).map_err(|source| CertError::Io {
            action: "creating",
            path: dir.into(),
            source,
        })?;
        let existing = |name: &str| fs::read_to_string(dir.join(name)).ok();
        match (existing(CA_CERT), existing(CA_KEY)) {
            (None, None) => {}
            (Some(cert), Some(key)) if cert == self.ca_cert_pem && key == self.ca_key_pem => {}
            _ => return Err(CertError::CaExists { dir: dir.into() }),
        }
        write_file(&dir.join(CA_CERT), &self.ca_cert_pem, false)?;
        write_file(&dir.join(CA_KEY), &self.ca_key_pem, true)?;
        write_file(&dir.join(TLS_CERT), &self.cert_pem, false)?;
        write_file(&dir.join(TLS_KEY), &self.key_pem, true)?;
        Ok(())
    }

    /// Reads a bundle written by [`CertBundle::write`].
    pub fn read(dir: &Path) -> Result<Self, CertError> {
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read_to_string(&path).map_err(|source| CertError::Io {
                action: "reading",
                path,
                source,
            })
        };
        Ok(CertBundle {
            ca_cert_pem: read(CA_CERT)?,
            ca_key_pem: read(CA_KEY)?,
            cert_pem: read(TLS_CERT)?,
            key_pem: read(TLS_KEY)?,
        })
    }

    /// The `caBundle` field value for APIService and webhook configurations: base64 of the CA PEM.
    pub fn ca_bundle(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self.ca_cert_pem.as_bytes())
    }
}

/// Reads PEM certificates from a file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let pem = |reason: String| CertError::Pem {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem(format!("cannot read certificates: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(format!("bad certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1) from a file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| CertError::Pem {
        path: path.to_path_buf(),
        reason: format!("no usable private key: {e}"),
    })
}

/// Builds the rustls server configuration for the secure port: HTTP/2 and HTTP/1.1 by ALPN, and, when a client
/// CA is given, client certificates requested (not required) and verified against it, as the aggregator expects.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, CertError> {
    let read = |path: &Path| {
        fs::read(path).map_err(|source| CertError::Io {
            action: "reading",
            path: path.to_path_buf(),
            source,
        })
    };
    let client_ca = match client_ca_file {
        Some(path) => Some((path, read(path)?)),
        None => None,
    };
    server_config_from_pem(
        (cert_file, &read(cert_file)?),
        (key_file, &read(key_file)?),
        client_ca
            .as_ref()
            .map(|(path, pem)| (*path, pem.as_slice())),
    )
}

/// [`server_config`] from PEM already read, each given with the file it came from (named in errors). Fails if
/// the key does not match the certificate.
pub fn server_config_from_pem(
    cert: (&Path, &[u8]),
    key: (&Path, &[u8]),
    client_ca: Option<(&Path, &[u8])>,
) -> Result<Arc<rustls::ServerConfig>, CertError> {
    let certs = parse_certs(cert.0, cert.1)?;
    let key = PrivateKeyDer::from_pem_slice(key.1).map_err(|e| CertError::Pem {
        path: key.0.to_path_buf(),
        reason: format!("no usable private key: {e}"),
    })?;
    let verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>> = match client_ca {
        Some((path, pem)) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in parse_certs(path, pem)? {
                roots.add(cert)?;
            }
            Some(
                rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                    .allow_unauthenticated()
                    .build()?,
            )
        }
        None => None,
    };
    finish_config(certs, key, verifier)
}

/// [`server_config_from_pem`] that requests client certificates (not required), checks only that the client holds
/// the certificate's key, and leaves the chain to the delegated authenticator ([`crate::auth`]), whose CAs come
/// from the cluster and change at run time.
pub fn server_config_requesting_client_certs(
    cert: (&Path, &[u8]),
    key: (&Path, &[u8]),
) -> Result<Arc<rustls::ServerConfig>, CertError> {
    let certs = parse_certs(cert.0, cert.1)?;
    let key = PrivateKeyDer::from_pem_slice(key.1).map_err(|e| CertError::Pem {
        path: key.0.to_path_buf(),
        reason: format!("no usable private key: {e}"),
    })?;
    finish_config(certs, key, Some(crate::auth::RequestClientCert::new()))
}

fn finish_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
) -> Result<Arc<rustls::ServerConfig>, CertError> {
    let builder = rustls::ServerConfig::builder();
    let mut config = match verifier {
        Some(verifier) => builder
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)?,
        None => builder.with_no_client_auth().with_single_cert(certs, key)?,
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn parse_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let pem_error = |reason: String| CertError::Pem {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(format!("bad certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem_error("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_a_chain_rustls_accepts() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let mut names = service_names("smart-autoscaler", "smart-autoscaler");
        names.push("127.0.0.1".into());
        let bundle = generate(&names, (2026, 11, 23), 30).unwrap();
        bundle.write(dir.path()).unwrap();
        let again = CertBundle::read(dir.path()).unwrap();
        assert_eq!(again.cert_pem, bundle.cert_pem);
        server_config(
            &dir.path().join(TLS_CERT),
            &dir.path().join(TLS_KEY),
            Some(&dir.path().join(CA_CERT)),
        )
        .unwrap();
        assert!(bundle.ca_bundle().len() > 100);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(TLS_KEY))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn writing_again_keeps_the_existing_ca() {
        let dir = tempfile::tempdir().unwrap();
        let names = service_names("smart-autoscaler", "smart-autoscaler");
        let first = generate(&names, (2026, 11, 23), 30).unwrap();
        first.write(dir.path()).unwrap();
        // The same bundle again is harmless.
        first.write(dir.path()).unwrap();

        let second = generate(&names, (2026, 11, 24), 30).unwrap();
        let err = second.write(dir.path()).unwrap_err();
        assert!(matches!(err, CertError::CaExists { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains(&format!("{}/ca.key", dir.path().display())),
            "{message}"
        );
        assert!(message.contains("--out-dir"), "{message}");
        // Nothing was replaced, the serving certificate included.
        let kept = CertBundle::read(dir.path()).unwrap();
        assert_eq!(kept.ca_cert_pem, first.ca_cert_pem);
        assert_eq!(kept.ca_key_pem, first.ca_key_pem);
        assert_eq!(kept.cert_pem, first.cert_pem);

        // Half a CA (one file left behind) is not silently completed either.
        fs::remove_file(dir.path().join(CA_CERT)).unwrap();
        assert!(matches!(
            second.write(dir.path()),
            Err(CertError::CaExists { .. })
        ));
        // With the old CA removed on purpose, a new one is written.
        fs::remove_file(dir.path().join(CA_KEY)).unwrap();
        second.write(dir.path()).unwrap();
        assert_eq!(
            CertBundle::read(dir.path()).unwrap().ca_cert_pem,
            second.ca_cert_pem
        );
    }

    #[test]
    fn missing_key_file_names_the_path() {
        let err = load_key(Path::new("/nonexistent/tls.key")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/tls.key"), "{err}");
    }

    #[test]
    fn today_from_millis() {
        assert_eq!(today_utc(1_740_830_405_000), (2025, 3, 1));
    }
}
