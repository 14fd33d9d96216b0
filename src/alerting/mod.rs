//! Alerting: tells people about anomalies and predictive scale-ups. It owns the `--alerting-config` flag, the
//! config file ([`config`]), the pure [`router`] that turns consecutive snapshots into fire/resolve events with
//! deduplication and grouping, the request bodies of each receiver kind ([`payload`]), and their delivery
//! ([`delivery`]: a task and a bounded queue per receiver, rate limits, retries, metrics).
//!
//! The engine knows nothing of it: [`spawn`] subscribes to the snapshot watch channel the engine publishes on,
//! so alerting can never slow a tick. docs/alerting.md is the user's reference.

pub mod config;
pub mod delivery;
pub mod payload;
pub mod router;

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, SystemClock};
use crate::domain::model::Snapshot;
use crate::telemetry::Telemetry;

pub use config::{AlertingConfig, ConfigFileError, ReceiverConfig, ReceiverKind, Secret};
pub use delivery::AlertingMetrics;
pub use router::{AlertKind, Event, Router, Status};

/// The alerting flags, flattened into `serve` and `demo`.
#[derive(Debug, Clone, Args)]
pub struct AlertingArgs {
    /// Alerting config file (TOML) naming the receivers: Alertmanager, Slack, Teams, Discord, PagerDuty or a JSON
    /// webhook (see docs/alerting.md). Read and checked once at start; without it no alert is sent.
    #[arg(long, env = "SMART_AUTOSCALER_ALERTING_CONFIG")]
    pub alerting_config: Option<PathBuf>,
    /// When the weekly report goes to the receivers that list `weekly_report` in `alerts`: a day and a local time
    /// (local to --forecast-utc-offset-minutes), e.g. `mon 09:00` or `fri 17:30:00`. Only the leader sends it.
    #[arg(
        long,
        env = "SMART_AUTOSCALER_WEEKLY_REPORT_AT",
        default_value = "mon 09:00",
        value_parser = parse_weekly_at
    )]
    pub weekly_report_at: crate::domain::report::WeeklyAt,
}

/// `--weekly-report-at`, in UTC until the business offset is applied.
fn parse_weekly_at(text: &str) -> Result<crate::domain::report::WeeklyAt, String> {
    crate::domain::report::WeeklyAt::parse(text, 0)
}

/// The checked alerting settings: the receivers, or none.
#[derive(Debug, Clone, Default)]
pub struct AlertingSettings {
    /// The config file's receivers; `None` without `--alerting-config`.
    pub config: Option<AlertingConfig>,
    /// When the weekly report is sent (UTC until the business offset is applied).
    pub weekly_report_at: Option<crate::domain::report::WeeklyAt>,
}

impl TryFrom<&AlertingArgs> for AlertingSettings {
    type Error = ConfigFileError;

    /// Reads and checks the file (and the secret files it names) once, at start.
    fn try_from(args: &AlertingArgs) -> Result<Self, Self::Error> {
        let config = args
            .alerting_config
            .as_deref()
            .map(config::load)
            .transpose()?;
        Ok(AlertingSettings {
            config,
            weekly_report_at: Some(args.weekly_report_at),
        })
    }
}

/// The running alerting tasks.
pub struct Alerting {
    /// Each receiver's queue, by name, in config order.
    pub queues: Vec<(String, Arc<delivery::Queue>)>,
    /// Each receiver's config with its queue, for events that do not come from snapshots (the weekly report).
    receivers: Vec<(ReceiverConfig, Arc<delivery::Queue>)>,
    /// The metrics the tasks count in.
    pub metrics: AlertingMetrics,
}

/// The HTTP client shared by the receivers: rustls, no proxy surprises, no redirects (a webhook that redirects is
/// misconfigured, and following it could leak the body elsewhere).
pub fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("smart-autoscaler/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()
}

/// Starts one delivery task per receiver and the router task that follows `snapshots`, until `cancel`. The
/// payloads' times use the wall clock (a demo's snapshots run on simulated time).
pub fn spawn(
    config: &AlertingConfig,
    snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    leadership: watch::Receiver<bool>,
    telemetry: &Telemetry,
    cancel: CancellationToken,
) -> reqwest::Result<Alerting> {
    let client = http_client()?;
    let metrics = AlertingMetrics::register(telemetry);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut queues = Vec::new();
    let mut routes = Vec::new();
    for receiver in &config.receivers {
        let (worker, queue) =
            delivery::Worker::new(receiver.clone(), client.clone(), &metrics, clock.clone());
        tokio::spawn(worker.run(cancel.clone()));
        queues.push((receiver.name.clone(), queue.clone()));
        routes.push((receiver.clone(), queue));
    }
    let receivers = routes.clone();
    tokio::spawn(route(
        snapshots,
        leadership,
        routes,
        metrics.clone(),
        cancel,
    ));
    tracing::info!(
        file = %config.path.display(),
        receivers = ?config.receivers.iter().map(|r| format!("{}:{}", r.name, r.kind.as_str())).collect::<Vec<_>>(),
        "alerting"
    );
    Ok(Alerting {
        queues,
        receivers,
        metrics,
    })
}

impl Alerting {
    /// Queues the weekly report for every receiver subscribed to `weekly_report`; returns how many.
    pub fn send_report(&self, report: &crate::domain::report::WeeklyReport) -> usize {
        let (title, summary, details) = report.alert();
        let event = Event {
            status: Status::Firing,
            alert: router::Alert {
                subject: router::Subject {
                    key: crate::domain::model::DeploymentKey::new(
                        report.namespace.clone().unwrap_or_default(),
                        "",
                    ),
                    kind: AlertKind::WeeklyReport,
                    anomaly: None,
                },
                severity: crate::domain::anomaly::Severity::Info,
                title,
                summary,
                started_at: report.to,
                ended_at: None,
                details,
            },
            escalated_from: None,
        };
        self.metrics
            .events
            .get_or_create(&delivery::EventLabels {
                r#type: AlertKind::WeeklyReport.as_str(),
                status: Status::Firing.as_str(),
            })
            .inc();
        let mut sent = 0;
        for (receiver, queue) in &self.receivers {
            if receiver.wants(
                AlertKind::WeeklyReport,
                crate::domain::anomaly::Severity::Info,
            ) {
                queue.push(event.clone());
                sent += 1;
            }
        }
        sent
    }
}

/// Follows the snapshots and hands every event to the queues of the receivers that want it. Pushing never waits.
/// A replica that does not lead follows the same snapshots and keeps the same alert state but delivers nothing,
/// so after a failover the new leader neither repeats the firing alerts the old one sent nor misses their
/// resolves.
async fn route(
    mut snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    leadership: watch::Receiver<bool>,
    receivers: Vec<(ReceiverConfig, Arc<delivery::Queue>)>,
    metrics: AlertingMetrics,
    cancel: CancellationToken,
) {
    let mut router = Router::new();
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        if let Some(snapshot) = snapshot {
            let leads = *leadership.borrow();
            for event in router.observe(&snapshot) {
                if !leads {
                    continue;
                }
                let alert = &event.alert;
                metrics
                    .events
                    .get_or_create(&delivery::EventLabels {
                        r#type: alert.subject.type_name(),
                        status: event.status.as_str(),
                    })
                    .inc();
                for (receiver, queue) in &receivers {
                    // Alertmanager always learns of a resolve: it would otherwise keep the alert until it times out.
                    let resolved_ok = event.status == Status::Firing
                        || receiver.send_resolved
                        || receiver.kind == ReceiverKind::Alertmanager;
                    if resolved_ok && receiver.wants(alert.subject.kind, alert.severity) {
                        queue.push(event.clone());
                    }
                }
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            changed = snapshots.changed() => if changed.is_err() { return },
        }
    }
}
