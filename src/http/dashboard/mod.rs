//! The dashboard on the metrics port: server-rendered HTML pages with inline SVG charts ([`svg`]), usable with
//! scripts off (the pages carry no script, and their `Content-Security-Policy` forbids any). docs/dashboard.md
//! describes the pages.
//!
//! | path | what it shows | source |
//! |---|---|---|
//! | `/` | every managed deployment: served vs raw, effective target, pressure, forecast trust, active anomalies | the current snapshot |
//! | `/deployments/{namespace}/{name}` | the explanation in words; 24 h and 7 d charts of raw, served, target, demand with the forecast band, and replicas; the decisions | the snapshot and the store |
//! | `/nodes` | pressure per node pool; the extender's verdict and score per node | the snapshot and the extender's placement memory |
//! | `/webhook` | the webhook's last 100 patches | [`RecentStamps`](super::webhook::RecentStamps) |
//!
//! Bad input is answered in HTML too: an unknown deployment or namespace is a 404 page, a query parameter that is
//! unknown or out of range a 400 page naming it. A server without a store (none today: `serve` and `demo` both
//! have one) or a deployment without stored history renders "no history yet", not an error.

pub mod svg;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

use super::AppState;
use crate::domain::decision::{Explanation, TargetSource};
use crate::domain::extender as rules;
use crate::domain::model::{DeploymentKey, ServedDeployment, Snapshot, UnixMillis};
use crate::store::Store;
use svg::{BarChart, Data, Series, TimeChart, colour, escape};

/// The overview page.
pub const OVERVIEW_PATH: &str = "/";
/// The nodes page.
pub const NODES_PATH: &str = "/nodes";
/// The webhook page.
pub const WEBHOOK_PATH: &str = "/webhook";
/// Prefix of the per-deployment pages (`/deployments/{namespace}/{name}`).
pub const DEPLOYMENTS_PATH: &str = "/deployments";

/// The windows a deployment page charts by default.
const DEFAULT_WINDOWS: [(i64, &str); 2] = [(24 * HOUR, "last 24 hours"), (7 * DAY, "last 7 days")];
/// Bounds of `?window=`: shorter than an hour shows too little, longer than the default rollup retention (30 d)
/// would show nothing.
const MIN_WINDOW: i64 = HOUR;
const MAX_WINDOW: i64 = 30 * DAY;
/// Decisions listed per window.
const DECISIONS_LISTED: usize = 20;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// Routes of the dashboard, merged into the metrics port's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(OVERVIEW_PATH, get(overview))
        .route("/deployments/{namespace}/{name}", get(deployment))
        .route(NODES_PATH, get(nodes))
        .route(WEBHOOK_PATH, get(webhook))
        .route(REPORT_PAGE_PATH, get(report_page))
}

/// The weekly report's page.
pub const REPORT_PAGE_PATH: &str = "/report";

// --- Page shell and errors ----------------------------------------------------------------------------------------

const STYLE: &str = "body{font-family:sans-serif;margin:0;color:#1a1a1a;background:#ffffff}\
header{background:#0b3d5c;color:#ffffff;padding:8px 16px}header a{color:#ffffff;margin-right:16px}\
main{padding:8px 16px;max-width:1200px}table{border-collapse:collapse;margin:8px 0}\
th,td{border:1px solid #cccccc;padding:3px 8px;text-align:left;font-size:14px}\
td.num{text-align:right;font-variant-numeric:tabular-nums}th{background:#f0f0f0}\
.muted{color:#555555}.warn{color:#8a3b00}svg.chart{max-width:100%;height:auto;display:block;margin:8px 0}\
.decisions td:first-child,#stamps td:first-child{white-space:nowrap}\
footer{padding:8px 16px;font-size:12px;color:#555555}";

/// Wraps a page body in the shared shell: navigation, styles, no script.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let mut html = String::with_capacity(body.len() + 2048);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\
         <link rel=\"icon\" href=\"data:,\"/><title>{title} - smart-autoscaler</title><style>{STYLE}</style></head>\
         <body><header><nav><strong>smart-autoscaler</strong> \
         <a href=\"/\">Deployments</a><a href=\"/nodes\">Nodes</a><a href=\"/webhook\">Webhook</a><a href=\"/report\">Weekly report</a>\
         <a href=\"/api/v1/deployments\">JSON API</a><a href=\"/metrics\">Metrics</a></nav></header>\
         <main><h1>{title}</h1>{body}</main><footer>Server-rendered; no script. All times UTC.</footer>\
         </body></html>\n",
        title = escape(title)
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'self'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

/// An error page: the status, and the reason in words.
fn error_page(status: StatusCode, reason: &str) -> Response {
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    page(
        status,
        &title,
        &format!(
            "<p class=\"error\" data-status=\"{}\">{}</p><p><a href=\"/\">Back to the deployments</a></p>",
            status.as_u16(),
            escape(reason)
        ),
    )
}

fn no_snapshot() -> Response {
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "no metrics collected yet: the first tick has not completed",
    )
}

/// The query's pairs, each name one of `allowed`; empty values count as absent. `Err` is why not (a 400).
fn query(raw: Option<&str>, allowed: &[&str]) -> Result<BTreeMap<String, String>, String> {
    let pairs: Vec<(String, String)> = match raw {
        Some(q) => {
            serde_urlencoded::from_str(q).map_err(|e| format!("malformed query string: {e}"))?
        }
        None => Vec::new(),
    };
    let mut out = BTreeMap::new();
    for (name, value) in pairs {
        if !allowed.contains(&name.as_str()) {
            let allowed = if allowed.is_empty() {
                "this page takes none".to_string()
            } else {
                format!("use {}", allowed.join(", "))
            };
            return Err(format!("unknown query parameter {name:?}: {allowed}"));
        }
        if out.contains_key(&name) {
            return Err(format!("query parameter {name:?} given twice"));
        }
        if !value.is_empty() {
            out.insert(name, value);
        }
    }
    Ok(out)
}

fn bad_request(reason: &str) -> Response {
    error_page(StatusCode::BAD_REQUEST, reason)
}

// --- Formatting ---------------------------------------------------------------------------------------------------

/// A percentage or other measure with one decimal, `n/a` when not finite.
fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "n/a".to_string()
    }
}

fn opt_num(v: Option<f64>) -> String {
    v.map_or_else(|| "unknown".to_string(), num)
}

/// An age in words: `42 s`, `3 min`, `5 h`, `2 d`.
fn age(millis: i64) -> String {
    let s = millis.max(0) / 1000;
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        7200..172_800 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

fn deployment_href(key: &DeploymentKey) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    format!(
        "{DEPLOYMENTS_PATH}/{}/{}",
        enc(&key.namespace),
        enc(&key.name)
    )
}

fn source_words(source: &TargetSource) -> &'static str {
    match source {
        TargetSource::Annotation => "the smart-autoscaler.io/target-utilization annotation",
        TargetSource::TinyRequest => "the low-request policy (pods requesting under 50m CPU)",
        TargetSource::SmallRequest => "the low-request policy (pods requesting 50-100m CPU)",
        TargetSource::Learned => "a learned target",
        TargetSource::Base => "the HPA's own target",
    }
}

/// The overview's auto-tuned target cell: the target and whether it is applied (advice otherwise), "kept",
/// "not enough data", or "none yet" before the first tuning reached the tick (or with `--no-tuning`;
/// docs/tuning.md).
fn tuning_cell(e: &crate::domain::decision::Explanation) -> String {
    use crate::domain::tuning::Verdict;
    match &e.tuning {
        None => "none yet".to_string(),
        Some(t) => match (t.verdict, t.target_percent) {
            (Verdict::Tuned, Some(target)) if t.applied => format!("{target:.0}% (applied)"),
            (Verdict::Tuned, Some(target)) => format!("{target:.0}% (advice)"),
            (Verdict::Keep, Some(target)) => format!("{target:.0}% (kept)"),
            _ => "not enough data".to_string(),
        },
    }
}

/// The forecast column: trust and use in words.
fn forecast_words(e: &Explanation) -> String {
    match &e.forecast {
        None => "no forecast".to_string(),
        Some(a) => format!(
            "{}, {}, confidence {:.2}",
            if a.trusted { "trusted" } else { "not trusted" },
            if e.forecast_applied {
                "raised the value"
            } else if a.usable {
                "usable, not needed"
            } else {
                "not used"
            },
            a.confidence
        ),
    }
}

fn active_anomalies(snapshot: &Snapshot, key: &DeploymentKey) -> usize {
    snapshot
        .anomalies
        .iter()
        .filter(|a| a.key == *key && a.is_active())
        .count()
}

// --- Overview -----------------------------------------------------------------------------------------------------

async fn overview(
    State(state): State<AppState>,
    cost: Option<Extension<std::sync::Arc<crate::cost::CostBook>>>,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = match query(raw.as_deref(), &["namespace"]) {
        Ok(p) => p,
        Err(reason) => return bad_request(&reason),
    };
    let Some(snapshot) = state.snapshot() else {
        return no_snapshot();
    };
    let namespace = params.get("namespace");
    let in_scope = |k: &DeploymentKey| namespace.is_none_or(|n| *n == k.namespace);
    if let Some(n) = namespace
        && !snapshot.deployments.keys().any(in_scope)
        && !snapshot.unmeasured.keys().any(in_scope)
    {
        return error_page(
            StatusCode::NOT_FOUND,
            &format!("namespace {n:?} has no deployment managed by smart-autoscaler"),
        );
    }
    let now = state.clock.now_millis();
    let mut body = String::with_capacity(16 * 1024);
    let _ = write!(
        body,
        "<p data-collected-at=\"{at}\">Snapshot of {time} ({age} old), {n} managed deployments{scope}. \
         <span class=\"muted\">Served is the value the HPA scales on; raw is the measured CPU utilization, both in \
         percent of requests.</span></p>",
        at = snapshot.collected_at,
        time = crate::clock::rfc3339(snapshot.collected_at),
        age = age(snapshot.age_millis(now)),
        n = snapshot.deployments.len()
            + snapshot
                .unmeasured
                .keys()
                .filter(|k| !snapshot.deployments.contains_key(*k))
                .count(),
        scope = namespace
            .map(|n| format!(" in namespace {}", escape(n)))
            .unwrap_or_default()
    );
    // Each deployment's 30-day cost at the latest tick's rate, when this server prices ticks (docs/cost.md).
    let monthly: Option<BTreeMap<DeploymentKey, f64>> =
        cost.and_then(|Extension(book)| book.latest()).map(|view| {
            view.report
                .deployments
                .iter()
                .map(|d| (d.key.clone(), d.projected_30d_usd))
                .collect()
        });
    let _ = write!(
        body,
        "<table id=\"deployments\"><thead><tr><th>Deployment</th><th>Served %</th><th>Raw %</th>\
         <th>Effective target % (base)</th><th>Auto-tuned target</th><th>Pool pressure (factor)</th>\
         <th>Forecast</th><th>Active anomalies</th><th>Replicas</th><th>Data age</th>{cost}</tr></thead><tbody>",
        cost = if monthly.is_some() {
            "<th>Cost $/30 days</th>"
        } else {
            ""
        }
    );
    let mut bars = Vec::new();
    for (key, d) in snapshot.deployments.iter().filter(|(k, _)| in_scope(k)) {
        let e = &d.explanation;
        let unknown = snapshot
            .unmeasured
            .get(key)
            .map(|u| {
                format!(
                    "<br/><span class=\"warn\">usage unknown: {}</span>",
                    escape(&u.reason)
                )
            })
            .unwrap_or_default();
        let _ = write!(
            body,
            "<tr data-deployment=\"{id}\"><td><a href=\"{href}\">{id}</a>{unknown}</td>\
             <td class=\"num\" data-field=\"smart_percent\">{served}</td>\
             <td class=\"num\" data-field=\"raw_percent\">{raw}</td>\
             <td class=\"num\"><span data-field=\"effective_target_percent\">{eff}</span> ({base})</td>\
             <td title=\"{tuning_words}\" data-field=\"tuning\">{tuning}</td>\
             <td class=\"num\">{level:.2} ({factor:.2})</td><td>{forecast}</td>\
             <td class=\"num\" data-field=\"anomalies_active\">{anomalies}</td>\
             <td class=\"num\" data-field=\"replicas\">{replicas}</td><td class=\"num\">{age}</td>{cost}</tr>",
            id = escape(&key.to_string()),
            href = escape(&deployment_href(key)),
            served = num(d.smart_percent),
            raw = num(d.raw_percent),
            eff = num(e.effective_target_percent),
            base = num(d.inputs.base_target_percent),
            tuning = escape(&tuning_cell(e)),
            tuning_words = escape(e.tuning.as_ref().map_or("", |t| t.text.as_str())),
            level = e.pressure.level,
            factor = e.pressure.factor,
            forecast = escape(&forecast_words(e)),
            anomalies = active_anomalies(&snapshot, key),
            replicas = d.inputs.replicas,
            age = age(now - d.inputs.observed_at),
            cost = match monthly.as_ref().map(|m| m.get(key)) {
                None => String::new(),
                Some(Some(usd)) =>
                    format!("<td class=\"num\" data-field=\"monthly_cost\">{usd:.2}</td>"),
                Some(None) => "<td class=\"num muted\">not priced</td>".to_string(),
            },
        );
        bars.push((
            key.to_string(),
            vec![
                Some(d.raw_percent),
                Some(d.smart_percent),
                Some(e.effective_target_percent),
            ],
        ));
    }
    for (key, u) in snapshot
        .unmeasured
        .iter()
        .filter(|(k, _)| in_scope(k) && !snapshot.deployments.contains_key(*k))
    {
        let _ = write!(
            body,
            "<tr data-deployment=\"{id}\"><td><a href=\"{href}\">{id}</a></td>\
             <td colspan=\"{span}\" class=\"warn\">usage unknown since {since}: {reason}; nothing is served</td></tr>",
            span = if monthly.is_some() { 9 } else { 8 },
            id = escape(&key.to_string()),
            href = escape(&deployment_href(key)),
            since = crate::clock::rfc3339(u.since),
            reason = escape(&u.reason),
        );
    }
    body.push_str("</tbody></table>");
    if snapshot.deployments.is_empty() && snapshot.unmeasured.is_empty() {
        body.push_str("<p>No deployment is managed yet.</p>");
    }
    body.push_str(
        &BarChart {
            title: "Raw, served and effective target per deployment".into(),
            x_label: "CPU utilization, % of requests".into(),
            series: vec![
                ("raw (measured)".into(), colour::BLUE),
                ("served (to the HPA)".into(), colour::VERMILLION),
                ("effective target".into(), colour::GREEN),
            ],
            rows: bars,
        }
        .render(),
    );
    page(StatusCode::OK, "Managed deployments", &body)
}

// --- One deployment -----------------------------------------------------------------------------------------------

/// The explanation of a served value in words, one sentence per step of the decision.
fn explanation_words(d: &ServedDeployment) -> Vec<String> {
    let e = &d.explanation;
    let i = &d.inputs;
    let mut out = vec![format!(
        "Measured CPU utilization is {}% of requests over {} replicas ({} ready, {} starting); the HPA's \
         target is {}%.",
        num(d.raw_percent),
        i.replicas,
        i.ready_pods,
        i.starting_pods,
        num(e.base_target_percent)
    )];
    out.push(format!(
        "The deployment's own target is {}%, from {}.",
        num(e.policy_target_percent),
        source_words(&e.policy_source)
    ));
    out.push(format!(
        "Node pool {:?} ({} nodes): measured CPU {}%, requested {}%, so pressure level {:.2} and target factor \
         {:.2}{}.",
        i.pool.name,
        i.pool.nodes,
        opt_num(e.pressure.measured_percent),
        num(e.pressure.requested_percent),
        e.pressure.level,
        e.pressure.factor,
        if e.pressure.measured_percent.is_none() {
            " (no node of the pool is measured: requests alone)"
        } else {
            ""
        }
    ));
    let mut target = format!(
        "The inputs call for a target of {}%; the target in force is {}%",
        num(e.candidate_target_percent),
        num(e.effective_target_percent)
    );
    match &e.held {
        Some(why) => {
            let _ = write!(target, ", held: {why}.");
        }
        None => target.push('.'),
    }
    out.push(target);
    if e.clamped {
        out.push(format!(
            "The factor (base over effective target) was clamped to {:.2}.",
            e.factor
        ));
    }
    match &e.forecast {
        Some(a) => out.push(format!(
            "Forecast: {}, confidence {:.2}{}{}.",
            if a.trusted {
                "trusted"
            } else {
                "not trusted yet"
            },
            a.confidence,
            e.forecast_percent
                .map(|f| format!(", {}% ahead", num(f)))
                .unwrap_or_default(),
            if e.forecast_applied {
                ", and it raised the served value".to_string()
            } else {
                a.reason
                    .as_deref()
                    .map(|r| format!(", not used: {r}"))
                    .unwrap_or_else(|| ", not needed".to_string())
            }
        )),
        None => out.push("No forecast for this deployment.".to_string()),
    }
    if e.saturation_floor {
        out.push("The saturation floor raised the served value to the raw one.".to_string());
    }
    if let Some(w) = e.would_serve_percent {
        out.push(format!("Dry run: {}% would have been served.", num(w)));
    }
    out.push(format!("Served to the HPA: {}%.", num(d.smart_percent)));
    out
}

/// One stored decision: when, the target it set, the value served then, and why.
struct Decision {
    at: UnixMillis,
    effective: f64,
    served: f64,
    held: Option<String>,
    reasons: Vec<String>,
}

fn decode_decision(at: UnixMillis, json: &[u8]) -> Option<Decision> {
    let v: serde_json::Value = serde_json::from_slice(json).ok()?;
    Some(Decision {
        at,
        effective: v.get("effective_target_percent")?.as_f64()?,
        served: v.get("served_percent")?.as_f64()?,
        held: v.get("held").and_then(|h| h.as_str()).map(str::to_string),
        reasons: v
            .get("reasons")
            .and_then(|r| r.as_array())
            .map(|r| {
                r.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// What the store holds for one deployment over one window.
struct History {
    raw: Vec<(UnixMillis, f64)>,
    raw_max: Vec<(UnixMillis, f64)>,
    replicas: Vec<(UnixMillis, f64)>,
    /// Measured demand: 5-minute mean utilization times the replicas of the bucket (percent of one pod's request),
    /// the quantity the forecasts are made in.
    demand: Vec<(UnixMillis, f64)>,
    /// Forecast demand interval and value, drawn at the time each prediction is for.
    band: Vec<(UnixMillis, f64, f64)>,
    forecast: Vec<(UnixMillis, f64)>,
    decisions: Vec<Decision>,
    /// The decision in force when the window opens, if any.
    before: Option<Decision>,
}

impl History {
    fn is_empty(&self) -> bool {
        self.raw.is_empty()
            && self.replicas.is_empty()
            && self.band.is_empty()
            && self.decisions.is_empty()
    }
}

async fn read_history(
    store: &Store,
    key: &DeploymentKey,
    from: UnixMillis,
    now: UnixMillis,
) -> Result<History, crate::store::StoreError> {
    let rollups = store.rollups(key, from, now + 1).await?;
    // A prediction is drawn at the time it is for; look back far enough to find those landing in the window.
    let predictions = store.predictions(key, from - DAY, now + 1).await?;
    // Decisions are written when the effective target changes: the one in force at `from` may be older.
    let decisions = store.decisions(key, from - 7 * DAY, now + 1).await?;
    let mut band = Vec::new();
    let mut forecast = Vec::new();
    for (at, p) in predictions {
        let t = at + i64::from(p.horizon_seconds) * 1000;
        if t >= from && t <= now {
            band.push((t, p.lower, p.upper));
            forecast.push((t, p.value));
        }
    }
    band.sort_by_key(|p| p.0);
    forecast.sort_by_key(|p| p.0);
    let mut before = None;
    let mut inside = Vec::new();
    for (at, json) in decisions {
        let Some(d) = decode_decision(at, &json) else {
            continue;
        };
        if at < from {
            before = Some(d);
        } else {
            inside.push(d);
        }
    }
    Ok(History {
        raw: rollups.iter().map(|r| (r.start, r.cpu_mean)).collect(),
        raw_max: rollups.iter().map(|r| (r.start, r.cpu_max)).collect(),
        replicas: rollups
            .iter()
            .filter_map(|r| r.replicas_max.map(|n| (r.start, f64::from(n))))
            .collect(),
        demand: rollups
            .iter()
            .filter_map(|r| r.replicas_max.map(|n| (r.start, r.cpu_mean * f64::from(n))))
            .collect(),
        band,
        forecast,
        decisions: inside,
        before,
    })
}

fn window_section(
    key: &DeploymentKey,
    current: Option<&ServedDeployment>,
    label: &str,
    from: UnixMillis,
    now: UnixMillis,
    history: &History,
) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<section data-window=\"{}\"><h2>{}</h2>",
        (now - from) / HOUR,
        escape(label)
    );
    if history.is_empty() {
        out.push_str(
            "<p class=\"no-history\">no history yet: the store holds no samples, forecasts or decisions for this \
             deployment in this window.</p></section>",
        );
        return out;
    }
    let mut target: Vec<(UnixMillis, f64)> = history
        .before
        .iter()
        .chain(&history.decisions)
        .map(|d| (d.at, d.effective))
        .collect();
    let mut served: Vec<(UnixMillis, f64)> =
        history.decisions.iter().map(|d| (d.at, d.served)).collect();
    if let Some(c) = current.filter(|c| c.inputs.observed_at >= from) {
        served.push((c.inputs.observed_at, c.smart_percent));
        if target.last().is_none_or(|t| t.0 < c.inputs.observed_at) {
            target.push((c.inputs.observed_at, c.explanation.effective_target_percent));
        }
    }
    let cpu = TimeChart {
        title: format!("{key}: CPU utilization, {label}"),
        y_label: "% of requests".into(),
        from,
        to: now,
        series: vec![
            Series::new(
                "raw, 5-min peak",
                colour::ORANGE,
                Data::Line(history.raw_max.clone()),
            )
            .dashed("1 2"),
            Series::new(
                "raw, 5-min mean",
                colour::BLACK,
                Data::Line(history.raw.clone()),
            ),
            Series::new("effective target", colour::GREEN, Data::Step(target)).dashed("7 3"),
            Series::new(
                "served (at each decision, and now)",
                colour::VERMILLION,
                Data::Points(served),
            ),
        ],
        from_zero: true,
    };
    out.push_str(&cpu.render());
    // The forecasts are made in demand (utilization times pods), not utilization: they get their own chart, with
    // the measured demand they are judged against.
    let demand = TimeChart {
        title: format!("{key}: CPU demand and forecast, {label}"),
        y_label: "% of one pod's request".into(),
        from,
        to: now,
        series: vec![
            Series::new(
                "forecast interval (ensemble members)",
                colour::SKY_BLUE,
                Data::Band(history.band.clone()),
            ),
            Series::new(
                "forecast (largest over the lead time)",
                colour::BLUE,
                Data::Line(history.forecast.clone()),
            )
            .dashed("2 3"),
            Series::new(
                "measured (5-min mean x replicas)",
                colour::BLACK,
                Data::Line(history.demand.clone()),
            ),
        ],
        from_zero: true,
    };
    out.push_str(&demand.render());
    let replicas = TimeChart {
        title: format!("{key}: replicas, {label}"),
        y_label: "replicas".into(),
        from,
        to: now,
        series: vec![Series::new(
            "replicas (5-min max)",
            colour::PURPLE,
            Data::Line(history.replicas.clone()),
        )],
        from_zero: true,
    };
    out.push_str(&replicas.render());
    let _ = write!(
        out,
        "<h3>Decisions ({} in this window; newest {} listed)</h3>",
        history.decisions.len(),
        history.decisions.len().min(DECISIONS_LISTED)
    );
    if history.decisions.is_empty() {
        out.push_str("<p class=\"muted\">The effective target did not change in this window.</p>");
    } else {
        out.push_str(
            "<table class=\"decisions\"><thead><tr><th>Time</th><th>Effective target %</th><th>Served %</th>\
             <th>Why</th></tr></thead><tbody>",
        );
        for d in history.decisions.iter().rev().take(DECISIONS_LISTED) {
            let mut why: Vec<String> = d.held.iter().map(|h| format!("held: {h}")).collect();
            why.extend(d.reasons.iter().cloned());
            let _ = write!(
                out,
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                crate::clock::rfc3339(d.at),
                num(d.effective),
                num(d.served),
                escape(&why.join("; "))
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>");
    out
}

async fn deployment(
    State(state): State<AppState>,
    store: Option<Extension<Store>>,
    schedules: Option<Extension<Arc<crate::schedule::ScheduleBook>>>,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Response {
    let (namespace, name) = match path {
        Ok(Path(p)) => p,
        Err(rejection) => {
            return error_page(StatusCode::BAD_REQUEST, &rejection.body_text());
        }
    };
    let params = match query(raw.as_deref(), &["window"]) {
        Ok(p) => p,
        Err(reason) => return bad_request(&reason),
    };
    let windows: Vec<(i64, String)> = match params.get("window") {
        None => DEFAULT_WINDOWS
            .iter()
            .map(|(w, l)| (*w, l.to_string()))
            .collect(),
        Some(text) => match crate::flags::parse_duration(text)
            .ok()
            .and_then(|d| i64::try_from(d.as_millis()).ok())
            .filter(|w| (MIN_WINDOW..=MAX_WINDOW).contains(w))
        {
            Some(w) => vec![(w, format!("last {text}"))],
            None => {
                return error_page(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "invalid window {text:?}: a duration from 1h to 30d, such as 6h or 7d"
                    ),
                );
            }
        },
    };
    let Some(snapshot) = state.snapshot() else {
        return no_snapshot();
    };
    let key = DeploymentKey::new(namespace, name);
    let served = snapshot.deployments.get(&key);
    let unknown = snapshot.unmeasured.get(&key);
    if served.is_none() && unknown.is_none() {
        let namespace_known = snapshot
            .deployments
            .keys()
            .chain(snapshot.unmeasured.keys())
            .any(|k| k.namespace == key.namespace);
        let reason = if namespace_known {
            format!("deployment {key} is not managed by smart-autoscaler")
        } else {
            format!(
                "namespace {:?} has no deployment managed by smart-autoscaler",
                key.namespace
            )
        };
        return error_page(StatusCode::NOT_FOUND, &reason);
    }
    let now = state.clock.now_millis();
    let mut body = String::with_capacity(64 * 1024);
    let _ = write!(
        body,
        "<p data-collected-at=\"{}\" data-deployment=\"{}\">Snapshot of {}. \
         <a href=\"/api/v1{}\">This deployment as JSON</a>.</p>",
        snapshot.collected_at,
        escape(&key.to_string()),
        crate::clock::rfc3339(snapshot.collected_at),
        escape(&deployment_href(&key)),
    );
    if let Some(u) = unknown {
        let _ = write!(
            body,
            "<p class=\"warn\">Usage unknown since {}: {}{}</p>",
            crate::clock::rfc3339(u.since),
            escape(&u.reason),
            u.last_good_at
                .map(|t| format!(
                    "; the value still served was measured at {}",
                    crate::clock::rfc3339(t)
                ))
                .unwrap_or_else(|| "; nothing is served".to_string())
        );
    }
    if let Some(d) = served {
        let _ = write!(
            body,
            "<table class=\"current\"><tbody>\
             <tr><th>Served %</th><td class=\"num\" data-field=\"smart_percent\">{}</td></tr>\
             <tr><th>Raw %</th><td class=\"num\" data-field=\"raw_percent\">{}</td></tr>\
             <tr><th>Effective target %</th><td class=\"num\" data-field=\"effective_target_percent\">{}</td></tr>\
             <tr><th>Base target %</th><td class=\"num\">{}</td></tr>\
             <tr><th>Auto-tuned target</th><td data-field=\"tuning\">{}</td></tr>\
             <tr><th>Replicas</th><td class=\"num\" data-field=\"replicas\">{}</td></tr>\
             <tr><th>Measured at</th><td>{}</td></tr></tbody></table>",
            num(d.smart_percent),
            num(d.raw_percent),
            num(d.explanation.effective_target_percent),
            num(d.inputs.base_target_percent),
            escape(
                &d.explanation
                    .tuning
                    .as_ref()
                    .map_or_else(|| tuning_cell(&d.explanation), |t| t.text.clone())
            ),
            d.inputs.replicas,
            crate::clock::rfc3339(d.inputs.observed_at),
        );
        body.push_str("<h2>Why this value</h2><ol class=\"explanation\">");
        for sentence in explanation_words(d) {
            let _ = write!(body, "<li>{}</li>", escape(&sentence));
        }
        body.push_str("</ol>");
        if !d.explanation.reasons.is_empty() {
            body.push_str("<p>The decision's own reasons, in the order they were applied:</p><ul>");
            for r in &d.explanation.reasons {
                let _ = write!(body, "<li>{}</li>", escape(r));
            }
            body.push_str("</ul>");
        }
    }
    let anomalies: Vec<_> = snapshot
        .anomalies
        .iter()
        .filter(|a| a.key == key && a.is_active())
        .collect();
    let _ = write!(
        body,
        "<h2>Active anomalies: <span data-field=\"anomalies_active\">{}</span></h2>",
        anomalies.len()
    );
    if !anomalies.is_empty() {
        body.push_str("<ul>");
        for a in anomalies {
            let _ = write!(
                body,
                "<li>{} ({}), since {}: {}</li>",
                escape(a.kind.as_str()),
                escape(a.severity.as_str()),
                crate::clock::rfc3339(a.started_at),
                escape(&a.summary)
            );
        }
        body.push_str("</ul>");
    }
    if let Some(Extension(book)) = schedules {
        body.push_str(&schedule_section(&key, book.get(&key).as_deref()));
    }
    match store {
        None => body.push_str(
            "<p class=\"no-history\">no history yet: this server keeps no store, so there is nothing to chart.</p>",
        ),
        Some(Extension(store)) => {
            for (window, label) in windows {
                let from = now - window;
                match read_history(&store, &key, from, now).await {
                    Ok(history) => {
                        body.push_str(&window_section(&key, served, &label, from, now, &history))
                    }
                    Err(e) => {
                        let _ = write!(
                            body,
                            "<section><h2>{}</h2><p class=\"warn\">The history could not be read: {}</p></section>",
                            escape(&label),
                            escape(&e.to_string())
                        );
                    }
                }
            }
        }
    }
    page(StatusCode::OK, &key.to_string(), &body)
}

/// The recommended minReplicas per hour of the week (at the HPA's target, minReplicas 1), with links to the
/// exports.
fn schedule_section(key: &DeploymentKey, learned: Option<&crate::schedule::Learned>) -> String {
    let mut out = String::from("<section class=\"schedule\"><h2>Scaling schedule</h2>");
    let api = format!("/api/v1{}/schedule", deployment_href(key));
    let schedule = match learned {
        None => {
            out.push_str("<p>Not learned yet: schedules are learned in the background every 15 minutes.</p></section>");
            return out;
        }
        Some(l) => l.schedule(crate::schedule::default_bounds(l.base_target_percent)),
    };
    let schedule = match schedule {
        Ok(s) => s,
        Err(e) => {
            let _ = write!(
                out,
                "<p data-field=\"schedule_reason\">{}</p></section>",
                escape(&e.to_string())
            );
            return out;
        }
    };
    let _ = write!(
        out,
        "<p>Recommended minReplicas per hour of the week (UTC{:+}h), learned from {} day(s) of history at the \
         HPA's target of {}% with minReplicas 1; a dot is the HPA's own minimum. Export: \
         <a href=\"{api}?format=table\">table</a>, <a href=\"{api}?format=keda\">KEDA ScaledObject</a>, \
         <a href=\"{api}?format=cronjob\">CronJobs</a>, <a href=\"{api}\">JSON</a> (set min, max and lead in \
         the query).</p><table class=\"schedule\"><thead><tr><th>day</th>",
        f64::from(schedule.utc_offset_minutes) / 60.0,
        schedule.days,
        num(schedule.bounds.target_percent),
        api = escape(&api),
    );
    for h in 0..24 {
        let _ = write!(out, "<th>{h}</th>");
    }
    out.push_str("</tr></thead><tbody>");
    for (d, name) in ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
        .iter()
        .enumerate()
    {
        let _ = write!(out, "<tr><th>{name}</th>");
        for h in 0..24 {
            let r = schedule.hours[d * 24 + h].replicas;
            if r > schedule.bounds.min_replicas {
                let _ = write!(
                    out,
                    "<td class=\"num\" data-hour-of-week=\"{}\">{r}</td>",
                    d * 24 + h
                );
            } else {
                let _ = write!(
                    out,
                    "<td class=\"num\" data-hour-of-week=\"{}\">.</td>",
                    d * 24 + h
                );
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></section>");
    out
}

// --- Weekly report ------------------------------------------------------------------------------------------------

/// The weekly report for the week ending now, as the `report` command prints it, with the highlights as a list.
async fn report_page(
    State(state): State<AppState>,
    sources: Option<Extension<crate::report::ReportSources>>,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = match query(raw.as_deref(), &["namespace"]) {
        Ok(p) => p,
        Err(reason) => return bad_request(&reason),
    };
    let Some(snapshot) = state.snapshot() else {
        return no_snapshot();
    };
    let sources = sources.map(|Extension(s)| s).unwrap_or_default();
    let namespace = params.get("namespace").map(String::as_str);
    let report =
        match crate::report::weekly(&snapshot, &sources, state.clock.now_millis(), namespace).await
        {
            Ok(r) => r,
            Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        };
    let mut body = String::new();
    let _ = write!(
        body,
        "<p>The week from {} to {}. <a href=\"/api/v1/report/weekly\">As JSON</a>, \
         <a href=\"/api/v1/report/weekly?format=text\">as text</a>.</p><h2>Worth a look</h2>",
        crate::clock::rfc3339(report.from),
        crate::clock::rfc3339(report.to)
    );
    if report.highlights.is_empty() {
        body.push_str("<p>Nothing stands out this week.</p>");
    } else {
        body.push_str("<ul class=\"highlights\">");
        for h in &report.highlights {
            let _ = write!(body, "<li>{}</li>", escape(h));
        }
        body.push_str("</ul>");
    }
    let _ = write!(
        body,
        "<h2>Deployments</h2><pre data-field=\"report_text\">{}</pre>",
        escape(&report.text())
    );
    page(StatusCode::OK, "Weekly report", &body)
}

// --- Nodes --------------------------------------------------------------------------------------------------------

async fn nodes(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    if let Err(reason) = query(raw.as_deref(), &[]) {
        return bad_request(&reason);
    }
    let Some(snapshot) = state.snapshot() else {
        return no_snapshot();
    };
    let now = state.clock.now_millis();
    let mut body = String::with_capacity(16 * 1024);
    let _ = write!(
        body,
        "<p data-collected-at=\"{}\">Snapshot of {} ({} old), {} nodes.</p><h2>Node pools</h2>",
        snapshot.collected_at,
        crate::clock::rfc3339(snapshot.collected_at),
        age(snapshot.age_millis(now)),
        snapshot.nodes.len()
    );
    // Pools as the deployments see them: each deployment carries its pool's inputs and the pressure from them.
    struct Pool<'a> {
        inputs: &'a crate::domain::model::PoolInputs,
        level: f64,
        factor: f64,
        deployments: Vec<String>,
    }
    let mut pools: BTreeMap<&str, Pool<'_>> = BTreeMap::new();
    for (key, d) in &snapshot.deployments {
        pools
            .entry(d.inputs.pool.name.as_str())
            .or_insert_with(|| Pool {
                inputs: &d.inputs.pool,
                level: d.explanation.pressure.level,
                factor: d.explanation.pressure.factor,
                deployments: Vec::new(),
            })
            .deployments
            .push(key.to_string());
    }
    if pools.is_empty() {
        body.push_str("<p>No managed deployment, so no pool is in use.</p>");
    } else {
        body.push_str(
            "<table id=\"pools\"><thead><tr><th>Pool</th><th>Nodes</th><th>Measured CPU %</th>\
             <th>Requested CPU %</th><th>Pressure level</th><th>Target factor</th><th>Deployments</th></tr>\
             </thead><tbody>",
        );
        for (name, p) in &pools {
            let _ = write!(
                body,
                "<tr data-pool=\"{name}\"><td>{name}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td class=\"num\" data-field=\"level\">{:.2}</td>\
                 <td class=\"num\">{:.2}</td><td>{}</td></tr>",
                p.inputs.nodes,
                opt_num(p.inputs.measured_cpu_percent),
                num(p.inputs.requested_cpu_percent),
                p.level,
                p.factor,
                escape(&p.deployments.join(", ")),
                name = escape(name),
            );
        }
        body.push_str("</tbody></table>");
        body.push_str(
            &BarChart {
                title: "Pressure per node pool".into(),
                x_label: "percent (pressure level x 100)".into(),
                series: vec![
                    ("measured CPU".into(), colour::BLUE),
                    ("requested CPU".into(), colour::ORANGE),
                    ("pressure level x 100".into(), colour::VERMILLION),
                ],
                rows: pools
                    .iter()
                    .map(|(name, p)| {
                        (
                            name.to_string(),
                            vec![
                                p.inputs.measured_cpu_percent,
                                Some(p.inputs.requested_cpu_percent),
                                Some(p.level * 100.0),
                            ],
                        )
                    })
                    .collect(),
            }
            .render(),
        );
    }
    // The extender's view, judged as its handlers judge a call now (stale data is no data: fail open).
    let config = state.extender.config();
    let fresh = !snapshot.is_stale(now, super::extender::STALE_INTERVALS);
    let verdicts: Vec<rules::Verdict> = snapshot
        .nodes
        .iter()
        .map(|n| rules::judge(config, fresh.then_some(n)))
        .collect();
    let fallback = !verdicts.is_empty() && verdicts.iter().all(|v| v.fails());
    let _ = write!(
        body,
        "<h2>Scheduler extender</h2><p>Filter fails a node above {}% measured CPU; prioritize weighs measured \
         headroom {} and requested headroom {}, minus {} points per recent placement.{}{}</p>",
        num(config.max_cpu_percent),
        config.measured_weight,
        config.requested_weight,
        config.recent_pod_penalty,
        if fresh {
            ""
        } else {
            " The node data is stale: every node passes and scores neutral (fail open)."
        },
        if fallback {
            " Every node would fail the filter, so all pass (the all-fail fallback)."
        } else {
            ""
        }
    );
    body.push_str(
        "<table id=\"nodes\"><thead><tr><th>Node</th><th>Ready</th><th>Schedulable</th><th>Allocatable CPU \
         (cores)</th><th>Requested CPU %</th><th>Measured CPU %</th><th>Filter</th><th>Reason</th>\
         <th>Base score</th><th>Recent placements</th><th>Score</th></tr></thead><tbody>",
    );
    let mut rows = Vec::new();
    for (n, verdict) in snapshot.nodes.iter().zip(&verdicts) {
        let known = fresh.then_some(n);
        let base = rules::base_score(config, known, 0);
        let load = state.extender.recent_load(&n.name, now);
        let score = rules::final_score(base, config.recent_pod_penalty * load);
        let requested = if n.allocatable_cpu_milli > 0 {
            Some(n.requested_cpu_milli as f64 / n.allocatable_cpu_milli as f64 * 100.0)
        } else {
            None
        };
        let _ = write!(
            body,
            "<tr data-node=\"{name}\"><td>{name}</td><td>{}</td><td>{}</td><td class=\"num\">{:.2}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td data-field=\"filter\">{}</td><td>{}</td>\
             <td class=\"num\">{:.1}</td><td class=\"num\">{:.2}</td><td class=\"num\" data-field=\"score\">{}</td></tr>",
            if n.ready { "yes" } else { "no" },
            if n.schedulable { "yes" } else { "cordoned" },
            n.allocatable_cpu_milli as f64 / 1000.0,
            opt_num(requested),
            opt_num(n.measured_cpu_percent),
            verdict.label(),
            escape(&verdict.reason(config).unwrap_or_default()),
            base,
            load,
            score,
            name = escape(&n.name),
        );
        rows.push((n.name.clone(), vec![n.measured_cpu_percent, requested]));
    }
    body.push_str("</tbody></table>");
    // Past a few dozen nodes a bar chart stops being readable; the table above has them all.
    const CHARTED_NODES: usize = 40;
    let charted = rows.len().min(CHARTED_NODES);
    let title = if rows.len() > CHARTED_NODES {
        format!(
            "CPU per node (first {CHARTED_NODES} of {}; all are in the table)",
            rows.len()
        )
    } else {
        "CPU per node".to_string()
    };
    rows.truncate(charted);
    body.push_str(
        &BarChart {
            title,
            x_label: "CPU, % of allocatable".into(),
            series: vec![
                ("measured".into(), colour::BLUE),
                ("requested".into(), colour::ORANGE),
            ],
            rows,
        }
        .render(),
    );
    page(StatusCode::OK, "Nodes", &body)
}

// --- Webhook ------------------------------------------------------------------------------------------------------

async fn webhook(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    if let Err(reason) = query(raw.as_deref(), &[]) {
        return bad_request(&reason);
    }
    let stamps = state.webhook.recent.newest_first();
    let mut body = String::with_capacity(8 * 1024);
    let _ = write!(
        body,
        "<p>The admission webhook's last {} patches (dry runs excluded), newest first; it keeps the last {}. \
         Counters by outcome are in <a href=\"/metrics\">/metrics</a> \
         (<code>smart_autoscaler_webhook_reviews_total</code>).</p>",
        stamps.len(),
        super::webhook::RECENT_STAMPS
    );
    if stamps.is_empty() {
        body.push_str(
            "<p class=\"no-history\">No Deployment has been stamped since the server started.</p>",
        );
    } else {
        body.push_str(
            "<table id=\"stamps\"><thead><tr><th>Time</th><th>Operation</th><th>Deployment</th>\
             <th>Annotations in force</th><th>Warnings</th></tr></thead><tbody>",
        );
        for s in &stamps {
            let annotations: Vec<String> = s
                .stamped
                .iter()
                .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
                .collect();
            let warnings: Vec<String> = s.warnings.iter().map(|w| escape(w)).collect();
            let name = if s.name.is_empty() {
                "(generated name)"
            } else {
                &s.name
            };
            let _ = write!(
                body,
                "<tr data-stamp=\"{id}\"><td>{}</td><td>{}</td><td>{id}</td><td>{}</td><td>{}</td></tr>",
                crate::clock::rfc3339(s.at),
                s.operation,
                annotations.join("<br/>"),
                warnings.join("<br/>"),
                id = escape(&format!("{}/{name}", s.namespace)),
            );
        }
        body.push_str("</tbody></table>");
    }
    page(StatusCode::OK, "Webhook stamps", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty() -> History {
        History {
            raw: Vec::new(),
            raw_max: Vec::new(),
            replicas: Vec::new(),
            demand: Vec::new(),
            band: Vec::new(),
            forecast: Vec::new(),
            decisions: Vec::new(),
            before: None,
        }
    }

    #[test]
    fn an_empty_store_renders_no_history_yet_and_no_chart() {
        let key = DeploymentKey::new("shop", "web");
        let html = window_section(&key, None, "last 24 hours", 0, DAY, &empty());
        assert!(html.contains("no history yet"), "{html}");
        assert!(!html.contains("<svg"));
        // One stored sample is history: charts, and the decisions table says there were none.
        let one = History {
            raw: vec![(HOUR, 40.0)],
            ..empty()
        };
        let html = window_section(&key, None, "last 24 hours", 0, DAY, &one);
        assert_eq!(html.matches("<svg").count(), 3);
        assert!(html.contains("did not change in this window"));
    }

    #[test]
    fn decisions_decode_from_the_stored_explanation() {
        let d = decode_decision(
            5,
            br#"{"effective_target_percent":70.0,"served_percent":65.5,"held":"deadband","reasons":["a","b"]}"#,
        )
        .unwrap();
        assert_eq!((d.at, d.effective, d.served), (5, 70.0, 65.5));
        assert_eq!(d.held.as_deref(), Some("deadband"));
        assert_eq!(d.reasons, ["a", "b"]);
        assert!(decode_decision(5, b"{}").is_none());
        assert!(decode_decision(5, b"not json").is_none());
    }

    #[test]
    fn links_are_percent_encoded_and_queries_checked() {
        assert_eq!(
            deployment_href(&DeploymentKey::new("a b", "c/d<e>")),
            "/deployments/a%20b/c%2Fd%3Ce%3E"
        );
        assert_eq!(
            query(Some("window=6h"), &["window"]).unwrap()["window"],
            "6h"
        );
        assert!(query(Some("window="), &["window"]).unwrap().is_empty());
        assert!(
            query(Some("x=1"), &["window"])
                .unwrap_err()
                .contains("unknown query parameter \"x\": use window")
        );
        assert!(query(Some("x=1"), &[]).unwrap_err().contains("takes none"));
        assert!(
            query(Some("window=1h&window=2h"), &["window"])
                .unwrap_err()
                .contains("twice")
        );
        assert_eq!(age(59_000), "59 s");
        assert_eq!(age(3 * 3_600_000), "3 h");
        assert_eq!(num(f64::NAN), "n/a");
    }
}
