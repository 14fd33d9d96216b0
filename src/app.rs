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
use crate::config::{CertsArgs, CommandSettings, DemoSettings, ServeSettings};
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
    }
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
    anomalies: AnomalyHistory,
    auth: Option<Arc<crate::auth::Auth>>,
    cancel: CancellationToken,
) -> Result<()> {
    let limits = state.limits.clone();
    let secure = http::server::serve_tls(
        listeners.secure,
        tls,
        http::secure_router_with_auth(state.clone(), auth),
        limits.clone(),
        cancel.clone().cancelled_owned(),
    );
    let metrics = http::server::serve_plain(
        listeners.metrics,
        http::metrics_router_with_anomalies(state, anomalies),
        limits,
        cancel.clone().cancelled_owned(),
    );
    let (a, b) = tokio::join!(secure, metrics);
    a.context("secure listener")?;
    b.context("metrics listener")?;
    Ok(())
}

/// Starts alert delivery when `--alerting-config` names receivers: it follows the snapshots on its own tasks.
fn start_alerting(
    settings: &crate::alerting::AlertingSettings,
    snapshots: &watch::Receiver<Option<Arc<crate::domain::model::Snapshot>>>,
    telemetry: &Telemetry,
    cancel: &CancellationToken,
) -> Result<()> {
    if let Some(config) = &settings.config {
        crate::alerting::spawn(config, snapshots.clone(), telemetry, cancel.clone())
            .context("starting alert delivery")?;
    }
    Ok(())
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
    let telemetry = Arc::new(Telemetry::new());
    let health = Arc::new(crate::health::Health::new(&telemetry));
    let store = crate::store::Store::open(args.data_dir.join("store"), args.store)
        .await?
        .with_clock(clock.clone());
    store.register_metrics(&telemetry);
    let prom = Arc::new(crate::prom::PromClient::new(args.prom.clone())?.with_clock(clock.clone()));
    let short_window_seconds = prom.templates().pod_cpu_short_window_seconds;
    let (client, server) = args.k8s.connect().await?;
    let cancel = CancellationToken::new();
    let cluster = crate::k8s::ClusterWatch::start_at(
        client,
        server,
        cancel.clone(),
        args.k8s.probe_interval(),
    );
    let listeners = bind(&args.server).await?;
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
    let anomalies = AnomalyHistory::Stored(store.clone());
    let (mut engine, snapshots) = Engine::new(
        source,
        clock.clone(),
        args.interval,
        telemetry.clone(),
        args.decision.clone(),
    );
    engine = engine.with_anomaly_history(anomalies.clone());
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
    start_alerting(&args.alerting, &snapshots, &telemetry, &cancel)?;
    let mut state = app_state(&args.server, snapshots, clock, telemetry, health);
    state.forecasts = forecasts;
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
    let auth = start_auth(
        &args.auth,
        Some(&args.k8s),
        &args.server,
        &state.telemetry,
        &cancel,
    )
    .await?;
    serve_both(listeners, tls, state, anomalies, auth, cancel).await
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

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}

/// Runs `demo`.
pub async fn run_demo(args: DemoSettings) -> Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(match args.start_at {
        // Today (UTC) at that time of day, whether it is past or still to come.
        Some(minutes) => {
            let now = SystemClock.now_millis();
            ScaledClock::starting_at(
                now - now.rem_euclid(86_400_000) + i64::from(minutes) * 60_000,
                args.speed,
            )
        }
        None => ScaledClock::starting_now(args.speed),
    });
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

    let telemetry = Arc::new(Telemetry::new());
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
    let cluster = DemoCluster::new(args.seed, clock.now_millis());
    let mut seeded = 0;
    for (key, points) in cluster.history(clock.now_millis(), args.history_days) {
        seeded += store.import_history_with_pods(&key, &points).await?;
    }
    tracing::info!(
        days = args.history_days,
        points = seeded,
        "demo: simulated history written to the store"
    );
    let anomalies = AnomalyHistory::in_memory();
    let (mut engine, snapshots) = Engine::new(
        DemoSource::new(cluster).with_store(store.clone()),
        clock.clone(),
        args.interval,
        telemetry.clone(),
        args.decision.clone(),
    );
    engine = engine.with_anomaly_history(anomalies.clone());
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
    start_alerting(&args.alerting, &snapshots, &telemetry, &cancel)?;
    let mut state = app_state(&args.server, snapshots, clock, telemetry, health);
    state.forecasts = forecasts;
    shutdown_on_signal(cancel.clone());
    tokio::spawn(engine.run(cancel.clone()));
    tokio::spawn(http::extender::forget_expired(
        state.clone(),
        cancel.clone(),
    ));

    let k = format!("kubectl --kubeconfig {}", kubeconfig.display());
    println!(
        "smart-autoscaler demo: simulated cluster at {}x speed",
        args.speed
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
    println!("  curl -s http://127.0.0.1:{metrics_port}/api/v1/anomalies");
    println!("  curl -s http://127.0.0.1:{metrics_port}/metrics");
    watch_tls(&tls, &args.server, &state.telemetry, &cancel);
    let auth = start_auth(&args.auth, None, &args.server, &state.telemetry, &cancel).await?;
    serve_both(listeners, tls, state, anomalies, auth, cancel).await
}
