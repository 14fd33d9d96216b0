//! Wiring: turns the checked settings into running listeners, the engine and the shutdown path.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::certs::{self, CertBundle};
use crate::clock::{Clock, ScaledClock, SystemClock};
use crate::config::{CertsArgs, CommandSettings, DemoSettings, ServeSettings, StartAt};
use crate::demo::{DemoCluster, DemoSource};
use crate::engine::Engine;
use crate::http::{self, AppState, Limits, ServerSettings};
use crate::store::AnomalyHistory;
use crate::telemetry::Telemetry;

/// Runs the checked command to its end.
pub fn run(settings: CommandSettings) -> Result<()> {
    match settings {
        CommandSettings::Certs(args) => run_certs(&args),
        CommandSettings::Serve(settings) => runtime()?.block_on(run_serve(*settings)),
        CommandSettings::Simulate(args) => {
            print!("{}", crate::simulate::run(&args)?);
            Ok(())
        }
        CommandSettings::Demo(settings) => runtime()?.block_on(run_demo(*settings)),
        CommandSettings::Report(args) => runtime()?.block_on(run_report(&args)),
    }
}

/// Runs `report`: fetches the weekly report from a running server and prints it as text (or as the JSON).
async fn run_report(args: &crate::config::ReportArgs) -> Result<()> {
    let client = reqwest::Client::builder()
        .timeout(args.timeout)
        .build()
        .context("building the HTTP client")?;
    let url = format!(
        "{}{}",
        args.url.trim_end_matches('/'),
        http::report::REPORT_PATH
    );
    let mut request = client.get(&url);
    if let Some(ns) = &args.namespace {
        request = request.query(&[("namespace", ns)]);
    }
    let response = request.send().await.with_context(|| {
        format!("asking {url} (is the server running, its metrics port forwarded?)")
    })?;
    let status = response.status();
    let body = response.text().await.context("reading the answer")?;
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or(body);
        anyhow::bail!("{url} answered {status}: {message}");
    }
    if args.json {
        println!("{body}");
        return Ok(());
    }
    let report: crate::domain::report::WeeklyReport = serde_json::from_str(&body)
        .with_context(|| format!("{url} did not answer with a weekly report"))?;
    print!("{}", report.text());
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Runs `certs`: writes a CA and serving certificate and prints the caBundle.
pub fn run_certs(args: &CertsArgs) -> Result<()> {
    let mut names = certs::service_names(&args.service, &args.namespace);
    names.extend(args.extra_sans.iter().cloned());
    let bundle = certs::generate(
        &names,
        certs::today_utc(SystemClock.now_millis()),
        args.days,
    )?;
    bundle.write(&args.out_dir)?;
    println!(
        "wrote {}/{{ca.crt,ca.key,tls.crt,tls.key}} for {}",
        args.out_dir.display(),
        names.join(", ")
    );
    println!("create the serving Secret with:");
    println!(
        "  kubectl -n {} create secret tls {}-tls --cert={}/tls.crt --key={}/tls.key",
        args.namespace,
        args.service,
        args.out_dir.display(),
        args.out_dir.display()
    );
    println!("caBundle (for the APIService and the MutatingWebhookConfiguration):");
    println!("{}", bundle.ca_bundle());
    Ok(())
}

/// Builds the handler state shared by both listeners.
fn app_state(
    server: &ServerSettings,
    snapshots: watch::Receiver<Option<Arc<crate::domain::model::Snapshot>>>,
    clock: Arc<dyn Clock>,
    telemetry: Arc<Telemetry>,
    health: Arc<crate::health::Health>,
) -> AppState {
    AppState {
        forecasts: None,
        tunings: None,
        responses: Default::default(),
        health,
        webhook: Arc::new(http::webhook::WebhookState::new(
            server.webhook.clone(),
            &telemetry,
        )),
        extender: Arc::new(http::extender::ExtenderState::new(
            server.extender,
            &telemetry,
        )),
        snapshots,
        clock,
        limits: limits(server, &telemetry),
        telemetry,
    }
}

fn limits(server: &ServerSettings, telemetry: &Telemetry) -> Limits {
    Limits {
        max_body_bytes: server.max_body_bytes,
        max_header_bytes: server.max_header_bytes,
        max_headers: server.max_headers,
        request_timeout: server.request_timeout,
        idle_timeout: server.idle_timeout,
        max_connections: server.max_connections,
        connections: http::server::Connections::new(telemetry),
    }
}

/// The bound listeners, so callers can learn the ports chosen for port 0.
struct Listeners {
    secure: TcpListener,
    metrics: TcpListener,
}

async fn bind(server: &ServerSettings) -> Result<Listeners> {
    let secure_addr = SocketAddr::new(server.bind_address, server.secure_port);
    let metrics_addr = SocketAddr::new(server.bind_address, server.metrics_port);
    let secure = TcpListener::bind(secure_addr)
        .await
        .with_context(|| format!("binding secure port {secure_addr}"))?;
    let metrics = TcpListener::bind(metrics_addr)
        .await
        .with_context(|| format!("binding metrics port {metrics_addr}"))?;
    Ok(Listeners { secure, metrics })
}

fn shutdown_on_signal(cancel: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(error) => {
                        tracing::warn!(%error, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        cancel.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
        cancel.cancel();
    });
}

/// Publishes the TLS reload metrics and re-reads the TLS files every `--tls-reload-interval` until `cancel`.
fn watch_tls(
    tls: &Arc<certs::TlsReloader>,
    server: &ServerSettings,
    telemetry: &Telemetry,
    cancel: &CancellationToken,
) {
    tls.register(telemetry);
    tokio::spawn(tls.clone().run(server.tls_reload_interval, cancel.clone()));
}

/// What the routers need beyond [`AppState`]: the anomaly history, the store (dashboard, history API), the cost
/// book, and on the secure port the rule-backed metrics and the delegate external-metrics server.
struct Extras {
    anomalies: AnomalyHistory,
    store: crate::store::Store,
    cost: Arc<crate::cost::CostBook>,
    /// Learned weekly levels behind the schedule API, the dashboard and the schedule gauge.
    schedules: Arc<crate::schedule::ScheduleBook>,
    /// What the weekly report is made from.
    report: crate::report::ReportSources,
    rules: Option<http::external::RuleMetrics>,
    delegate: Option<Arc<http::delegate::Delegate>>,
    /// Delegated authentication and authorization on the secure port, when on.
    auth: Option<Arc<crate::auth::Auth>>,
}

/// The secure port's TLS files: with delegated auth, client certificates are requested at every handshake and
/// judged by the authenticator; without it, `--requestheader-client-ca-file` (if given) is checked at the handshake.
fn load_tls(
    files: certs::TlsFiles,
    auth: &crate::auth::AuthSettings,
) -> Result<certs::TlsReloader> {
    Ok(if auth.enabled {
        certs::TlsReloader::load_requesting_client_certs(files)?
    } else {
        certs::TlsReloader::load(files)?
    })
}

/// Starts delegated authentication and authorization when on: the review client (`--authentication-kubeconfig`,
/// else `fallback`'s connection) and the watch on the authentication ConfigMap. Off, it says so loudly.
async fn start_auth(
    settings: &crate::auth::AuthSettings,
    fallback: Option<&crate::k8s::K8sSettings>,
    server: &ServerSettings,
    telemetry: &Telemetry,
    cancel: &CancellationToken,
) -> Result<Option<Arc<crate::auth::Auth>>> {
    if !settings.enabled {
        crate::auth::warn_disabled(server.bind_address);
        return Ok(None);
    }
    // Its own client and rate budget, so reviews never queue behind the watches' lists.
    let kubeconfig = settings
        .kubeconfig
        .as_deref()
        .or_else(|| fallback.and_then(|k| k.kubeconfig.as_deref()));
    let client = crate::k8s::client(kubeconfig, 100.0, 200)
        .await
        .context("building the Kubernetes client for delegated authentication")?;
    let auth = Arc::new(crate::auth::Auth::new(
        settings.clone(),
        Some(crate::auth::kube::Reviewer::new(client.clone())),
    ));
    auth.register(telemetry);
    tokio::spawn(crate::auth::kube::follow(
        client,
        auth.clone(),
        server.requestheader_client_ca_file.clone(),
        cancel.clone(),
    ));
    tracing::info!(
        webhook_users = ?settings.webhook_users,
        extender_users = ?settings.extender_users,
        locked = settings.lock,
        "delegated authentication and authorization on"
    );
    Ok(Some(auth))
}

async fn serve_both(
    listeners: Listeners,
    tls: Arc<certs::TlsReloader>,
    state: AppState,
    extras: Extras,
    cancel: CancellationToken,
) -> Result<()> {
    let Extras {
        anomalies,
        store,
        cost,
        schedules,
        report,
        rules,
        delegate,
        auth,
    } = extras;
    let limits = state.limits.clone();
    let mut secure_router = http::secure_router_with_auth(state.clone(), auth);
    if let Some(rules) = rules {
        secure_router = secure_router.layer(axum::Extension(rules));
    }
    if let Some(delegate) = delegate {
        secure_router = secure_router.layer(axum::Extension(delegate));
    }
    let secure = http::server::serve_tls(
        listeners.secure,
        tls,
        secure_router,
        limits.clone(),
        cancel.clone().cancelled_owned(),
    );
    let metrics = http::server::serve_plain(
        listeners.metrics,
        // The dashboard's per-deployment pages and the history API read the store; the cost endpoints read the
        // cost book.
        http::history::with_history(
            http::metrics_router_with_anomalies(state, anomalies),
            store.clone(),
        )
        .layer(axum::Extension(store))
        .layer(axum::Extension(cost))
        .layer(axum::Extension(schedules))
        .layer(axum::Extension(report)),
        limits,
        cancel.clone().cancelled_owned(),
    );
    let (a, b) = tokio::join!(secure, metrics);
    a.context("secure listener")?;
    b.context("metrics listener")?;
    Ok(())
}

/// The schedule book of `serve` and `demo`: learns each deployment's weekly levels from the store every 15
/// minutes (the rollups it reads grow by one point in five), in the forecaster's business time zone.
fn schedule_book(
    forecast: Option<&crate::domain::forecast::online::ForecasterConfig>,
    store: &crate::store::Store,
    snapshots: &tokio::sync::watch::Receiver<Option<Arc<crate::domain::model::Snapshot>>>,
    clock: &Arc<dyn crate::clock::Clock>,
    telemetry: &Telemetry,
    cancel: &CancellationToken,
) -> Arc<crate::schedule::ScheduleBook> {
    let config = crate::domain::schedule::ScheduleConfig {
        utc_offset_minutes: forecast.map_or(0, |f| f.ensemble.profile.utc_offset_minutes),
        ..Default::default()
    };
    let book = Arc::new(crate::schedule::ScheduleBook::new(config));
    book.register(telemetry);
    book.spawn(
        store.clone(),
        snapshots.clone(),
        clock.clone(),
        Duration::from_secs(15 * 60),
        cancel.clone(),
    );
    book
}

/// Starts the tuning task of `serve` and `demo` (unless `--no-tuning`): it follows the snapshots and publishes
/// the tunings the engine's tick reads.
fn start_tuning(
    settings: Option<&crate::config::TuningSettings>,
    store: &crate::store::Store,
    clock: &Arc<dyn Clock>,
    decision: &crate::domain::decision::DecisionConfig,
    snapshots: &watch::Receiver<Option<Arc<crate::domain::model::Snapshot>>>,
    telemetry: &Telemetry,
    cancel: &CancellationToken,
) -> Option<watch::Receiver<Arc<crate::domain::tuning::Tunings>>> {
    let settings = settings?;
    let (task, tunings) = crate::tune::TuningTask::new(
        store.clone(),
        clock.clone(),
        settings.clone(),
        decision.clone(),
        snapshots.clone(),
        telemetry,
    );
    tokio::spawn(task.run(cancel.clone()));
    Some(tunings)
}

/// The cost book of `serve` and `demo`: the configured prices (what is ignored in them logged), the cost gauges,
/// and the store for the hourly rollups and the usage histories.
fn cost_book(
    prices: &crate::domain::cost::Prices,
    telemetry: &Telemetry,
    store: &crate::store::Store,
) -> Arc<crate::cost::CostBook> {
    for problem in prices.problems() {
        tracing::warn!(%problem, "cost: price configuration");
    }
    let (price, source) = prices.default_price();
    tracing::info!(
        cpu_per_core_hour = price.cpu_per_core_hour,
        memory_per_gib_hour = price.memory_per_gib_hour,
        source = ?source,
        pools = prices.pools.len(),
        "cost: default price"
    );
    Arc::new(
        crate::cost::CostBook::new(prices.clone())
            .with_metrics(telemetry)
            .with_store(store.clone()),
    )
}

/// Starts alert delivery when `--alerting-config` names receivers: it follows the snapshots on its own tasks.
fn start_alerting(
    settings: &crate::alerting::AlertingSettings,
    snapshots: &watch::Receiver<Option<Arc<crate::domain::model::Snapshot>>>,
    leadership: &crate::k8s::leader::Leadership,
    telemetry: &Telemetry,
    cancel: &CancellationToken,
) -> Result<Option<Arc<crate::alerting::Alerting>>> {
    let Some(config) = &settings.config else {
        return Ok(None);
    };
    let alerting = crate::alerting::spawn(
        config,
        snapshots.clone(),
        leadership.clone(),
        telemetry,
        cancel.clone(),
    )
    .context("starting alert delivery")?;
    Ok(Some(Arc::new(alerting)))
}

/// What the weekly report reads besides the schedules.
struct ReportInputs<'a> {
    store: &'a crate::store::Store,
    cost: &'a Arc<crate::cost::CostBook>,
    anomalies: &'a AnomalyHistory,
    forecasts: &'a Option<watch::Receiver<Arc<crate::domain::forecast::online::Board>>>,
}

/// The schedule book and the weekly report's sources of `serve` and `demo`, and the weekly report's alert: sent
/// to the receivers that subscribe to it, on the leader, at `--weekly-report-at` local to the forecaster's
/// business time zone.
#[allow(clippy::too_many_arguments)]
fn start_schedules_and_report(
    settings: &crate::alerting::AlertingSettings,
    alerting: Option<Arc<crate::alerting::Alerting>>,
    forecast: Option<&crate::domain::forecast::online::ForecasterConfig>,
    inputs: ReportInputs<'_>,
    snapshots: &watch::Receiver<Option<Arc<crate::domain::model::Snapshot>>>,
    leadership: &crate::k8s::leader::Leadership,
    clock: &Arc<dyn Clock>,
    telemetry: &Telemetry,
    cancel: &CancellationToken,
) -> (
    Arc<crate::schedule::ScheduleBook>,
    crate::report::ReportSources,
) {
    let schedules = schedule_book(forecast, inputs.store, snapshots, clock, telemetry, cancel);
    let sources = crate::report::ReportSources {
        cost: Some(inputs.cost.clone()),
        anomalies: Some(inputs.anomalies.clone()),
        store: Some(inputs.store.clone()),
        schedules: Some(schedules.clone()),
        forecasts: inputs.forecasts.clone(),
    };
    if let (Some(alerting), Some(mut at)) = (alerting, settings.weekly_report_at) {
        at.utc_offset_minutes = forecast.map_or(0, |f| f.ensemble.profile.utc_offset_minutes);
        crate::report::spawn_weekly_alerts(
            at,
            alerting,
            sources.clone(),
            snapshots.clone(),
            leadership.clone(),
            clock.clone(),
            cancel.clone(),
        );
    }
    (schedules, sources)
}

/// Checks the `--external-rules` queries against Prometheus (a query it rejects as bad data stops the start with
/// the rule's name; Prometheus unreachable is only logged) and builds their evaluator.
async fn start_external_rules(
    args: &ServeSettings,
    prom: &Arc<crate::prom::PromClient>,
    clock: &Arc<dyn Clock>,
    health: &Arc<crate::health::Health>,
) -> Result<
    Option<(
        crate::prom::rules::RuleEvaluator,
        watch::Receiver<Arc<crate::domain::external_rules::ExternalTable>>,
    )>,
> {
    use crate::prom::rules::{DryRun, RuleEvaluator, dry_run};
    if args.external_rules.is_empty() {
        return Ok(None);
    }
    match dry_run(prom, &args.external_rules, clock.now_millis()).await {
        DryRun::Ok => tracing::info!(
            rules = args.external_rules.len(),
            "external rules: every query accepted by Prometheus"
        ),
        DryRun::Unchecked(error) => tracing::warn!(
            %error,
            "external rules: could not check the queries against Prometheus; starting anyway"
        ),
        DryRun::Invalid(problems) => {
            anyhow::bail!("invalid --external-rules: {}", problems.join("; "))
        }
    }
    let failsafe = args.decision.failsafe(args.interval.as_millis() as i64);
    Ok(Some(RuleEvaluator::new(
        prom.clone(),
        args.external_rules.clone(),
        failsafe,
        health.clone(),
    )))
}

/// Runs `serve`: Kubernetes watches and Prometheus feed the engine; the store keeps history.
pub async fn run_serve(args: ServeSettings) -> Result<()> {
    let tls = Arc::new(load_tls(
        certs::TlsFiles {
            cert: args.tls_cert_file.clone(),
            key: args.tls_key_file.clone(),
            client_ca: args.server.requestheader_client_ca_file.clone(),
        },
        &args.auth,
    )?);
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating --data-dir {}", args.data_dir.display()))?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let telemetry =
        Arc::new(Telemetry::new().with_max_deployments(args.server.metrics_max_deployments));
    let health = Arc::new(crate::health::Health::new(&telemetry));
    let store = crate::store::Store::open(args.data_dir.join("store"), args.store)
        .await?
        .with_clock(clock.clone());
    store.register_metrics(&telemetry);
    let prom_settings = crate::prom::PromSettings {
        breaker: crate::prom::BreakerConfig::for_interval(args.interval),
        ..args.prom.clone()
    };
    let prom = Arc::new(crate::prom::PromClient::new(prom_settings)?.with_clock(clock.clone()));
    let short_window_seconds = prom.templates().pod_cpu_short_window_seconds;
    let (client, server) = args.k8s.connect().await?;
    let cancel = CancellationToken::new();
    // Both replicas serve reads from their own state; only the lease holder performs side effects.
    let (leadership, leader_task) = match &args.leader {
        Some(leader) => {
            let (rx, task) =
                crate::k8s::leader::spawn(client.clone(), leader.clone(), cancel.clone());
            (rx, Some(task))
        }
        None => (crate::k8s::leader::always(), None),
    };
    export_leadership(&telemetry, &leadership, &cancel);
    let events_client = client.clone();
    let cluster = crate::k8s::ClusterWatch::start_at(
        client,
        server,
        cancel.clone(),
        args.k8s.probe_interval(),
    );
    let listeners = bind(&args.server).await?;
    let rules = start_external_rules(&args, &prom, &clock, &health).await?;
    let source = crate::dataplane::DataPlaneSource::new(
        cluster,
        prom,
        store.clone(),
        crate::domain::cluster::JoinConfig {
            default_startup_filter_seconds: args.default_startup_filter.as_secs() as u32,
            default_target_percent: args.default_target,
            short_window_seconds,
        },
        health.clone(),
        args.store.retention.rollups,
        args.k8s.max_staleness,
    );
    let (source, rule_metrics) = match rules {
        Some((evaluator, table)) => (
            source.with_external_rules(evaluator),
            Some(http::external::RuleMetrics(table)),
        ),
        None => (source, None),
    };
    let anomalies = AnomalyHistory::Stored(store.clone());
    let (mut engine, snapshots) = Engine::new(
        source,
        clock.clone(),
        args.interval,
        telemetry.clone(),
        args.decision.clone(),
    );
    engine = engine.with_anomaly_history(anomalies.clone());
    let cost = cost_book(&args.prices, &telemetry, &store);
    engine = engine.with_cost(cost.clone());
    let mut forecasts = None;
    if let Some(forecaster) = args.forecast.clone() {
        let (task, board) = crate::refit::ForecastTask::new(
            store.clone(),
            clock.clone(),
            crate::refit::ForecastSettings {
                forecaster,
                round: Duration::from_secs(60),
                refit_interval: args.forecast_refit_interval,
                cpu_budget: args.forecast_cpu_budget,
            },
            &telemetry,
        );
        engine = engine.with_forecasts(board.clone());
        forecasts = Some(board);
        tokio::spawn(task.run(cancel.clone()));
    }
    let tunings = start_tuning(
        args.tuning.as_ref(),
        &store,
        &clock,
        &args.decision,
        &snapshots,
        &telemetry,
        &cancel,
    );
    if let Some(t) = &tunings {
        engine = engine.with_tunings(t.clone());
    }
    let alerting = start_alerting(&args.alerting, &snapshots, &leadership, &telemetry, &cancel)?;
    crate::k8s::events::spawn(
        events_client,
        args.leader
            .as_ref()
            .map_or_else(|| "smart-autoscaler".to_string(), |l| l.identity.clone()),
        snapshots.clone(),
        leadership.clone(),
        &telemetry,
        crate::k8s::events::EventLimits::default(),
        cancel.clone(),
    );
    let (schedules, report_sources) = start_schedules_and_report(
        &args.alerting,
        alerting,
        args.forecast.as_ref(),
        ReportInputs {
            store: &store,
            cost: &cost,
            anomalies: &anomalies,
            forecasts: &forecasts,
        },
        &snapshots,
        &leadership,
        &clock,
        &telemetry,
        &cancel,
    );
    let mut state = app_state(&args.server, snapshots, clock, telemetry, health);
    state.forecasts = forecasts;
    state.tunings = tunings;
    tokio::spawn(http::extender::forget_expired(
        state.clone(),
        cancel.clone(),
    ));
    tracing::info!(
        secure = %listeners.secure.local_addr()?,
        metrics = %listeners.metrics.local_addr()?,
        prometheus = %args.prom.url,
        store = %store.path().display(),
        "listening"
    );
    println!(
        "listening secure={} metrics={}",
        listeners.secure.local_addr()?,
        listeners.metrics.local_addr()?
    );
    shutdown_on_signal(cancel.clone());
    tokio::spawn(engine.run(cancel.clone()));
    watch_tls(&tls, &args.server, &state.telemetry, &cancel);
    if let Some(delegate) = &args.delegate {
        tracing::info!(
            delegate = delegate.url(),
            "forwarding external metrics we do not own"
        );
    }
    let auth = start_auth(
        &args.auth,
        Some(&args.k8s),
        &args.server,
        &state.telemetry,
        &cancel,
    )
    .await?;
    let extras = Extras {
        anomalies,
        store,
        cost,
        schedules,
        report: report_sources,
        rules: rule_metrics,
        delegate: args.delegate.clone(),
        auth,
    };
    let served = serve_both(listeners, tls, state, extras, cancel).await;
    // Hand the lease over at once rather than at its expiry (the task releases it, bounded to 3 s).
    if let Some(task) = leader_task {
        let _ = task.await;
    }
    served
}

/// `smart_autoscaler_leader`: 1 while this replica holds the lease and performs side effects.
fn export_leadership(
    telemetry: &Telemetry,
    leadership: &crate::k8s::leader::Leadership,
    cancel: &CancellationToken,
) {
    let gauge: prometheus_client::metrics::gauge::Gauge = Default::default();
    telemetry.register(
        "leader",
        "1 while this replica holds the leader lease and performs side effects (alerts), 0 while it only serves reads",
        gauge.clone(),
    );
    let mut leadership = leadership.clone();
    let cancel = cancel.clone();
    tokio::spawn(async move {
        loop {
            gauge.set(i64::from(*leadership.borrow_and_update()));
            tokio::select! {
                () = cancel.cancelled() => return,
                changed = leadership.changed() => if changed.is_err() {
                    // The sender is gone (`always`): the value stays.
                    gauge.set(i64::from(*leadership.borrow()));
                    cancel.cancelled().await;
                    return;
                },
            }
        }
    });
}

/// Loads the demo certificates from `dir`, generating them on first start.
fn demo_certs(dir: &Path, now: i64) -> Result<CertBundle> {
    if dir.join(certs::TLS_CERT).is_file() {
        return Ok(CertBundle::read(dir)?);
    }
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    names.extend(certs::service_names("smart-autoscaler", "smart-autoscaler"));
    let bundle = certs::generate(&names, certs::today_utc(now), 365)?;
    bundle.write(dir)?;
    Ok(bundle)
}

/// A kubeconfig that reaches the demo server with TLS verified against the demo CA.
pub fn demo_kubeconfig(server_url: &str, ca_file: &Path) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: smart-autoscaler-demo\n  cluster:\n    server: {server_url}\n    \
         certificate-authority: {}\ncontexts:\n- name: smart-autoscaler-demo\n  context:\n    cluster: \
         smart-autoscaler-demo\n    user: demo\ncurrent-context: smart-autoscaler-demo\nusers:\n- name: demo\n  \
         user:\n    token: demo-token-not-checked\n",
        ca_file.display()
    )
}

/// The demo's first line: which clock the API reports and when the workloads' events come on it.
fn demo_clock_line(args: &DemoSettings, cluster: &DemoCluster, now: i64) -> String {
    let clock = if args.speed == 1.0 {
        "times are the wall clock (UTC)".to_string()
    } else {
        format!(
            "simulated clock at {}x speed (times run ahead of the wall clock)",
            args.speed
        )
    };
    let hhmm = |t: i64| crate::clock::rfc3339(t)[11..16].to_string();
    format!(
        "simulated cluster, {clock}; api-service's daily spike at {} and batch-processor's next window at {}",
        hhmm(cluster.next_workload_time_of_day(now, 9 * 60)),
        hhmm(cluster.next_batch_window(now)),
    )
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}

/// Runs `demo`.
pub async fn run_demo(args: DemoSettings) -> Result<()> {
    // The API reports this clock's time: the wall clock at --speed 1. --start-at shifts only the workload.
    let clock: Arc<dyn Clock> = Arc::new(ScaledClock::starting_now(args.speed));
    let workload_day_at = match args.start_at {
        StartAt::Now => None,
        StartAt::TimeOfDay(minutes) => Some(minutes),
    };
    let data_dir = absolute(&args.data_dir)?;
    let cert_dir = data_dir.join("certs");
    std::fs::create_dir_all(&cert_dir)
        .with_context(|| format!("creating --data-dir {}", data_dir.display()))?;
    demo_certs(&cert_dir, clock.now_millis())?;
    let tls = Arc::new(load_tls(
        certs::TlsFiles {
            cert: cert_dir.join(certs::TLS_CERT),
            key: cert_dir.join(certs::TLS_KEY),
            client_ca: args.server.requestheader_client_ca_file.clone(),
        },
        &args.auth,
    )?);
    let listeners = bind(&args.server).await?;
    let secure_port = listeners.secure.local_addr()?.port();
    let metrics_port = listeners.metrics.local_addr()?.port();
    let kubeconfig = match &args.kubeconfig_out {
        Some(p) => absolute(p)?,
        None => data_dir.join("kubeconfig"),
    };
    let server_url = format!("https://127.0.0.1:{secure_port}");
    std::fs::write(
        &kubeconfig,
        demo_kubeconfig(&server_url, &cert_dir.join(certs::CA_CERT)),
    )
    .with_context(|| format!("writing kubeconfig {}", kubeconfig.display()))?;

    let telemetry =
        Arc::new(Telemetry::new().with_max_deployments(args.server.metrics_max_deployments));
    let health = Arc::new(crate::health::Health::new(&telemetry));
    health.ok(
        "simulation",
        format!("simulated cluster at {}x speed", args.speed),
        clock.now_millis(),
    );
    // The demo's store holds the tick history its forecasts learn from, seeded with `--history-days` of the
    // simulated workload; its anomaly history is a bounded log in memory.
    let store = crate::store::Store::open(
        data_dir.join("store"),
        crate::store::StoreConfig::from(crate::store::Retention::default()),
    )
    .await?
    .with_clock(clock.clone());
    store.register_metrics(&telemetry);
    let started = clock.now_millis();
    let cluster = DemoCluster::with_workload_day_at(args.seed, started, workload_day_at);
    let mut seeded = 0;
    for (key, points) in cluster.history(started, args.history_days) {
        seeded += store.import_history_with_pods(&key, &points).await?;
    }
    tracing::info!(
        days = args.history_days,
        points = seeded,
        "demo: simulated history written to the store"
    );
    if args.speed != 1.0 {
        tracing::warn!(
            speed = args.speed,
            "demo: --speed is not 1, so every time the API reports is simulated time, running ahead of the wall clock"
        );
    }
    let cluster_view = cluster.clone();
    let anomalies = AnomalyHistory::in_memory();
    let (mut engine, snapshots) = Engine::new(
        DemoSource::new(cluster).with_store(store.clone()),
        clock.clone(),
        args.interval,
        telemetry.clone(),
        args.decision.clone(),
    );
    engine = engine.with_anomaly_history(anomalies.clone());
    let cost = cost_book(&args.prices, &telemetry, &store);
    engine = engine.with_cost(cost.clone());
    let cancel = CancellationToken::new();
    store.spawn_retention(clock.clone(), Duration::from_secs(60), cancel.clone());
    let mut forecasts = None;
    if let Some(forecaster) = args.forecast.clone() {
        let (task, board) = crate::refit::ForecastTask::new(
            store.clone(),
            clock.clone(),
            crate::refit::ForecastSettings {
                forecaster,
                round: Duration::from_secs(60),
                refit_interval: Duration::from_secs(15 * 60),
                cpu_budget: 0.25,
            },
            &telemetry,
        );
        engine = engine.with_forecasts(board.clone());
        forecasts = Some(board);
        tokio::spawn(task.run(cancel.clone()));
    }
    let tunings = start_tuning(
        args.tuning.as_ref(),
        &store,
        &clock,
        &args.decision,
        &snapshots,
        &telemetry,
        &cancel,
    );
    if let Some(t) = &tunings {
        engine = engine.with_tunings(t.clone());
    }
    let leadership = crate::k8s::leader::always();
    export_leadership(&telemetry, &leadership, &cancel);
    let alerting = start_alerting(&args.alerting, &snapshots, &leadership, &telemetry, &cancel)?;
    let (schedules, report_sources) = start_schedules_and_report(
        &args.alerting,
        alerting,
        args.forecast.as_ref(),
        ReportInputs {
            store: &store,
            cost: &cost,
            anomalies: &anomalies,
            forecasts: &forecasts,
        },
        &snapshots,
        &leadership,
        &clock,
        &telemetry,
        &cancel,
    );
    let mut state = app_state(&args.server, snapshots, clock, telemetry, health);
    state.forecasts = forecasts;
    state.tunings = tunings;
    shutdown_on_signal(cancel.clone());
    tokio::spawn(engine.run(cancel.clone()));
    tokio::spawn(http::extender::forget_expired(
        state.clone(),
        cancel.clone(),
    ));

    let k = format!("kubectl --kubeconfig {}", kubeconfig.display());
    println!(
        "smart-autoscaler demo: {}",
        demo_clock_line(&args, &cluster_view, started)
    );
    println!(
        "listening secure=127.0.0.1:{secure_port} metrics=127.0.0.1:{metrics_port} kubeconfig={}",
        kubeconfig.display()
    );
    println!();
    println!("Try:");
    println!("  {k} get --raw /apis/external.metrics.k8s.io/v1beta1");
    for name in [
        "api-service",
        "batch-processor",
        "web-frontend",
        "java-orders",
    ] {
        println!(
            "  {k} get --raw '/apis/external.metrics.k8s.io/v1beta1/namespaces/demo/smart_cpu_utilization?labelSelector=deployment%3D{name}'"
        );
    }
    println!("  curl -s http://127.0.0.1:{metrics_port}/api/v1/deployments/demo/api-service");
    println!(
        "  curl -s 'http://127.0.0.1:{metrics_port}/api/v1/deployments/demo/api-service/history?since=6h&step=15m'"
    );
    println!("  curl -s http://127.0.0.1:{metrics_port}/api/v1/anomalies");
    println!("  curl -s http://127.0.0.1:{metrics_port}/api/v1/cost");
    println!("  curl -s http://127.0.0.1:{metrics_port}/api/v1/recommendations");
    println!("  curl -s http://127.0.0.1:{metrics_port}/api/v1/tuning");
    println!("  curl -s http://127.0.0.1:{metrics_port}/metrics");
    watch_tls(&tls, &args.server, &state.telemetry, &cancel);
    let auth = start_auth(&args.auth, None, &args.server, &state.telemetry, &cancel).await?;
    let extras = Extras {
        anomalies,
        store,
        cost,
        schedules,
        report: report_sources,
        rules: None,
        delegate: None,
        auth,
    };
    serve_both(listeners, tls, state, extras, cancel).await
}
