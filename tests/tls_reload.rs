//! Certificate rotation on the real binary (`demo`) over real sockets: the serving certificate and the client CA
//! are replaced the way kubelet updates a mounted Secret (a new directory, then the `..data` symlink renamed over
//! the old one), and new connections must get the new ones while a connection opened before keeps working; a
//! pair that does not load must leave the previous certificate served and count an error.

mod common;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{DemoServer, sample};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use smart_autoscaler::certs::{self, CertBundle};

/// Short, also so that the connection opened before the swap is never idle near the server's idle limit
/// (`--idle-timeout`, which also runs while a keep-alive connection waits for its next request).
const RELOAD_INTERVAL: &str = "200ms";
/// Generous: the poll interval is 200 ms, but the machine may be loaded.
const DEADLINE: Duration = Duration::from_secs(30);

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn roots(ca_pems: &[&str]) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for pem in ca_pems {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    roots
}

/// Opens a TLS connection (HTTP/1.1 by ALPN) verified against `roots`, with an optional client certificate, and
/// finishes the handshake.
fn connect(
    addr: &str,
    roots: rustls::RootCertStore,
    client_cert: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
) -> io::Result<Tls> {
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let mut config = match client_cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(vec![cert], key)
            .map_err(io::Error::other)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .map_err(io::Error::other)?;
    let sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    sock.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// The leaf certificate the server presented.
fn peer_cert(tls: &Tls) -> Vec<u8> {
    tls.conn.peer_certificates().expect("handshake done")[0].to_vec()
}

/// One keep-alive `GET` on an open connection; returns the status.
fn get(tls: &mut impl ReadWrite, path: &str) -> io::Result<u16> {
    write!(tls, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    tls.flush()?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tls.read(&mut byte)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(io::ErrorKind::InvalidData)?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or(io::ErrorKind::InvalidData)?;
    let mut body = vec![0; length];
    tls.read_exact(&mut body)?;
    Ok(status)
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// The plain-HTTP `/metrics` exposition of the demo.
fn metrics(server: &DemoServer) -> String {
    let mut stream = TcpStream::connect(&server.metrics).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

fn reloads(server: &DemoServer, outcome: &str) -> f64 {
    let text = metrics(server);
    sample(
        &text,
        &format!("smart_autoscaler_tls_reloads_total{{outcome=\"{outcome}\"}}"),
    )
    .unwrap_or_else(|| panic!("no tls_reloads_total{{outcome={outcome}}} in /metrics:\n{text}"))
}

/// Turns `dir/{tls.crt,tls.key}` into the layout of a mounted Secret: `tls.crt -> ..data/tls.crt`,
/// `..data -> ..v0`, with the same contents (so nothing changes for the server).
#[cfg(unix)]
fn as_secret_volume(dir: &Path) {
    let v0 = dir.join("..v0");
    std::fs::create_dir(&v0).unwrap();
    for name in [certs::TLS_CERT, certs::TLS_KEY] {
        std::fs::copy(dir.join(name), v0.join(name)).unwrap();
    }
    std::os::unix::fs::symlink("..v0", dir.join("..data")).unwrap();
    for name in [certs::TLS_CERT, certs::TLS_KEY] {
        let tmp = dir.join(format!("{name}.tmp"));
        std::os::unix::fs::symlink(format!("..data/{name}"), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

/// Publishes a new certificate and key as kubelet does: a new directory, then `..data` re-pointed atomically.
#[cfg(unix)]
fn publish(dir: &Path, version: &str, cert_pem: &str, key_pem: &str) {
    let target = dir.join(format!("..{version}"));
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join(certs::TLS_CERT), cert_pem).unwrap();
    std::fs::write(target.join(certs::TLS_KEY), key_pem).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

fn new_bundle() -> CertBundle {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    certs::generate(
        &["localhost".to_string(), "127.0.0.1".to_string()],
        certs::today_utc(now),
        30,
    )
    .unwrap()
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// Opens new connections until one presents `want`; returns how long that took.
fn wait_for_cert(server: &DemoServer, roots: &rustls::RootCertStore, want: &[u8]) -> Duration {
    let start = Instant::now();
    loop {
        let tls = connect(&server.secure, roots.clone(), None).expect("connect");
        if peer_cert(&tls) == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < DEADLINE,
            "new connections still get the old certificate {DEADLINE:?} after the rotation"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(unix)]
#[test]
fn rotated_serving_certificate_is_served_to_new_connections_and_a_bad_pair_is_refused() {
    provider();
    let server = DemoServer::start(&["--tls-reload-interval", RELOAD_INTERVAL]);
    let dir = server.dir.path().join("certs");
    let original = CertBundle::read(&dir).unwrap();
    as_secret_volume(&dir);
    let (second, third, fourth) = (new_bundle(), new_bundle(), new_bundle());
    let trust = roots(&[
        &original.ca_cert_pem,
        &second.ca_cert_pem,
        &third.ca_cert_pem,
        &fourth.ca_cert_pem,
    ]);

    // A connection opened before the rotation.
    let mut before = connect(&server.secure, trust.clone(), None).unwrap();
    assert_eq!(peer_cert(&before), der(&original.cert_pem));
    assert_eq!(get(&mut before, "/livez").unwrap(), 200);
    assert_eq!(reloads(&server, "ok"), 0.0);

    publish(&dir, "v1", &second.cert_pem, &second.key_pem);
    let latency = wait_for_cert(&server, &trust, &der(&second.cert_pem));
    eprintln!(
        "new certificate served {latency:?} after the swap (poll interval {RELOAD_INTERVAL})"
    );
    assert_eq!(reloads(&server, "ok"), 1.0);
    assert_eq!(reloads(&server, "error"), 0.0);
    // The connection opened before keeps its certificate and keeps working.
    assert_eq!(get(&mut before, "/livez").unwrap(), 200);
    assert_eq!(peer_cert(&before), der(&original.cert_pem));

    // A key that does not belong to the certificate: refused, counted, the second pair still served.
    publish(&dir, "v2", &third.cert_pem, &fourth.key_pem);
    let start = Instant::now();
    while reloads(&server, "error") < 1.0 {
        assert!(
            start.elapsed() < DEADLINE,
            "no reload error counted for a mismatched pair"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "mismatched pair refused {:?} after the swap",
        start.elapsed()
    );
    let text = metrics(&server);
    assert_eq!(
        sample(&text, "smart_autoscaler_tls_reload_failing"),
        Some(1.0),
        "{text}"
    );
    for _ in 0..3 {
        let mut tls = connect(&server.secure, trust.clone(), None).unwrap();
        assert_eq!(peer_cert(&tls), der(&second.cert_pem));
        assert_eq!(get(&mut tls, "/livez").unwrap(), 200);
        std::thread::sleep(Duration::from_millis(250));
    }
    // Counted once, not at every poll.
    assert_eq!(reloads(&server, "error"), 1.0);
    assert_eq!(reloads(&server, "ok"), 1.0);

    // A good pair after the bad one is picked up again.
    publish(&dir, "v3", &fourth.cert_pem, &fourth.key_pem);
    wait_for_cert(&server, &trust, &der(&fourth.cert_pem));
    assert_eq!(reloads(&server, "ok"), 2.0);
    let text = metrics(&server);
    assert_eq!(
        sample(&text, "smart_autoscaler_tls_reload_failing"),
        Some(0.0)
    );
    assert_eq!(get(&mut before, "/livez").unwrap(), 200);
}

/// A CA and a client certificate (clientAuth) it signed, as the front-proxy CA and the aggregator's certificate.
fn client_ca_and_cert(name: &str) -> (String, CertificateDer<'static>, PrivateKeyDer<'static>) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} front-proxy CA"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, &ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "front-proxy-client");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    (
        ca_cert.pem(),
        cert.der().clone(),
        PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
    )
}

/// A request with a client certificate; `Err` when the server refuses the certificate.
fn get_with_client_cert(
    server: &DemoServer,
    trust: &rustls::RootCertStore,
    cert: &(CertificateDer<'static>, PrivateKeyDer<'static>),
) -> io::Result<u16> {
    let mut tls = connect(
        &server.secure,
        trust.clone(),
        Some((cert.0.clone(), cert.1.clone_key())),
    )?;
    // With TLS 1.3 the server judges the client certificate after the client's side of the handshake is done,
    // so a refusal shows as an alert on the first read.
    get(&mut tls, "/livez")
}

#[cfg(unix)]
#[test]
fn rotated_client_ca_is_used_for_new_connections() {
    provider();
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_file = ca_dir.path().join("requestheader-client-ca.crt");
    let (ca_a, cert_a, key_a) = client_ca_and_cert("a");
    let (ca_b, cert_b, key_b) = client_ca_and_cert("b");
    std::fs::write(&ca_file, &ca_a).unwrap();
    let server = DemoServer::start(&[
        "--tls-reload-interval",
        RELOAD_INTERVAL,
        "--requestheader-client-ca-file",
        ca_file.to_str().unwrap(),
    ]);
    let trust = roots(&[&std::fs::read_to_string(server.ca_file()).unwrap()]);
    let a = (cert_a, key_a);
    let b = (cert_b, key_b);
    assert_eq!(get_with_client_cert(&server, &trust, &a).unwrap(), 200);
    assert!(
        get_with_client_cert(&server, &trust, &b).is_err(),
        "a client certificate from an untrusted CA was accepted"
    );
    let mut before = connect(
        &server.secure,
        trust.clone(),
        Some((a.0.clone(), a.1.clone_key())),
    )
    .unwrap();
    assert_eq!(get(&mut before, "/livez").unwrap(), 200);

    // Replace the CA file atomically (write, then rename over it).
    let tmp = ca_dir.path().join("ca.tmp");
    std::fs::write(&tmp, &ca_b).unwrap();
    std::fs::rename(&tmp, &ca_file).unwrap();
    let start = Instant::now();
    while get_with_client_cert(&server, &trust, &b).is_err() {
        assert!(
            start.elapsed() < DEADLINE,
            "the new client CA is not used {DEADLINE:?} after the swap"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("new client CA used {:?} after the swap", start.elapsed());
    // The old CA is no longer trusted for new connections; the connection verified before keeps working.
    assert!(get_with_client_cert(&server, &trust, &a).is_err());
    assert_eq!(get(&mut before, "/livez").unwrap(), 200);
    // Connections without a certificate are still allowed (requested, not required).
    let mut anonymous = connect(&server.secure, trust, None).unwrap();
    assert_eq!(get(&mut anonymous, "/livez").unwrap(), 200);
    assert_eq!(reloads(&server, "ok"), 1.0);
}
