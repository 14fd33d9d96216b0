//! Delivery: one task per receiver, fed by a bounded queue that drops its oldest event when full (counted), so
//! neither the tick nor another receiver ever waits for a slow or broken one. A task sends at most its
//! receiver's rate, times out every request, and retries failures with exponential backoff, honouring
//! `429 Too Many Requests` + `Retry-After`. Alertmanager's task keeps the active alerts and sends them all again
//! every `resend_interval`, so Alertmanager never resolves a live alert on its own (`resolve_timeout`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::telemetry::Telemetry;

use super::config::{MAX_RETRY_AFTER, ReceiverConfig, ReceiverKind};
use super::payload;
use super::router::{Event, Status, Subject};

/// Labels of the per-receiver metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReceiverLabels {
    /// The receiver's name in the config file.
    pub receiver: String,
}

/// Labels of the delivery outcome counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// The receiver's name.
    pub receiver: String,
    /// `sent`, `rejected` (a 4xx other than 408/429: retrying cannot help) or `failed` (attempts exhausted).
    pub outcome: &'static str,
}

/// Labels of the attempt counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    /// The receiver's name.
    pub receiver: String,
    /// `ok`, `rate_limited` (429), `client_error` (4xx), `server_error` (5xx), `timeout`, `connect` or `error`.
    pub result: &'static str,
}

/// Labels of the router's event counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// The alert's type (an anomaly type or `predictive_scale_up`).
    pub r#type: &'static str,
    /// `firing` or `resolved`.
    pub status: &'static str,
}

/// The alerting metrics, registered in the server's registry.
#[derive(Clone, Default)]
pub struct AlertingMetrics {
    /// Deliveries by receiver and outcome.
    pub deliveries: Family<DeliveryLabels, Counter>,
    /// HTTP attempts by receiver and result.
    pub attempts: Family<AttemptLabels, Counter>,
    /// Events dropped from a full queue, by receiver.
    pub dropped: Family<ReceiverLabels, Counter>,
    /// Events waiting, by receiver.
    pub queued: Family<ReceiverLabels, Gauge>,
    /// Alert events the router produced.
    pub events: Family<EventLabels, Counter>,
}

impl AlertingMetrics {
    /// Creates the families and registers them under `smart_autoscaler_alert_*`.
    pub fn register(telemetry: &Telemetry) -> Self {
        let m = Self::default();
        telemetry.register(
            "alert_deliveries",
            "Alert deliveries, by receiver and outcome",
            m.deliveries.clone(),
        );
        telemetry.register(
            "alert_delivery_attempts",
            "Alert delivery HTTP attempts, by receiver and result",
            m.attempts.clone(),
        );
        telemetry.register(
            "alert_queue_dropped",
            "Alert events dropped (oldest first) from a full receiver queue",
            m.dropped.clone(),
        );
        telemetry.register(
            "alert_queue_depth",
            "Alert events waiting for delivery, by receiver",
            m.queued.clone(),
        );
        telemetry.register(
            "alert_events",
            "Alert events (firing, resolved) produced by the router, by type",
            m.events.clone(),
        );
        m
    }

    fn init_receiver(&self, name: &str) {
        // Zero-valued series from the start, so rules can use rate() and absent() behaves.
        for outcome in ["sent", "rejected", "failed"] {
            let _ = self.deliveries.get_or_create(&DeliveryLabels {
                receiver: name.into(),
                outcome,
            });
        }
        let _ = self.dropped.get_or_create(&ReceiverLabels {
            receiver: name.into(),
        });
        let _ = self.queued.get_or_create(&ReceiverLabels {
            receiver: name.into(),
        });
    }
}

/// A bounded queue that drops the oldest event when full.
pub struct Queue {
    events: Mutex<VecDeque<Event>>,
    notify: Notify,
    capacity: usize,
    dropped: Counter,
    depth: Gauge,
}

impl Queue {
    fn new(capacity: usize, metrics: &AlertingMetrics, receiver: &str) -> Self {
        let labels = ReceiverLabels {
            receiver: receiver.into(),
        };
        Queue {
            events: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            notify: Notify::new(),
            capacity,
            dropped: metrics.dropped.get_or_create(&labels).clone(),
            depth: metrics.queued.get_or_create(&labels).clone(),
        }
    }

    /// Adds an event without waiting; a full queue loses its oldest.
    pub fn push(&self, event: Event) {
        {
            let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
            while events.len() >= self.capacity {
                events.pop_front();
                self.dropped.inc();
            }
            events.push_back(event);
            self.depth.set(events.len() as i64);
        }
        self.notify.notify_one();
    }

    fn pop(&self) -> Option<Event> {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let event = events.pop_front();
        self.depth.set(events.len() as i64);
        event
    }

    fn drain(&self) -> Vec<Event> {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let all = events.drain(..).collect();
        self.depth.set(0);
        all
    }
}

/// A token bucket: `per_minute` requests a minute, bursts of up to a tenth of that (at least one).
struct RateLimit {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    fn new(per_minute: u32) -> Self {
        let capacity = (f64::from(per_minute) / 10.0).max(1.0);
        RateLimit {
            capacity,
            per_second: f64::from(per_minute) / 60.0,
            tokens: capacity,
            at: Instant::now(),
        }
    }

    /// How long to wait before the next request may go (zero when it may go now); takes its token.
    fn reserve(&mut self) -> Duration {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.per_second)
            .min(self.capacity);
        self.at = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_second)
        }
    }
}

/// What became of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted (2xx).
    Sent,
    /// Refused with a 4xx that retrying cannot fix.
    Rejected,
    /// Every attempt failed.
    Failed,
    /// Shutting down.
    Cancelled,
}

impl Outcome {
    fn label(self) -> Option<&'static str> {
        match self {
            Outcome::Sent => Some("sent"),
            Outcome::Rejected => Some("rejected"),
            Outcome::Failed => Some("failed"),
            Outcome::Cancelled => None,
        }
    }
}

/// Parses `Retry-After`: delay seconds or an HTTP date.
pub fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    let now = jiff::Timestamp::try_from(now).ok()?;
    let millis = at.as_millisecond() - now.as_millisecond();
    Some(Duration::from_millis(millis.max(0) as u64))
}

/// One receiver's task: its settings, queue, client and counters.
pub struct Worker {
    config: ReceiverConfig,
    queue: Arc<Queue>,
    client: reqwest::Client,
    metrics: AlertingMetrics,
    clock: Arc<dyn Clock>,
    limit: RateLimit,
}

impl Worker {
    /// A worker for `config` and the queue that feeds it.
    pub fn new(
        config: ReceiverConfig,
        client: reqwest::Client,
        metrics: &AlertingMetrics,
        clock: Arc<dyn Clock>,
    ) -> (Self, Arc<Queue>) {
        metrics.init_receiver(&config.name);
        let queue = Arc::new(Queue::new(config.queue_capacity, metrics, &config.name));
        let limit = RateLimit::new(config.rate_limit_per_minute);
        (
            Worker {
                config,
                queue: queue.clone(),
                client,
                metrics: metrics.clone(),
                clock,
                limit,
            },
            queue,
        )
    }

    /// Delivers until `cancel`.
    pub async fn run(mut self, cancel: CancellationToken) {
        if self.config.kind == ReceiverKind::Alertmanager {
            self.run_alertmanager(cancel).await;
            return;
        }
        loop {
            while let Some(event) = self.queue.pop() {
                let body = match self.config.kind {
                    ReceiverKind::Slack => payload::slack(&event),
                    ReceiverKind::Teams => payload::teams(&event),
                    ReceiverKind::Discord => payload::discord(&event),
                    ReceiverKind::Pagerduty => {
                        let key = self
                            .config
                            .routing_key
                            .as_ref()
                            .map_or("", |k| k.expose())
                            .to_string();
                        payload::pagerduty(&event, &key)
                    }
                    ReceiverKind::Webhook | ReceiverKind::Alertmanager => {
                        payload::webhook(&event, self.clock.now_millis())
                    }
                };
                let url = self.config.url.expose().to_string();
                if self.deliver(&url, &body, &cancel).await == Outcome::Cancelled {
                    return;
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.queue.notify.notified() => {}
            }
        }
    }

    /// Alertmanager: every delivery sends every active alert (and the ones resolved since the last), so a lost
    /// request is repaired by the next, and a quiet period still re-sends within `resend_interval`.
    async fn run_alertmanager(mut self, cancel: CancellationToken) {
        let url = format!(
            "{}/api/v2/alerts",
            self.config.url.expose().trim_end_matches('/')
        );
        let mut active: BTreeMap<Subject, super::router::Alert> = BTreeMap::new();
        let mut last_sent = tokio::time::Instant::now();
        loop {
            let drained = self.queue.drain();
            let changed = !drained.is_empty();
            let mut ended = Vec::new();
            let mut once = Vec::new();
            for event in drained {
                let subject = event.alert.subject.clone();
                match event.status {
                    // A report is news, not a condition that holds: sent once, never re-sent, left for
                    // Alertmanager to resolve after its `resolve_timeout`.
                    Status::Firing if subject.kind == super::AlertKind::WeeklyReport => {
                        once.push(event.alert);
                    }
                    Status::Firing => {
                        // A re-fire at a new severity changes the labels, so it is a new Alertmanager alert: the
                        // old one ends now.
                        if let Some(old) = active.insert(subject, event.alert)
                            && event.escalated_from.is_some()
                        {
                            ended.push(old);
                        }
                    }
                    Status::Resolved => {
                        active.remove(&subject);
                        ended.push(event.alert);
                    }
                }
            }
            let due = last_sent.elapsed() >= self.config.resend_interval;
            if changed || (due && !active.is_empty()) {
                let now = self.clock.now_millis();
                let body: Vec<Value> = active
                    .values()
                    .chain(once.iter())
                    .map(|a| payload::alertmanager_alert(a, false, now))
                    .chain(
                        ended
                            .iter()
                            .map(|a| payload::alertmanager_alert(a, true, now)),
                    )
                    .collect();
                last_sent = tokio::time::Instant::now();
                if !body.is_empty()
                    && self.deliver(&url, &Value::Array(body), &cancel).await == Outcome::Cancelled
                {
                    return;
                }
            }
            if due && active.is_empty() {
                // Nothing to re-send: the next re-send is one interval after the next change at the earliest.
                last_sent = tokio::time::Instant::now();
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.queue.notify.notified() => {}
                () = tokio::time::sleep_until(last_sent + self.config.resend_interval) => {}
            }
        }
    }

    /// Sends one body, retrying as configured; counts attempts and the outcome.
    async fn deliver(&mut self, url: &str, body: &Value, cancel: &CancellationToken) -> Outcome {
        let name = self.config.name.clone();
        let mut backoff = self.config.retry_backoff;
        let mut outcome = Outcome::Failed;
        for attempt in 1..=self.config.max_attempts {
            let wait = self.limit.reserve();
            if !wait.is_zero() && sleep_or_cancel(wait, cancel).await {
                return Outcome::Cancelled;
            }
            let mut request = self
                .client
                .post(url)
                .json(body)
                .timeout(self.config.timeout);
            if let Some(token) = &self.config.bearer_token {
                request = request.bearer_auth(token.expose());
            }
            let response = tokio::select! {
                () = cancel.cancelled() => return Outcome::Cancelled,
                r = request.send() => r,
            };
            let (result, retry_in) = match response {
                Ok(r) if r.status().is_success() => ("ok", None),
                Ok(r) if r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS => {
                    let after = r
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| retry_after(v, std::time::SystemTime::now()));
                    (
                        "rate_limited",
                        Some(after.unwrap_or(backoff).min(MAX_RETRY_AFTER)),
                    )
                }
                Ok(r) if r.status() == reqwest::StatusCode::REQUEST_TIMEOUT => {
                    ("client_error", Some(backoff))
                }
                Ok(r) if r.status().is_client_error() => ("client_error", None),
                Ok(_) => ("server_error", Some(backoff)),
                Err(e) if e.is_timeout() => ("timeout", Some(backoff)),
                Err(e) if e.is_connect() => ("connect", Some(backoff)),
                Err(_) => ("error", Some(backoff)),
            };
            self.metrics
                .attempts
                .get_or_create(&AttemptLabels {
                    receiver: name.clone(),
                    result,
                })
                .inc();
            match (result, retry_in) {
                ("ok", _) => {
                    outcome = Outcome::Sent;
                    break;
                }
                (_, None) => {
                    tracing::warn!(receiver = %name, attempt, "alert delivery rejected by the receiver: not retried");
                    outcome = Outcome::Rejected;
                    break;
                }
                (_, Some(wait)) => {
                    tracing::warn!(receiver = %name, attempt, result, retry_in = ?wait, "alert delivery failed");
                    if attempt == self.config.max_attempts {
                        break;
                    }
                    if sleep_or_cancel(wait, cancel).await {
                        return Outcome::Cancelled;
                    }
                    backoff = (backoff * 2).min(self.config.retry_backoff_max);
                }
            }
        }
        if let Some(label) = outcome.label() {
            self.metrics
                .deliveries
                .get_or_create(&DeliveryLabels {
                    receiver: name,
                    outcome: label,
                })
                .inc();
        }
        outcome
    }
}

/// Sleeps `wait`; true when cancelled first.
async fn sleep_or_cancel(wait: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = cancel.cancelled() => true,
        () = tokio::time::sleep(wait) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(retry_after("3", now), Some(Duration::from_secs(3)));
        // RFC 9110's example date, 60 s after `now`.
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn the_queue_drops_the_oldest() {
        let metrics = AlertingMetrics::default();
        let queue = Queue::new(2, &metrics, "r");
        let mut router = super::super::router::Router::new();
        use super::super::router::tests::{anomaly, snapshot};
        use crate::domain::anomaly::{AnomalyKind, Severity};
        let events = router.observe(&snapshot(
            0,
            ["a", "b", "c"]
                .iter()
                .map(|n| anomaly(n, AnomalyKind::CpuSpike, Severity::Warning, 0, None))
                .collect(),
        ));
        for e in events {
            queue.push(e);
        }
        assert_eq!(queue.dropped.get(), 1);
        let left: Vec<String> = queue
            .drain()
            .into_iter()
            .map(|e| e.alert.subject.key.name)
            .collect();
        assert_eq!(left, ["b", "c"]);
    }

    #[test]
    fn the_rate_limit_spaces_requests() {
        // 60 a minute: bursts of 6, then one a second.
        let mut limit = RateLimit::new(60);
        for _ in 0..6 {
            assert_eq!(limit.reserve(), Duration::ZERO, "within the burst");
        }
        let wait = limit.reserve();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        let wait = limit.reserve();
        assert!(
            wait > Duration::from_millis(1900) && wait <= Duration::from_secs(2),
            "{wait:?}"
        );
    }
}
