//! Forwarding of external metrics this server does not own to another external-metrics server
//! (`--delegate-external-metrics-url`: KEDA's metrics server, prometheus-adapter, Datadog's cluster agent), so that
//! the cluster's one `v1beta1.external.metrics.k8s.io` APIService can point here while the other keeps serving its
//! HPAs.
//!
//! Discovery answers the union of both resource lists (ours first; ours win a name clash, logged once per name),
//! and still answers with ours alone when the delegate does not. A read of a metric we do not own is sent to the
//! delegate with the caller's identity headers (`X-Remote-User`, `X-Remote-Group`, `X-Remote-Extra-*`) and the
//! query string, and its answer (status, body, content type) is passed through; a delegate that cannot be reached
//! is a 503 for its metrics only.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::ApiError;
use crate::flags::parse_duration;

/// Flags of the delegate.
#[derive(Debug, Clone, clap::Args)]
pub struct DelegateArgs {
    /// Base URL of another external-metrics server whose metrics are forwarded (e.g.
    /// `https://keda-operator-metrics-apiserver.keda.svc`): discovery lists both servers' metrics, and a read of a
    /// metric this server does not own is sent there with the caller's identity headers; its answer is passed
    /// through. Our own metrics win a name clash. See docs/custom-metrics.md.
    #[arg(long, env = "SMART_AUTOSCALER_DELEGATE_EXTERNAL_METRICS_URL")]
    pub delegate_external_metrics_url: Option<String>,

    /// PEM CA bundle that signs the delegate's serving certificate; when set, only these roots are trusted.
    #[arg(long, env = "SMART_AUTOSCALER_DELEGATE_CA_FILE")]
    pub delegate_ca_file: Option<PathBuf>,

    /// PEM client certificate presented to the delegate (with --delegate-client-key-file), e.g. a front-proxy
    /// client certificate the delegate trusts to carry the caller's identity headers.
    #[arg(long, env = "SMART_AUTOSCALER_DELEGATE_CLIENT_CERT_FILE")]
    pub delegate_client_cert_file: Option<PathBuf>,

    /// PEM private key of --delegate-client-cert-file.
    #[arg(long, env = "SMART_AUTOSCALER_DELEGATE_CLIENT_KEY_FILE")]
    pub delegate_client_key_file: Option<PathBuf>,

    /// File with a bearer token sent to the delegate (re-read on every request, for rotated tokens).
    #[arg(long, env = "SMART_AUTOSCALER_DELEGATE_TOKEN_FILE")]
    pub delegate_token_file: Option<PathBuf>,

    /// Time limit of one forwarded request, e.g. `5s` (the aggregator gives discovery 5 s in all).
    #[arg(long, env = "SMART_AUTOSCALER_DELEGATE_TIMEOUT", default_value = "4s", value_parser = parse_duration)]
    pub delegate_timeout: Duration,
}

/// A delegate flag that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --{flag}: {reason}")]
pub struct DelegateSettingsError {
    /// The flag, without dashes.
    pub flag: &'static str,
    /// Why.
    pub reason: String,
}

/// The delegate: where to forward and how.
pub struct Delegate {
    client: reqwest::Client,
    base: String,
    token_file: Option<PathBuf>,
    clashes: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Delegate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delegate")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

fn bad(flag: &'static str, reason: impl Into<String>) -> DelegateSettingsError {
    DelegateSettingsError {
        flag,
        reason: reason.into(),
    }
}

impl Delegate {
    /// Builds the delegate of the flags (`None` without `--delegate-external-metrics-url`), reading the CA and
    /// client certificate now.
    pub fn from_args(args: &DelegateArgs) -> Result<Option<Delegate>, DelegateSettingsError> {
        const URL: &str = "delegate-external-metrics-url";
        let Some(url) = &args.delegate_external_metrics_url else {
            for (flag, set) in [
                ("delegate-ca-file", args.delegate_ca_file.is_some()),
                (
                    "delegate-client-cert-file",
                    args.delegate_client_cert_file.is_some(),
                ),
                (
                    "delegate-client-key-file",
                    args.delegate_client_key_file.is_some(),
                ),
                ("delegate-token-file", args.delegate_token_file.is_some()),
            ] {
                if set {
                    return Err(bad(flag, format!("needs --{URL}")));
                }
            }
            return Ok(None);
        };
        let lower = url.to_ascii_lowercase();
        if !(lower.starts_with("https://") || lower.starts_with("http://")) {
            return Err(bad(
                URL,
                format!("'{url}' must start with https:// (or http://)"),
            ));
        }
        if args.delegate_timeout.is_zero() {
            return Err(bad("delegate-timeout", "must be greater than zero"));
        }
        let mut builder = reqwest::Client::builder()
            .timeout(args.delegate_timeout)
            .connect_timeout(args.delegate_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if let Some(path) = &args.delegate_ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| bad("delegate-ca-file", format!("{}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| bad("delegate-ca-file", format!("{}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(bad(
                    "delegate-ca-file",
                    format!("{} holds no PEM certificate", path.display()),
                ));
            }
            builder = builder.tls_certs_only(certs);
        }
        match (
            &args.delegate_client_cert_file,
            &args.delegate_client_key_file,
        ) {
            (Some(cert), Some(key)) => {
                let mut pem = std::fs::read(cert).map_err(|e| {
                    bad(
                        "delegate-client-cert-file",
                        format!("{}: {e}", cert.display()),
                    )
                })?;
                pem.push(b'\n');
                pem.extend(std::fs::read(key).map_err(|e| {
                    bad(
                        "delegate-client-key-file",
                        format!("{}: {e}", key.display()),
                    )
                })?);
                let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                    bad(
                        "delegate-client-cert-file",
                        format!("{}: {e}", cert.display()),
                    )
                })?;
                builder = builder.identity(identity);
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(bad(
                    "delegate-client-cert-file",
                    "needs --delegate-client-key-file",
                ));
            }
            (None, Some(_)) => {
                return Err(bad(
                    "delegate-client-key-file",
                    "needs --delegate-client-cert-file",
                ));
            }
        }
        if let Some(path) = &args.delegate_token_file
            && !path.is_file()
        {
            return Err(bad(
                "delegate-token-file",
                format!("{} is not a readable file", path.display()),
            ));
        }
        let client = builder
            .build()
            .map_err(|e| bad(URL, format!("building the HTTP client: {e}")))?;
        Ok(Some(Delegate {
            client,
            base: url.trim_end_matches('/').to_string(),
            token_file: args.delegate_token_file.clone(),
            clashes: Mutex::default(),
        }))
    }

    /// The delegate's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    async fn get(
        &self,
        path_and_query: &str,
        headers: &HeaderMap,
    ) -> Result<reqwest::Response, String> {
        let mut request = self
            .client
            .get(format!("{}{path_and_query}", self.base))
            .header(header::ACCEPT, "application/json");
        for (name, value) in headers {
            let n = name.as_str();
            if n == "x-remote-user" || n == "x-remote-group" || n.starts_with("x-remote-extra-") {
                request = request.header(name, value);
            }
        }
        if let Some(path) = &self.token_file {
            let token = tokio::fs::read_to_string(path).await.map_err(|e| {
                format!("cannot read --delegate-token-file {}: {e}", path.display())
            })?;
            request = request.bearer_auth(token.trim());
        }
        request.send().await.map_err(|e| {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        })
    }

    /// The delegate's `APIResourceList` resources whose names are not in `ours` (each clash logged once).
    pub async fn resources(
        &self,
        ours: &[&str],
        headers: &HeaderMap,
    ) -> Result<Vec<Value>, String> {
        let response = self
            .get("/apis/external.metrics.k8s.io/v1beta1", headers)
            .await?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("discovery answered HTTP {status}"));
        }
        let list: Value = response
            .json()
            .await
            .map_err(|e| format!("discovery answer is not JSON: {e}"))?;
        let resources = list["resources"]
            .as_array()
            .ok_or("discovery answer has no resources list")?;
        let mut out = Vec::with_capacity(resources.len());
        for r in resources {
            let Some(name) = r["name"].as_str() else {
                continue;
            };
            if ours.contains(&name) {
                let first = self
                    .clashes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.to_string());
                if first {
                    tracing::warn!(
                        metric = name,
                        delegate = %self.base,
                        "the delegate also serves this external metric; ours is served, its is not"
                    );
                }
                continue;
            }
            out.push(r.clone());
        }
        Ok(out)
    }

    /// Forwards a metric read and passes the answer through; an unreachable delegate is a 503 naming it.
    pub async fn forward(&self, path_and_query: &str, headers: &HeaderMap) -> Response {
        let response = match self.get(path_and_query, headers).await {
            Ok(r) => r,
            Err(e) => {
                return ApiError::unavailable(format!(
                    "the delegate external-metrics server {} did not answer: {e}",
                    self.base
                ))
                .into_response();
            }
        };
        let status =
            StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_string();
        match response.bytes().await {
            Ok(body) => (
                status,
                [(header::CONTENT_TYPE, content_type)],
                Bytes::from(body.to_vec()),
            )
                .into_response(),
            Err(e) => ApiError::unavailable(format!(
                "the delegate external-metrics server {} broke off its answer: {e}",
                self.base
            ))
            .into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: Option<&str>) -> DelegateArgs {
        DelegateArgs {
            delegate_external_metrics_url: url.map(String::from),
            delegate_ca_file: None,
            delegate_client_cert_file: None,
            delegate_client_key_file: None,
            delegate_token_file: None,
            delegate_timeout: Duration::from_secs(4),
        }
    }

    #[test]
    fn flags_that_cannot_work_name_the_flag() {
        assert!(Delegate::from_args(&args(None)).unwrap().is_none());
        let mut a = args(None);
        a.delegate_token_file = Some("/tmp/token".into());
        let e = Delegate::from_args(&a).unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid --delegate-token-file: needs --delegate-external-metrics-url"
        );
        let e = Delegate::from_args(&args(Some("keda:443"))).unwrap_err();
        assert_eq!(e.flag, "delegate-external-metrics-url");
        let mut a = args(Some("https://keda.keda.svc/"));
        a.delegate_client_cert_file = Some("/tmp/c.pem".into());
        let e = Delegate::from_args(&a).unwrap_err();
        assert_eq!(e.flag, "delegate-client-cert-file");
        assert!(e.reason.contains("--delegate-client-key-file"), "{e}");
        let mut a = args(Some("https://keda.keda.svc/"));
        a.delegate_ca_file = Some("/nonexistent/ca.pem".into());
        let e = Delegate::from_args(&a).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        let d = Delegate::from_args(&args(Some("https://keda.keda.svc/")))
            .unwrap()
            .unwrap();
        assert_eq!(d.url(), "https://keda.keda.svc");
    }
}
