//! Certificate rotation: the secure port's TLS configuration is rebuilt whenever the serving certificate, its key
//! or the client CA file changes on disk, and new connections get the new one while open connections keep theirs.
//!
//! The files are polled (read whole and compared byte for byte) rather than watched with inotify: kubelet and
//! cert-manager rotate a mounted Secret by re-pointing the `..data` symlink of the volume, which a watch on the
//! file itself does not see, and reading three small files every few seconds costs nothing. A change that does
//! not load (a key that does not match the certificate, a half-written file, a missing file) is counted and
//! logged once, and the configuration already loaded keeps being served until the files change again.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

use super::{CertError, server_config_from_pem};
use crate::telemetry::{OutcomeLabels, Telemetry};

/// The files the secure port's TLS configuration is built from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM serving certificate (chain).
    pub cert: PathBuf,
    /// PEM private key of the serving certificate.
    pub key: PathBuf,
    /// PEM CA that client certificates are verified against, if any.
    pub client_ca: Option<PathBuf>,
}

/// What one look at the files found.
#[derive(Debug)]
pub enum Reload {
    /// The files hold what was seen last time (loaded, or already rejected and counted).
    Unchanged,
    /// The files changed and the new configuration is now handed to new connections.
    Reloaded,
    /// The files changed but do not load; the previous configuration is still served.
    Rejected(CertError),
}

/// The contents of the files at one look; a read error stands for the file (compared by its kind).
struct Contents {
    cert: io::Result<Vec<u8>>,
    key: io::Result<Vec<u8>>,
    client_ca: Option<io::Result<Vec<u8>>>,
}

impl Contents {
    fn read(files: &TlsFiles) -> Self {
        Contents {
            cert: std::fs::read(&files.cert),
            key: std::fs::read(&files.key),
            client_ca: files.client_ca.as_deref().map(std::fs::read),
        }
    }

    fn same_as(&self, other: &Contents) -> bool {
        fn same(a: &io::Result<Vec<u8>>, b: &io::Result<Vec<u8>>) -> bool {
            match (a, b) {
                (Ok(a), Ok(b)) => a == b,
                (Err(a), Err(b)) => a.kind() == b.kind(),
                _ => false,
            }
        }
        same(&self.cert, &other.cert)
            && same(&self.key, &other.key)
            && match (&self.client_ca, &other.client_ca) {
                (Some(a), Some(b)) => same(a, b),
                (None, None) => true,
                _ => false,
            }
    }

    fn build(
        &self,
        files: &TlsFiles,
        request: bool,
    ) -> Result<Arc<rustls::ServerConfig>, CertError> {
        fn bytes<'a>(path: &Path, read: &'a io::Result<Vec<u8>>) -> Result<&'a [u8], CertError> {
            read.as_deref().map_err(|e| CertError::Io {
                action: "reading",
                path: path.to_path_buf(),
                source: io::Error::new(e.kind(), e.to_string()),
            })
        }
        if request {
            return super::server_config_requesting_client_certs(
                (&files.cert, bytes(&files.cert, &self.cert)?),
                (&files.key, bytes(&files.key, &self.key)?),
            );
        }
        let client_ca = match (&files.client_ca, &self.client_ca) {
            (Some(path), Some(read)) => Some((path.as_path(), bytes(path, read)?)),
            _ => None,
        };
        server_config_from_pem(
            (&files.cert, bytes(&files.cert, &self.cert)?),
            (&files.key, bytes(&files.key, &self.key)?),
            client_ca,
        )
    }
}

/// Holds the secure port's current TLS configuration and replaces it, as a whole, when its files change; the
/// accept loop asks for [`TlsReloader::current`] once per connection.
pub struct TlsReloader {
    files: TlsFiles,
    /// Client certificates requested and judged by the delegated authenticator, not at the handshake.
    request_client_certs: bool,
    // std locks: held only to clone or swap an `Arc`, never across `.await`.
    current: RwLock<Arc<rustls::ServerConfig>>,
    seen: Mutex<Contents>,
    reloads: Family<OutcomeLabels, Counter>,
    failing: Gauge,
}

impl TlsReloader {
    /// Loads the files; an error here is a start-up error.
    pub fn load(files: TlsFiles) -> Result<Self, CertError> {
        Self::load_with(files, false)
    }

    /// [`TlsReloader::load`] for delegated authentication: every handshake requests a client certificate (not
    /// required) and checks only that the client holds its key; `files.client_ca` is not used, the chain being
    /// judged per request against the cluster's CAs ([`crate::auth`]).
    pub fn load_requesting_client_certs(files: TlsFiles) -> Result<Self, CertError> {
        Self::load_with(
            TlsFiles {
                client_ca: None,
                ..files
            },
            true,
        )
    }

    fn load_with(files: TlsFiles, request_client_certs: bool) -> Result<Self, CertError> {
        let contents = Contents::read(&files);
        let config = contents.build(&files, request_client_certs)?;
        let reloads = Family::<OutcomeLabels, Counter>::default();
        for outcome in ["ok", "error"] {
            // Both series exist from the start, so an alert on errors sees 0 rather than nothing.
            let _ = reloads.get_or_create(&OutcomeLabels { outcome });
        }
        Ok(TlsReloader {
            files,
            request_client_certs,
            current: RwLock::new(config),
            seen: Mutex::new(contents),
            reloads,
            failing: Gauge::default(),
        })
    }

    /// Registers `smart_autoscaler_tls_reloads_total{outcome}` and `smart_autoscaler_tls_reload_failing`.
    pub fn register(&self, telemetry: &Telemetry) {
        telemetry.register(
            "tls_reloads",
            "Changes to the TLS certificate, key or client CA files, by outcome (error: the previous \
             configuration is still served)",
            self.reloads.clone(),
        );
        telemetry.register(
            "tls_reload_failing",
            "1 while the TLS files on disk changed but do not load and the previous configuration is served",
            self.failing.clone(),
        );
    }

    /// The configuration for the next handshake.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Reads the files once and, if they changed since the last look, rebuilds the configuration (the serving
    /// certificate and the client-CA verifier together). Counts and logs each change once. Blocking file IO.
    pub fn check(&self) -> Reload {
        let contents = Contents::read(&self.files);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if contents.same_as(&seen) {
            return Reload::Unchanged;
        }
        let built = contents.build(&self.files, self.request_client_certs);
        *seen = contents;
        drop(seen);
        match built {
            Ok(config) => {
                *self
                    .current
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
                self.count("ok");
                self.failing.set(0);
                tracing::info!(
                    cert = %self.files.cert.display(),
                    client_ca = ?self.files.client_ca,
                    "reloaded the TLS configuration; new connections use it"
                );
                Reload::Reloaded
            }
            Err(error) => {
                self.count("error");
                self.failing.set(1);
                tracing::warn!(
                    %error,
                    "TLS files changed but do not load; still serving the previous certificate"
                );
                Reload::Rejected(error)
            }
        }
    }

    fn count(&self, outcome: &'static str) {
        self.reloads.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Checks the files every `interval` (real time) until `cancel`.
    pub async fn run(self: Arc<Self>, interval: Duration, cancel: CancellationToken) {
        tracing::info!(
            interval = ?interval,
            cert = %self.files.cert.display(),
            "watching the TLS files for changes"
        );
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate, and the files were just loaded.
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = cancel.cancelled() => return,
            }
            let reloader = self.clone();
            if let Err(error) = tokio::task::spawn_blocking(move || reloader.check()).await {
                tracing::warn!(%error, "TLS reload check did not finish");
            }
        }
    }
}

impl crate::http::server::TlsConfigSource for Arc<TlsReloader> {
    fn current(&self) -> Arc<rustls::ServerConfig> {
        TlsReloader::current(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{CA_CERT, CertBundle, TLS_CERT, TLS_KEY, generate};

    fn bundle() -> CertBundle {
        generate(&["localhost".to_string()], (2026, 11, 23), 30).unwrap()
    }

    /// Writes through a temporary file and a rename, as an atomic writer does.
    fn replace(path: &Path, contents: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, contents).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    fn setup() -> (tempfile::TempDir, TlsFiles) {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        bundle().write(dir.path()).unwrap();
        let files = TlsFiles {
            cert: dir.path().join(TLS_CERT),
            key: dir.path().join(TLS_KEY),
            client_ca: Some(dir.path().join(CA_CERT)),
        };
        (dir, files)
    }

    fn count(reloader: &TlsReloader, outcome: &'static str) -> u64 {
        reloader
            .reloads
            .get_or_create(&OutcomeLabels { outcome })
            .get()
    }

    #[test]
    fn a_new_pair_replaces_the_config_and_a_bad_one_keeps_it() {
        let (_dir, files) = setup();
        let reloader = TlsReloader::load(files.clone()).unwrap();
        let telemetry = Telemetry::new();
        reloader.register(&telemetry);
        let first = reloader.current();
        assert!(matches!(reloader.check(), Reload::Unchanged));
        assert!(Arc::ptr_eq(&first, &reloader.current()));

        let next = bundle();
        replace(&files.cert, &next.cert_pem);
        replace(&files.key, &next.key_pem);
        assert!(matches!(reloader.check(), Reload::Reloaded));
        let second = reloader.current();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(count(&reloader, "ok"), 1);

        // A key that belongs to another certificate is refused, counted once, and the pair before it kept.
        replace(&files.key, &bundle().key_pem);
        match reloader.check() {
            Reload::Rejected(error) => assert!(error.to_string().contains("key"), "{error}"),
            other => panic!("expected a rejection, got {other:?}"),
        }
        assert!(Arc::ptr_eq(&second, &reloader.current()));
        assert!(matches!(reloader.check(), Reload::Unchanged));
        assert_eq!(count(&reloader, "error"), 1);
        assert_eq!(reloader.failing.get(), 1);

        // A half-written certificate is refused too.
        replace(&files.key, &next.key_pem);
        replace(&files.cert, &next.cert_pem[..next.cert_pem.len() / 2]);
        assert!(matches!(reloader.check(), Reload::Rejected(_)));
        assert!(Arc::ptr_eq(&second, &reloader.current()));

        // A missing file likewise.
        std::fs::remove_file(&files.cert).unwrap();
        match reloader.check() {
            Reload::Rejected(error) => {
                assert!(error.to_string().contains(TLS_CERT), "{error}")
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
        assert_eq!(count(&reloader, "error"), 3);

        let third = bundle();
        replace(&files.cert, &third.cert_pem);
        replace(&files.key, &third.key_pem);
        assert!(matches!(reloader.check(), Reload::Reloaded));
        assert!(!Arc::ptr_eq(&second, &reloader.current()));
        assert_eq!(count(&reloader, "ok"), 2);
        assert_eq!(reloader.failing.get(), 0);
        let exposition = telemetry.encode();
        assert!(
            exposition.contains("smart_autoscaler_tls_reloads_total{outcome=\"error\"} 3"),
            "{exposition}"
        );
    }

    #[test]
    fn a_new_client_ca_alone_rebuilds_the_config() {
        let (_dir, files) = setup();
        let reloader = TlsReloader::load(files.clone()).unwrap();
        let first = reloader.current();
        let client_ca = files.client_ca.as_deref().unwrap();
        replace(client_ca, &bundle().ca_cert_pem);
        assert!(matches!(reloader.check(), Reload::Reloaded));
        assert!(!Arc::ptr_eq(&first, &reloader.current()));
        replace(client_ca, "not a certificate\n");
        assert!(matches!(reloader.check(), Reload::Rejected(_)));
    }

    #[test]
    fn a_bad_pair_at_start_is_an_error() {
        let (_dir, files) = setup();
        replace(&files.key, &bundle().key_pem);
        assert!(TlsReloader::load(files).is_err());
    }

    #[tokio::test]
    async fn the_poll_loop_picks_up_a_change_and_stops_on_cancel() {
        let (_dir, files) = setup();
        let reloader = Arc::new(TlsReloader::load(files.clone()).unwrap());
        let first = reloader.current();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(
            reloader
                .clone()
                .run(Duration::from_millis(20), cancel.clone()),
        );
        let next = bundle();
        replace(&files.cert, &next.cert_pem);
        replace(&files.key, &next.key_pem);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while Arc::ptr_eq(&first, &reloader.current()) {
            assert!(tokio::time::Instant::now() < deadline, "no reload in 20s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the loop stops on cancel")
            .unwrap();
    }
}
