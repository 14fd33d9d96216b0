//! Client certificates: the TLS-level verifier that requests them and proves the client holds the key, the chain a
//! connection presented (handed to every request on it), checking that chain against a CA, and reading the
//! subject's CN and O out of it.
//!
//! As kube-apiserver does (`tls.RequestClientCert`), the handshake does not judge the chain: which CAs are trusted
//! comes from the `extension-apiserver-authentication` ConfigMap and changes at run time, and a certificate from
//! an unknown CA must end as a 401 `Status`, not as a TLS alert. The handshake still checks the client's signature
//! over the transcript, so a presented certificate is one whose key the client holds.

use std::sync::{Arc, Mutex};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// The process-wide crypto provider (`main` installs aws-lc-rs), or aws-lc-rs if none is installed yet.
pub fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// Requests a client certificate, does not require one, and leaves the chain to the authenticator.
#[derive(Debug)]
pub struct RequestClientCert {
    provider: Arc<CryptoProvider>,
}

impl RequestClientCert {
    /// With the process-wide crypto provider.
    pub fn new() -> Arc<Self> {
        Arc::new(RequestClientCert {
            provider: provider(),
        })
    }
}

impl ClientCertVerifier for RequestClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: Go and rustls clients then send the certificate they were configured with.
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Judged per request against the CAs in force then (see the module doc).
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A CA bundle client chains are verified against (signature chain, validity, clientAuth usage), via webpki.
#[derive(Clone)]
pub struct CaVerifier {
    verifier: Arc<dyn ClientCertVerifier>,
}

impl std::fmt::Debug for CaVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CaVerifier")
    }
}

impl CaVerifier {
    /// From a PEM bundle of one or more CA certificates.
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("bad certificate PEM: {e}"))?;
            roots.add(cert).map_err(|e| format!("unusable CA: {e}"))?;
        }
        if roots.is_empty() {
            return Err("no CERTIFICATE block found".into());
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .map_err(|e| format!("unusable CA: {e}"))?;
        Ok(CaVerifier { verifier })
    }

    /// Whether `chain` (leaf first) verifies against this CA now.
    pub fn verifies(&self, chain: &[CertificateDer<'static>]) -> bool {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return false;
        };
        self.verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .is_ok()
    }
}

/// What a connection's chain proved, against the authentication configuration of one generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainOutcome {
    /// Signed by the request-header CA with an allowed CN: the identity is in the request headers.
    FrontProxy,
    /// Signed by the client CA: the identity is the subject (CN, O).
    Client {
        /// The CN.
        user: String,
        /// The O values.
        groups: Vec<String>,
    },
    /// Verifies against neither: a 401.
    Untrusted(String),
}

/// The certificate chain a client presented on a connection, handed to each of its requests as an extension, with
/// the verdict on it remembered for the configuration generation it was reached under (one chain check per
/// connection, not per request, until the CAs change).
#[derive(Debug)]
pub struct ClientChain {
    /// Leaf first.
    pub certs: Vec<CertificateDer<'static>>,
    // std mutex: held to copy or store the verdict, never across `.await`.
    verdict: Mutex<Option<(u64, ChainOutcome)>>,
}

impl ClientChain {
    /// A chain as presented.
    pub fn new(certs: Vec<CertificateDer<'static>>) -> Self {
        ClientChain {
            certs,
            verdict: Mutex::new(None),
        }
    }

    /// The verdict for `generation`, computed by `judge` once per generation.
    pub fn outcome(
        &self,
        generation: u64,
        judge: impl FnOnce(&[CertificateDer<'static>]) -> ChainOutcome,
    ) -> ChainOutcome {
        if let Some((seen, outcome)) = &*self.verdict.lock().unwrap_or_else(|p| p.into_inner())
            && *seen == generation
        {
            return outcome.clone();
        }
        let outcome = judge(&self.certs);
        *self.verdict.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((generation, outcome.clone()));
        outcome
    }
}

/// The subject's common name (the last CN, as Go's `pkix.Name` keeps) and organizations, from a DER certificate.
/// `None` if the DER is not a certificate.
pub fn subject(cert: &[u8]) -> Option<(String, Vec<String>)> {
    let (tag, certificate, _) = tlv(cert)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, mut tbs, _) = tlv(certificate)?;
    if tag != 0x30 {
        return None;
    }
    // [0] version (optional), serial, signature algorithm, issuer, validity, subject.
    let (tag, _, rest) = tlv(tbs)?;
    if tag == 0xA0 {
        tbs = rest;
    }
    for _ in 0..4 {
        tbs = tlv(tbs)?.2;
    }
    let (tag, mut name, _) = tlv(tbs)?;
    if tag != 0x30 {
        return None;
    }
    let (mut cn, mut orgs) = (String::new(), Vec::new());
    while !name.is_empty() {
        let (tag, mut set, rest) = tlv(name)?;
        name = rest;
        if tag != 0x31 {
            return None;
        }
        while !set.is_empty() {
            let (_, attribute, rest) = tlv(set)?;
            set = rest;
            let (tag, oid, value) = tlv(attribute)?;
            if tag != 0x06 {
                return None;
            }
            let (tag, value, _) = tlv(value)?;
            match oid {
                [0x55, 0x04, 0x03] => cn = string(tag, value)?,
                [0x55, 0x04, 0x0A] => orgs.push(string(tag, value)?),
                _ => {}
            }
        }
    }
    Some((cn, orgs))
}

/// One DER tag-length-value: (tag, contents, what follows).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let bytes = usize::from(first & 0x7F);
        if bytes == 0 || bytes > 4 || rest.len() < bytes {
            return None;
        }
        let (len, after) = rest.split_at(bytes);
        rest = after;
        len.iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// A directory string (UTF8String, PrintableString, IA5String, T61String, BMPString).
fn string(tag: u8, value: &[u8]) -> Option<String> {
    match tag {
        0x0C | 0x13 | 0x16 | 0x14 => Some(String::from_utf8_lossy(value).into_owned()),
        0x1E => {
            let units: Vec<u16> = value
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            Some(String::from_utf16_lossy(&units))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    #[test]
    fn subject_reads_cn_and_every_o() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "jane");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            subject(cert.der()),
            Some(("jane".to_string(), vec!["system:masters".to_string()]))
        );
        assert_eq!(subject(b"\x30\x03\x02\x01"), None);
        assert_eq!(subject(&[]), None);
    }

    #[test]
    fn a_chain_is_judged_once_per_generation() {
        let chain = ClientChain::new(Vec::new());
        let mut calls = 0;
        for generation in [1, 1, 1, 2, 2] {
            chain.outcome(generation, |_| {
                calls += 1;
                ChainOutcome::FrontProxy
            });
        }
        assert_eq!(calls, 2);
    }
}
