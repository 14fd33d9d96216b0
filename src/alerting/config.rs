//! The alerting config file (TOML): which receivers get which alerts, how fast and with what secrets. It is read
//! and checked once, at start: a malformed file fails the start with the file, the line and the field at fault.
//! Secrets (webhook URLs, routing keys, tokens) come from files named by `*_file` keys and are kept in
//! [`Secret`], whose `Debug` and `Display` print `<redacted>`, so no log line or error can show them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::domain::anomaly::Severity;

use super::router::AlertKind;

/// A secret read from a file: printed as `<redacted>` by `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the request that needs it and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where a receiver delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiverKind {
    /// Alertmanager's `POST /api/v2/alerts` (`url` is Alertmanager's base URL).
    Alertmanager,
    /// A Slack incoming webhook (`text` + `blocks`).
    Slack,
    /// A Microsoft Teams Workflows webhook (Adaptive Card).
    Teams,
    /// A Discord webhook (`content` + `embeds`).
    Discord,
    /// PagerDuty Events API v2.
    Pagerduty,
    /// The generic JSON webhook (docs/alerting.md documents its schema).
    Webhook,
}

impl ReceiverKind {
    /// The name used in the config file and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiverKind::Alertmanager => "alertmanager",
            ReceiverKind::Slack => "slack",
            ReceiverKind::Teams => "teams",
            ReceiverKind::Discord => "discord",
            ReceiverKind::Pagerduty => "pagerduty",
            ReceiverKind::Webhook => "webhook",
        }
    }
}

/// PagerDuty's Events API v2 endpoint, used when a `pagerduty` receiver names no URL.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// One receiver, checked: everything a delivery task needs.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// Unique name: the `receiver` label of the delivery metrics and the name in logs.
    pub name: String,
    /// Where it delivers.
    pub kind: ReceiverKind,
    /// The URL posted to (Alertmanager: its base URL). A secret: a chat webhook's URL is its credential.
    pub url: Secret,
    /// PagerDuty's integration routing key.
    pub routing_key: Option<Secret>,
    /// Sent as `Authorization: Bearer ...` (Alertmanager behind a proxy, the generic webhook).
    pub bearer_token: Option<Secret>,
    /// Alert kinds it gets (default all).
    pub alerts: Vec<AlertKind>,
    /// Least severity it gets (default `info`: all).
    pub min_severity: Severity,
    /// Whether it is told when an alert resolves (default true).
    pub send_resolved: bool,
    /// Most requests per minute; further ones wait (and the queue absorbs, then drops the oldest).
    pub rate_limit_per_minute: u32,
    /// Timeout of one request.
    pub timeout: Duration,
    /// Events waiting for delivery before the oldest is dropped.
    pub queue_capacity: usize,
    /// Tries per delivery, the first included.
    pub max_attempts: u32,
    /// First wait before a retry; doubled on every retry.
    pub retry_backoff: Duration,
    /// Longest wait between retries (a `Retry-After` may ask for longer, up to [`MAX_RETRY_AFTER`]).
    pub retry_backoff_max: Duration,
    /// Alertmanager: how often active alerts are sent again, well before its `resolve_timeout` (default 5m).
    pub resend_interval: Duration,
}

impl ReceiverConfig {
    /// Whether an alert of `kind` and `severity` goes to this receiver.
    pub fn wants(&self, kind: AlertKind, severity: Severity) -> bool {
        // The weekly report is information a receiver asked for by name: `min_severity` does not filter it.
        self.alerts.contains(&kind)
            && (kind == AlertKind::WeeklyReport || severity >= self.min_severity)
    }
}

/// The longest `Retry-After` honoured; a receiver asking for longer is retried after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// The checked file.
#[derive(Debug, Clone)]
pub struct AlertingConfig {
    /// Where it was read from.
    pub path: PathBuf,
    /// The receivers, in file order.
    pub receivers: Vec<ReceiverConfig>,
}

/// A config file that cannot work: which file, which line, which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --alerting-config: {}{}: {field}: {reason}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigFileError {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line of the fault, when it has one (a file that cannot be read has none).
    pub line: Option<usize>,
    /// The field at fault, as a path such as `receiver[1].url_file`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

/// A duration written as text in the file, such as `"1m"` or `"500ms"`.
#[derive(Debug, Clone, Copy)]
struct Dur(Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        crate::flags::parse_duration(&text)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    receiver: Vec<Spanned<RawReceiver>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReceiver {
    name: Spanned<String>,
    kind: ReceiverKind,
    url: Option<Spanned<String>>,
    url_file: Option<Spanned<PathBuf>>,
    routing_key_file: Option<Spanned<PathBuf>>,
    bearer_token_file: Option<Spanned<PathBuf>>,
    alerts: Option<Vec<AlertKind>>,
    min_severity: Option<Severity>,
    send_resolved: Option<bool>,
    rate_limit_per_minute: Option<Spanned<u32>>,
    timeout: Option<Spanned<Dur>>,
    queue_capacity: Option<Spanned<usize>>,
    max_attempts: Option<Spanned<u32>>,
    retry_backoff: Option<Spanned<Dur>>,
    retry_backoff_max: Option<Spanned<Dur>>,
    resend_interval: Option<Spanned<Dur>>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Reads and checks the config file at `path`.
pub fn load(path: &Path) -> Result<AlertingConfig, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigFileError {
        file: path.to_path_buf(),
        line: None,
        field: "(file)".into(),
        reason: format!("cannot be read: {e}"),
    })?;
    parse(path, &text)
}

/// Checks config `text` as if read from `path` (relative `*_file` paths are taken from `path`'s directory).
pub fn parse(path: &Path, text: &str) -> Result<AlertingConfig, ConfigFileError> {
    let fail = |line: Option<usize>, field: String, reason: String| ConfigFileError {
        file: path.to_path_buf(),
        line,
        field,
        reason,
    };
    let de = toml::de::Deserializer::parse(text).map_err(|e| {
        fail(
            e.span().map(|s| line_of(text, s.start)),
            "(syntax)".into(),
            e.message().to_string(),
        )
    })?;
    let raw: RawFile = serde_path_to_error::deserialize(de).map_err(|e| {
        // `Spanned` wraps values in a private field that is no part of the file's own path.
        let field = e
            .path()
            .to_string()
            .replace(".$__serde_spanned_private_value", "");
        let inner = e.into_inner();
        let field = if field == "." || field.is_empty() {
            "(top level)".to_string()
        } else {
            field
        };
        fail(
            inner.span().map(|s| line_of(text, s.start)),
            field
                .replace(".receiver[", "receiver[")
                .trim_start_matches('.')
                .to_string(),
            inner.message().to_string(),
        )
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut receivers: Vec<ReceiverConfig> = Vec::new();
    for (index, spanned) in raw.receiver.into_iter().enumerate() {
        let receiver_line = line_of(text, spanned.span().start);
        let r = spanned.into_inner();
        let at = |span: std::ops::Range<usize>| Some(line_of(text, span.start));
        let field = |name: &str| format!("receiver[{index}].{name}");
        let name = r.name.get_ref().trim().to_string();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(fail(
                at(r.name.span()),
                field("name"),
                "must be non-empty letters, digits, '-', '_' or '.'".into(),
            ));
        }
        if receivers.iter().any(|other| other.name == name) {
            return Err(fail(
                at(r.name.span()),
                field("name"),
                format!("{name:?} is used by an earlier receiver"),
            ));
        }
        let read_secret = |file: &Spanned<PathBuf>, key: &str| -> Result<Secret, ConfigFileError> {
            let full = dir.join(file.get_ref());
            let value = std::fs::read_to_string(&full).map_err(|e| {
                fail(
                    at(file.span()),
                    field(key),
                    format!("{} cannot be read: {e}", full.display()),
                )
            })?;
            let value = value.trim();
            if value.is_empty() {
                return Err(fail(
                    at(file.span()),
                    field(key),
                    format!("{} is empty", full.display()),
                ));
            }
            Ok(Secret::new(value))
        };
        let url = match (&r.url, &r.url_file) {
            (Some(_), Some(file)) => {
                return Err(fail(
                    at(file.span()),
                    field("url_file"),
                    "give url or url_file, not both".into(),
                ));
            }
            (Some(url), None) => (Secret::new(url.get_ref().trim()), at(url.span()), "url"),
            (None, Some(file)) => (read_secret(file, "url_file")?, at(file.span()), "url_file"),
            (None, None) if r.kind == ReceiverKind::Pagerduty => (
                Secret::new(PAGERDUTY_EVENTS_URL),
                Some(receiver_line),
                "url",
            ),
            (None, None) => {
                return Err(fail(
                    Some(receiver_line),
                    field("url"),
                    format!("a {} receiver needs url or url_file", r.kind.as_str()),
                ));
            }
        };
        match reqwest::Url::parse(url.0.expose()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            // The URL itself is not echoed: from a url_file it is a secret.
            _ => {
                return Err(fail(
                    url.1,
                    field(url.2),
                    "is not an http(s) URL with a host".into(),
                ));
            }
        }
        let routing_key = match (&r.routing_key_file, r.kind) {
            (Some(file), ReceiverKind::Pagerduty) => Some(read_secret(file, "routing_key_file")?),
            (None, ReceiverKind::Pagerduty) => {
                return Err(fail(
                    Some(receiver_line),
                    field("routing_key_file"),
                    "a pagerduty receiver needs routing_key_file".into(),
                ));
            }
            (Some(file), kind) => {
                return Err(fail(
                    at(file.span()),
                    field("routing_key_file"),
                    format!("only applies to pagerduty, not {}", kind.as_str()),
                ));
            }
            (None, _) => None,
        };
        let bearer_token = match (&r.bearer_token_file, r.kind) {
            (Some(file), ReceiverKind::Alertmanager | ReceiverKind::Webhook) => {
                Some(read_secret(file, "bearer_token_file")?)
            }
            (Some(file), kind) => {
                return Err(fail(
                    at(file.span()),
                    field("bearer_token_file"),
                    format!(
                        "only applies to alertmanager and webhook, not {}",
                        kind.as_str()
                    ),
                ));
            }
            (None, _) => None,
        };
        if let (Some(resend), false) = (&r.resend_interval, r.kind == ReceiverKind::Alertmanager) {
            return Err(fail(
                at(resend.span()),
                field("resend_interval"),
                format!("only applies to alertmanager, not {}", r.kind.as_str()),
            ));
        }
        let dur = |value: &Option<Spanned<Dur>>,
                   key: &str,
                   default: Duration,
                   min: Duration,
                   max: Duration| {
            match value {
                None => Ok(default),
                Some(v) if (min..=max).contains(&v.get_ref().0) => Ok(v.get_ref().0),
                Some(v) => Err(fail(
                    at(v.span()),
                    field(key),
                    format!("must be between {min:?} and {max:?}"),
                )),
            }
        };
        let count = |value: Option<(usize, std::ops::Range<usize>)>,
                     key: &str,
                     default: usize,
                     min: usize,
                     max: usize| {
            match value {
                None => Ok(default),
                Some((v, _)) if (min..=max).contains(&v) => Ok(v),
                Some((_, span)) => Err(fail(
                    at(span),
                    field(key),
                    format!("must be between {min} and {max}"),
                )),
            }
        };
        let spanned_count =
            |v: &Option<Spanned<u32>>| v.as_ref().map(|v| (*v.get_ref() as usize, v.span()));
        let timeout = dur(
            &r.timeout,
            "timeout",
            Duration::from_secs(10),
            Duration::from_millis(100),
            Duration::from_secs(120),
        )?;
        let retry_backoff = dur(
            &r.retry_backoff,
            "retry_backoff",
            Duration::from_secs(1),
            Duration::from_millis(10),
            Duration::from_secs(600),
        )?;
        let retry_backoff_max = dur(
            &r.retry_backoff_max,
            "retry_backoff_max",
            Duration::from_secs(60),
            Duration::from_millis(10),
            Duration::from_secs(3600),
        )?;
        if retry_backoff_max < retry_backoff {
            let line = r
                .retry_backoff_max
                .as_ref()
                .map_or(Some(receiver_line), |v| at(v.span()));
            return Err(fail(
                line,
                field("retry_backoff_max"),
                "must be at least retry_backoff".into(),
            ));
        }
        let resend_interval = dur(
            &r.resend_interval,
            "resend_interval",
            Duration::from_secs(60),
            Duration::from_secs(1),
            Duration::from_secs(3600),
        )?;
        let alerts = r.alerts.unwrap_or_else(|| AlertKind::ALL.to_vec());
        if alerts.is_empty() {
            return Err(fail(
                Some(receiver_line),
                field("alerts"),
                "lists no alert kind: remove the receiver instead".into(),
            ));
        }
        receivers.push(ReceiverConfig {
            name,
            kind: r.kind,
            url: url.0,
            routing_key,
            bearer_token,
            alerts,
            min_severity: r.min_severity.unwrap_or(Severity::Info),
            send_resolved: r.send_resolved.unwrap_or(true),
            rate_limit_per_minute: count(
                spanned_count(&r.rate_limit_per_minute),
                "rate_limit_per_minute",
                60,
                1,
                100_000,
            )? as u32,
            timeout,
            queue_capacity: count(
                r.queue_capacity.as_ref().map(|v| (*v.get_ref(), v.span())),
                "queue_capacity",
                256,
                1,
                100_000,
            )?,
            max_attempts: count(spanned_count(&r.max_attempts), "max_attempts", 5, 1, 100)? as u32,
            retry_backoff,
            retry_backoff_max,
            resend_interval,
        });
    }
    Ok(AlertingConfig {
        path: path.to_path_buf(),
        receivers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<AlertingConfig, ConfigFileError> {
        parse(Path::new("/etc/alerting.toml"), text)
    }

    fn error(text: &str) -> (Option<usize>, String, String) {
        let e = check(text).expect_err("must be rejected");
        assert!(
            e.to_string()
                .starts_with("invalid --alerting-config: /etc/alerting.toml"),
            "{e}"
        );
        (e.line, e.field, e.reason)
    }

    #[test]
    fn a_full_file_converts_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pd-key"), "R0UTINGKEY\n").unwrap();
        std::fs::write(
            dir.path().join("slack-url"),
            "https://hooks.slack.example/services/T/B/XYZ\n",
        )
        .unwrap();
        let text = r#"
[[receiver]]
name = "am"
kind = "alertmanager"
url = "http://127.0.0.1:9093"
resend_interval = "30s"

[[receiver]]
name = "pd"
kind = "pagerduty"
routing_key_file = "pd-key"
min_severity = "critical"
alerts = ["anomaly"]

[[receiver]]
name = "chat"
kind = "slack"
url_file = "slack-url"
rate_limit_per_minute = 10
"#;
        let path = dir.path().join("alerting.toml");
        std::fs::write(&path, text).unwrap();
        let config = load(&path).unwrap();
        let [am, pd, chat] = config.receivers.as_slice() else {
            panic!("three receivers")
        };
        assert_eq!(am.resend_interval, Duration::from_secs(30));
        assert_eq!(am.timeout, Duration::from_secs(10));
        assert_eq!(am.alerts, AlertKind::ALL.to_vec());
        assert_eq!(pd.url.expose(), PAGERDUTY_EVENTS_URL);
        assert_eq!(pd.routing_key.as_ref().unwrap().expose(), "R0UTINGKEY");
        assert!(pd.wants(AlertKind::Anomaly, Severity::Critical));
        assert!(!pd.wants(AlertKind::Anomaly, Severity::Warning));
        assert!(!pd.wants(AlertKind::PredictiveScaleUp, Severity::Critical));
        assert_eq!(
            chat.url.expose(),
            "https://hooks.slack.example/services/T/B/XYZ"
        );
        assert_eq!(chat.rate_limit_per_minute, 10);
        // Secrets never reach Debug output.
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("R0UTINGKEY") && !debug.contains("XYZ"),
            "{debug}"
        );
        assert!(debug.contains("<redacted>"));
    }

    #[test]
    fn malformed_files_name_line_and_field() {
        let head = "[[receiver]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"http://x\"\n\n[[receiver]]\nname = \"b\"\n";
        // An unknown kind: line 8, field kind.
        let (line, field, reason) = error(&format!("{head}kind = \"slak\"\nurl = \"http://x\"\n"));
        assert_eq!(
            (line, field.as_str()),
            (Some(8), "receiver[1].kind"),
            "{reason}"
        );
        assert!(reason.contains("slak"), "{reason}");
        // A wrong type.
        let (line, field, _) = error(&format!(
            "{head}kind = \"slack\"\nurl = \"http://x\"\nqueue_capacity = \"many\"\n"
        ));
        assert_eq!(
            (line, field.as_str()),
            (Some(10), "receiver[1].queue_capacity")
        );
        // An unknown key.
        let (line, field, reason) = error(&format!(
            "{head}kind = \"slack\"\nurl = \"http://x\"\nrate_limit = 3\n"
        ));
        assert_eq!(line, Some(10), "{field} {reason}");
        assert!(reason.contains("rate_limit"), "{reason}");
        // A bad duration.
        let (line, field, reason) = error(&format!(
            "{head}kind = \"slack\"\nurl = \"http://x\"\ntimeout = \"5 parsecs\"\n"
        ));
        assert_eq!(
            (line, field.as_str()),
            (Some(10), "receiver[1].timeout"),
            "{reason}"
        );
        // A value out of range.
        let (line, field, _) = error(&format!(
            "{head}kind = \"slack\"\nurl = \"http://x\"\nmax_attempts = 0\n"
        ));
        assert_eq!(
            (line, field.as_str()),
            (Some(10), "receiver[1].max_attempts")
        );
        // A missing secret file.
        let (line, field, reason) = error(&format!(
            "{head}kind = \"pagerduty\"\nrouting_key_file = \"/nonexistent/key\"\n"
        ));
        assert_eq!(
            (line, field.as_str()),
            (Some(9), "receiver[1].routing_key_file"),
            "{reason}"
        );
        // A missing URL.
        let (line, field, _) = error(&format!("{head}kind = \"discord\"\n"));
        assert_eq!((line, field.as_str()), (Some(6), "receiver[1].url"));
        // A bad URL is named but not echoed.
        let (line, field, reason) = error(&format!(
            "{head}kind = \"teams\"\nurl = \"hooks/secret-token\"\n"
        ));
        assert_eq!((line, field.as_str()), (Some(9), "receiver[1].url"));
        assert!(!reason.contains("secret-token"), "{reason}");
        // Duplicate names.
        let duplicate =
            head.replace("name = \"b\"", "name = \"a\"") + "kind = \"slack\"\nurl = \"http://x\"\n";
        let (line, field, _) = error(&duplicate);
        assert_eq!((line, field.as_str()), (Some(7), "receiver[1].name"));
        // Broken TOML.
        let (line, field, _) = error("[[receiver]\nname = 1\n");
        assert_eq!((line, field.as_str()), (Some(1), "(syntax)"));
    }
}
